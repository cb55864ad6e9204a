# Copyright (c) 2026, the mngr.modal authors
# GNU General Public License v3.0+ (see COPYING or https://www.gnu.org/licenses/gpl-3.0.txt)

"""modal_sandbox logic that needs no Modal: input validation, choosing a snapshot."""

from __future__ import annotations

import datetime

import pytest

from ansible_collections.mngr.modal.plugins.module_utils._build_args import BuildArgError
from ansible_collections.mngr.modal.plugins.module_utils._errors import HostError
from ansible_collections.mngr.modal.plugins.module_utils._hosts import Host
from ansible_collections.mngr.modal.plugins.module_utils._records import HostRecord
from ansible_collections.mngr.modal.plugins.module_utils._snapshots import (
    KIND_STOP,
    SnapshotCatalog,
    SnapshotError,
    new_record,
)
from ansible_collections.mngr.modal.plugins.module_utils._state_volume import MemoryStateFiles
from ansible_collections.mngr.modal.plugins.module_utils._client import ModalError
from ansible_collections.mngr.modal.plugins.module_utils._dockerfile import DockerfileError
from ansible_collections.mngr.modal.plugins.module_utils._launch import ended_during_setup_message
from ansible_collections.mngr.modal.plugins.module_utils._provision import CreateFailure
from ansible_collections.mngr.modal.plugins.modules.modal_sandbox import ModalSandboxModule


class FakeModule:
    """Just enough of AnsibleModule for validate_inputs."""

    def __init__(self, **params):
        defaults = {key: None for key in ModalSandboxModule.argument_spec()}
        defaults.update(state="present", purge_tags=False, wait=True, wait_timeout=300, app="mngr-modal")
        defaults.update(params)
        self.params = defaults
        self.check_mode = False


def validate(**params):
    sandbox = ModalSandboxModule(FakeModule(**params))
    sandbox.validate_inputs()
    return sandbox


def test_three_build_arg_forms_give_the_same_spec():
    as_list = validate(name="a", build_args=["gpu=h100", "cpu=2", "memory=8"]).spec
    as_flags = validate(name="a", build_args="--gpu=h100 --cpu=2 memory=8").spec
    as_bulk = validate(name="a", build_args="gpu=h100 cpu=2 memory=8").spec
    assert as_list == as_flags == as_bulk
    assert (as_list["gpu"], as_list["cpu"], as_list["memory"]) == ("H100", 2.0, 8.0)


def test_given_keys_are_tracked_for_spec_comparison():
    sandbox = validate(name="a", build_args="cpu=4", memory=16)
    assert sandbox.given_spec_keys == ["cpu", "memory"]


@pytest.mark.parametrize(
    "params, error, fragment",
    [
        ({"name": "bad name"}, HostError, "'bad name'"),
        ({"name": "a", "new_name": "x" * 64}, HostError, "new_name"),
        ({"name": "a", "new_name": "b", "state": "absent"}, HostError, "new_name"),
        ({"name": "a", "tags": {"k": [1]}}, HostError, "[1]"),
        ({"name": "a", "build_args": "cpu=lots"}, BuildArgError, "'lots'"),
        ({"name": "a", "build_args": "flavour=mint"}, BuildArgError, "'flavour'"),
        ({"name": "a", "build_args": "cpu=2", "cpu": 3.0}, BuildArgError, "cpu"),
        ({"name": "a", "build_args": {"cpu": 2}}, BuildArgError, "build_args"),
        ({"name": "a", "secrets": ["MNGR_TEST_SURELY_UNSET_VAR"]}, BuildArgError, "MNGR_TEST_SURELY_UNSET_VAR"),
        ({"name": "a", "dockerfile": "/nonexistent/Dockerfile"}, DockerfileError, "/nonexistent/Dockerfile"),
        ({"name": "a", "ssh_public_key": "not a key"}, HostError, "not a key"),
        ({"name": "a", "new_name": "b", "state": "stopped"}, HostError, "new_name cannot be used with state=stopped"),
        ({"name": "a", "state": "stopped", "snapshot": "../x"}, SnapshotError, "'../x'"),
        ({"name": "a", "state": "stopped", "snapshot": "im-abc"}, SnapshotError, "image id"),
        ({"name": "a", "state": "absent", "snapshot": "s1"}, SnapshotError, "state=absent"),
        ({"name": "a", "snapshot": "s1", "image": "python:3.11-slim"}, BuildArgError, "cannot be combined with image"),
        ({"name": "a", "snapshot": "s1", "build_args": "image=x"}, BuildArgError, "cannot be combined with image"),
    ],
)
def test_bad_inputs_fail_before_any_modal_call(params, error, fragment):
    with pytest.raises(error) as info:
        validate(**params)
    assert fragment in str(info.value)


