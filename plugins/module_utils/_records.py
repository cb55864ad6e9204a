# Copyright (c) 2026, the mngr.modal authors
# GNU General Public License v3.0+ (see COPYING or https://www.gnu.org/licenses/gpl-3.0.txt)

# This module is private to the mngr.modal collection: its interface may change at any time,
# do not use it from outside the collection.

"""Host records: one JSON file per host on the app's state volume, ``hosts/<host_id>.json``.

A record keeps what a host is beyond its sandbox (name, user tags, build spec, SSH host public key, status), so
a host without a live sandbox is still known. The modules change a record only through its transition methods
(:meth:`HostRecord.mark_running`, :meth:`HostRecord.begin_rename`...), and store it with :class:`HostRecords`.
"""

from __future__ import annotations

import json
from dataclasses import dataclass, field
from typing import Any, Iterable

from ansible_collections.mngr.modal.plugins.module_utils._state_volume import MemoryStateFiles, StateFiles, state_files, utc_now

RECORD_FORMAT_VERSION = 1
STATUS_RUNNING = "running"
STATUS_STOPPED = "stopped"
STATUS_DESTROYED = "destroyed"
STATUS_FAILED = "failed"
HOSTS_DIR = "hosts"

# A failure text longer than this is cut (its end, which says what failed, is kept).
MAX_FAILURE_LENGTH = 2000


def _now_text() -> str:
    return utc_now().isoformat()


@dataclass
class HostRecord:
    """One host as kept on the state volume at ``hosts/<host_id>.json``.

    ``previous_name`` is set while a rename is in progress and cleared once every place that records
    the name (tags, key folder) follows; a host is findable under its new name from the moment the
    record is written.
    """

    host_id: str
    name: str
    user_tags: dict[str, str] = field(default_factory=dict)
    spec: dict[str, Any] = field(default_factory=dict)
    ssh_host_public_key: str = ""
    authorized_keys: list[str] = field(default_factory=list)  # extra keys given with ssh_public_key
    status: str = STATUS_RUNNING
    sandbox_id: str | None = None
    ssh_host: str | None = None
    ssh_port: int | None = None
    stop_reason: str | None = None
    failure: str | None = None
    previous_name: str | None = None
    created_at: str = field(default_factory=_now_text)
    updated_at: str = field(default_factory=_now_text)

    def to_json(self) -> bytes:
        data = {"format": RECORD_FORMAT_VERSION}
        data.update(self.__dict__)
        return (json.dumps(data, indent=2, sort_keys=True) + "\n").encode("utf-8")

    @classmethod
    def from_json(cls, raw: bytes | str) -> "HostRecord":
        data = json.loads(raw)
        if not isinstance(data, dict) or not data.get("host_id") or not isinstance(data.get("name"), str):
            raise ValueError("host record lacks host_id or name")
        known = {key: value for key, value in data.items() if key in cls.__dataclass_fields__}
        return cls(**known)

    # --- transitions ---------------------------------------------------------------------------------

    def mark_running(self, sandbox_id: str, endpoint: tuple[str, int] | None) -> None:
        """The host runs in ``sandbox_id``, reachable over SSH at ``endpoint`` (None: a host without SSH)."""
        self.status = STATUS_RUNNING
        self.sandbox_id = sandbox_id
        self.ssh_host, self.ssh_port = endpoint if endpoint else (None, None)
        self.failure = None

    def follow_tunnel(self, endpoint: tuple[str, int]) -> None:
        """The SSH tunnel of the host's sandbox moved to ``endpoint``."""
        self.ssh_host, self.ssh_port = endpoint

    def prepare_new_sandbox(self, user_tags: dict[str, str], spec: dict[str, Any], host_public_key: str,
                            extra_keys: list[str]) -> None:
        """An existing host gets a new sandbox (a start): its tags, spec and keys as the new sandbox will have them."""
        self.user_tags = dict(user_tags)
        self.spec = spec
        self.ssh_host_public_key = host_public_key
        self.authorized_keys = sorted(set(self.authorized_keys) | set(extra_keys))
        self.stop_reason = None

    def mark_stopped(self, reason: str) -> None:
        """The host has no sandbox any more, on purpose or not; ``reason`` says why."""
        self.status = STATUS_STOPPED
        self.stop_reason = reason
        self.sandbox_id = None
        self.ssh_host = self.ssh_port = None

    def mark_destroyed(self) -> None:
        self.status = STATUS_DESTROYED
        self.sandbox_id = None

    def mark_failed(self, reason: str, host_existed: bool) -> None:
        """A create failed; a host that existed before keeps its status, so the next run tries again."""
        if not host_existed:
            self.status = STATUS_FAILED
        self.failure = reason[-MAX_FAILURE_LENGTH:]
        self.sandbox_id = None

    def begin_rename(self, new_name: str) -> None:
        """The host is called ``new_name`` from now on; ``previous_name`` stays until every place follows."""
        if new_name != self.name:
            self.previous_name = self.name
        self.name = new_name

    def finish_rename(self) -> None:
        self.previous_name = None


def record_path(host_id: str) -> str:
    return f"{HOSTS_DIR}/{host_id}.json"


class HostRecords:
    """The host records of one app, on ``files`` (the state volume, or memory)."""

    def __init__(self, files: StateFiles) -> None:
        self.files = files

    @classmethod
    def holding(cls, records: Iterable[HostRecord] = ()) -> "HostRecords":
        """Records kept in memory: for tests, and for the check-mode view of an app that does not exist yet."""
        return cls(MemoryStateFiles({record_path(record.host_id): record.to_json() for record in records}))

    def paths(self) -> list[str]:
        """The paths of the record files: the ``.json`` files directly in ``hosts/``."""
        return [path for path in self.files.list(HOSTS_DIR)
                if path.endswith(".json") and "/" not in path[len(HOSTS_DIR) + 1:]]

    def list(self) -> list[HostRecord]:
        records = [self._read(path) for path in self.paths()]
        return [record for record in records if record is not None]

    def get(self, host_id: str) -> HostRecord | None:
        return self._read(record_path(host_id))

    def _read(self, path: str) -> HostRecord | None:
        raw = self.files.read(path)
        if raw is None:
            return None
        try:
            return HostRecord.from_json(raw)
        except ValueError:
            # A record another tool half-wrote or a future format we cannot read: skip, never crash a listing.
            return None

    def put(self, record: HostRecord) -> None:
        record.updated_at = _now_text()
        self.files.create(record_path(record.host_id), record.to_json(), overwrite=True)


def host_records(session: Any, create: bool) -> HostRecords:
    """The host records of the session's app, on its state volume (see :func:`._state_volume.state_files`)."""
    return HostRecords(state_files(session, create))
