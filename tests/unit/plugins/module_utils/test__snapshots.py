# Copyright (c) 2026, the mngr.modal authors
# GNU General Public License v3.0+ (see COPYING or https://www.gnu.org/licenses/gpl-3.0.txt)

"""The snapshot catalog: names, records, listing with bad records, lookups, the journal and taking a snapshot."""

from __future__ import annotations

import datetime
import json
import multiprocessing
import os
import socket
import subprocess
import threading
import time
import types

import pytest

from ansible_collections.mngr.modal.plugins.module_utils._journal import (
    JOURNAL_LEASE_SECONDS,
    Journal,
    process_start,
    recover_journal,
    take_snapshot,
)
from ansible_collections.mngr.modal.plugins.module_utils._snapshots import (
    KIND_STOP,
    SNAPSHOT_NAME_MAX_LENGTH,
    SnapshotCatalog,
    SnapshotError,
    SnapshotRecord,
    default_snapshot_name,
    new_record,
    snapshot_path,
    validate_snapshot_name,
)
from ansible_collections.mngr.modal.plugins.module_utils._state_volume import (
    MemoryStateFiles,
    StateVolumeMissing,
    VolumeStateFiles,
)

UTC = datetime.timezone.utc


def record(name, host_id="host-a", image_id=None, created="2026-01-01T00:00:00+00:00", host_name="alpha", **kw):
    return SnapshotRecord(name=name, image_id=image_id or f"im-{name.replace('-', '')}", host_id=host_id,
                          host_name=host_name, created_at=created, **kw)


def catalog_with(*records):
    files = MemoryStateFiles({r.path: r.to_json() for r in records})
    return SnapshotCatalog(files), files


# --- names ---------------------------------------------------------------------------------------


@pytest.mark.parametrize("name", ["snap", "snapshot-2026-01-02-03-04-05", "a.b_c-d", "9", "x" * SNAPSHOT_NAME_MAX_LENGTH])
def test_valid_names(name):
    assert validate_snapshot_name(name) == name


@pytest.mark.parametrize(
    "name, fragment",
    [
        ("../x", "not a valid snapshot name"),
        ("a/b", "not a valid snapshot name"),
        ("..", "not a valid snapshot name"),
        (".hidden", "not a valid snapshot name"),
        ("", "non-empty"),
        (None, "non-empty"),
        ("x" * 300, "300 characters"),
        ("with space", "not a valid snapshot name"),
        ("im-abc123", "image id"),
    ],
)
def test_invalid_names_say_why(name, fragment):
    with pytest.raises(SnapshotError) as info:
        validate_snapshot_name(name)
    assert fragment in str(info.value)


def test_default_name_is_utc_and_valid():
    moment = datetime.datetime(2026, 3, 4, 5, 6, 7, tzinfo=datetime.timezone(datetime.timedelta(hours=2)))
    assert default_snapshot_name(now=moment) == "snapshot-2026-03-04-03-06-07"
    assert default_snapshot_name("stop", now=moment) == "stop-2026-03-04-03-06-07"
    assert validate_snapshot_name(default_snapshot_name()) == default_snapshot_name()


# --- records -------------------------------------------------------------------------------------


def test_record_round_trip_and_path():
    original = new_record("s1", "im-1", "host-a", "alpha", "sb-1", {"cpu": 2.0}, KIND_STOP, ttl=3600,
                          now=datetime.datetime(2026, 1, 1, tzinfo=UTC))
    assert original.path == "snapshots/host-a/s1.json" == snapshot_path("host-a", "s1")
    assert original.expires_at == "2026-01-01T01:00:00+00:00"
    parsed = SnapshotRecord.from_json(original.to_json())
    assert parsed == original
    assert json.loads(original.to_json())["format"] == 1
    assert parsed.result() == {"name": "s1", "id": "im-1", "host": "alpha", "host_id": "host-a",
                               "created_at": "2026-01-01T00:00:00+00:00", "sandbox_id": "sb-1", "kind": "stop",
                               "expires_at": "2026-01-01T01:00:00+00:00"}
    assert parsed.result("renamed")["host"] == "renamed"


