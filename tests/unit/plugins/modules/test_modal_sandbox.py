# Copyright (c) 2026, the mngr.modal authors
# GNU General Public License v3.0+ (see COPYING or https://www.gnu.org/licenses/gpl-3.0.txt)

"""modal_sandbox logic that needs no Modal: Dockerfile replay plan and input validation."""

from __future__ import annotations

import pytest

from ansible_collections.mngr.modal.plugins.module_utils._build_args import BuildArgError
from ansible_collections.mngr.modal.plugins.module_utils._hosts import HostError
from ansible_collections.mngr.modal.plugins.modules import modal_sandbox
from ansible_collections.mngr.modal.plugins.modules.modal_sandbox import (
    DockerfileError,
    ModalSandboxModule,
    dockerfile_instructions,
    plan_dockerfile,
)


def test_instructions_join_continuations_and_drop_comments():
    text = "# syntax comment\nFROM debian:bookworm-slim\n\nRUN apt-get update && \\\n    # inner comment\n    apt-get install -y curl\nENV A=1\n"
    assert dockerfile_instructions(text) == [
        "FROM debian:bookworm-slim",
        "RUN apt-get update && apt-get install -y curl",
        "ENV A=1",
    ]


def test_plan_rewrites_args_and_resolves_from():
    text = "ARG BASE=debian:bookworm-slim\nFROM ${BASE}\nARG VERSION=1.0\nARG OTHER\nRUN echo $VERSION > /v\nCOPY app.txt /app/\nCMD [\"sleep\"]\n"
    base, steps, warnings = plan_dockerfile(text, {"VERSION": "2.5", "BASE": "python:3.11-slim"})
    assert base == "python:3.11-slim"
    args = ["ARG VERSION=2.5", "ARG OTHER"]
    assert steps == [args + ["RUN echo $VERSION > /v"], args + ["COPY app.txt /app/"]]
    assert len(warnings) == 1 and "CMD" in warnings[0]


def test_plan_keeps_defaults_without_build_args():
    base, steps, _warnings = plan_dockerfile("FROM debian:bookworm-slim AS final\nRUN a\nARG V=1\nRUN b\n", {})
    assert base == "debian:bookworm-slim"
    assert steps == [["RUN a"], ["ARG V=1", "RUN b"]]


@pytest.mark.parametrize(
    "text, build_args, fragment",
    [
        ("FROM a\nFROM b\n", {}, "multi-stage"),
        ("FROM a\nCOPY --from=builder /x /y\n", {}, "multi-stage"),
        ("RUN true\n", {}, "no FROM"),
        ("FROM a\nARG KNOWN\n", {"UNKNOWN": "1"}, "UNKNOWN"),
        ("FROM ${MISSING}\n", {}, "cannot resolve"),
        ("FROM a\nSHELL [\"bash\"]\n", {}, "SHELL"),
    ],
)
def test_plan_refuses(text, build_args, fragment):
    with pytest.raises(DockerfileError) as info:
        plan_dockerfile(text, build_args)
    assert fragment in str(info.value)


class FakeModule:
    """Just enough of AnsibleModule for validate_inputs."""

    def __init__(self, **params):
        defaults = {key: None for key in modal_sandbox.argument_spec()}
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
