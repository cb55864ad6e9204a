# Copyright (c) 2026, the mngr.modal authors
# GNU General Public License v3.0+ (see COPYING or https://www.gnu.org/licenses/gpl-3.0.txt)

# This module is private to the mngr.modal collection: its interface may change at any time,
# do not use it from outside the collection.

"""Taking a snapshot without ever losing its image id: the local journal, and its recovery after a crash.

Between ``snapshot_filesystem`` returning and the record reaching the volume, the image id exists only in
the controller's memory. It is therefore first written to a local journal (``<key_dir>/.snapshot-journal/``);
the journal entry is removed once the record is on the volume, and any entry left by a crash is uploaded by
the next snapshot of the same host (:func:`recover_journal`). Each entry names its owner (host name, pid and
the process's start time), so that recovery never takes the entry of a run that is still working on it: see
:func:`owner_may_be_running` for the rule.
"""

from __future__ import annotations

import json
import os
import socket
import time
from dataclasses import dataclass, replace
from typing import Any, Callable

from ansible_collections.mngr.modal.plugins.module_utils._snapshots import (
    DEFAULT_NAME_PREFIX,
    DEFAULT_TTL_SECONDS,
    KIND_MANUAL,
    KIND_STOP,
    STOP_NAME_PREFIX,
    SnapshotCatalog,
    SnapshotError,
    SnapshotRecord,
    default_snapshot_name,
    new_record,
)

JOURNAL_DIR_NAME = ".snapshot-journal"

# --- the local journal -------------------------------------------------------------------------

# How long an entry whose owner cannot be checked (written on another machine sharing the key folder, or by
# an older version that recorded no owner) is left alone before recovery treats it as a crash leftover.
# A run keeps its entry only from the moment Modal returns the image until its record is written (a few
# volume calls), so an hour is far longer than any live run needs.
JOURNAL_LEASE_SECONDS = 3600


def process_start(pid: int) -> str | None:
    """``<boot id>/<start time in clock ticks>`` of a process, which tells a live process from a later one that
    reuses its pid; None where /proc does not give it (not Linux, or the process is gone)."""
    try:
        with open(f"/proc/{pid}/stat", encoding="utf-8", errors="replace") as handle:
            stat = handle.read()
        with open("/proc/sys/kernel/random/boot_id", encoding="utf-8") as handle:
            boot_id = handle.read().strip()
    except OSError:
        return None
    # The command name (field 2) is in parentheses and may itself contain spaces or ")", so the fields are
    # counted after the last ")": field 3 (state) is then the first, and field 22 (starttime) the 20th.
    fields = stat.rpartition(")")[2].split()
    return f"{boot_id}/{fields[19]}" if len(fields) > 19 else None


def current_owner() -> dict[str, Any]:
    """Who writes a journal entry: this machine's host name, this process's pid and start time."""
    pid = os.getpid()
    return {"host": socket.gethostname(), "pid": pid, "started": process_start(pid)}


def owner_may_be_running(owner: Any, written_at: float, now: float | None = None) -> bool:
    """Whether the run that wrote a journal entry may still be working on it, so recovery must leave it alone.

    The rule: an entry written on this machine (same host name) belongs to a live run while its pid exists
    and, where /proc tells, still has the start time recorded (otherwise the pid was reused by another
    process). An entry written on another machine, or without a usable owner, cannot be checked: it is
    treated as live until ``JOURNAL_LEASE_SECONDS`` after it was written.
    """
    if isinstance(owner, dict) and owner.get("host") == socket.gethostname():
        pid = owner.get("pid")
        if isinstance(pid, int) and pid > 0:
            return _pid_is_owner(pid, owner.get("started"))
    return (time.time() if now is None else now) - written_at < JOURNAL_LEASE_SECONDS


def _pid_is_owner(pid: int, started: Any) -> bool:
    try:
        os.kill(pid, 0)  # signal 0: only asks whether the process exists
    except ProcessLookupError:
        return False
    except PermissionError:
        pass  # it exists, under another user
    if started:
        now_started = process_start(pid)
        if now_started is not None and now_started != started:
            return False
    return True


@dataclass
class JournalEntry:
    """One journal file: the record it keeps, who wrote it and when (the file's modification time)."""

    record: SnapshotRecord
    owner: dict[str, Any] | None
    written_at: float


