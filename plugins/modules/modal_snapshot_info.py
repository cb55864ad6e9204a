#!/usr/bin/python
# Copyright (c) 2026, the mngr.modal authors
# GNU General Public License v3.0+ (see COPYING or https://www.gnu.org/licenses/gpl-3.0.txt)

from __future__ import annotations

DOCUMENTATION = r"""
module: modal_snapshot_info
short_description: List the filesystem snapshots of Modal hosts
version_added: 0.1.0
description:
  - Lists the snapshots taken with M(mngr.modal.modal_snapshot), and by M(mngr.modal.modal_sandbox) when it stops a
    host, newest first. Those of the host O(host), or of every host of the app O(app).
  - The list comes from the snapshot catalog on the app's state volume C(<app>-state), so it works for a host that
    has no running sandbox, for hosts that were destroyed while their snapshots were kept, and from any controller
    that uses the same Modal account (no SSH keys needed).
  - Reads only, and creates neither the app nor its state volume when they do not exist (the list is then empty).
  - A record on the volume that cannot be read is skipped with a warning that names its path.
extends_documentation_fragment:
  - mngr.modal.modal
  - mngr.modal.modal.attributes
  - mngr.modal.modal.info_module
options:
  host:
    description:
      - Only the snapshots of the host with this name. When unset, the snapshots of every host.
      - An unknown host gives an empty list.
    type: str
  name:
    description:
      - Only the snapshot with this name (at most one per host).
    type: str
author:
  - The mngr.modal authors (@mngr-modal)
seealso:
  - module: mngr.modal.modal_snapshot
  - module: mngr.modal.modal_sandbox
  - name: Modal Sandbox snapshots
    description: The filesystem snapshots this module lists.
    link: https://modal.com/docs/guide/sandbox-snapshots
"""

EXAMPLES = r"""
- name: Snapshots of one host, newest first
  mngr.modal.modal_snapshot_info:
    host: trainer
  delegate_to: localhost
  register: snaps

- name: Show the newest one
  ansible.builtin.debug:
    msg: "{{ snaps.modal_snapshot_info[0].name }} ({{ snaps.modal_snapshot_info[0].id }})"
  when: snaps.modal_snapshot_info | length > 0

- name: Every snapshot of every host of the app
  mngr.modal.modal_snapshot_info:
  delegate_to: localhost
  register: all_snaps

- name: Does host trainer have a snapshot called before-upgrade?
  mngr.modal.modal_snapshot_info:
    host: trainer
    name: before-upgrade
  delegate_to: localhost
  register: before_upgrade
"""

RETURN = r"""
modal_snapshot_info:
  description: The snapshots found, newest first.
  returned: always
  type: list
  elements: dict
  contains:
    name:
      description: Name of the snapshot (unique per host).
      type: str
      sample: snapshot-2026-01-31-12-00-00
    id:
      description: Id of the Modal image holding the snapshot; what O(mngr.modal.modal_sandbox#module:snapshot) accepts.
      type: str
      sample: im-AbCdEf0123456789
    host:
      description: Current name of the host the snapshot was taken of (its name at the time for a destroyed host).
      type: str
      sample: trainer
    host_id:
      description: Stable id of that host.
      type: str
      sample: host-3f2a0c4e5b6d47e8a9b0c1d2e3f4a5b6
    host_state:
      description:
        - The host's status as its record on the state volume has it. V(running), V(stopped), V(failed), or
          V(destroyed) (the host is gone, its snapshots were kept).
      type: str
      sample: stopped
    created_at:
      description: When the snapshot was taken (UTC, ISO 8601).
      type: str
      sample: "2026-01-31T12:00:00+00:00"
    sandbox_id:
      description: Id of the sandbox the snapshot was taken from.
      type: str
      sample: sb-0123456789abcdefghijkl
    kind:
      description: V(manual) (taken with M(mngr.modal.modal_snapshot)) or V(stop) (taken when the host was stopped).
      type: str
      sample: manual
    expires_at:
      description: When Modal may delete the image (UTC, ISO 8601), or V(null) when it is kept indefinitely.
      type: str
      sample: "2026-03-02T12:00:00+00:00"
    expired:
      description: Whether RV(modal_snapshot_info[].expires_at) has passed; an expired snapshot can no longer be restored.
      type: bool
      sample: false
"""