def test_dockerfile_build_arg_must_be_declared(tmp_path):
    dockerfile = tmp_path / "Dockerfile"
    dockerfile.write_text("FROM debian:bookworm-slim\nARG GREETING=hi\nRUN echo $GREETING\n")
    with pytest.raises(DockerfileError) as info:
        validate(name="a", dockerfile=str(dockerfile), docker_build_args={"NOPE": "x"})
    assert "NOPE" in str(info.value)
    sandbox = validate(name="a", dockerfile=str(dockerfile), docker_build_args={"GREETING": "hello"})
    assert sandbox.dockerfile_plan[1][0] == ["ARG GREETING=hello", "RUN echo $GREETING"]


def test_absent_skips_spec_validation():
    # A host can always be destroyed, whatever build args a shared vars file carries.
    validate(name="a", state="absent", build_args="cpu=lots")


def test_stopped_skips_spec_validation():
    # Stopping uses what the host was created with; the task's build options do not matter.
    validate(name="a", state="stopped", build_args="cpu=lots", snapshot="before-stop")


def test_snapshot_allows_resource_options():
    sandbox = validate(name="a", snapshot="s1", cpu=2.0)
    assert sandbox.given_spec_keys == ["cpu"]


# --- choosing the snapshot a new sandbox starts from --------------------------------------------------

HOST_A = "host-" + "a" * 32
HOST_B = "host-" + "b" * 32
NOW = datetime.datetime.now(datetime.timezone.utc).replace(microsecond=0)


class FakeDirectory:
    def __init__(self, hosts):
        self._hosts = hosts

    def hosts(self):
        return self._hosts


class FakeSession:
    key_dir = "/nonexistent-key-dir"
    app_name = "mngr-modal"
    environment = None


def catalog_with(*records):
    catalog = SnapshotCatalog(MemoryStateFiles())
    for record in records:
        assert catalog.add(record)
    return catalog


def planner(catalog, hosts=(), check_mode=False, **params):
    sandbox = validate(name=params.pop("name", "a"), **params)
    sandbox.check_mode = check_mode
    sandbox._catalog = catalog
    sandbox.directory = FakeDirectory(list(hosts))
    sandbox.session = FakeSession()
    return sandbox


def host(host_id, name, spec=None):
    return Host(host_id, name, {}, record=HostRecord(host_id=host_id, name=name, spec=dict(spec or {})))


def test_start_uses_the_newest_snapshot_that_has_not_expired():
    old = new_record("old", "im-old", HOST_A, "a", None, {}, now=NOW - datetime.timedelta(days=2))
    stop = new_record("stop-x", "im-stop", HOST_A, "a", None, {}, kind=KIND_STOP, now=NOW - datetime.timedelta(days=1))
    sandbox = planner(catalog_with(old, stop), [host(HOST_A, "a")])
    assert sandbox.source_snapshot(sandbox.directory.hosts()[0]).image_id == "im-stop"


def test_start_warns_when_every_snapshot_expired():
    expired = new_record("gone", "im-gone", HOST_A, "a", None, {}, ttl=60, now=NOW - datetime.timedelta(days=40))
    sandbox = planner(catalog_with(expired), [host(HOST_A, "a")])
    assert sandbox.source_snapshot(sandbox.directory.hosts()[0]) is None
    assert any("expired" in warning for warning in sandbox.warnings)


def test_named_snapshot_of_another_host_and_expired_refused():
    theirs = new_record("golden", "im-golden", HOST_B, "b", None, {"cpu": 2.0})
    expired = new_record("stale", "im-stale", HOST_B, "b", None, {}, ttl=60, now=NOW - datetime.timedelta(days=40))
    hosts = [host(HOST_A, "a"), host(HOST_B, "b")]
    assert planner(catalog_with(theirs, expired), hosts, snapshot="b/golden").source_snapshot(None).image_id == "im-golden"
    with pytest.raises(SnapshotError) as info:
        planner(catalog_with(theirs, expired), hosts, snapshot="stale").source_snapshot(None)
    assert "expired" in str(info.value)
    with pytest.raises(SnapshotError) as info:
        planner(catalog_with(theirs), hosts, snapshot="nope").source_snapshot(None)
    assert "'nope'" in str(info.value)


def test_new_host_without_snapshot_option_reads_no_catalog():
    sandbox = planner(None)
    assert sandbox.source_snapshot(None) is None


def test_clone_in_check_mode_gets_the_snapshot_spec_with_overrides():
    source = new_record("golden", "im-golden", HOST_B, "b", None,
                        {"cpu": 2.0, "memory": 4.0, "image": "python:3.11-slim", "timeout": 900})
    sandbox = planner(catalog_with(source), [host(HOST_B, "b")], check_mode=True, name="clone", snapshot="golden",
                      memory=8.0)
    result = sandbox.create("clone", source=sandbox.source_snapshot(None))
    assert sandbox.changed
    assert result["host_id"] is None
    assert (result["spec"]["cpu"], result["spec"]["memory"], result["spec"]["image"]) == (2.0, 8.0, "python:3.11-slim")
    assert result["snapshot"]["id"] == "im-golden"
    assert result["ssh"]["host_key_checking"] is True


