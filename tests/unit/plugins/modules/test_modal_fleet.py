# Copyright (c) 2026, the mngr.modal authors
# GNU General Public License v3.0+ (see COPYING or https://www.gnu.org/licenses/gpl-3.0.txt)

"""modal_fleet logic that needs no Modal: input checks, which hosts belong to the fleet, what changes."""

from __future__ import annotations

import pytest

from ansible_collections.mngr.modal.plugins.module_utils._build_args import BuildArgError
from ansible_collections.mngr.modal.plugins.module_utils._errors import HostError
from ansible_collections.mngr.modal.plugins.module_utils._hosts import Host
from ansible_collections.mngr.modal.plugins.module_utils._launch import NameTaken
from ansible_collections.mngr.modal.plugins.module_utils._live import ListedSandbox
from ansible_collections.mngr.modal.plugins.module_utils._provision import CreateFailure
from ansible_collections.mngr.modal.plugins.module_utils._reservations import Reservation
from ansible_collections.mngr.modal.plugins.modules.modal_fleet import ModalFleetModule, _why


class FakeModule:
    def __init__(self, **params):
        defaults = {key: None for key in ModalFleetModule.argument_spec()}
        defaults.update(state="present", concurrency=16, wait=True, wait_timeout=300, app="mngr-modal")
        defaults.update(params)
        self.params = defaults
        self.check_mode = False


def validate(**params):
    fleet = ModalFleetModule(FakeModule(**params))
    fleet.validate_inputs()
    return fleet


def test_spec_and_tags_for_every_host():
    fleet = validate(name="web", exact_count=3, build_args="cpu=2", memory=4, tags={"team": "qa"})
    assert (fleet.spec["cpu"], fleet.spec["memory"]) == (2.0, 4.0)
    assert fleet.given_spec_keys == ["cpu", "memory"]
    assert fleet.tags == {"team": "qa", "fleet": "web"}


@pytest.mark.parametrize("params, error, fragment", [
    ({"name": "web"}, HostError, "exact_count is required"),
    ({"name": "web", "exact_count": -1}, HostError, "got -1"),
    ({"name": "bad name", "exact_count": 1}, HostError, "'bad name'"),
    ({"name": "x" * 62, "exact_count": 10}, HostError, "x-10 (65 characters)"),
    ({"name": "web", "exact_count": 1, "concurrency": 0}, HostError, "concurrency must be at least 1, got 0"),
    ({"name": "web", "exact_count": 1, "wait_timeout": 0}, HostError, "wait_timeout"),
    ({"name": "web", "exact_count": 1, "tags": {"fleet": "db"}}, HostError, "fleet='db'"),
    ({"name": "web", "exact_count": 1, "tags": {str(i): "v" for i in range(7)}}, HostError, "with the fleet tag"),
    ({"name": "web", "exact_count": 1, "build_args": "cpu=lots"}, BuildArgError, "'lots'"),
])
def test_bad_inputs_name_the_value(params, error, fragment):
    with pytest.raises(error) as info:
        validate(**params)
    assert fragment in info.value.msg


def test_absent_needs_no_count_nor_spec():
    fleet = validate(name="web", state="absent", build_args="cpu=lots")
    assert fleet.count == 0 and fleet.spec == {}


def host(name, fleet="web", running=True, host_id=None):
    sandbox = ListedSandbox("sb-" + name, {}) if running else None
    return Host(host_id or "host-" + name, name, {"fleet": fleet} if fleet else {}, sandbox=sandbox)


def test_members_by_index_and_only_of_this_fleet():
    fleet = validate(name="web", exact_count=3)
    hosts = [host("web-1"), host("web-10"), host("web-2", running=False), host("webby-1", fleet="webby"),
             host("web-x", fleet=None), host("web-01", fleet=None), host("web-2", host_id="host-web-2b")]
    members = fleet.members(hosts)
    assert sorted(members) == [1, 2, 10]
    # Two hosts claiming web-2: the running one belongs to the fleet.
    assert members[2].host_id == "host-web-2b"


def test_a_host_named_like_a_member_but_not_tagged_is_not_taken_over():
    fleet = validate(name="web", exact_count=3)
    with pytest.raises(HostError) as info:
        fleet.members([host("web-2", fleet=None)])
    assert "web-2" in info.value.msg and "not tagged fleet=web" in info.value.msg


def test_tag_changes_add_requested_tags_and_leave_others():
    fleet = validate(name="web", exact_count=2, tags={"team": "qa"})
    tagged = host("web-1")
    tagged.user_tags = {"fleet": "web", "team": "qa", "extra": "kept"}
    untagged = host("web-2")
    members = {1: tagged, 2: untagged, 3: host("web-3")}
    assert fleet._tag_changes(members, 2) == {2: {"fleet": "web", "team": "qa"}}


def test_failures_read_as_sentences():
    holder = Reservation(name="web-1", host_id="host-x", owner="ctl 42", created_at="2026-01-01T00:00:00+00:00")
    assert "held by another run" in _why(NameTaken(holder))
    failure = CreateFailure("bootstrapping SSH in host web-1 failed (exit code 1)", "sshd: no hostkeys")
    assert _why(failure).startswith("bootstrapping SSH in host web-1 failed") and "sshd: no hostkeys" in _why(failure)


class FakeLauncher:
    """Launches every host but web-2, which fails as a bootstrap that never answers would."""

    def __init__(self):
        self.launched = []

    def launch(self, launch, image):
        if launch.name == "web-2":
            raise CreateFailure("host web-2: SSH did not succeed within 30 seconds")
        self.launched.append(launch.name)
        return {"name": launch.name, "state": "running"}


def test_a_partial_failure_keeps_the_hosts_that_came_up(monkeypatch):
    from ansible_collections.mngr.modal.plugins.modules import modal_fleet

    fleet = validate(name="web", exact_count=3)
    fleet.launcher = FakeLauncher()
    fleet.session = fleet.directory = type("Stub", (), {"app": None})()
    monkeypatch.setattr(modal_fleet, "build_image", lambda *args: "image")
    result = {"created": ["web-1", "web-2", "web-3"], "started": []}
    launched, failures = fleet._launch_all({}, [1, 2, 3], [], result)
    assert [host["name"] for host in launched] == ["web-1", "web-3"]
    assert failures == [{"name": "web-2", "msg": "host web-2: SSH did not succeed within 30 seconds"}]
    assert result["created"] == ["web-1", "web-3"]
