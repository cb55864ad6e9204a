# Copyright (c) 2026, the mngr.modal authors
# GNU General Public License v3.0+ (see COPYING or https://www.gnu.org/licenses/gpl-3.0.txt)

# This module is private to the mngr.modal collection: its interface may change at any time,
# do not use it from outside the collection.

"""Launching and destroying one host, in the crash-safe order, for every module that creates hosts.

:mod:`._provision` has the raw Modal steps; :class:`HostLauncher` takes them holding what makes them safe: the
host's key folder lock (runs on one controller take turns on a host) and its name reservation (one host per
name across runs). A launch writes keys, the record, creates the sandbox, bootstraps SSH, sets the tags with the
tunnel and stores the record as running. Any failure terminates every sandbox of the host, marks the record
failed and removes new keys, so a failed launch leaves no orphan. ``modal_sandbox`` launches one host;
``modal_fleet`` launches many from one process, each in its own worker thread (the methods share no mutable
state besides the thread-safe SDK client and the caller's ``warnings`` list).
"""

from __future__ import annotations

import time
from dataclasses import dataclass, field
from typing import Any

from ansible_collections.mngr.modal.plugins.module_utils._client import ModalError, is_not_found
from ansible_collections.mngr.modal.plugins.module_utils._errors import HostError
from ansible_collections.mngr.modal.plugins.module_utils._hosts import Host, HostDirectory, host_result
from ansible_collections.mngr.modal.plugins.module_utils._keys import (
    HOST_KEY,
    LOCK_TIMEOUT_SECONDS,
    KeyFolder,
    KeyFolderBusy,
    KeyStore,
)
from ansible_collections.mngr.modal.plugins.module_utils._provision import (
    CreateFailure,
    bootstrap,
    create_sandbox,
    seconds_since,
)
from ansible_collections.mngr.modal.plugins.module_utils._records import STATUS_RUNNING, HostRecord
from ansible_collections.mngr.modal.plugins.module_utils._reservations import (
    HostEvidence,
    NameReservations,
    Reservation,
    evidence_from,
    is_stale,
)
from ansible_collections.mngr.modal.plugins.module_utils._snapshots import SnapshotError, SnapshotRecord
from ansible_collections.mngr.modal.plugins.module_utils._ssh import ssh_enabled
from ansible_collections.mngr.modal.plugins.module_utils._tags import encode_sandbox_tags, format_endpoint


class NameTaken(Exception):
    """Another run reserved the name first; ``holder`` is its reservation. Nothing was created."""

    def __init__(self, holder: Reservation) -> None:
        super().__init__(holder.describe())
        self.holder = holder


@dataclass
class Launch:
    """What one launch makes: a sandbox for host ``name`` (``host_id``) from ``image``.

    ``existing`` is a host that had no sandbox (a start), with its key folder ``folder``; ``source`` the snapshot
    the image came from, if any. ``timings`` receives ``start`` and ``ssh_wait``.
    """

    name: str
    host_id: str
    spec: dict[str, Any]
    user_tags: dict[str, str]
    existing: Host | None = None
    source: SnapshotRecord | None = None
    folder: KeyFolder | None = None
    timings: dict[str, float] = field(default_factory=dict)