def test_offline_with_an_allowlist_is_refused_before_any_modal_call():
    with pytest.raises(BuildArgError) as info:
        validate(name="a", offline=True, cidr_allowlist=["10.0.0.0/8"])
    assert "offline and cidr_allowlist" in str(info.value)
    assert validate(name="a", offline=True).spec["offline"] is True


def test_create_failure_message_ends_with_the_log_tail():
    failure = CreateFailure("building the image failed", "line 1\nline 2", "INTERNAL")
    kwargs = failure.fail_kwargs()
    assert kwargs["msg"] == "building the image failed\n--- last lines of the log ---\nline 1\nline 2"
    assert kwargs["error_code"] == "INTERNAL"
    assert CreateFailure("no log").fail_kwargs() == {"msg": "no log"}


@pytest.mark.parametrize(
    "params, error, fragments",
    [
        ({"env": {"A=B": "x"}}, BuildArgError, ["env key 'A=B'", "not a valid environment variable name"]),
        ({"docker_build_args": {"V=1": "x"}}, BuildArgError, ["docker_build_args key 'V=1'"]),
        ({"wait_timeout": -1}, HostError, ["wait_timeout", "-1"]),
        ({"wait_timeout": 0}, HostError, ["wait_timeout", "got 0"]),
        ({"build_args": ["region=US East"]}, BuildArgError, ["'region=US East'", "region=\"US East\""]),
        ({"build_args": "cpu=2 region=US East"}, BuildArgError, ["'cpu=2 region=US East'", "quote"]),
    ],
)
def test_unclear_inputs_name_the_whole_value(params, error, fragments):
    with pytest.raises(error) as info:
        validate(name="a", **params)
    for fragment in fragments:
        assert fragment in str(info.value)


def test_wait_timeout_is_checked_even_when_stopping_or_destroying():
    for state in ("stopped", "absent"):
        with pytest.raises(HostError, match="wait_timeout"):
            validate(name="a", state=state, wait_timeout=-1)


def test_sandbox_ending_during_setup_says_what_happened_to_the_host():
    error = ModalError("Task ta-1 has finished", code="NOT_FOUND")
    new = ended_during_setup_message("web", error, kept=False)
    restarted = ended_during_setup_message("web", error, kept=True)
    for message in (new, restarted):
        assert "sandbox of host web ended while SSH was being set up" in message and "Task ta-1 has finished" in message
    assert "not created" in new and "record is marked failed" in new
    assert "keeps its record and keys" in restarted


# --- hosts without SSH ----------------------------------------------------------------------------------------


def test_ssh_false_is_recorded_in_the_spec_and_compared_like_it():
    sandbox = validate(name="a", ssh=False)
    assert sandbox.spec["ssh"] is False
    assert "ssh" in sandbox.given_spec_keys
    assert "ssh" not in validate(name="a").spec


def test_ssh_false_refuses_an_extra_ssh_key():
    with pytest.raises(HostError, match="ssh_public_key cannot be used with ssh=false"):
        validate(name="a", ssh=False, ssh_public_key="ssh-ed25519 AAAAC3NzaC1lZDI1NTE5AAAAIHh0 me")


def test_a_new_host_without_ssh_reports_the_exec_connection_in_check_mode():
    sandbox = planner(None, check_mode=True, name="quiet", ssh=False)
    result = sandbox.create("quiet")
    assert result["connection"] == "sandbox_exec"
    assert result["spec"]["ssh"] is False
    assert result["ssh"]["host"] is None and result["ssh"]["private_key_file"] is None
    assert sandbox.diff["after"]["spec"]["ssh"] is False


def test_a_running_host_without_ssh_warns_when_ssh_is_requested():
    record = HostRecord(host_id=HOST_A, name="a", spec={"cpu": 1.0, "ssh": False})
    from ansible_collections.mngr.modal.plugins.module_utils._live import ListedSandbox

    running = Host(HOST_A, "a", {}, record=record, sandbox=ListedSandbox("sb-1", {}))
    sandbox = planner(None, [running], check_mode=True, ssh=True)
    sandbox.update(sandbox.directory.hosts()[0], "a")
    assert any("ssh: False -> True" in warning for warning in sandbox.warnings)


def test_the_exec_host_layer_installs_python_but_not_sshd():
    from ansible_collections.mngr.modal.plugins.module_utils._ssh import (
        INSTALL_EXEC_HOST_PACKAGES_COMMAND,
        INSTALL_HOST_PACKAGES_COMMAND,
    )

    assert "openssh-server" in INSTALL_HOST_PACKAGES_COMMAND
    assert "openssh-server" not in INSTALL_EXEC_HOST_PACKAGES_COMMAND
    assert "python3" in INSTALL_EXEC_HOST_PACKAGES_COMMAND and "ca-certificates" in INSTALL_EXEC_HOST_PACKAGES_COMMAND
