# Copyright (c) 2026, the mngr.modal authors
# GNU General Public License v3.0+ (see COPYING or https://www.gnu.org/licenses/gpl-3.0.txt)

# This module is private to the mngr.modal collection: its interface may change at any time,
# do not use it from outside the collection.

"""The snapshot catalog: which filesystem snapshots (Modal images) each host has, kept on the state volume.

A snapshot is the image ``sandbox.snapshot_filesystem()`` returns; its id (``im-...``) is all Modal
needs to start a sandbox from it again. Modal cannot list or name images, so the catalog records
them: one JSON file per snapshot at ``snapshots/<host_id>/<name>.json`` on the app's state volume
``<app>-state``. Because every snapshot has a file of its own, two snapshots taken at the same time
never overwrite each other's record, and any installation using the same Modal account sees them.

Records are created exclusively (the volume refuses to overwrite an existing file unless asked), so
two runs racing for one name cannot silently replace each other's record.

Crash safety: between ``snapshot_filesystem`` returning and the record reaching the volume, the image
id exists only in the controller's memory. It is therefore first written to a local journal
(``<key_dir>/.snapshot-journal/``); the journal entry is removed once the record is on the volume, and
any entry left by a crash is uploaded by the next snapshot of the same host (``recover_journal``).
Each entry names its owner (host name, pid and the process's start time), so that recovery never takes
the entry of a run that is still working on it: see :func:`owner_may_be_running` for the rule.

Everything above :class:`VolumeFiles` is pure logic, tested without Modal.
"""

from __future__ import annotations

import datetime
import io
import json
import os
import re
import socket
import threading
import time
from dataclasses import dataclass, field, replace
from typing import Any, Callable, Iterable, Protocol

from ansible_collections.mngr.modal.plugins.module_utils._client import is_not_found
from ansible_collections.mngr.modal.plugins.module_utils._errors import ModalCollectionError
from ansible_collections.mngr.modal.plugins.module_utils._hosts import open_state_volume
from ansible_collections.mngr.modal.plugins.module_utils._names import validate_name

# --- names -----------------------------------------------------------------------------------

# A snapshot name becomes a file name on the volume: a safe character set (no "/", so no sub-folders;
# first character a letter or digit, so no "." or ".."), and a bounded length.
SNAPSHOT_NAME_MAX_LENGTH = 128
# Modal image ids look like this; a name of that shape would make "snapshot: NAME|ID" ambiguous.
_IMAGE_ID_RE = re.compile(r"im-[A-Za-z0-9]+")  # checked with fullmatch

DEFAULT_NAME_PREFIX = "snapshot"
STOP_NAME_PREFIX = "stop"
KIND_MANUAL = "manual"
KIND_STOP = "stop"

# Modal keeps a filesystem snapshot for 30 days unless asked otherwise (Sandbox.snapshot_filesystem's ttl).
DEFAULT_TTL_SECONDS = 30 * 24 * 3600

RECORD_FORMAT_VERSION = 1
SNAPSHOTS_DIR = "snapshots"
JOURNAL_DIR_NAME = ".snapshot-journal"


class SnapshotError(ModalCollectionError, ValueError):
    """Invalid input about a snapshot, or a snapshot that cannot be found: the message says which and why."""


def validate_snapshot_name(name: Any, option: str = "name") -> str:
    """Return ``name`` if it is a valid snapshot name, else raise SnapshotError naming it."""
    validate_name(name, option, "snapshot name", SNAPSHOT_NAME_MAX_LENGTH, SnapshotError,
                  why="it becomes a file name on the state volume (no '/', no '..')")
    if _IMAGE_ID_RE.fullmatch(name):
        raise SnapshotError(f"{option} {name!r} looks like a Modal image id (im-...); choose a name that does not.")
    return name


def is_image_id(ref: str) -> bool:
    return bool(_IMAGE_ID_RE.fullmatch(ref or ""))


def utc_now() -> datetime.datetime:
    return datetime.datetime.now(datetime.timezone.utc).replace(microsecond=0)