def test_ttl_none_means_no_expiry():
    assert new_record("s", "im-1", "h", "n", None, None, ttl=None).expires_at is None
    assert not new_record("s", "im-1", "h", "n", None, None, ttl=None).expired()


def test_unknown_fields_are_ignored():
    data = json.loads(record("s").to_json())
    data["future_field"] = 1
    assert SnapshotRecord.from_json(json.dumps(data)).name == "s"


@pytest.mark.parametrize("raw", [b"{not json", b"[]", b'{"name": "s", "host_id": "h"}', b"\xff\xfe"])
def test_bad_records_are_value_errors(raw):
    with pytest.raises(ValueError):
        SnapshotRecord.from_json(raw)


# --- catalog ---------------------------------------------------------------------------------------


def test_list_is_newest_first_per_host_and_for_all():
    old = record("old", created="2026-01-01T00:00:00+00:00")
    new = record("new", created="2026-01-02T00:00:00+00:00")
    other = record("other", host_id="host-b", host_name="beta", created="2026-01-03T00:00:00+00:00")
    catalog, _files = catalog_with(old, new, other)
    assert [r.name for r in catalog.list("host-a")] == ["new", "old"]
    assert [r.name for r in catalog.list()] == ["other", "new", "old"]
    assert catalog.newest("host-a").name == "new"
    assert catalog.newest("host-c") is None
    assert catalog.warnings == []


def test_corrupt_and_misplaced_records_warn_and_are_skipped():
    good = record("good")
    files = MemoryStateFiles({good.path: good.to_json(), "snapshots/host-a/broken.json": b"{half a rec",
                              "snapshots/host-a/moved.json": record("elsewhere").to_json(),
                              "snapshots/host-a/notes.txt": b"ignored"})
    catalog = SnapshotCatalog(files)
    assert [r.name for r in catalog.list("host-a")] == ["good"]
    assert len(catalog.warnings) == 2
    assert any("snapshots/host-a/broken.json" in w and "cannot be read" in w for w in catalog.warnings)
    assert any("snapshots/host-a/moved.json" in w for w in catalog.warnings)
    assert catalog.get("host-a", "broken") is None


def test_record_deleted_between_list_and_read_warns():
    class Vanishing(MemoryStateFiles):
        def list(self, folder):
            paths = super().list(folder)
            self.files.pop("snapshots/host-a/gone.json", None)
            return paths

    files = Vanishing({record("gone").path: record("gone").to_json(), record("kept").path: record("kept").to_json()})
    catalog = SnapshotCatalog(files)
    assert [r.name for r in catalog.list()] == ["kept"]
    assert catalog.warnings and "snapshots/host-a/gone.json" in catalog.warnings[0]


def test_add_is_exclusive_unless_overwrite_and_remove():
    catalog, files = catalog_with()
    first = record("s", image_id="im-first")
    assert catalog.add(first)
    assert not catalog.add(record("s", image_id="im-second"))
    assert catalog.get("host-a", "s").image_id == "im-first"
    assert catalog.add(record("s", image_id="im-third"), overwrite=True)
    assert catalog.get("host-a", "s").image_id == "im-third"
    assert catalog.remove("host-a", "s")
    assert not catalog.remove("host-a", "s")
    assert files.files == {}


def test_newest_skips_expired_snapshots():
    expired = record("expired", created="2026-01-02T00:00:00+00:00", expires_at="2000-01-01T00:00:00+00:00")
    usable = record("usable", created="2026-01-01T00:00:00+00:00")
    catalog, _files = catalog_with(expired, usable)
    assert catalog.newest("host-a").name == "usable"
    assert catalog.newest("host-a", usable_only=False).name == "expired"


