# Copyright (c) 2026, the mngr.modal authors
# GNU General Public License v3.0+ (see COPYING or https://www.gnu.org/licenses/gpl-3.0.txt)

"""Tag scheme, name validation, host records and the merge of live sandboxes with records."""

from __future__ import annotations

import json

import pytest

from ansible_collections.mngr.modal.plugins.module_utils import _live
from ansible_collections.mngr.modal.plugins.module_utils._client import ModalError
from ansible_collections.mngr.modal.plugins.module_utils._errors import HostError
from ansible_collections.mngr.modal.plugins.module_utils._hosts import (
    HostDirectory,
    filter_hosts,
    find_host,
    host_result,
    merge_hosts,
    new_host_id,
    validate_host_name,
)
from ansible_collections.mngr.modal.plugins.module_utils._live import ListedSandbox, SandboxLister
from ansible_collections.mngr.modal.plugins.module_utils._records import (
    STATUS_DESTROYED,
    STATUS_STOPPED,
    HostRecord,
    HostRecords,
    record_path,
)
from ansible_collections.mngr.modal.plugins.module_utils._state_volume import (
    StateVolumeMissing,
    VolumeStateFiles,
    state_volume_name,
)
from ansible_collections.mngr.modal.plugins.module_utils._tags import (
    MAX_SANDBOX_TAGS,
    MAX_USER_TAGS,
    TAG_HOST_ID,
    TAG_HOST_NAME,
    TAG_SSH_ENDPOINT,
    decode_sandbox_tags,
    encode_sandbox_tags,
    merge_user_tags,
    normalize_user_tags,
    parse_endpoint,
)


@pytest.mark.parametrize("name", ["web1", "a", "A.b-c_d", "x" * 63, "1st-host"])
def test_valid_host_names(name):
    assert validate_host_name(name) == name


@pytest.mark.parametrize(
    "name, fragment",
    [
        ("", "non-empty"),
        ("x" * 64, "64 characters"),
        ("has space", "'has space'"),
        ("slash/name", "'slash/name'"),
        (".hidden", "'.hidden'"),
        ("..", "'..'"),
        ("-dash-first", "'-dash-first'"),
        ("é", "'é'"),
        (None, "None"),
        (12, "12"),
    ],
)
def test_invalid_host_names_name_the_value(name, fragment):
    with pytest.raises(HostError) as info:
        validate_host_name(name, "new_name")
    assert fragment in str(info.value)
    assert "new_name" in str(info.value)


def test_host_ids_are_unique_and_prefixed():
    ids = {new_host_id() for _attempt in range(100)}
    assert len(ids) == 100
    assert all(i.startswith("host-") and len(i) == 37 for i in ids)


def test_tags_round_trip_through_sandbox_tags():
    tags = encode_sandbox_tags("host-1", "web", {"team": "data", "env": "prod"}, "127.0.0.1:4022")
    assert tags == {
        TAG_HOST_ID: "host-1",
        TAG_HOST_NAME: "web",
        TAG_SSH_ENDPOINT: "127.0.0.1:4022",
        "mngr_user_team": "data",
        "mngr_user_env": "prod",
    }
    identity = decode_sandbox_tags(tags)
    assert identity.host_id == "host-1"
    assert identity.name == "web"
    assert identity.user_tags == {"team": "data", "env": "prod"}
    assert identity.ssh_endpoint == ("127.0.0.1", 4022)


def test_foreign_sandbox_has_no_identity():
    assert decode_sandbox_tags({"something": "else"}) is None
    assert decode_sandbox_tags({}) is None


def test_user_tags_never_shadow_identity_tags():
    # A user tag called host_id lands under the prefix, the identity tag is untouched.
    tags = encode_sandbox_tags("host-1", "web", {"host_id": "evil"})
    assert tags[TAG_HOST_ID] == "host-1"
    assert decode_sandbox_tags(tags).user_tags == {"host_id": "evil"}


def test_full_tag_set_fits_modal_limit():
    user = {f"k{i}": "v" for i in range(MAX_USER_TAGS)}
    assert len(encode_sandbox_tags("host-1", "web", normalize_user_tags(user), "h:1")) == MAX_SANDBOX_TAGS


def test_normalize_converts_scalars():
    assert normalize_user_tags({"a": 1, "b": True, "c": 1.5, "d": "x"}) == {"a": "1", "b": "true", "c": "1.5", "d": "x"}
    assert normalize_user_tags(None) == {}


