#!/usr/bin/python
# Copyright (c) 2026, the mngr.modal authors
# GNU General Public License v3.0+ (see COPYING or https://www.gnu.org/licenses/gpl-3.0.txt)

from __future__ import annotations

DOCUMENTATION = r"""
module: modal_snapshot
short_description: Take and delete named filesystem snapshots of Modal hosts
version_added: 0.1.0
description:
  - Takes a filesystem snapshot of the running sandbox of the host O(host) (a host made by M(mngr.modal.modal_sandbox))
    with Modal's C(snapshot_filesystem), and records it under O(name) in the snapshot catalog on the app's state
    volume C(<app>-state) (one file per snapshot, C(snapshots/<host_id>/<name>.json)).
  - Snapshots are identified by name within a host, so the module is idempotent. A snapshot that already exists is
    left alone (C(changed=false)) unless O(force=true).
  - A snapshot can be restored with M(mngr.modal.modal_sandbox) (its C(snapshot) option, or O(state=started) after a
    stop, which restores the newest snapshot), and listed with M(mngr.modal.modal_snapshot_info).
  - O(state=absent) removes the snapshot from the catalog only. Modal keeps the image itself until it expires
    (see O(ttl)), because Modal offers no way to delete an image.
  - Taking a snapshot briefly disturbs the sandbox's tunnel, so afterwards the module logs in over SSH again
    (O(wait=true)) and re-pins the host key if the tunnel moved.
  - Run it on the controller (C(delegate_to=localhost)), where the hosts' key folders are.
extends_documentation_fragment:
  - mngr.modal.modal
  - mngr.modal.modal.attributes
attributes:
  check_mode:
    support: full
  diff_mode:
    support: full
  idempotent:
    support: full
options:
  host:
    description:
      - Name of the host to snapshot.
      - O(state=present) needs the host to be running; O(state=absent) also works for a stopped or destroyed host.
    type: str
    required: true
  name:
    description:
      - Name of the snapshot, unique per host.
      - Letters, digits, V(-), V(_) and V(.), starting with a letter or a digit, at most 128 characters (the name
        becomes a file name on the state volume, so V(/) and V(..) are refused). Names of the form C(im-...) are
        refused, because they could be mistaken for an image id.
      - Default for O(state=present) is C(snapshot-YYYY-MM-DD-HH-MM-SS) (UTC, the time of the run), with a C(-2),
        C(-3)... suffix if another snapshot of the host took that name in the same second. Because every run gets
        a new default name, give a name to make a task idempotent.
      - Required for O(state=absent).
    type: str
  state:
    description:
      - V(present) takes the snapshot if the host has none called O(name).
      - V(absent) removes the snapshot's catalog record. Modal keeps the image (see notes).
    type: str
    choices: [present, absent]
    default: present
  force:
    description:
      - With O(state=present), take a new snapshot even if one called O(name) exists, and replace its record.
    type: bool
    default: false
  ttl:
    description:
      - How long Modal keeps the snapshot image, in seconds. V(0) keeps it until the Modal account deletes it.
      - The default, 30 days, is Modal's own default. The expiry time is recorded in the catalog
        (RV(modal_snapshot.expires_at)) and a host is never restored from an expired snapshot.
    type: int
    default: 2592000
  snapshot_timeout:
    description:
      - Seconds to wait for Modal to finish the snapshot.
    type: int
    default: 300
  wait:
    description:
      - After taking a snapshot, log in over SSH again (strict host key checking) and fail if that does not succeed.
    type: bool
    default: true
  wait_timeout:
    description:
      - Seconds to wait for SSH after the snapshot when O(wait=true).
    type: int
    default: 120
notes:
  - Deleting a snapshot (O(state=absent)) forgets it; the image stays in Modal until its expiry time, and keeps
    costing storage until then. Note its RV(modal_snapshot.id) first if you may still need it.
  - If the controller dies after Modal took the snapshot but before the record was written, the image id is in
    a journal under O(key_dir) (C(.snapshot-journal/)); the next snapshot of the same host from this controller
    records it. A journal entry names the run that wrote it (host name, process id and start time), and is
    never recorded by another run while that run is alive; an entry written on another machine sharing
    O(key_dir) is left alone for an hour after it was written.
seealso:
  - module: mngr.modal.modal_snapshot_info
  - module: mngr.modal.modal_sandbox
  - name: Modal Sandbox snapshots
    description: The filesystem snapshots this module takes.
    link: https://modal.com/docs/guide/sandbox-snapshots
author:
  - The mngr.modal authors (@mngr-modal)
"""

