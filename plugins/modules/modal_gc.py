#!/usr/bin/python
# Copyright (c) 2026, the mngr.modal authors
# GNU General Public License v3.0+ (see COPYING or https://www.gnu.org/licenses/gpl-3.0.txt)

from __future__ import annotations

DOCUMENTATION = r"""
module: modal_gc
short_description: Find and remove the Modal sandboxes of an app that cost money for nothing
version_added: 0.1.0
description:
  - Looks at every running sandbox of the app O(app) and every host record on its state volume, and finds
  - I(orphans), sandboxes that carry the collection's identity tags (C(mngr_host_id), C(mngr_host_name)) but whose
    host has no live record (none, or one that says destroyed or failed), as a run that crashed between creating a
    sandbox and recording it leaves behind;
  - I(duplicates), more than one running sandbox for one host (the one its record names is kept, else the newest);
  - I(stale records), host records that say running although their sandbox is gone (a timeout, a crash, a terminate
    from elsewhere), which are marked stopped, with the reason, so that listings and the next start see the truth;
  - when asked, hosts older than O(older_than) or idle for O(idle_for), which are destroyed as
    M(mngr.modal.modal_sandbox) O(mngr.modal.modal_sandbox#module:state=absent) destroys a host (sandbox
    terminated, record marked destroyed, name freed, key folder removed).
  - Sandboxes without the collection's identity tags are never touched, whatever their app.
  - In check mode it only reports what it would do. Otherwise it terminates and fixes, and reports what it did
    and the resources it freed.
  - Run it on the controller that created the hosts, so that their key folders under O(key_dir) are removed too.
extends_documentation_fragment:
  - mngr.modal.modal
  - mngr.modal.modal.attributes
attributes:
  check_mode:
    support: full
  diff_mode:
    support: none
  idempotent:
    support: full
    details:
      - A second run finds nothing, unless hosts aged past O(older_than) or O(idle_for) meanwhile.
options:
  older_than:
    description:
      - Destroy running hosts whose sandbox was created longer ago than this, as C(mngr cleanup --older-than).
      - A duration, in seconds (V(3600)) or with units V(s), V(m), V(h), V(d), V(w) (V(90m), V(12h), V(7d), V(1d12h)).
      - When not set, no host is destroyed for its age.
    type: raw
  idle_for:
    description:
      - Destroy running hosts where no new process has started for this long (no SSH login, no Ansible task, no
        command), as C(mngr cleanup --idle-for). A duration, as for O(older_than).
      - Reading it costs one command per running host, run inside its sandbox (at most O(concurrency) at once).
      - A long job that started before the limit and starts no new process counts as idle.
    type: raw
  grace_period:
    description:
      - Sandboxes younger than this are never counted as orphans or duplicates, because a create in progress has a
        sandbox before it has a record (the record is written once SSH answers). A duration, as for O(older_than).
    type: raw
    default: 15m
  concurrency:
    description:
      - How many sandboxes are probed or terminated at the same time, at least 1.
    type: int
    default: 16
notes:
  - A nightly run keeps an account clean; see the collection's C(docs/fleets.md) for a recipe.
seealso:
  - module: mngr.modal.modal_fleet
  - module: mngr.modal.modal_sandbox
  - module: mngr.modal.modal_sandbox_info
author:
  - The mngr.modal authors (@mngr-modal)
"""

EXAMPLES = r"""
- name: What would be removed (changes nothing)
  mngr.modal.modal_gc:
  check_mode: true
  delegate_to: localhost
  register: garbage

- name: Remove orphans and duplicates, fix stale records, destroy hosts idle for 2 hours or older than 7 days
  mngr.modal.modal_gc:
    idle_for: 2h
    older_than: 7d
  delegate_to: localhost
  register: gc

- name: Say what was freed
  ansible.builtin.debug:
    msg: "{{ gc.modal_gc.freed.sandboxes }} sandboxes terminated"
"""