@pytest.mark.parametrize(
    "tags, fragment",
    [
        ({f"k{i}": "v" for i in range(MAX_USER_TAGS + 1)}, "at most 7"),
        ({"bad key": "v"}, "'bad key'"),
        ({"k" * 54: "v"}, "54 characters"),
        ({"k": "v" * 256}, "256 characters"),
        ({"k": "line\nbreak"}, "control characters"),
        ({"k": ["a"]}, "['a']"),
        ({"k": {"a": 1}}, "{'a': 1}"),
        ({"": "v"}, "''"),
        ("team=data", "dictionary"),
    ],
)
def test_bad_tags_name_the_value(tags, fragment):
    with pytest.raises(HostError) as info:
        normalize_user_tags(tags)
    assert fragment in str(info.value)


def test_merge_user_tags():
    current = {"a": "1", "b": "2"}
    assert merge_user_tags(current, None, purge=True) == current
    assert merge_user_tags(current, {"b": "3", "c": "4"}, purge=False) == {"a": "1", "b": "3", "c": "4"}
    assert merge_user_tags(current, {"c": "4"}, purge=True) == {"c": "4"}
    assert merge_user_tags(current, {}, purge=True) == {}


@pytest.mark.parametrize("text, expected", [
    ("127.0.0.1:2222", ("127.0.0.1", 2222)),
    ("r1.modal.host:443", ("r1.modal.host", 443)),
    (None, None), ("", None), ("nocolon", None), ("h:port", None), (":22", None),
])
def test_parse_endpoint(text, expected):
    assert parse_endpoint(text) == expected


def test_record_round_trip_and_unknown_fields_are_ignored():
    record = HostRecord(host_id="host-1", name="web", user_tags={"a": "1"}, spec={"cpu": 2.0},
                        ssh_host_public_key="ssh-ed25519 AAAA", sandbox_id="sb-1", ssh_host="h", ssh_port=22)
    raw = record.to_json()
    data = json.loads(raw)
    assert data["format"] == 1
    data["field_from_the_future"] = 1
    again = HostRecord.from_json(json.dumps(data))
    assert again == record


@pytest.mark.parametrize("raw", ["[]", "{}", '{"host_id": "x"}', "not json"])
def test_bad_records_are_refused(raw):
    with pytest.raises(ValueError):
        HostRecord.from_json(raw)


def test_paths():
    assert record_path("host-1") == "hosts/host-1.json"
    assert state_volume_name("mngr-modal") == "mngr-modal-state"


def live(sandbox_id, host_id, name, endpoint=None, **user):
    return ListedSandbox(sandbox_id, encode_sandbox_tags(host_id, name, user, endpoint))


def test_merge_live_and_records():
    records = [
        HostRecord(host_id="host-run", name="web", user_tags={"team": "a"}, sandbox_id="sb-1"),
        HostRecord(host_id="host-stop", name="db", status=STATUS_STOPPED),
        HostRecord(host_id="host-gone", name="old", status=STATUS_DESTROYED),
    ]
    sandboxes = [
        live("sb-1", "host-run", "web", "h:1", team="a"),
        live("sb-2", "host-norecord", "cache", "h:2"),
        ListedSandbox("sb-3", {"unrelated": "x"}),
    ]
    hosts = merge_hosts(sandboxes, records)
    assert [(h.name, h.state) for h in hosts] == [("cache", "running"), ("db", "stopped"), ("web", "running")]
    web = find_host(hosts, "web")
    assert web.sandbox.sandbox_id == "sb-1"
    assert web.ssh_endpoint == ("h", 1)
    assert not web.tags_out_of_date
    assert find_host(hosts, "old") is None
    assert find_host(hosts, "nothing") is None


def test_record_wins_over_stale_tags_after_interrupted_rename():
    # The record was renamed to "new", the crash happened before the sandbox tags followed.
    record = HostRecord(host_id="host-1", name="new", previous_name="old", sandbox_id="sb-1")
    hosts = merge_hosts([live("sb-1", "host-1", "old")], [record])
    assert find_host(hosts, "old") is None
    host = find_host(hosts, "new")
    assert host.sandbox.sandbox_id == "sb-1"
    assert host.tags_out_of_date


def test_endpoint_falls_back_to_record_of_same_sandbox():
    record = HostRecord(host_id="host-1", name="web", sandbox_id="sb-1", ssh_host="h", ssh_port=7)
    assert merge_hosts([live("sb-1", "host-1", "web")], [record])[0].ssh_endpoint == ("h", 7)
    stale = HostRecord(host_id="host-1", name="web", sandbox_id="sb-old", ssh_host="h", ssh_port=7)
    assert merge_hosts([live("sb-1", "host-1", "web")], [stale])[0].ssh_endpoint is None