EXAMPLES = r"""
- name: Snapshot a host before an upgrade (idempotent thanks to the name)
  mngr.modal.modal_snapshot:
    host: trainer
    name: before-upgrade
  delegate_to: localhost
  register: snap

- name: Show the image id
  ansible.builtin.debug:
    msg: "{{ snap.modal_snapshot.name }} is image {{ snap.modal_snapshot.id }}"

- name: A timestamped snapshot (a new one on every run)
  mngr.modal.modal_snapshot:
    host: trainer
  delegate_to: localhost

- name: Keep this one until it is deleted by hand
  mngr.modal.modal_snapshot:
    host: trainer
    name: golden
    ttl: 0
  delegate_to: localhost

- name: Replace an existing snapshot of that name
  mngr.modal.modal_snapshot:
    host: trainer
    name: nightly
    force: true
  delegate_to: localhost

- name: Forget a snapshot (Modal keeps the image until it expires)
  mngr.modal.modal_snapshot:
    host: trainer
    name: before-upgrade
    state: absent
  delegate_to: localhost
"""

RETURN = r"""
modal_snapshot:
  description:
    - The snapshot after the module ran. In check mode, for a snapshot not taken yet, RV(modal_snapshot.id) and
      RV(modal_snapshot.created_at) are V(null). For O(state=absent), the snapshot that was removed, or just its
      name and host when there was none.
  returned: always
  type: dict
  contains:
    name:
      description: Name of the snapshot.
      type: str
      sample: before-upgrade
    id:
      description: Id of the Modal image holding the snapshot.
      type: str
      sample: im-AbCdEf0123456789
    host:
      description: Name of the host.
      type: str
      sample: trainer
    host_id:
      description: Stable id of the host.
      type: str
      sample: host-3f2a0c4e5b6d47e8a9b0c1d2e3f4a5b6
    created_at:
      description: When the snapshot was taken (UTC, ISO 8601).
      type: str
      sample: "2026-01-31T12:00:00+00:00"
    sandbox_id:
      description: Id of the sandbox the snapshot was taken from.
      type: str
      sample: sb-0123456789abcdefghijkl
    kind:
      description: V(manual), or V(stop) for a snapshot taken when the host was stopped.
      type: str
      sample: manual
    expires_at:
      description: When Modal may delete the image (UTC, ISO 8601), or V(null) when it is kept indefinitely.
      type: str
      sample: "2026-03-02T12:00:00+00:00"
msg:
  description: For O(state=absent), what was removed, and that Modal keeps the image.
  returned: when O(state=absent)
  type: str
  sample: >-
    Removed snapshot before-upgrade of host trainer from the catalog. Modal keeps the image im-AbCdEf0123456789
    itself until it expires.
"""

from typing import Any

from ansible_collections.mngr.modal.plugins.module_utils._base import ModalModule, run_module
from ansible_collections.mngr.modal.plugins.module_utils._errors import ModalCollectionError
from ansible_collections.mngr.modal.plugins.module_utils._hosts import (
    Host,
    HostDirectory,
    find_host,
    validate_host_name,
)
from ansible_collections.mngr.modal.plugins.module_utils._journal import Journal, recover_journal, take_snapshot
from ansible_collections.mngr.modal.plugins.module_utils._keys import HAS_CRYPTOGRAPHY, KeyStore
from ansible_collections.mngr.modal.plugins.module_utils._live import ssh_tunnel_endpoint
from ansible_collections.mngr.modal.plugins.module_utils._records import STATUS_DESTROYED, STATUS_FAILED, HostRecords, host_records
from ansible_collections.mngr.modal.plugins.module_utils._snapshots import (
    DEFAULT_TTL_SECONDS,
    SnapshotCatalog,
    SnapshotError,
    SnapshotRecord,
    default_snapshot_name,
    validate_snapshot_name,
    volume_catalog,
)
from ansible_collections.mngr.modal.plugins.module_utils._ssh import SSH_PORT, SshNotReady, sandbox_liveness, wait_for_ssh
from ansible_collections.mngr.modal.plugins.module_utils._tags import encode_sandbox_tags, format_endpoint

IMAGE_KEPT = (
    "Modal keeps the image {image_id} itself{until}: Modal has no way to delete an image. It can still be restored "
    "by id (modal_sandbox snapshot: {image_id}) while it exists."
)


