# Copyright (c) 2026, the mngr.modal authors
# GNU General Public License v3.0+ (see COPYING or https://www.gnu.org/licenses/gpl-3.0.txt)

"""modal_gc's pure logic: durations, what counts as garbage, and the idle probe's output."""

from __future__ import annotations

import pytest

from ansible_collections.mngr.modal.plugins.module_utils._gc import (
    CLOCK_TICKS,
    GcError,
    find_garbage,
    idle_seconds,
    parse_duration,
)
from ansible_collections.mngr.modal.plugins.module_utils._live import ListedSandbox
from ansible_collections.mngr.modal.plugins.module_utils._records import (
    STATUS_DESTROYED,
    STATUS_RUNNING,
    STATUS_STOPPED,
    HostRecord,
)
from ansible_collections.mngr.modal.plugins.module_utils._tags import encode_sandbox_tags

NOW = 1_000_000.0


def sandbox(sandbox_id, host_id=None, name="web", age=3600.0):
    tags = encode_sandbox_tags(host_id, name, {}) if host_id else {"owner": "someone-else"}
    return ListedSandbox(sandbox_id, tags, created_at=None if age is None else NOW - age)


def record(host_id, name="web", status=STATUS_RUNNING, sandbox_id=None):
    return HostRecord(host_id=host_id, name=name, user_tags={}, spec={"cpu": 2.0, "memory": 4.0}, status=status,
                      sandbox_id=sandbox_id)


@pytest.mark.parametrize("value, seconds", [
    (90, 90), ("90", 90), ("15m", 900), ("2h", 7200), ("7d", 604800), ("1w", 604800), ("1d12h", 129600),
    ("1.5h", 5400), (0, 0), (None, None),
])
def test_durations(value, seconds):
    assert parse_duration(value, "older_than") == seconds


@pytest.mark.parametrize("value", ["soon", "15 minutes", "h", "-5", "1x", "2h-1m"])
def test_bad_durations_name_the_option_and_the_value(value):
    with pytest.raises(GcError) as info:
        parse_duration(value, "idle_for")
    assert "idle_for" in info.value.msg and repr(value) in info.value.msg


def test_sandboxes_without_our_tags_are_never_garbage():
    garbage = find_garbage([sandbox("sb-foreign")], [], NOW, grace=0, older_than=1, idle={"sb-foreign": 1e9},
                           idle_for=1)
    assert garbage.empty()


def test_orphans_have_no_live_record_and_are_past_the_grace_period():
    live = [sandbox("sb-1", "host-a", "a"), sandbox("sb-2", "host-b", "b"), sandbox("sb-3", "host-c", "c", age=60),
            sandbox("sb-4", "host-d", "d", age=None), sandbox("sb-5", "host-e", "e")]
    records = [record("host-b", "b", STATUS_DESTROYED), record("host-e", "e", sandbox_id="sb-5")]
    garbage = find_garbage(live, records, NOW, grace=900)
    assert [(found.sandbox_id, found.reason) for found in garbage.orphans] == [
        ("sb-1", "orphan: no host record"), ("sb-2", "orphan: its host record says destroyed")]
    # A young sandbox, or one of unknown age, may be a create under way; without a grace period both count.
    assert [found.sandbox_id for found in find_garbage(live, records, NOW, grace=0).orphans] == [
        "sb-1", "sb-2", "sb-3", "sb-4"]


def test_duplicates_keep_the_sandbox_the_record_names_else_the_newest():
    live = [sandbox("sb-old", "host-a", "a", age=7200), sandbox("sb-rec", "host-a", "a", age=5000),
            sandbox("sb-new", "host-a", "a", age=4000),
            sandbox("sb-x", "host-b", "b", age=7200), sandbox("sb-y", "host-b", "b", age=4000)]
    records = [record("host-a", "a", sandbox_id="sb-rec"), record("host-b", "b", sandbox_id="sb-gone")]
    garbage = find_garbage(live, records, NOW, grace=900)
    assert sorted(found.sandbox_id for found in garbage.duplicates) == ["sb-new", "sb-old", "sb-x"]
    assert all("runs in sb-rec" in found.reason for found in garbage.duplicates if found.host_id == "host-a")
    assert garbage.orphans == [] and garbage.stale_records == []


def test_stale_records_say_running_without_a_sandbox():
    records = [record("host-a", "a", sandbox_id="sb-gone"), record("host-b", "b", STATUS_STOPPED),
               record("host-c", "c", sandbox_id="sb-c")]
    garbage = find_garbage([sandbox("sb-c", "host-c", "c")], records, NOW, grace=900)
    assert [(found.name, found.sandbox_id) for found in garbage.stale_records] == [("a", "sb-gone")]


def test_expired_hosts_by_age_and_by_idleness():
    live = [sandbox("sb-a", "host-a", "a", age=8 * 86400), sandbox("sb-b", "host-b", "b", age=3600),
            sandbox("sb-c", "host-c", "c", age=3600)]
    records = [record("host-a", "a", sandbox_id="sb-a"), record("host-b", "b", sandbox_id="sb-b"),
               record("host-c", "c", sandbox_id="sb-c")]
    garbage = find_garbage(live, records, NOW, grace=900, older_than=7 * 86400, idle={"sb-b": 3 * 3600, "sb-c": 60},
                           idle_for=2 * 3600)
    assert [(found.name, found.reason) for found in garbage.expired] == [
        ("a", "older than 7d (running for 8d)"), ("b", "idle for 3h (no new process; limit 2h)")]
    assert find_garbage(live, records, NOW, grace=900).expired == []


def stat_line(pid, ppid, start_seconds, comm="sh"):
    fields = ["S", str(ppid)] + ["0"] * 17 + [str(int(start_seconds * CLOCK_TICKS))] + ["0"] * 5
    return f"{pid} ({comm}) " + " ".join(fields)


def test_idle_seconds_leave_out_the_probe_and_its_ancestors():
    output = "\n".join([
        "uptime 5000.00 self 40",
        stat_line(1, 0, 100, "tini"),
        stat_line(7, 1, 110, "sshd"),
        stat_line(20, 7, 1000, "sshd: root"),  # the newest real activity: an SSH session
        stat_line(38, 0, 4999, "exec-helper"),  # the exec machinery that runs the probe
        stat_line(40, 38, 4999.5),  # the probe itself
    ])
    assert idle_seconds(output) == pytest.approx(4000.0)


def test_idle_seconds_of_unreadable_output_is_none():
    assert idle_seconds("") is None
    assert idle_seconds("sh: /proc/uptime: not found") is None
