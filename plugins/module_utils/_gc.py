# Copyright (c) 2026, the mngr.modal authors
# GNU General Public License v3.0+ (see COPYING or https://www.gnu.org/licenses/gpl-3.0.txt)

# This module is private to the mngr.modal collection: its interface may change at any time,
# do not use it from outside the collection.

"""What costs money and should not: finding it, from the app's live sandboxes and host records (pure logic).

:func:`find_garbage` sorts what it finds into orphans (sandboxes with our identity tags whose host has no live
record), duplicates (more than one sandbox for one host), stale records (a record that says running whose sandbox
is gone) and, when asked, hosts older than a limit or idle for longer than one. Sandboxes without our identity tags
are never considered. ``modal_gc`` acts on what it finds; the idle probe (:func:`idle_seconds`) reads, inside a
sandbox, when its newest process started.
"""

from __future__ import annotations

import re
from dataclasses import dataclass, field
from typing import Any, Iterable

from ansible_collections.mngr.modal.plugins.module_utils._errors import ModalCollectionError
from ansible_collections.mngr.modal.plugins.module_utils._live import ListedSandbox
from ansible_collections.mngr.modal.plugins.module_utils._records import (
    STATUS_DESTROYED,
    STATUS_FAILED,
    STATUS_RUNNING,
    HostRecord,
)
from ansible_collections.mngr.modal.plugins.module_utils._tags import decode_sandbox_tags

_DURATION_PART = re.compile(r"(\d+(?:\.\d+)?)([smhdw])")
_UNIT_SECONDS = {"s": 1, "m": 60, "h": 3600, "d": 86400, "w": 604800}


class GcError(ModalCollectionError, ValueError):
    """Invalid input of modal_gc: the message names the value and says what is accepted."""


def parse_duration(value: Any, option: str) -> float | None:
    """Seconds from ``90``, ``"90"``, ``"15m"``, ``"2h"``, ``"7d"``, ``"1w"`` or ``"1d12h"``; None stays None."""
    if value is None:
        return None
    text = str(value).strip().lower()
    try:
        seconds = float(text)
    except ValueError:
        parts = _DURATION_PART.findall(text)
        if not parts or "".join(number + unit for number, unit in parts) != text:
            raise GcError(f"{option} must be a duration such as 90 (seconds), 30m, 12h, 7d or 1d12h, got {value!r}") from None
        seconds = sum(float(number) * _UNIT_SECONDS[unit] for number, unit in parts)
    if seconds < 0:
        raise GcError(f"{option} must not be negative, got {value!r}")
    return seconds


@dataclass
class Found:
    """One sandbox (or record) to act on, and why."""

    host_id: str
    name: str
    sandbox_id: str | None
    reason: str
    age_seconds: float | None = None

    def result(self) -> dict[str, Any]:
        age = None if self.age_seconds is None else round(self.age_seconds)
        return {"host_id": self.host_id, "name": self.name, "sandbox_id": self.sandbox_id, "reason": self.reason,
                "age_seconds": age}


@dataclass
class Garbage:
    orphans: list[Found] = field(default_factory=list)
    duplicates: list[Found] = field(default_factory=list)
    stale_records: list[Found] = field(default_factory=list)
    # Running hosts past older_than or idle_for: they are destroyed (sandbox, record, name, keys).
    expired: list[Found] = field(default_factory=list)

    def empty(self) -> bool:
        return not (self.orphans or self.duplicates or self.stale_records or self.expired)


def _age(sandbox: ListedSandbox, now: float) -> float | None:
    return None if sandbox.created_at is None else max(now - float(sandbox.created_at), 0.0)


def _old_enough(sandbox: ListedSandbox, now: float, grace: float) -> bool:
    """Past the grace period. A sandbox of unknown age is only touched without one (a create may be under way)."""
    age = _age(sandbox, now)
    return grace <= 0 if age is None else age >= grace