from typing import Any

from ansible_collections.mngr.modal.plugins.module_utils._base import ModalModule, run_module
from ansible_collections.mngr.modal.plugins.module_utils._client import ModalSession
from ansible_collections.mngr.modal.plugins.module_utils._hosts import (
    HostDirectory,
    find_host,
    validate_host_name,
)
from ansible_collections.mngr.modal.plugins.module_utils._records import (
    STATUS_DESTROYED,
    STATUS_FAILED,
    HostRecord,
    HostRecords,
    host_records,
)
from ansible_collections.mngr.modal.plugins.module_utils._snapshots import (
    SnapshotRecord,
    validate_snapshot_name,
    volume_catalog,
)


def host_views(records: list[HostRecord]) -> dict[str, tuple[str, str]]:
    """host_id -> (current name, state) from host records; a destroyed host keeps its last name."""
    return {
        record.host_id: (record.name, "destroyed" if record.status == STATUS_DESTROYED else record.status)
        for record in records
    }


def snapshot_item(record: SnapshotRecord, views: dict[str, tuple[str, str]]) -> dict[str, Any]:
    name, state = views.get(record.host_id, (record.host_name, "unknown"))
    item = record.result(name)
    item["host_state"] = state
    item["expired"] = record.expired()
    return item


class ModalSnapshotInfoModule(ModalModule):
    """Reads the catalog; never creates anything."""

    represent = "modal_snapshot_info"
    options = {
        "host": {"type": "str"},
        "name": {"type": "str"},
    }

    # The filters, once validated.
    host_filter: str | None = None
    name_filter: str | None = None

    def validate_inputs(self) -> None:
        host, name = self.params["host"], self.params["name"]
        self.host_filter = validate_host_name(host, "host") if host is not None else None
        self.name_filter = validate_snapshot_name(name, "name") if name is not None else None

    def execute(self) -> list[dict[str, Any]]:
        return self.list_snapshots(self.session, self.host_filter, self.name_filter, self.warnings)

    def list_snapshots(self, session: ModalSession, host_name: str | None, name: str | None,
                       warnings: list[str]) -> list[dict[str, Any]]:
        app = session.app(create_if_missing=False)
        if app is None:
            return []
        records = host_records(session, create=False).list()
        views = host_views(records)
        host_ids: list[str] | None = None
        if host_name is not None:
            host_ids = self.resolve_host_ids(session, app, records, host_name, views)
            if not host_ids:
                return []
        catalog = volume_catalog(session, create=False)
        if host_ids is None:
            found = catalog.list()
        else:
            found = [record for host_id in host_ids for record in catalog.list(host_id)]
        warnings.extend(catalog.warnings)
        if name is not None:
            found = [record for record in found if record.name == name]
        found.sort(key=lambda r: (r.created_at or "", r.name), reverse=True)
        return [snapshot_item(record, views) for record in found]

    @staticmethod
    def resolve_host_ids(session: ModalSession, app: Any, records: list[HostRecord], host_name: str,
                         views: dict[str, tuple[str, str]]) -> list[str]:
        """Ids of the host called ``host_name``: a live or stopped host first, else destroyed hosts of that name.

        Host records answer without listing sandboxes; only a host known from its sandbox tags alone (no record)
        needs the list of live sandboxes.
        """
        current = [r for r in records if r.status not in (STATUS_DESTROYED, STATUS_FAILED)]
        named = [r.host_id for r in current if r.name == host_name]
        if named:
            return named[:1]
        directory = HostDirectory(session, app, HostRecords.holding(current))
        host = find_host(directory.hosts(), host_name)
        if host is not None:
            views.setdefault(host.host_id, (host.name, host.state))
            return [host.host_id]
        return [r.host_id for r in records if r.name == host_name]


def main() -> None:
    run_module(ModalSnapshotInfoModule)


if __name__ == "__main__":
    main()
