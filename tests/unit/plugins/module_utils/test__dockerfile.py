# Copyright (c) 2026, the mngr.modal authors
# GNU General Public License v3.0+ (see COPYING or https://www.gnu.org/licenses/gpl-3.0.txt)

"""Dockerfile replay: instructions, the layer plan, what is refused, and reading the file on the controller."""

from __future__ import annotations

import pytest

from ansible_collections.mngr.modal.plugins.module_utils._dockerfile import (
    DockerfileError,
    dockerfile_image,
    dockerfile_instructions,
    load_dockerfile,
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


def test_load_reads_the_file_and_checks_the_context(tmp_path):
    dockerfile = tmp_path / "Dockerfile"
    dockerfile.write_text("FROM debian:bookworm-slim\nARG GREETING=hi\nRUN echo $GREETING\n")
    plan = load_dockerfile(str(dockerfile), None, {"GREETING": "hello"})
    assert plan.base == "debian:bookworm-slim"
    assert plan.steps == [["ARG GREETING=hello", "RUN echo $GREETING"]]
    with pytest.raises(DockerfileError) as info:
        load_dockerfile(str(dockerfile), str(tmp_path / "missing"), None)
    assert "context_dir" in str(info.value) and "missing" in str(info.value)
    with pytest.raises(DockerfileError) as info:
        load_dockerfile(str(tmp_path / "nope" / "Dockerfile"), None, None)
    assert "does not exist" in str(info.value)


class FakeImage:
    """Records the layers a plan asks the SDK for."""

    def __init__(self, layers):
        self.layers = layers

    @classmethod
    def from_registry(cls, base):
        return cls([("FROM", base)])

    def dockerfile_commands(self, lines, context_dir):
        return FakeImage(self.layers + [(tuple(lines), context_dir)])


def test_image_is_the_base_then_one_layer_per_step():
    plan = plan_dockerfile("FROM python:3.11-slim\nRUN a\nCOPY x /x\n", {})
    modal = type("Modal", (), {"Image": FakeImage})
    image = dockerfile_image(modal, plan, "/ctx")
    assert image.layers == [("FROM", "python:3.11-slim"), (("RUN a",), "/ctx"), (("COPY x /x",), "/ctx")]