RETURN = r"""
modal_gc:
  description: What was found, and done (in check mode, what would be done).
  returned: always
  type: dict
  contains:
    orphans:
      description:
        - Sandboxes with the collection's identity tags whose host has no live record; terminated.
        - Each with C(host_id), C(name), C(sandbox_id), C(reason) and C(age_seconds) (V(null) when unknown).
      type: list
      elements: dict
      sample: [{host_id: host-3f2a..., name: web-3, sandbox_id: sb-abc, reason: "orphan: no host record", age_seconds: 5400}]
    duplicates:
      description: Extra sandboxes of a host that has another one; terminated. Same keys as RV(modal_gc.orphans).
      type: list
      elements: dict
    stale_records:
      description: Host records that said running although their sandbox is gone; marked stopped. Same keys.
      type: list
      elements: dict
    expired:
      description: Running hosts older than O(older_than) or idle for O(idle_for); destroyed. Same keys.
      type: list
      elements: dict
    freed:
      description:
        - What the terminated sandboxes had requested, summed. C(cpu), C(memory_gb) and C(gpus) count only the
          sandboxes whose host record says (an orphan without a record is counted in C(sandboxes) only).
      type: dict
      sample: {sandboxes: 3, cpu: 3.0, memory_gb: 3.0, gpus: 0}
"""

import time
from typing import Any

from ansible_collections.mngr.modal.plugins.module_utils._base import ModalModule, run_module
from ansible_collections.mngr.modal.plugins.module_utils._build_args import gpu_type
from ansible_collections.mngr.modal.plugins.module_utils._client import ModalError, is_not_found
from ansible_collections.mngr.modal.plugins.module_utils._errors import HostError
from ansible_collections.mngr.modal.plugins.module_utils._gc import (
    IDLE_PROBE_SCRIPT,
    Found,
    Garbage,
    find_garbage,
    idle_seconds,
    parse_duration,
)
from ansible_collections.mngr.modal.plugins.module_utils._hosts import HostDirectory
from ansible_collections.mngr.modal.plugins.module_utils._keys import LOCK_TIMEOUT_SECONDS
from ansible_collections.mngr.modal.plugins.module_utils._launch import HostLauncher
from ansible_collections.mngr.modal.plugins.module_utils._live import ListedSandbox, run_bounded
from ansible_collections.mngr.modal.plugins.module_utils._records import STATUS_RUNNING, HostRecord, host_records
from ansible_collections.mngr.modal.plugins.module_utils._reservations import NameReservations
from ansible_collections.mngr.modal.plugins.module_utils._tags import decode_sandbox_tags