class Journal:
    """Records taken but not yet on the volume, as files under ``<key_dir>/.snapshot-journal/``.

    The folder name starts with a dot, which no host name can, so it never collides with a host's key folder.
    A file holds the record's JSON plus an ``owner`` key (see :func:`current_owner`); the image id is part
    of the file name, so two runs never write the same file.
    """

    def __init__(self, key_dir: str) -> None:
        self.path = os.path.join(os.path.abspath(os.path.expanduser(key_dir)), JOURNAL_DIR_NAME)

    def _file(self, record: SnapshotRecord) -> str:
        return os.path.join(self.path, f"{record.host_id}--{record.name}--{record.image_id}.json")

    def write(self, record: SnapshotRecord) -> None:
        os.makedirs(self.path, mode=0o700, exist_ok=True)
        target = self._file(record)
        tmp = f"{target}.tmp{os.getpid()}"
        data = json.loads(record.to_json())
        data["owner"] = current_owner()
        with open(tmp, "wb") as handle:
            handle.write(json.dumps(data, indent=2, sort_keys=True).encode("utf-8") + b"\n")
            handle.flush()
            os.fsync(handle.fileno())
        os.replace(tmp, target)

    def clear(self, record: SnapshotRecord) -> None:
        try:
            os.remove(self._file(record))
        except FileNotFoundError:
            pass

    def entries(self, host_id: str | None = None) -> list[JournalEntry]:
        """The readable entries (of one host, or of all); unreadable files are skipped."""
        try:
            names = sorted(os.listdir(self.path))
        except OSError:
            return []
        entries = []
        for filename in names:
            if not filename.endswith(".json") or (host_id and not filename.startswith(f"{host_id}--")):
                continue
            path = os.path.join(self.path, filename)
            try:
                with open(path, "rb") as handle:
                    raw = handle.read()
                written_at = os.path.getmtime(path)
                record = SnapshotRecord.from_json(raw)
            except (OSError, ValueError):
                continue
            owner = json.loads(raw).get("owner")
            entries.append(JournalEntry(record, owner if isinstance(owner, dict) else None, written_at))
        return entries

    def pending(self, host_id: str | None = None) -> list[SnapshotRecord]:
        return [entry.record for entry in self.entries(host_id)]


def recover_journal(catalog: SnapshotCatalog, journal: Journal, host_id: str | None = None) -> list[SnapshotRecord]:
    """Upload records a crashed run left in the journal; return those recorded now.

    Entries whose run may still be running (:func:`owner_may_be_running`) are not touched: that run
    records them itself. A journal entry whose name is taken on the volume by another image is kept out
    of the catalog and reported in a warning with its image id, so the image can still be restored by id.
    """
    recovered = []
    for entry in journal.entries(host_id):
        if owner_may_be_running(entry.owner, entry.written_at):
            continue
        record = entry.record
        if catalog.add(record, overwrite=False):
            recovered.append(record)
        else:
            existing = catalog.get(record.host_id, record.name)
            if existing is None or existing.image_id != record.image_id:
                catalog.warnings.append(
                    f"an interrupted earlier run took snapshot {record.name} of host {record.host_name} "
                    f"(image {record.image_id}), but that name is now used by another snapshot; the image is not "
                    "in the catalog and can only be restored by its id"
                )
        journal.clear(record)
    return recovered


# --- taking a snapshot -------------------------------------------------------------------------

# How many "-2", "-3"... suffixes a default name may get when other snapshots of the same host
# were taken in the same second.
MAX_DEFAULT_NAME_SUFFIX = 99


def take_snapshot(call: Callable[..., Any], catalog: SnapshotCatalog, journal: Journal, sandbox: Any, host_id: str,
                  host_name: str, spec: dict[str, Any] | None, name: str | None = None, kind: str = KIND_MANUAL,
                  ttl: int | None = DEFAULT_TTL_SECONDS, timeout: int = 300,
                  overwrite: bool = False) -> tuple[SnapshotRecord, bool]:
    """Snapshot a running sandbox and record it; return (the record, whether this run's record was written).

    ``call`` is ModalSession.call. Without ``name`` a default name is chosen (``snapshot-...`` or, for
    ``kind="stop"``, ``stop-...``), with a numeric suffix if another snapshot of the host took it in the
    same second. With an explicit ``name`` taken meanwhile by another run (and ``overwrite`` False), the
    existing record is returned with False, and a warning names the image this run took.
    """
    image = call(sandbox.snapshot_filesystem, timeout=timeout, ttl=ttl or None)
    image_id = image.object_id
    sandbox_id = getattr(sandbox, "object_id", None)
    base = name or default_snapshot_name(STOP_NAME_PREFIX if kind == KIND_STOP else DEFAULT_NAME_PREFIX)
    record = new_record(base, image_id, host_id, host_name, sandbox_id, spec, kind, ttl)
    journal.write(record)
    candidates = [base] if name else [base] + [f"{base}-{n}" for n in range(2, MAX_DEFAULT_NAME_SUFFIX + 1)]
    for candidate in candidates:
        if candidate != record.name:
            # The entry under the new name is written before the old one is removed, so a crash in
            # between still leaves the image id in the journal.
            previous = replace(record)
            record.name = candidate
            journal.write(record)
            journal.clear(previous)
        if catalog.add(record, overwrite=overwrite):
            journal.clear(record)
            return record, True
    journal.clear(record)
    existing = catalog.get(host_id, base) if name else None
    if existing is not None:
        catalog.warnings.append(
            f"snapshot {base} of host {host_name} was recorded by another run at the same time (image "
            f"{existing.image_id}); the image this run took ({image_id}) is not in the catalog"
        )
        return existing, False
    raise SnapshotError(f"could not record snapshot {base} of host {host_name} (image {image_id}): every name was taken")