def test_find_by_name_id_and_host_slash_name():
    mine = record("base", image_id="im-mine")
    theirs = record("base", host_id="host-b", host_name="beta", image_id="im-theirs")
    only_theirs = record("solo", host_id="host-b", host_name="beta", image_id="im-solo")
    catalog, _files = catalog_with(mine, theirs, only_theirs)
    assert catalog.find("base", host_id="host-a").image_id == "im-mine"
    assert catalog.find("im-theirs", host_id="host-a").host_id == "host-b"
    assert catalog.find("solo", host_id="host-a").image_id == "im-solo"
    assert catalog.find("beta/base", host_ids_by_name={"beta": "host-b"}).image_id == "im-theirs"
    with pytest.raises(SnapshotError, match="several hosts"):
        catalog.find("base")
    with pytest.raises(SnapshotError, match="no snapshot named or with id 'nope'"):
        catalog.find("nope", host_id="host-a")
    with pytest.raises(SnapshotError, match="no host named 'gamma'"):
        catalog.find("gamma/base", host_ids_by_name={"beta": "host-b"})
    with pytest.raises(SnapshotError, match="has no snapshot named 'other'"):
        catalog.find("beta/other", host_ids_by_name={"beta": "host-b"})
    with pytest.raises(SnapshotError, match="empty"):
        catalog.find("")


# --- journal and taking snapshots ---------------------------------------------------------------------


class FakeSandbox:
    """snapshot_filesystem returns a new image id each time, as Modal does."""

    def __init__(self, sandbox_id="sb-1"):
        self.object_id = sandbox_id
        self.calls = []
        self._lock = threading.Lock()

    def snapshot_filesystem(self, timeout=55, ttl=None):
        with self._lock:
            self.calls.append({"timeout": timeout, "ttl": ttl})
            return types.SimpleNamespace(object_id=f"im-{len(self.calls)}")


def direct_call(fn, *args, **kwargs):
    return fn(*args, **kwargs)


def test_take_snapshot_records_and_clears_the_journal(tmp_path):
    catalog, _files = catalog_with()
    journal = Journal(str(tmp_path))
    sandbox = FakeSandbox()
    rec, written = take_snapshot(direct_call, catalog, journal, sandbox, "host-a", "alpha", {"cpu": 1.0}, name="s1",
                                 ttl=600, timeout=120)
    assert written and rec.image_id == "im-1" and rec.sandbox_id == "sb-1" and rec.spec == {"cpu": 1.0}
    assert sandbox.calls == [{"timeout": 120, "ttl": 600}]
    assert catalog.get("host-a", "s1") == rec
    assert journal.pending() == []


def test_take_snapshot_ttl_zero_keeps_the_image(tmp_path):
    sandbox = FakeSandbox()
    rec, _written = take_snapshot(direct_call, catalog_with()[0], Journal(str(tmp_path)), sandbox, "host-a",
                                  "alpha", {}, name="s", ttl=0)
    assert sandbox.calls[0]["ttl"] is None and rec.expires_at is None


def test_default_names_taken_in_the_same_second_get_suffixes(tmp_path):
    catalog, _files = catalog_with()
    journal = Journal(str(tmp_path))
    sandbox = FakeSandbox()
    names = set()
    for _attempt in range(3):
        rec, written = take_snapshot(direct_call, catalog, journal, sandbox, "host-a", "alpha", {}, kind=KIND_STOP)
        assert written
        names.add(rec.name)
    assert len(names) == 3 and all(name.startswith("stop-") for name in names)
    assert len(catalog.list("host-a")) == 3


def test_explicit_name_taken_by_a_racing_run_returns_the_winner_with_a_warning(tmp_path):
    winner = record("race", image_id="im-winner")
    catalog, _files = catalog_with(winner)
    rec, written = take_snapshot(direct_call, catalog, Journal(str(tmp_path)), FakeSandbox(), "host-a", "alpha", {},
                                 name="race")
    assert not written and rec.image_id == "im-winner"
    assert "im-1" in catalog.warnings[0] and "not in the catalog" in catalog.warnings[0]
    rec, written = take_snapshot(direct_call, catalog, Journal(str(tmp_path)), FakeSandbox(), "host-a", "alpha", {},
                                 name="race", overwrite=True)
    assert written and catalog.get("host-a", "race").image_id == "im-1"