def default_snapshot_name(prefix: str = DEFAULT_NAME_PREFIX, now: datetime.datetime | None = None) -> str:
    """``snapshot-YYYY-MM-DD-HH-MM-SS`` (UTC); ``prefix`` is ``stop`` for the snapshot a stop takes."""
    moment = (now or utc_now()).astimezone(datetime.timezone.utc)
    return f"{prefix}-{moment:%Y-%m-%d-%H-%M-%S}"


def snapshot_path(host_id: str, name: str) -> str:
    """Where a snapshot's record lives on the state volume."""
    return f"{SNAPSHOTS_DIR}/{host_id}/{name}.json"


def host_snapshots_dir(host_id: str) -> str:
    return f"{SNAPSHOTS_DIR}/{host_id}"


# --- records ---------------------------------------------------------------------------------


@dataclass
class SnapshotRecord:
    """One snapshot as kept at ``snapshots/<host_id>/<name>.json``.

    ``host_name`` is the host's name when the snapshot was taken (a host can be renamed later; the
    host record is the authority for the current name). ``spec`` is the host's build spec then, so a
    host restored or cloned from the snapshot gets the same resources. ``expires_at`` is when Modal
    may drop the image (None: kept until deleted with the account).
    """

    name: str
    image_id: str
    host_id: str
    host_name: str = ""
    created_at: str = ""
    sandbox_id: str | None = None
    spec: dict[str, Any] = field(default_factory=dict)
    kind: str = KIND_MANUAL
    expires_at: str | None = None

    def to_json(self) -> bytes:
        data: dict[str, Any] = {"format": RECORD_FORMAT_VERSION}
        data.update(self.__dict__)
        return (json.dumps(data, indent=2, sort_keys=True) + "\n").encode("utf-8")

    @classmethod
    def from_json(cls, raw: bytes | str) -> "SnapshotRecord":
        """Parse a record; ValueError (with the reason) for anything that is not a usable record."""
        try:
            data = json.loads(raw)
        except (ValueError, UnicodeDecodeError) as exc:
            raise ValueError(f"not JSON ({exc})") from exc
        if not isinstance(data, dict):
            raise ValueError("not a JSON object")
        for key in ("name", "image_id", "host_id"):
            if not isinstance(data.get(key), str) or not data.get(key):
                raise ValueError(f"missing or invalid {key!r}")
        known = {key: value for key, value in data.items() if key in cls.__dataclass_fields__}
        if not isinstance(known.get("spec", {}), dict):
            known["spec"] = {}
        return cls(**known)

    @property
    def path(self) -> str:
        return snapshot_path(self.host_id, self.name)

    def expired(self, now: datetime.datetime | None = None) -> bool:
        if not self.expires_at:
            return False
        try:
            expires = datetime.datetime.fromisoformat(self.expires_at)
        except ValueError:
            return False
        return (now or utc_now()) >= expires

    def result(self, host_name: str | None = None) -> dict[str, Any]:
        """The shape the modules return for one snapshot."""
        return {
            "name": self.name,
            "id": self.image_id,
            "host": host_name or self.host_name,
            "host_id": self.host_id,
            "created_at": self.created_at,
            "sandbox_id": self.sandbox_id,
            "kind": self.kind,
            "expires_at": self.expires_at,
        }


def new_record(name: str, image_id: str, host_id: str, host_name: str, sandbox_id: str | None,
               spec: dict[str, Any] | None, kind: str = KIND_MANUAL, ttl: int | None = DEFAULT_TTL_SECONDS,
               now: datetime.datetime | None = None) -> SnapshotRecord:
    moment = now or utc_now()
    expires = (moment + datetime.timedelta(seconds=ttl)).isoformat() if ttl else None
    return SnapshotRecord(name=name, image_id=image_id, host_id=host_id, host_name=host_name,
                          created_at=moment.isoformat(), sandbox_id=sandbox_id, spec=dict(spec or {}), kind=kind,
                          expires_at=expires)


def newest_first(records: Iterable[SnapshotRecord]) -> list[SnapshotRecord]:
    """Newest first; records of the same second are ordered by name, descending, so the order is stable."""
    return sorted(records, key=lambda r: (r.created_at or "", r.name), reverse=True)


def match_snapshot(records: Iterable[SnapshotRecord], ref: str) -> list[SnapshotRecord]:
    """Records whose name or image id is ``ref`` (an id may be shared when a record was copied by hand)."""
    return [record for record in records if ref in (record.name, record.image_id)]