class ModalGcModule(ModalModule):
    """Finds orphans, duplicates, stale records and expired hosts; outside check mode, removes or fixes them."""

    represent = "modal_gc"
    options = {
        "older_than": {"type": "raw"},
        "idle_for": {"type": "raw"},
        "grace_period": {"type": "raw", "default": "15m"},
        "concurrency": {"type": "int", "default": 16},
    }

    def __init__(self, module: Any) -> None:
        super().__init__(module)
        self.older_than: float | None = None
        self.idle_for: float | None = None
        self.grace = 0.0

    def validate_inputs(self) -> None:
        params = self.params
        self.older_than = parse_duration(params["older_than"], "older_than")
        self.idle_for = parse_duration(params["idle_for"], "idle_for")
        self.grace = parse_duration(params["grace_period"], "grace_period") or 0.0
        if params["concurrency"] < 1:
            raise HostError(f"concurrency must be at least 1, got {params['concurrency']}")

    def execute(self) -> dict[str, Any]:
        session = self.session
        app = session.app(create_if_missing=False)
        if app is None:
            return _result(Garbage(), {"sandboxes": 0, "cpu": 0.0, "memory_gb": 0.0, "gpus": 0})
        store = host_records(session, create=False)
        directory = HostDirectory(session, app, store)
        live = directory.live_sandboxes()
        records = store.list()
        idle = self._idle_times(live) if self.idle_for is not None else {}
        garbage = find_garbage(live, records, time.time(), self.grace, self.older_than, idle, self.idle_for)
        self.changed = not garbage.empty()
        by_sandbox = {sandbox.sandbox_id: sandbox for sandbox in live}
        by_host = {record.host_id: record for record in records}
        freed = _freed(garbage.orphans + garbage.duplicates + garbage.expired, by_host)
        if self.check_mode or not self.changed:
            return _result(garbage, freed)
        launcher = HostLauncher(session, directory, NameReservations(store.files), False, 1, None, self.warnings)
        hosts = {host.host_id: host for host in directory.hosts()}

        def act(item: tuple[str, Found]) -> None:
            kind, found = item
            if kind == "expired":
                launcher.destroy(hosts[found.host_id])
            else:
                self._terminate(by_sandbox[found.sandbox_id])
                if kind == "orphan":
                    self._forget_orphan(launcher, found, by_host.get(found.host_id))

        work = ([("orphan", found) for found in garbage.orphans] + [("duplicate", found) for found in garbage.duplicates]
                + [("expired", found) for found in garbage.expired])
        outcomes = run_bounded(act, work, self.params["concurrency"])
        for record_found in garbage.stale_records:
            record = by_host[record_found.host_id]
            record.mark_stopped("its sandbox ended without a stop (timeout, crash or a terminate from elsewhere); "
                                "found by mngr.modal.modal_gc")
            store.put(record)
        errors = [f"{found.sandbox_id} ({found.name}): {error}" for (_kind, found), _r, error in outcomes if error]
        if errors:
            raise HostError(f"modal_gc could not remove everything it found: {'; '.join(errors)}. Run it again",
                            modal_gc=_result(garbage, freed))
        return _result(garbage, freed)

    def _terminate(self, sandbox: ListedSandbox) -> None:
        try:
            self.session.call(sandbox.handle.terminate)
        except ModalError as exc:
            if not is_not_found(exc):  # ended meanwhile: nothing left to free
                raise

    def _forget_orphan(self, launcher: HostLauncher, found: Found, record: HostRecord | None) -> None:
        """An orphan's host never finished its create (or was destroyed): free its name and keys when nothing runs."""
        if launcher.directory.tagged_sandbox_ids(found.host_id):
            return  # another sandbox of the host is still running (younger than the grace period)
        launcher.release_names(found.host_id, found.name)
        folder = launcher.keys.find(found.host_id, found.name)
        if folder is not None and (record is None or record.status != STATUS_RUNNING):
            with folder.locked(LOCK_TIMEOUT_SECONDS):
                folder.remove(found.host_id)

    def _idle_times(self, live: list[ListedSandbox]) -> dict[str, float]:
        """Seconds since each host sandbox's newest process started; sandboxes that cannot say are left out."""
        ours = [sandbox for sandbox in live if decode_sandbox_tags(sandbox.tags) is not None]

        def probe(sandbox: ListedSandbox) -> float | None:
            process = self.session.call(sandbox.handle.exec, "sh", "-c", IDLE_PROBE_SCRIPT)
            self.session.call(process.wait)
            return idle_seconds(self.session.call(process.stdout.read))

        idle = {}
        for sandbox, seconds, error in run_bounded(probe, ours, self.params["concurrency"]):
            if error is not None or seconds is None:
                self.warnings.append(f"could not read how long sandbox {sandbox.sandbox_id} has been idle"
                                     + (f": {error}" if error else "") + "; it is not destroyed for idleness")
                continue
            idle[sandbox.sandbox_id] = seconds
        return idle


def _freed(found: list[Found], records: dict[str, HostRecord]) -> dict[str, Any]:
    freed: dict[str, Any] = {"sandboxes": len(found), "cpu": 0.0, "memory_gb": 0.0, "gpus": 0}
    for item in found:
        record = records.get(item.host_id)
        spec = record.spec if record is not None and record.spec else None
        if not spec:
            continue
        freed["cpu"] += float(spec.get("cpu") or 0)
        freed["memory_gb"] += float(spec.get("memory") or 0)
        if gpu_type(spec):
            freed["gpus"] += int(spec["gpu"].split(":", 1)[1]) if ":" in spec["gpu"] else 1
    return freed


def _result(garbage: Garbage, freed: dict[str, Any]) -> dict[str, Any]:
    return {
        "orphans": [found.result() for found in garbage.orphans],
        "duplicates": [found.result() for found in garbage.duplicates],
        "stale_records": [found.result() for found in garbage.stale_records],
        "expired": [found.result() for found in garbage.expired],
        "freed": freed,
    }


def main() -> None:
    run_module(ModalGcModule)


if __name__ == "__main__":
    main()
