# Copyright (c) 2026, the mngr.modal authors
# GNU General Public License v3.0+ (see COPYING or https://www.gnu.org/licenses/gpl-3.0.txt)
"""Plant what modal_gc must find, straight through the Modal SDK, as a crashed run or another tool leaves it.

    plant.py plant APP DUPLICATE_OF_HOST_ID DUPLICATE_OF_NAME   prints {"orphan": id, "duplicate": id, "foreign": id}
    plant.py running PLANTED_JSON KEY                           fails unless that sandbox still runs
    plant.py terminate PLANTED_JSON KEY                         terminates it

``plant`` creates, in APP: an orphan (a sandbox with the collection's identity tags for a host that has no record),
a duplicate (a second sandbox with the identity tags of an existing host) and a sandbox without our tags, which
modal_gc must never touch. Credentials and server come from the environment.
"""

from __future__ import annotations

import json
import sys
import uuid

import modal


def plant(app_name: str, duplicate_host_id: str, duplicate_name: str) -> None:
    app = modal.App.lookup(app_name, create_if_missing=True)
    image = modal.Image.from_registry("debian:bookworm-slim")

    def sandbox(tags: dict[str, str]) -> str:
        created = modal.Sandbox.create("sleep", "infinity", app=app, image=image, timeout=900)
        if tags:
            created.set_tags(tags)
        return created.object_id

    print(json.dumps({
        "orphan": sandbox({"mngr_host_id": "host-" + uuid.uuid4().hex, "mngr_host_name": "gc-orphan"}),
        "duplicate": sandbox({"mngr_host_id": duplicate_host_id, "mngr_host_name": duplicate_name}),
        "foreign": sandbox({"owner": "someone-else"}),
    }))


def planted(path: str, key: str) -> modal.Sandbox:
    with open(path, encoding="utf-8") as handle:
        return modal.Sandbox.from_id(json.load(handle)[key])


def main() -> None:
    command, *args = sys.argv[1:]
    if command == "plant":
        plant(*args)
    elif command == "running":
        code = planted(*args).poll()
        if code is not None:
            sys.exit(f"sandbox {args[1]} ended (exit code {code}); it should still run")
        print(f"sandbox {args[1]} still runs")
    elif command == "terminate":
        planted(*args).terminate()
    else:
        sys.exit(f"unknown command {command}")


if __name__ == "__main__":
    main()
