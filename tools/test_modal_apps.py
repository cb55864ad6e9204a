#!/usr/bin/env python3
# Copyright (c) 2026, the mngr.modal authors
# GNU General Public License v3.0+ (see COPYING or https://www.gnu.org/licenses/gpl-3.0.txt)
"""Helper of tools/test_modal.sh: the Modal settings to test with, and the apps and state volumes of one run.

  test_modal_apps.py settings             print MODAL_SERVER_URL, MODAL_TOKEN_ID, MODAL_TOKEN_SECRET as shell
                                          exports, resolved as the Modal SDK does (environment, then the active
                                          profile of the Modal config file); exit 1 naming what is missing
  test_modal_apps.py apps RUN_APP DOCS    print, one a line, every app a run named RUN_APP may have made: one per
                                          integration target, one per guide in DOCS, and every app whose state
                                          volume (<app>-state) starts with RUN_APP-
  test_modal_apps.py delete-volumes APP...  delete the state volume of each app (missing ones are fine)
"""

from __future__ import annotations

import os
import re
import shlex
import sys

# The suffix each integration target adds to the run's app name (modal_test_app).
TARGET_SUFFIXES = ("sandbox", "info", "snapshot", "inventory", "runbooks", "ready")
STATE_VOLUME_SUFFIX = "-state"


def settings() -> int:
    from modal.config import config  # pylint: disable=import-outside-toplevel

    values = {
        "MODAL_SERVER_URL": config.get("server_url"),
        "MODAL_TOKEN_ID": config.get("token_id"),
        "MODAL_TOKEN_SECRET": config.get("token_secret"),
    }
    missing = [name for name, value in values.items() if not value]
    if missing:
        print(f"no {', '.join(missing)}: set them in the environment or run `modal token set` for a profile",
              file=sys.stderr)
        return 1
    for name, value in values.items():
        print(f"export {name}={shlex.quote(str(value))}")
    return 0


def guide_stem(file_name: str) -> str:
    """The app suffix the docs_examples target gives a guide (run_examples.py: <run app>-docs-<stem>)."""
    return re.sub(r"[^a-z0-9-]+", "-", os.path.splitext(file_name)[0].lower()).strip("-")


def apps(run_app: str, docs: str) -> int:
    import modal  # pylint: disable=import-outside-toplevel

    names = [f"{run_app}-{suffix}" for suffix in TARGET_SUFFIXES]
    names += [f"{run_app}-docs-{guide_stem(name)}" for name in sorted(os.listdir(docs)) if name.endswith(".md")]
    for volume in modal.Volume.objects.list():
        label = volume.name or ""
        if label.startswith(run_app + "-") and label.endswith(STATE_VOLUME_SUFFIX):
            names.append(label[:-len(STATE_VOLUME_SUFFIX)])
    print("\n".join(dict.fromkeys(names)))
    return 0


def delete_volumes(app_names: list[str]) -> int:
    import modal  # pylint: disable=import-outside-toplevel

    for app in app_names:
        modal.Volume.objects.delete(app + STATE_VOLUME_SUFFIX, allow_missing=True)
    return 0


def main(argv: list[str]) -> int:
    if argv[:1] == ["settings"]:
        return settings()
    if argv[:1] == ["apps"] and len(argv) == 3:
        return apps(argv[1], argv[2])
    if argv[:1] == ["delete-volumes"]:
        return delete_volumes(argv[1:])
    print(__doc__, file=sys.stderr)
    return 2


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
