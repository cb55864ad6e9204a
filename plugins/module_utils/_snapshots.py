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

Taking a snapshot, crash-safely, is :mod:`._journal`'s. This module is pure logic over
:class:`._state_volume.StateFiles`, tested without Modal.
"""

from __future__ import annotations

import datetime
import json
import re
from dataclasses import dataclass, field
from typing import Any, Iterable

from ansible_collections.mngr.modal.plugins.module_utils._errors import ModalCollectionError
from ansible_collections.mngr.modal.plugins.module_utils._names import validate_name
from ansible_collections.mngr.modal.plugins.module_utils._state_volume import StateFiles, state_files, utc_now

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


class SnapshotCatalog:
    """Snapshots of every host of one app. Reads never fail on one bad record: they add a warning naming it."""

    def __init__(self, files: StateFiles) -> None:
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


def volume_catalog(session: Any, create: bool) -> SnapshotCatalog:
    """The catalog of the session's app, on its state volume."""
    return SnapshotCatalog(state_files(session, create))


def snapshot_age(created_at: str, now: datetime.datetime | None = None) -> str:
    """`` (taken 2h 5m ago, at <created_at>)`` for an ISO time, or `` (taken at <created_at>)`` if it cannot be read."""
    try:
        taken = datetime.datetime.fromisoformat(created_at)
    except (TypeError, ValueError):
        return f" (taken at {created_at})" if created_at else ""
    if taken.tzinfo is None:
        taken = taken.replace(tzinfo=datetime.timezone.utc)
    seconds = max(0, int(((now or datetime.datetime.now(datetime.timezone.utc)) - taken).total_seconds()))
    days, rest = divmod(seconds, 86400)
    hours, rest = divmod(rest, 3600)
    minutes = rest // 60
    parts = [f"{days}d" if days else "", f"{hours}h" if hours else "", f"{minutes}m" if minutes or not (days or hours) else ""]
    return f" (taken {' '.join(part for part in parts if part)} ago, at {created_at})"