class ModalSnapshotModule(ModalModule):
    """Decides whether a snapshot must be taken or forgotten, then (outside check mode) does it."""

    represent = "modal_snapshot"
    options = {
        "host": {"type": "str", "required": True},
        "name": {"type": "str"},
        "state": {"type": "str", "default": "present", "choices": ["present", "absent"]},
        "force": {"type": "bool", "default": False},
        "ttl": {"type": "int", "default": DEFAULT_TTL_SECONDS},
        "snapshot_timeout": {"type": "int", "default": 300},
        "wait": {"type": "bool", "default": True},
        "wait_timeout": {"type": "int", "default": 120},
    }
    reports_diff = True
    required_libraries = {"cryptography": HAS_CRYPTOGRAPHY}

    def validate_inputs(self) -> None:
        params = self.params
        validate_host_name(params["host"], "host")
        if params["name"] is not None:
            validate_snapshot_name(params["name"], "name")
        elif params["state"] == "absent":
            raise SnapshotError("name is required with state=absent: say which snapshot to remove")
        if params["ttl"] < 0:
            raise SnapshotError(f"ttl must be 0 (keep the image) or a number of seconds, got {params['ttl']}")
        if params["snapshot_timeout"] <= 0 or params["wait_timeout"] <= 0:
            raise SnapshotError("snapshot_timeout and wait_timeout must be positive numbers of seconds")

    def execute(self) -> dict[str, Any]:
        return self.absent() if self.params["state"] == "absent" else self.present()

    # --- finding the host ------------------------------------------------------------------------------

    def find_host(self, include_destroyed: bool) -> tuple[Host, HostRecords]:
        """The host named by the ``host`` option, with the store its record lives in; fails when unknown."""
        session = self.session
        host_name = self.params["host"]
        app = session.app(create_if_missing=False)
        if app is None:
            raise ModalCollectionError(f"there is no host named {host_name}: the Modal app {session.app_name} does not "
                                       "exist (check the app and environment options)")
        store = host_records(session, create=False)
        host = find_host(HostDirectory(session, app, store).hosts(), host_name)
        if host is None and include_destroyed:
            gone = [r for r in store.list() if r.name == host_name and r.status in (STATUS_DESTROYED, STATUS_FAILED)]
            if gone:
                record = max(gone, key=lambda r: r.updated_at or "")
                host = Host(record.host_id, record.name, dict(record.user_tags), record=record)
        if host is None:
            raise ModalCollectionError(f"there is no host named {host_name} in the Modal app {session.app_name}; "
                                       "mngr.modal.modal_sandbox_info lists the hosts")
        return host, store

    def catalog(self, create: bool) -> SnapshotCatalog:
        return volume_catalog(self.session, create=create)

    def flush_catalog_warnings(self, catalog: SnapshotCatalog) -> None:
        self.warnings.extend(catalog.warnings)
        catalog.warnings.clear()

    # --- present ---------------------------------------------------------------------------------------

    def present(self) -> dict[str, Any]:
        params = self.params
        host, store = self.find_host(include_destroyed=False)
        catalog = self.catalog(create=not self.check_mode)
        # Only a named snapshot can already exist: a run without a name always takes a new snapshot, even
        # when another run recorded the default name of this second (this one then gets a -2, -3... suffix).
        existing = catalog.get(host.host_id, params["name"]) if params["name"] else None
        self.flush_catalog_warnings(catalog)
        if existing is not None and not params["force"]:
            self.diff["before"] = self.diff["after"] = existing.result(host.name)
            return existing.result(host.name)
        if host.sandbox is None:
            raise ModalCollectionError(
                f"host {host.name} is stopped (it has no running sandbox), so there is nothing to snapshot. "
                "Start it with mngr.modal.modal_sandbox (state: started) first; its existing snapshots are "
                "listed by mngr.modal.modal_snapshot_info."
            )
        self.changed = True
        self.diff["before"] = existing.result(host.name) if existing else {}
        planned = {"name": params["name"] or default_snapshot_name(), "id": None, "host": host.name, "host_id": host.host_id, "created_at": None,
                   "sandbox_id": host.sandbox.sandbox_id, "kind": "manual", "expires_at": None}
        if self.check_mode:
            self.diff["after"] = planned
            return planned

        journal = Journal(self.session.key_dir)
        for recovered in recover_journal(catalog, journal, host.host_id):
            self.warnings.append(f"recorded snapshot {recovered.name} (image {recovered.image_id}) that an "
                                 "interrupted earlier run had taken but not recorded")
        spec = host.record.spec if host.record else {}
        record, written = take_snapshot(self.session.call, catalog, journal, host.sandbox.handle, host.host_id,
                                        host.name, spec, name=params["name"], ttl=params["ttl"],
                                        timeout=params["snapshot_timeout"], overwrite=params["force"])
        self.flush_catalog_warnings(catalog)
        self.changed = written
        result = record.result(host.name)
        self.diff["after"] = result
        if params["wait"]:
            self.check_ssh(host, store, result)
        return result

    def check_ssh(self, host: Host, store: HostRecords, result: dict[str, Any]) -> None:
        """Log in again after the snapshot; follow the tunnel if it moved (tags, record and pinned line)."""
        keys = KeyStore(self.session.key_dir, self.session.app_name, self.session.environment)
        folder = keys.find(host.host_id, host.name, (host.record.previous_name if host.record else None,))
        if folder is None:
            self.warnings.append(
                f"SSH to host {host.name} was not checked after the snapshot: its keys are not in "
                f"{self.session.key_dir} (the host was created from another controller)"
            )
            return
        handle = host.sandbox.handle
        endpoint = ssh_tunnel_endpoint(self.session.call, handle, self.params["wait_timeout"])
        if endpoint is None:
            self.fail_after_snapshot(host, result, f"the sandbox no longer has a tunnel for port {SSH_PORT}")
        if endpoint != host.ssh_endpoint:
            self.follow_moved_tunnel(host, store, endpoint)
        folder.pin(*endpoint)
        try:
            wait_for_ssh(endpoint[0], endpoint[1], folder.client_key, folder.known_hosts, self.params["wait_timeout"],
                         sandbox_liveness(handle))
        except SshNotReady as exc:
            self.fail_after_snapshot(host, result, f"{exc} ({exc.last_error})" if exc.last_error else str(exc))

    def follow_moved_tunnel(self, host: Host, store: HostRecords, endpoint: tuple[str, int]) -> None:
        if host.ssh_endpoint is not None:
            self.warnings.append(
                f"the SSH tunnel of host {host.name} moved from {format_endpoint(*host.ssh_endpoint)} to "
                f"{format_endpoint(*endpoint)} during the snapshot; its tags, record and pinned known_hosts follow"
            )
        self.session.call(host.sandbox.handle.set_tags,
                          encode_sandbox_tags(host.host_id, host.name, host.user_tags, format_endpoint(*endpoint)))
        if host.record is not None and host.record.sandbox_id == host.sandbox.sandbox_id:
            host.record.follow_tunnel(endpoint)
            store.put(host.record)
        host.ssh_endpoint = endpoint

    def fail_after_snapshot(self, host: Host, result: dict[str, Any], reason: str) -> None:
        raise ModalCollectionError(
            f"snapshot {result['name']} of host {host.name} was taken and recorded (image {result['id']}), but "
            f"SSH to the host does not work afterwards: {reason}. Stopping and starting the host with "
            "mngr.modal.modal_sandbox gives it a new sandbox and tunnel.",
            changed=self.changed, modal_snapshot=result,
        )

    # --- absent ----------------------------------------------------------------------------------------

    def absent(self) -> dict[str, Any]:
        name = self.params["name"]
        host, _store = self.find_host(include_destroyed=True)
        catalog = self.catalog(create=False)
        existing = catalog.get(host.host_id, name)
        self.flush_catalog_warnings(catalog)
        if existing is None:
            return {"name": name, "id": None, "host": host.name, "host_id": host.host_id, "created_at": None,
                    "sandbox_id": None, "kind": None, "expires_at": None}
        self.changed = True
        self.diff["before"] = existing.result(host.name)
        self.diff["after"] = {}
        if not self.check_mode:
            catalog.remove(host.host_id, name)
        self.extra_results["msg"] = (
            f"{'Would remove' if self.check_mode else 'Removed'} snapshot {name} of host {host.name} from the catalog. "
            + self.image_kept(existing)
        )
        return existing.result(host.name)

    @staticmethod
    def image_kept(record: SnapshotRecord) -> str:
        until = f" until it expires at {record.expires_at}" if record.expires_at else ""
        return IMAGE_KEPT.format(image_id=record.image_id, until=until)


def main() -> None:
    run_module(ModalSnapshotModule)


if __name__ == "__main__":
    main()