def test_parallel_snapshots_all_survive(tmp_path):
    catalog, _files = catalog_with()
    journal = Journal(str(tmp_path))
    sandbox = FakeSandbox()
    results = []

    def one(index):
        results.append(take_snapshot(direct_call, catalog, journal, sandbox, "host-a", "alpha", {}, name=f"p{index}"))

    threads = [threading.Thread(target=one, args=(i,)) for i in range(10)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join()
    assert all(written for _record, written in results)
    assert sorted(r.name for r in catalog.list("host-a")) == sorted(f"p{i}" for i in range(10))
    assert len({r.image_id for r in catalog.list("host-a")}) == 10


def crash_in_a_child_process(journal, name="s"):
    """take_snapshot in a process of its own that dies after Modal returned the image, before the record is written."""
    class CrashingFiles(MemoryStateFiles):
        def create(self, path, data, overwrite):
            os._exit(3)  # the controller dies: no exception handler, no cleanup

    def child():
        take_snapshot(direct_call, SnapshotCatalog(CrashingFiles()), journal, FakeSandbox(), "host-a", "alpha", {},
                      name=name)

    process = multiprocessing.get_context("fork").Process(target=child)
    process.start()
    process.join()
    assert process.exitcode == 3


def a_dead_pid():
    child = subprocess.Popen(["true"])
    child.wait()
    return child.pid


def set_owner(journal, owner, age=0.0):
    """Rewrite the owner of the (only) journal entry, and make it ``age`` seconds old."""
    [filename] = [f for f in os.listdir(journal.path) if f.endswith(".json")]
    path = os.path.join(journal.path, filename)
    with open(path, encoding="utf-8") as handle:
        data = json.load(handle)
    if owner is None:
        data.pop("owner", None)
    else:
        data["owner"] = owner
    with open(path, "w", encoding="utf-8") as handle:
        json.dump(data, handle)
    moment = time.time() - age
    os.utime(path, (moment, moment))


def test_a_crash_before_the_write_is_recovered_from_the_journal(tmp_path):
    journal = Journal(str(tmp_path))
    crash_in_a_child_process(journal)
    pending = journal.pending("host-a")
    assert [(r.name, r.image_id) for r in pending] == [("s", "im-1")]
    assert journal.pending("host-b") == []

    catalog, _files = catalog_with()
    recovered = recover_journal(catalog, journal, "host-a")
    assert [r.name for r in recovered] == ["s"]
    assert catalog.get("host-a", "s").image_id == "im-1"
    assert journal.pending() == []


def test_journal_entries_name_their_owner(tmp_path):
    journal = Journal(str(tmp_path))
    journal.write(record("s"))
    [entry] = journal.entries()
    assert entry.owner["pid"] == os.getpid() and entry.owner["host"] == socket.gethostname()
    assert entry.owner["started"] == process_start(os.getpid())
    assert entry.record == record("s")


def test_recovery_leaves_the_entry_of_a_live_run_alone(tmp_path):
    """A run between snapshot_filesystem and its record write: another run's recovery must not take its entry."""
    journal = Journal(str(tmp_path))
    journal.write(record("s", image_id="im-live"))  # written by this process, which is alive
    catalog, files = catalog_with()
    assert recover_journal(catalog, journal) == []
    assert files.files == {}
    assert [r.image_id for r in journal.pending()] == ["im-live"]


@pytest.mark.parametrize(
    "owner, age, recovered",
    [
        ("dead pid on this machine", 0, True),
        ("reused pid on this machine", 0, True),
        ("another machine, fresh", 0, False),
        ("another machine, older than the lease", JOURNAL_LEASE_SECONDS + 60, True),
        ("no owner, fresh", 0, False),
        ("no owner, older than the lease", JOURNAL_LEASE_SECONDS + 60, True),
    ],
)
def test_recovery_takes_only_entries_whose_run_is_over(tmp_path, owner, age, recovered):
    owners = {
        "dead pid on this machine": {"host": socket.gethostname(), "pid": a_dead_pid(), "started": None},
        "reused pid on this machine": {"host": socket.gethostname(), "pid": os.getpid(), "started": "boot/1"},
        "another machine, fresh": {"host": "another-controller.invalid", "pid": os.getpid(), "started": None},
        "another machine, older than the lease": {"host": "another-controller.invalid", "pid": 1, "started": None},
        "no owner, fresh": None,
        "no owner, older than the lease": None,
    }
    if owner.startswith("reused") and process_start(os.getpid()) is None:
        pytest.skip("/proc does not give process start times here")
    journal = Journal(str(tmp_path))
    journal.write(record("s", image_id="im-lost"))
    set_owner(journal, owners[owner], age)
    catalog, _files = catalog_with()
    assert [r.image_id for r in recover_journal(catalog, journal)] == (["im-lost"] if recovered else [])
    assert journal.pending() == ([] if recovered else [record("s", image_id="im-lost")])


def test_recovery_does_not_replace_a_record_of_another_image(tmp_path):
    journal = Journal(str(tmp_path))
    journal.write(record("s", image_id="im-lost"))
    set_owner(journal, {"host": socket.gethostname(), "pid": a_dead_pid(), "started": None})
    catalog, _files = catalog_with(record("s", image_id="im-other"))
    assert recover_journal(catalog, journal) == []
    assert catalog.get("host-a", "s").image_id == "im-other"
    assert "im-lost" in catalog.warnings[0]
    assert journal.pending() == []


# --- the volume adapter ----------------------------------------------------------------------------


class NotFoundError(Exception):
    """Named like modal.exception.NotFoundError, which is what VolumeStateFiles recognises."""


class FakeVolume:
    def __init__(self, files=None):
        self.files = dict(files or {})
        self.hydrated = False

    def hydrate(self):
        self.hydrated = True

    def listdir(self, path, recursive=False):
        prefix = path.strip("/") + "/"
        found = [types.SimpleNamespace(path=p, type=1) for p in self.files if p.startswith(prefix)]
        if not found:
            raise NotFoundError(path)
        return found + [types.SimpleNamespace(path=prefix.rstrip("/"), type=2)]

    def read_file(self, path):
        if path not in self.files:
            raise NotFoundError(path)
        data = self.files[path]
        yield data[:3]
        yield data[3:]

    def remove_file(self, path):
        if path not in self.files:
            raise NotFoundError(path)
        del self.files[path]

    def batch_upload(self, force=False):
        volume = self

        class Batch:
            def __enter__(self):
                self.puts = []
                return self

            def put_file(self, fileobj, remote):
                self.puts.append((remote.lstrip("/"), fileobj.read()))

            def __exit__(self, *exc):
                for path, data in self.puts:
                    if path in volume.files and not force:
                        raise FileExistsError(path)
                for path, data in self.puts:
                    volume.files[path] = data
                return False

        return Batch()


class MissingVolume(FakeVolume):
    def hydrate(self):
        raise NotFoundError("volume not found")


class FakeSession:
    def __init__(self, volume, exists=True):
        self.environment = None
        self.client = object()
        self.app_name = "app"
        outer = self

        def from_name(name, environment_name=None, create_if_missing=False, client=None):
            outer.looked_up = (name, create_if_missing)
            if not exists and not create_if_missing:
                return MissingVolume()
            return volume

        self.modal = types.SimpleNamespace(
            Volume=types.SimpleNamespace(from_name=from_name),
            volume=types.SimpleNamespace(FileEntryType=types.SimpleNamespace(FILE=1)),
        )

    def call(self, fn, *args, **kwargs):
        return fn(*args, **kwargs)


def test_volume_files_round_trip_through_the_sdk_shapes():
    volume = FakeVolume()
    files = VolumeStateFiles(FakeSession(volume), "app-state", create=True)
    catalog = SnapshotCatalog(files)
    assert catalog.list() == []
    assert catalog.add(record("a"))
    assert not catalog.add(record("a", image_id="im-other"))
    assert catalog.add(record("b"))
    assert [r.name for r in catalog.list("host-a")] == ["b", "a"]
    assert catalog.get("host-a", "a").image_id == "im-a"
    assert catalog.get("host-a", "missing") is None
    assert catalog.remove("host-a", "a") and not catalog.remove("host-a", "a")
    assert list(volume.files) == ["snapshots/host-a/b.json"]


def test_a_missing_volume_reads_empty_and_refuses_writes():
    session = FakeSession(FakeVolume(), exists=False)
    catalog = SnapshotCatalog(VolumeStateFiles(session, "app-state", create=False))
    assert catalog.list() == [] and catalog.get("h", "n") is None
    assert session.looked_up == ("app-state", False)
    assert not catalog.remove("h", "n")
    with pytest.raises(StateVolumeMissing, match="does not exist"):
        catalog.add(record("a"))
