# Copyright (c) 2026, the mngr.modal authors
# GNU General Public License v3.0+ (see COPYING or https://www.gnu.org/licenses/gpl-3.0.txt)

# This module is private to the mngr.modal collection: its interface may change at any time,
# do not use it from outside the collection.

"""One host per name, across processes and machines: name reservations on the app's state volume.

A host name is taken by creating ``names/<name>.json`` on ``<app>-state`` exclusively (the volume refuses to
overwrite an existing file, as for snapshot records). The file says which host holds the name, which run took
it and when. A run that creates a host, or renames one, takes the name first; when the file is already there
and names another host, the run has lost the race and creates or renames nothing.

A reservation is held for as long as its host has that name. It is released when the host is destroyed, when
a create fails, and once a rename is complete (the old name). A run that crashed can leave one behind, so a
reservation is *stale*, and may be taken over, when:

- its host's record says the host is destroyed or failed, or that the host now has another name (and is not
  in the middle of a rename from this one); or
- its host has neither a record nor a live sandbox, and the reservation is older than
  ``STALE_AFTER_SECONDS`` (a run that is still creating the host has a live sandbox long before that).

Taking over is itself exclusive: the run that creates the marker ``names/<name>.takeover-<host_id>-<time>``
for that one stale reservation replaces it; any other run re-reads the name and sees the new holder.

The logic is pure (storage is a StateFiles), tested without Modal.
"""

from __future__ import annotations

import datetime
import json
import os
import socket
from dataclasses import dataclass
from typing import Any, Callable

from ansible_collections.mngr.modal.plugins.module_utils._state_volume import StateFiles, utc_now

RESERVATIONS_DIR = "names"
# A reservation whose host has neither a record nor a live sandbox after this long was left by a crash.
STALE_AFTER_SECONDS = 15 * 60
# Rounds of "create, read, take over a stale one" before giving up (each round makes progress unless
# other runs keep releasing and taking the name at the same moment).
MAX_ROUNDS = 5


def reservation_path(name: str) -> str:
    return f"{RESERVATIONS_DIR}/{name}.json"


def run_owner() -> str:
    """Who took a reservation, for messages: ``hostname pid N``."""
    return f"{socket.gethostname()} pid {os.getpid()}"


@dataclass
class Reservation:
    """``names/<name>.json``: the host that holds ``name``, the run that took it and when."""

    name: str
    host_id: str
    owner: str = ""
    created_at: str = ""

    def to_json(self) -> bytes:
        return (json.dumps(self.__dict__, indent=2, sort_keys=True) + "\n").encode("utf-8")

    @classmethod
    def from_json(cls, raw: bytes) -> "Reservation":
        data = json.loads(raw)
        if not isinstance(data, dict) or not data.get("name") or not data.get("host_id"):
            raise ValueError("not a name reservation")
        return cls(name=str(data["name"]), host_id=str(data["host_id"]), owner=str(data.get("owner") or ""),
                   created_at=str(data.get("created_at") or ""))

    def age_seconds(self, now: datetime.datetime | None = None) -> float:
        try:
            created = datetime.datetime.fromisoformat(self.created_at)
        except ValueError:
            return float("inf")  # unreadable time: treat as old, the record/sandbox rules still protect live hosts
        return ((now or utc_now()) - created).total_seconds()

    def describe(self) -> str:
        return f"host {self.host_id}, reserved by {self.owner or 'an unknown run'} at {self.created_at or 'an unknown time'}"


@dataclass
class HostEvidence:
    """What Modal says about a reservation's host, read just before deciding whether the reservation is stale."""

    record_status: str | None = None  # None: no record
    record_name: str | None = None
    record_previous_name: str | None = None
    has_live_sandbox: bool = False


def is_stale(reservation: Reservation, evidence: HostEvidence, now: datetime.datetime | None = None) -> bool:
    """Whether ``reservation`` was left behind (see the module docstring for the rule)."""
    if evidence.record_status is not None:
        if evidence.record_status in ("destroyed", "failed") and not evidence.has_live_sandbox:
            return True
        return reservation.name not in (evidence.record_name, evidence.record_previous_name)
    if evidence.has_live_sandbox:
        return False
    return reservation.age_seconds(now) > STALE_AFTER_SECONDS


class NameReservations:
    """Name reservations of one app, on ``files`` (the state volume, or memory in tests)."""

    def __init__(self, files: StateFiles, owner: str | None = None,
                 clock: Callable[[], datetime.datetime] = utc_now) -> None:
        self.files = files
        self.owner = owner if owner is not None else run_owner()
        self.clock = clock

    def holder(self, name: str) -> Reservation | None:
        raw = self.files.read(reservation_path(name))
        if raw is None:
            return None
        try:
            return Reservation.from_json(raw)
        except ValueError:
            # A file we cannot read must not block the name forever, nor be trusted: treat it as stale and old.
            return Reservation(name=name, host_id="unreadable", owner="", created_at="")

    def reserve(self, name: str, host_id: str, evidence: Callable[[str], HostEvidence]) -> Reservation:
        """Take ``name`` for ``host_id``; return the reservation that holds the name afterwards.

        The result's ``host_id`` is ``host_id`` when this run holds the name (taken now or held already), else
        that of the host that won. ``evidence(host_id)`` reads what Modal says about a holder, to tell a stale
        reservation from a live one.
        """
        for _round in range(MAX_ROUNDS):
            mine = Reservation(name=name, host_id=host_id, owner=self.owner, created_at=self.clock().isoformat())
            if self.files.create(reservation_path(name), mine.to_json(), overwrite=False):
                return mine
            current = self.holder(name)
            if current is None:
                continue  # released meanwhile: try again
            if current.host_id == host_id:
                return current
            if not is_stale(current, evidence(current.host_id), self.clock()):
                return current
            self._take_over(current)
        current = self.holder(name)
        if current is None:
            raise RuntimeError(f"could not reserve host name {name}: other runs kept taking and releasing it")
        return current

    def _take_over(self, stale: Reservation) -> None:
        """Remove a stale reservation, unless another run is already replacing that same reservation."""
        stamp = "".join(ch for ch in stale.created_at if ch.isdigit()) or "unknown"
        marker = f"{RESERVATIONS_DIR}/{stale.name}.takeover-{stale.host_id}-{stamp}"
        if self.files.create(marker, self.owner.encode("utf-8"), overwrite=False):
            self.files.remove(reservation_path(stale.name))

    def release(self, name: str, host_id: str) -> bool:
        """Give up ``name`` if ``host_id`` holds it; True when a reservation was removed."""
        current = self.holder(name)
        if current is None or current.host_id != host_id:
            return False
        return self.files.remove(reservation_path(name))


def evidence_from(record: Any, live_sandbox_ids: list[str]) -> HostEvidence:
    """HostEvidence from a host record (or None) and the ids of the host's live sandboxes."""
    if record is None:
        return HostEvidence(has_live_sandbox=bool(live_sandbox_ids))
    return HostEvidence(record_status=record.status, record_name=record.name,
                        record_previous_name=record.previous_name, has_live_sandbox=bool(live_sandbox_ids))
