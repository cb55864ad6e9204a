# Copyright (c) 2026, the mngr.modal authors
# GNU General Public License v3.0+ (see COPYING or https://www.gnu.org/licenses/gpl-3.0.txt)

"""Host name reservations: one host per name across runs, stale ones taken over exactly once."""

from __future__ import annotations

import datetime
import threading

from ansible_collections.mngr.modal.plugins.module_utils._reservations import (
    STALE_AFTER_SECONDS,
    HostEvidence,
    NameReservations,
    Reservation,
    is_stale,
    reservation_path,
)
from ansible_collections.mngr.modal.plugins.module_utils._state_volume import MemoryStateFiles

NOW = datetime.datetime(2026, 1, 31, 12, 0, tzinfo=datetime.timezone.utc)
NO_HOST = HostEvidence()
ALIVE = HostEvidence(has_live_sandbox=True)


def reservations(files, owner="ctl pid 1", now=NOW):
    return NameReservations(files, owner=owner, clock=lambda: now)


def test_the_first_run_takes_the_name_and_the_second_sees_the_winner():
    files = MemoryStateFiles()
    first = reservations(files).reserve("web", "host-1", lambda _id: ALIVE)
    second = reservations(files, owner="other pid 2").reserve("web", "host-2", lambda _id: ALIVE)
    assert first.host_id == "host-1" and second.host_id == "host-1"
    assert second.owner == "ctl pid 1"
    # Reserving again for the holder is a no-op that reports it.
    assert reservations(files).reserve("web", "host-1", lambda _id: ALIVE).host_id == "host-1"


def test_concurrent_runs_get_exactly_one_winner():
    files = MemoryStateFiles()
    results = {}

    def run(index):
        results[index] = reservations(files, owner=f"pid {index}").reserve("web", f"host-{index}", lambda _id: ALIVE)

    threads = [threading.Thread(target=run, args=(index,)) for index in range(10)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join()
    winners = {reservation.host_id for reservation in results.values()}
    assert len(winners) == 1


def test_release_only_by_the_holder():
    files = MemoryStateFiles()
    reservations(files).reserve("web", "host-1", lambda _id: ALIVE)
    assert reservations(files).release("web", "host-2") is False
    assert reservations(files).holder("web").host_id == "host-1"
    assert reservations(files).release("web", "host-1") is True
    assert reservations(files).holder("web") is None


def test_staleness_rule():
    young = Reservation("web", "host-1", "ctl", (NOW - datetime.timedelta(seconds=60)).isoformat())
    old = Reservation("web", "host-1", "ctl", (NOW - datetime.timedelta(seconds=STALE_AFTER_SECONDS + 1)).isoformat())
    # A create in progress (no record yet) is protected while young, and for as long as its sandbox lives.
    assert not is_stale(young, NO_HOST, NOW)
    assert is_stale(old, NO_HOST, NOW)
    assert not is_stale(old, ALIVE, NOW)
    # A host that is destroyed or failed, or that now has another name, no longer holds it.
    assert is_stale(young, HostEvidence(record_status="destroyed", record_name="web"), NOW)
    assert is_stale(young, HostEvidence(record_status="failed", record_name="web"), NOW)
    assert is_stale(young, HostEvidence(record_status="running", record_name="front"), NOW)
    # ... unless it is being renamed away from it right now, or still has it.
    assert not is_stale(young, HostEvidence(record_status="running", record_name="front", record_previous_name="web"), NOW)
    assert not is_stale(old, HostEvidence(record_status="stopped", record_name="web"), NOW)


def test_a_stale_reservation_is_taken_over_once():
    files = MemoryStateFiles()
    reservations(files, now=NOW - datetime.timedelta(hours=1)).reserve("web", "host-dead", lambda _id: NO_HOST)
    evidence = {"host-dead": HostEvidence(record_status="destroyed", record_name="web")}
    taken = reservations(files, owner="b").reserve("web", "host-2", lambda host_id: evidence.get(host_id, ALIVE))
    assert taken.host_id == "host-2" and taken.owner == "b"
    # A late run that also judged host-dead's reservation stale cannot remove the new one: its marker exists.
    late = reservations(files, owner="c")
    late._take_over(Reservation("web", "host-dead", "ctl pid 1", (NOW - datetime.timedelta(hours=1)).isoformat()))
    assert late.holder("web").host_id == "host-2"


def test_an_unreadable_reservation_does_not_block_the_name_forever():
    files = MemoryStateFiles({reservation_path("web"): b"not json"})
    taken = reservations(files).reserve("web", "host-1", lambda _id: NO_HOST)
    assert taken.host_id == "host-1"