# --- storage -----------------------------------------------------------------------------------


class CatalogFiles(Protocol):
    """The few file operations the catalog needs. Paths are relative to the volume root."""

    def list(self, folder: str) -> list[str]:
        """Paths of the files under ``folder`` (recursively); empty when it does not exist."""

    def read(self, path: str) -> bytes | None:
        """The file's content, or None when it does not exist."""

    def create(self, path: str, data: bytes, overwrite: bool) -> bool:
        """Write the file; with ``overwrite=False`` return False (writing nothing) when it already exists."""

    def remove(self, path: str) -> bool:
        """Delete the file; False when it did not exist."""


class MemoryFiles:
    """Catalog files in a dict: for tests, and for the check-mode view of a volume that does not exist yet."""

    def __init__(self, files: dict[str, bytes] | None = None) -> None:
        self.files: dict[str, bytes] = dict(files or {})
        self._lock = threading.Lock()  # create() must be check-and-write in one step, as on the volume

    def list(self, folder: str) -> list[str]:
        prefix = folder.rstrip("/") + "/"
        return sorted(path for path in self.files if path.startswith(prefix))

    def read(self, path: str) -> bytes | None:
        return self.files.get(path)

    def create(self, path: str, data: bytes, overwrite: bool) -> bool:
        with self._lock:
            if path in self.files and not overwrite:
                return False
            self.files[path] = data
            return True

    def remove(self, path: str) -> bool:
        return self.files.pop(path, None) is not None


class SnapshotCatalog:
    """Snapshots of every host of one app. Reads never fail on one bad record: they add a warning naming it."""

    def __init__(self, files: CatalogFiles) -> None:
        self.files = files
        self.warnings: list[str] = []

    def _load(self, path: str, listed: bool = False) -> SnapshotRecord | None:
        raw = self.files.read(path)
        if raw is None:
            if listed:
                self.warnings.append(f"snapshot record {path} disappeared while it was being read (deleted meanwhile)")
            return None
        try:
            record = SnapshotRecord.from_json(raw)
        except ValueError as exc:
            self.warnings.append(
                f"skipping snapshot record {path} on the state volume: it cannot be read ({exc}). "
                "Delete or fix that file to silence this warning."
            )
            return None
        expected = snapshot_path(record.host_id, record.name)
        if expected != path:
            self.warnings.append(
                f"skipping snapshot record {path} on the state volume: its content names {expected} "
                "(a file copied or renamed by hand)."
            )
            return None
        return record

    def list(self, host_id: str | None = None) -> list[SnapshotRecord]:
        """Snapshots of one host (or of every host), newest first."""
        folder = host_snapshots_dir(host_id) if host_id else SNAPSHOTS_DIR
        records = []
        for path in self.files.list(folder):
            if not path.endswith(".json"):
                continue
            record = self._load(path, listed=True)
            if record is not None:
                records.append(record)
        return newest_first(records)

    def get(self, host_id: str, name: str) -> SnapshotRecord | None:
        return self._load(snapshot_path(host_id, name))

    def add(self, record: SnapshotRecord, overwrite: bool = False) -> bool:
        """Write the record; False (nothing written) if one with that name exists and ``overwrite`` is False."""
        return self.files.create(record.path, record.to_json(), overwrite)

    def remove(self, host_id: str, name: str) -> bool:
        return self.files.remove(snapshot_path(host_id, name))

    # What modal_sandbox needs to restore, clone and stop.

    def newest(self, host_id: str, usable_only: bool = True) -> SnapshotRecord | None:
        """The host's newest snapshot (the one a start restores), skipping expired ones when ``usable_only``."""
        for record in self.list(host_id):
            if not usable_only or not record.expired():
                return record
        return None

    def find(self, ref: str, host_id: str | None = None,
             host_ids_by_name: dict[str, str] | None = None) -> SnapshotRecord:
        """The snapshot ``ref`` names: ``NAME`` or ``IM-ID`` of the host ``host_id``, else of any host;
        ``HOST/NAME`` for another host's snapshot by name (``host_ids_by_name`` maps host names to ids).

        Raises SnapshotError saying what was searched when nothing, or more than one host's snapshot, matches.
        """
        ref = (ref or "").strip()
        if not ref:
            raise SnapshotError("snapshot must be a snapshot name, HOST/NAME or an image id (im-...), got an empty value")
        if "/" in ref:
            host_name, _slash, name = ref.partition("/")
            other_id = (host_ids_by_name or {}).get(host_name)
            if other_id is None:
                raise SnapshotError(f"snapshot {ref!r}: there is no host named {host_name!r}")
            validate_snapshot_name(name, "snapshot")
            record = self.get(other_id, name)
            if record is None:
                raise SnapshotError(f"snapshot {ref!r}: host {host_name} has no snapshot named {name!r}")
            return record
        if host_id:
            own = match_snapshot(self.list(host_id), ref)
            if own:
                return own[0]
        everywhere = match_snapshot(self.list(), ref)
        if not everywhere:
            where = "this host or any other host of the app" if host_id else "any host of the app"
            raise SnapshotError(f"no snapshot named or with id {ref!r} in the catalog of {where}")
        hosts = sorted({record.host_name or record.host_id for record in everywhere})
        if len(hosts) > 1 and not is_image_id(ref):
            raise SnapshotError(
                f"snapshot name {ref!r} exists on several hosts ({', '.join(hosts)}): give HOST/NAME or the image id"
            )
        return everywhere[0]


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