def test_filter_hosts_by_name_and_tags():
    hosts = merge_hosts(
        [live("sb-1", "h1", "a", team="x", env="prod"), live("sb-2", "h2", "b", team="x"), live("sb-3", "h3", "c")], []
    )
    assert [h.name for h in filter_hosts(hosts, tags={"team": "x"})] == ["a", "b"]
    assert [h.name for h in filter_hosts(hosts, tags={"team": "x", "env": "prod"})] == ["a"]
    assert [h.name for h in filter_hosts(hosts, name="c")] == ["c"]
    assert filter_hosts(hosts, name="c", tags={"team": "x"}) == []
    assert len(filter_hosts(hosts)) == 3


def test_memory_store():
    store = HostRecords.holding()
    record = HostRecord(host_id="host-1", name="web")
    store.put(record)
    assert store.get("host-1") == record
    assert store.get("host-2") is None
    assert store.list() == [record]
    assert HostRecords.holding([record]).list() == [record]


class NotFoundError(Exception):
    """Named like modal.exception.NotFoundError, which is how the store recognizes a missing file or volume."""


class FakeVolume:
    """The part of modal.Volume the record store uses, over a dict of path -> bytes."""

    def __init__(self, files=None, exists=True):
        self.files = dict(files or {})
        self.exists = exists

    def hydrate(self):
        if not self.exists:
            raise NotFoundError("Volume not found")

    def listdir(self, path, recursive=False):
        entries = [type("Entry", (), {"path": p})() for p in self.files if p.startswith(path + "/")]
        if not entries:
            raise NotFoundError(path)
        return entries

    def read_file(self, path):
        if path not in self.files:
            raise NotFoundError(path)
        yield self.files[path]

    def batch_upload(self, force=False):
        volume = self

        class Batch:
            def __enter__(self):
                return self

            def __exit__(self, *exc):
                return False

            def put_file(self, fileobj, remote_path):
                assert force
                volume.files[remote_path.lstrip("/")] = fileobj.read()

        return Batch()


def store_over(volume, create=True):
    """Host records over a fake volume; checks the volume is asked for as the module would."""

    def from_name(name, environment_name=None, create_if_missing=False, client=None):
        assert name == "app-state"
        assert create_if_missing is create
        return volume

    session = type("Session", (), {"environment": None, "client": None, "app_name": "app",
                                   "modal": type("Modal", (), {"Volume": type("Volume", (), {
                                       "from_name": staticmethod(from_name)})})(),
                                   "call": staticmethod(lambda fn, *a, **k: fn(*a, **k))})()
    return HostRecords(VolumeStateFiles(session, "app-state", create))


def test_volume_store_round_trip_and_skips_bad_records():
    volume = FakeVolume({"hosts/broken.json": b"{not json", "hosts/notes.txt": b"x"})
    store = store_over(volume)
    assert store.list() == []
    record = HostRecord(host_id="host-1", name="web", user_tags={"a": "1"})
    store.put(record)
    assert "hosts/host-1.json" in volume.files
    assert store.get("host-1").name == "web"
    assert [r.host_id for r in store.list()] == ["host-1"]
    assert store.get("host-2") is None


def test_volume_store_empty_volume_lists_nothing():
    assert store_over(FakeVolume()).list() == []


def test_missing_volume_reads_as_empty_without_creating_it():
    store = store_over(FakeVolume(exists=False), create=False)
    assert store.list() == []
    assert store.get("host-1") is None
    with pytest.raises(StateVolumeMissing, match="app-state does not exist"):
        store.put(HostRecord(host_id="host-1", name="web"))


def test_missing_volume_is_an_error_when_it_should_exist():
    with pytest.raises(NotFoundError):
        store_over(FakeVolume(exists=False), create=True).list()


def test_host_result_ssh_is_ready_for_add_host(tmp_path):
    result = host_result("host-" + "c" * 32, "web", "running", {"team": "a"}, {"cpu": 1.0}, "sb-1",
                         ("127.0.0.1", 40022), str(tmp_path), "mngr-modal")
    ssh = result["ssh"]
    assert (ssh["host"], ssh["port"], ssh["user"]) == ("127.0.0.1", 40022, "root")
    # Where the host's keys go: <key_dir>/<app>@<environment>/<host_id>/ (no folder exists yet here).
    assert ssh["private_key_file"] == f"{tmp_path}/mngr-modal@default/host-{'c' * 32}/id_ed25519"
    assert "StrictHostKeyChecking=yes" in ssh["common_args"]
    # For ansible_ssh_host_key_checking: Ansible's host_key_checking=False would otherwise win over common_args.
    assert ssh["host_key_checking"] is True


def test_host_result_of_a_stopped_host_has_no_endpoint(tmp_path):
    result = host_result("host-" + "c" * 32, "web", STATUS_STOPPED, {}, {}, None, None, str(tmp_path), "app")
    assert result["state"] == "stopped"
    assert (result["sandbox_id"], result["ssh"]["host"], result["ssh"]["port"]) == (None, None, None)


