# Copyright (c) 2026, the mngr.modal authors
# GNU General Public License v3.0+ (see COPYING or https://www.gnu.org/licenses/gpl-3.0.txt)
"""Test helper: look at an app and its state volume directly through the Modal SDK.

  modal_state.py app-exists APP           exit 0 and print true/false
  modal_state.py volume-exists APP        exit 0 and print true/false
  modal_state.py put-stopped-record APP HOST_ID NAME [--no-spec]
                                          write the record of a stopped host whose keys are not on this controller
                                          (--no-spec: a record without a build spec, as an older tool might leave)
"""

from __future__ import annotations

import io
import json
import sys

import modal
from modal.exception import NotFoundError


def app_exists(app: str) -> bool:
    try:
        modal.App.lookup(app, create_if_missing=False)
    except NotFoundError:
        return False
    return True


def volume_exists(app: str) -> bool:
    try:
        modal.Volume.from_name(f"{app}-state", create_if_missing=False).hydrate()
    except NotFoundError:
        return False
    return True


def put_stopped_record(app: str, host_id: str, name: str, with_spec: bool = True) -> None:
    record = {
        "format": 1, "host_id": host_id, "name": name, "user_tags": {"kept": "yes"},
        "spec": {"cpu": 1.0, "memory": 1.0} if with_spec else {}, "ssh_host_public_key": "", "status": "stopped",
        "sandbox_id": None, "ssh_host": None, "ssh_port": None, "stop_reason": "test",
    }
    volume = modal.Volume.from_name(f"{app}-state", create_if_missing=True)
    with volume.batch_upload(force=True) as batch:
        batch.put_file(io.BytesIO(json.dumps(record).encode()), f"/hosts/{host_id}.json")


def main(argv: list[str]) -> int:
    command = argv[0]
    if command == "app-exists":
        print(json.dumps(app_exists(argv[1])))
    elif command == "volume-exists":
        print(json.dumps(volume_exists(argv[1])))
    elif command == "put-stopped-record":
        put_stopped_record(argv[1], argv[2], argv[3], with_spec="--no-spec" not in argv[4:])
    else:
        print(f"unknown command {command}", file=sys.stderr)
        return 2
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