def find_garbage(live: Iterable[ListedSandbox], records: Iterable[HostRecord], now: float, grace: float,
                 older_than: float | None = None, idle: dict[str, float] | None = None,
                 idle_for: float | None = None) -> Garbage:
    """Sort the app's sandboxes and records into what modal_gc removes or fixes.

    ``grace``: sandboxes younger than this are never orphans or duplicates (a create writes the host's record only
    once its sandbox answers SSH). ``idle`` maps sandbox ids to seconds since their newest process started.
    """
    garbage = Garbage()
    by_id = {record.host_id: record for record in records}
    sandboxes_of: dict[str, list[ListedSandbox]] = {}
    names: dict[str, str] = {}
    for sandbox in live:
        identity = decode_sandbox_tags(sandbox.tags)
        if identity is None:
            continue  # not ours: never touched
        sandboxes_of.setdefault(identity.host_id, []).append(sandbox)
        names.setdefault(identity.host_id, identity.name)
    for host_id, sandboxes in sorted(sandboxes_of.items()):
        record = by_id.get(host_id)
        name = record.name if record is not None else names[host_id]
        if record is None or record.status in (STATUS_DESTROYED, STATUS_FAILED):
            why = "no host record" if record is None else f"its host record says {record.status}"
            garbage.orphans.extend(Found(host_id, name, sandbox.sandbox_id, f"orphan: {why}", _age(sandbox, now))
                                   for sandbox in sandboxes if _old_enough(sandbox, now, grace))
            continue
        keep = _sandbox_to_keep(sandboxes, record)
        for sandbox in sandboxes:
            if sandbox is not keep and _old_enough(sandbox, now, grace):
                garbage.duplicates.append(Found(host_id, name, sandbox.sandbox_id,
                                                f"duplicate: host {name} runs in {keep.sandbox_id}",
                                                _age(sandbox, now)))
        expired = _expiry(keep, now, older_than, (idle or {}).get(keep.sandbox_id), idle_for)
        if expired:
            garbage.expired.append(Found(host_id, name, keep.sandbox_id, expired, _age(keep, now)))
    for record in sorted(by_id.values(), key=lambda r: (r.name, r.host_id)):
        if record.status == STATUS_RUNNING and record.host_id not in sandboxes_of:
            garbage.stale_records.append(Found(record.host_id, record.name, record.sandbox_id,
                                               "its record says running but its sandbox is gone"))
    return garbage


def _sandbox_to_keep(sandboxes: list[ListedSandbox], record: HostRecord) -> ListedSandbox:
    """The sandbox the record names, else the newest (the one a later run created)."""
    for sandbox in sandboxes:
        if sandbox.sandbox_id == record.sandbox_id:
            return sandbox
    return max(sandboxes, key=lambda sandbox: sandbox.created_at or 0.0)


def _expiry(sandbox: ListedSandbox, now: float, older_than: float | None, idle: float | None,
            idle_for: float | None) -> str | None:
    age = _age(sandbox, now)
    if older_than is not None and age is not None and age >= older_than:
        return f"older than {_describe(older_than)} (running for {_describe(age)})"
    if idle_for is not None and idle is not None and idle >= idle_for:
        return f"idle for {_describe(idle)} (no new process; limit {_describe(idle_for)})"
    return None


def _describe(seconds: float) -> str:
    """``90`` -> ``1.5m``, ``7200`` -> ``2h``: durations as people write them."""
    for unit, size in (("d", 86400), ("h", 3600), ("m", 60)):
        if seconds >= size:
            return f"{seconds / size:.1f}".rstrip("0").rstrip(".") + unit
    return f"{int(seconds)}s"


# --- idleness, read inside a sandbox ----------------------------------------------------------------

# Prints the sandbox's uptime, then "pid stat-line" of every process but the probe itself, with shell builtins
# only (no process is started but the shell, which the parser leaves out with its ancestors).
IDLE_PROBE_SCRIPT = r"""
read -r up _ < /proc/uptime
echo "uptime $up self $$"
for d in /proc/[0-9]*; do
  read -r line < "$d/stat" 2>/dev/null || continue
  echo "$line"
done
"""
# Clock ticks per second of /proc/<pid>/stat start times (USER_HZ, 100 on every Linux architecture Modal runs).
CLOCK_TICKS = 100


def idle_seconds(output: str) -> float | None:
    """Seconds since the newest process in the sandbox started, from :data:`IDLE_PROBE_SCRIPT`'s output.

    The probe's shell and its ancestors (the exec machinery) are left out; None when the output cannot be read.
    """
    lines = output.strip().splitlines()
    if not lines or not lines[0].startswith("uptime "):
        return None
    head = lines[0].split()
    uptime, probe = float(head[1]), head[3]
    parents: dict[str, str] = {}
    starts: dict[str, float] = {}
    for line in lines[1:]:
        pid, _space, rest = line.partition(" ")
        fields = rest[rest.rfind(")") + 2:].split()
        if len(fields) < 20:
            continue
        parents[pid] = fields[1]
        starts[pid] = int(fields[19]) / CLOCK_TICKS
    skip = set()
    pid = probe
    while pid in parents and pid not in skip and pid != "1":
        skip.add(pid)
        pid = parents[pid]
    newest = max((start for pid, start in starts.items() if pid not in skip), default=None)
    return None if newest is None else max(uptime - newest, 0.0)