# --- listing the app's sandboxes (shared by the modules and the inventory) ----------------------------


class ListingHandle:
    def __init__(self, object_id, tags=None, error=None):
        self.object_id = object_id
        self._tags = tags or {}
        self._error = error
        self.calls = []

    def get_tags(self):
        self.calls.append("get_tags")
        if self._error is not None:
            raise self._error
        return dict(self._tags)


class ListingSession:
    """The parts of ModalSession a listing uses; ``opened`` records Sandbox.from_id calls."""

    client = object()

    def __init__(self, handles=()):
        self.handles = list(handles)
        self.opened = []
        session = self

        class Sandbox:
            @staticmethod
            def list(app_id, client, tags=None):
                return iter(session.handles)

            @staticmethod
            def from_id(sandbox_id, client):
                session.opened.append(sandbox_id)
                return ListingHandle(sandbox_id)

        self.modal = type("Modal", (), {"Sandbox": Sandbox})

    def call(self, fn, *args, **kwargs):
        return fn(*args, **kwargs)


class App:
    app_id = "ap-1"


def page(sandbox_id, host_id, name, ssh=None):
    return {"id": sandbox_id, "created_at": 1.0, "tags": {TAG_HOST_ID: host_id, TAG_HOST_NAME: name},
            "ssh": ssh, "gpu": None}


def test_directory_reads_tags_from_list_pages_and_opens_handles_only_when_used(monkeypatch):
    monkeypatch.setattr(_live, "list_page_details",
                        lambda modal, client, app_id: [page("sb-1", "host-1", "web", ["t.example", 4022]),
                                                       page("sb-2", "host-2", "db")])
    session = ListingSession()
    session.modal.Sandbox.list = None  # the per-sandbox fallback must not be needed
    hosts = HostDirectory(session, App(), HostRecords.holding()).hosts()
    assert [(h.name, h.sandbox.sandbox_id) for h in hosts] == [("db", "sb-2"), ("web", "sb-1")]
    web = find_host(hosts, "web")
    assert web.ssh_endpoint == ("t.example", 4022)  # the page's tunnel, since the tags carry none
    assert session.opened == []
    assert web.sandbox.handle.object_id == "sb-1"
    assert session.opened == ["sb-1"]


def test_directory_falls_back_to_one_tag_read_per_sandbox(monkeypatch):
    monkeypatch.setattr(_live, "list_page_details", lambda modal, client, app_id: None)
    handles = [ListingHandle("sb-1", {TAG_HOST_ID: "host-1", TAG_HOST_NAME: "web"}),
               ListingHandle("sb-gone", error=ModalError("ended", code="NOT_FOUND"))]
    session = ListingSession(handles)
    hosts = HostDirectory(session, App(), HostRecords.holding()).hosts()
    assert [h.name for h in hosts] == ["web"]
    assert hosts[0].sandbox.handle is handles[0]  # the listed handle: no extra call
    assert session.opened == []


def test_module_listing_fails_rather_than_acting_on_a_partial_list(monkeypatch):
    monkeypatch.setattr(_live, "list_page_details", lambda modal, client, app_id: None)
    session = ListingSession([ListingHandle("sb-1", error=ModalError("boom", code="INTERNAL"))])
    with pytest.raises(ModalError):
        HostDirectory(session, App(), HostRecords.holding()).hosts()
    warnings = []
    lister = SandboxLister(ListingSession([ListingHandle("sb-1", error=ModalError("boom", code="INTERNAL"))]),
                           warn=warnings.append)
    assert lister.list("ap-1") == []
    assert "sb-1" in warnings[0] and "boom" in warnings[0]


def test_host_result_points_at_the_hosts_own_key_folder(tmp_path):
    """Same name, two apps: each result names its own host's keys; a host not created yet has no key paths."""
    from ansible_collections.mngr.modal.plugins.module_utils._keys import KeyStore

    for app, host_id in (("a", "host-a"), ("b", "host-b")):
        KeyStore(str(tmp_path), app, "main").folder_for(host_id, "web").ensure(host_id)
    result_a = host_result("host-a", "web", "running", {}, {}, None, None, str(tmp_path), "a", "main")
    result_b = host_result("host-b", "web", "running", {}, {}, None, None, str(tmp_path), "b", "main")
    assert result_a["ssh"]["private_key_file"] == f"{tmp_path}/a@main/host-a/id_ed25519"
    assert result_b["ssh"]["private_key_file"] == f"{tmp_path}/b@main/host-b/id_ed25519"
    planned = host_result(None, "web", "running", {}, {}, None, None, str(tmp_path), "a")
    assert planned["ssh"]["private_key_file"] is None and planned["ssh"]["common_args"] is None