class HostLauncher:
    """Launches and destroys the hosts of one app; ``warnings`` collects what the user should read."""

    def __init__(self, session: Any, directory: HostDirectory, reservations: NameReservations, wait: bool,
                 wait_timeout: int, ssh_public_key: str | None, warnings: list[str]) -> None:
        self.session = session
        self.directory = directory
        self.reservations = reservations
        self.wait = wait
        self.wait_timeout = wait_timeout
        self.extra_keys = [ssh_public_key.strip()] if ssh_public_key else []
        self.warnings = warnings

    @property
    def keys(self) -> KeyStore:
        session = self.session
        return KeyStore(session.key_dir, session.app_name, session.environment)

    # --- names ------------------------------------------------------------------------------------

    def evidence(self, host_id: str) -> HostEvidence:
        """What Modal says now about a host that holds a name: its record and live sandboxes."""
        return evidence_from(self.directory.store.get(host_id), self.directory.tagged_sandbox_ids(host_id))

    def claimant(self, name: str) -> Reservation | None:
        """The reservation by which another host still holds ``name``, or None when the name is free."""
        holder = self.reservations.holder(name)
        if holder is None or is_stale(holder, self.evidence(holder.host_id)):
            return None
        return holder

    def release_names(self, host_id: str, *names: str | None) -> None:
        """Give up the names ``host_id`` no longer has (its old name after a rename; every name once destroyed)."""
        for name in {name for name in names if name}:
            self.reservations.release(name, host_id)

    # --- launch -----------------------------------------------------------------------------------

    def launch(self, launch: Launch, image: Any) -> dict[str, Any]:
        """Give the host a running sandbox from ``image``; return its result (the shape of ``host_result``).

        A new host (no ``existing``) reserves its name first: NameTaken when another run holds it (nothing created).
        """
        folder = launch.folder or self.keys.folder_for(launch.host_id, launch.name)
        folder.name = launch.name
        new_host = launch.existing is None
        try:
            # A host without SSH has no folder: it is made for the lock (and for the keys, when it gains SSH).
            with folder.locked(LOCK_TIMEOUT_SECONDS, create=new_host or not folder.exists()):
                if ssh_enabled(launch.spec):
                    # Keys before the name: another run on this controller that loses the name to this one finds
                    # these keys as soon as the name is taken, and waits on this lock for the host.
                    folder.ensure(launch.host_id)
                if new_host:
                    holder = self.reservations.reserve(launch.name, launch.host_id, self.evidence)
                    if holder.host_id != launch.host_id:
                        folder.remove(launch.host_id)  # ours, with keys no host uses: this run creates nothing
                        raise NameTaken(holder)
                return self._launch_locked(launch, folder, image)
        except KeyFolderBusy as exc:
            raise HostError(f"host {launch.name}: {exc}. Nothing was changed; retry when the other run is done.")

    def _launch_locked(self, launch: Launch, folder: KeyFolder, image: Any) -> dict[str, Any]:
        """Record, sandbox, bootstrap: the part of a launch that runs holding the host's name and key folder (with its keys)."""
        name, host_id, spec, user_tags, existing = launch.name, launch.host_id, launch.spec, launch.user_tags, launch.existing
        with_ssh = ssh_enabled(spec)
        host_public_key = folder.read_public(HOST_KEY) if with_ssh else ""
        extra_keys = list(self.extra_keys)
        if existing is not None and existing.record is not None:
            record = existing.record
            record.prepare_new_sandbox(user_tags, spec, host_public_key, extra_keys)
            extra_keys = record.authorized_keys
        else:
            record = HostRecord(host_id=host_id, name=name, user_tags=dict(user_tags), spec=spec,
                                ssh_host_public_key=host_public_key, status=STATUS_RUNNING,
                                authorized_keys=extra_keys)
        sandbox = None
        try:
            start_started = time.monotonic()
            sandbox = create_sandbox(self.session, self.directory.app, image, spec, host_id, name, user_tags)
            endpoint = None
            launch.timings["ssh_wait"] = 0.0
            if with_ssh:
                endpoint = bootstrap(self.session, sandbox, folder, spec, extra_keys, self.wait, self.wait_timeout,
                                     launch.timings)
            launch.timings["start"] = seconds_since(start_started, minus=launch.timings["ssh_wait"])
            self.session.call(sandbox.set_tags, encode_sandbox_tags(host_id, name, user_tags,
                                                                    format_endpoint(*endpoint) if endpoint else None))
            record.mark_running(sandbox.object_id, endpoint)
            self.directory.store.put(record)
            self._sweep_duplicates(host_id, sandbox.object_id)
            if not with_ssh:
                folder.remove(host_id)  # held as a lock only: a host without SSH keeps nothing on the controller
        except (CreateFailure, ModalError, OSError) as exc:
            self._clean_up_failed_launch(host_id, folder, record, sandbox, str(exc), keep_keys=existing is not None)
            if isinstance(exc, CreateFailure):
                raise
            if isinstance(exc, ModalError) and is_not_found(exc) and sandbox is not None:
                raise CreateFailure(ended_during_setup_message(name, exc, kept=existing is not None),
                                    code=exc.code) from exc
            if isinstance(exc, ModalError):
                raise CreateFailure(exc.msg, code=exc.code) from exc
            raise CreateFailure(f"creating host {name} failed: {exc}") from exc
        session = self.session
        result = host_result(host_id, name, "running", user_tags, spec, record.sandbox_id, endpoint,
                             session.key_dir, session.app_name, session.environment)
        if launch.source is not None:
            result["snapshot"] = launch.source.result()
        return result

    def _sweep_duplicates(self, host_id: str, keep: str) -> None:
        """Terminate any other sandbox of this host: a retried create whose first attempt did reach Modal."""
        for sandbox_id in self.terminate_tagged(host_id, keep=keep):
            self.warnings.append(f"terminated {sandbox_id}, a duplicate sandbox of host {host_id} left by a retried create")

    def terminate_tagged(self, host_id: str, keep: str | None = None, also: Any = None) -> list[str]:
        """Terminate every live sandbox the server lists under ``host_id`` but ``keep``, and ``also`` (a handle).

        ``also`` is a sandbox just created: a listing may not show it yet. Returns the ids terminated.
        """
        session = self.session
        terminated = []
        if also is not None and also.object_id != keep:
            session.call(also.terminate)
            terminated.append(also.object_id)
        for sandbox_id in self.directory.tagged_sandbox_ids(host_id):
            if sandbox_id in (keep, *terminated):
                continue
            handle = session.call(session.modal.Sandbox.from_id, sandbox_id, client=session.client)
            session.call(handle.terminate)
            terminated.append(sandbox_id)
        return terminated

    def _clean_up_failed_launch(self, host_id: str, folder: KeyFolder, record: HostRecord, sandbox: Any, reason: str,
                                keep_keys: bool = False) -> None:
        """No orphans: terminate whatever sandbox this launch started, record the failure, drop new keys.

        A host that existed before (a new sandbox for an existing host) keeps its record status and keys, so the
        next run tries again.
        """
        try:
            self.terminate_tagged(host_id, also=sandbox)
        except ModalError as exc:
            self.warnings.append(f"could not terminate the sandbox of the failed host {record.name}: {exc.msg}")
        try:
            record.mark_failed(reason, host_existed=keep_keys)
            self.directory.store.put(record)
        except ModalError:
            pass
        if not keep_keys:
            folder.remove(host_id)
            try:
                self.release_names(host_id, record.name)
            except (ModalError, SnapshotError):
                pass

    # --- destroy ----------------------------------------------------------------------------------

    def destroy(self, host: Host) -> None:
        """Terminate the host's sandboxes, mark its record destroyed, free its names and remove its key folder."""
        if host.sandbox is not None:
            self.session.call(host.sandbox.handle.terminate)
        self.terminate_tagged(host.host_id, keep=host.sandbox.sandbox_id if host.sandbox else None)
        previous_name = None
        if host.record is not None:
            previous_name = host.record.previous_name
            host.record.mark_destroyed()
            self.directory.store.put(host.record)
        self.release_names(host.host_id, host.name, previous_name)
        folder = self.keys.find(host.host_id, host.name, (previous_name,))
        if folder is not None:
            with folder.locked(LOCK_TIMEOUT_SECONDS):
                folder.remove(host.host_id)


def ended_during_setup_message(name: str, exc: ModalError, kept: bool) -> str:
    """What happened to a host whose sandbox ended while it was being set up (Modal only says NOT_FOUND)."""
    outcome = ("the host keeps its record and keys, as before this run" if kept
               else "the host was not created: its record is marked failed and its new keys were removed")
    return (f"the sandbox of host {name} ended while SSH was being set up in it (timeout, crash or a terminate "
            f"from elsewhere; Modal said: {exc.msg}). Nothing was left running: {outcome}. Run the task again "
            "to retry; if it ends again, check timeout and idle_timeout")