# --- the catalog on a Modal volume ---------------------------------------------------------------


class VolumeFiles:
    """CatalogFiles on the app's state volume, every SDK call through ``session.call``.

    With ``create=False`` a missing volume reads as empty and nothing is created (info module, check mode);
    writing then fails with a message saying so.
    """

    def __init__(self, session: Any, volume_name: str, create: bool) -> None:
        self.session = session
        self.volume_name = volume_name
        self.create_volume = create
        self._volume: Any = None
        self._missing = False

    def _get(self) -> Any:
        if self._volume is None and not self._missing:
            self._volume = open_state_volume(self.session.call, self.session.modal.Volume.from_name, self.volume_name,
                                             self.session.environment, self.session.client, self.create_volume)
            self._missing = self._volume is None
        return self._volume

    def list(self, folder: str) -> list[str]:
        volume = self._get()
        if volume is None:
            return []
        try:
            entries = self.session.call(volume.listdir, folder, recursive=True)
        except Exception as exc:  # pylint: disable=broad-exception-caught
            if is_not_found(exc):
                return []
            raise
        file_type = getattr(getattr(self.session.modal, "volume", None), "FileEntryType", None)
        paths = []
        for entry in entries:
            if file_type is not None and getattr(entry, "type", None) not in (None, file_type.FILE):
                continue
            paths.append(getattr(entry, "path", "").lstrip("/"))
        return sorted(path for path in paths if path)

    def read(self, path: str) -> bytes | None:
        volume = self._get()
        if volume is None:
            return None
        try:
            return self.session.call(lambda: b"".join(volume.read_file(path)))
        except Exception as exc:  # pylint: disable=broad-exception-caught
            if is_not_found(exc):
                return None
            raise

    def create(self, path: str, data: bytes, overwrite: bool) -> bool:
        volume = self._get()
        if volume is None:
            raise SnapshotError(f"the state volume {self.volume_name} does not exist, so nothing can be recorded on it")

        def upload() -> bool:
            # The SDK raises FileExistsError when force=False meets an existing file. It is caught here,
            # inside the call, because the session would report any OSError as a network failure.
            try:
                with volume.batch_upload(force=overwrite) as batch:
                    batch.put_file(io.BytesIO(data), "/" + path)
            except FileExistsError:
                return False
            return True

        return bool(self.session.call(upload))

    def remove(self, path: str) -> bool:
        volume = self._get()
        if volume is None:
            return False
        try:
            self.session.call(volume.remove_file, path)
        except Exception as exc:  # pylint: disable=broad-exception-caught
            if is_not_found(exc):
                return False
            raise
        return True


def volume_catalog(session: Any, create: bool) -> SnapshotCatalog:
    """The catalog of the session's app, on ``<app>-state``."""
    return SnapshotCatalog(VolumeFiles(session, f"{session.app_name}-state", create))
