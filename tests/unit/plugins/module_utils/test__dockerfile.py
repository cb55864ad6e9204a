# Copyright (c) 2026, the mngr.modal authors
# GNU General Public License v3.0+ (see COPYING or https://www.gnu.org/licenses/gpl-3.0.txt)

"""Dockerfile replay: instructions, the layer plan, what is refused, and reading the file on the controller."""

from __future__ import annotations

import subprocess
import sys

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


def run_as_the_builder_does(instruction, workdir):
    """Run a replayed single-line RUN as a builder does (``/bin/sh -c``); returns the finished process."""
    assert instruction.startswith("RUN ") and "\n" not in instruction
    return subprocess.run(["/bin/sh", "-c", instruction[4:]], cwd=workdir, capture_output=True, text=True, check=False)


def test_heredoc_run_is_one_instruction_that_runs_the_script(tmp_path):
    text = (
        "FROM debian:bookworm-slim\n"
        "RUN <<EOT\n"
        "set -e\n"
        "# a comment of the script, not of the Dockerfile\n"
        "printf '%s\\n' \"it's 100% \\\\ done\" > out.txt \\\n"
        "  && echo continued >> out.txt\n"
        "EOT\n"
        "ENV A=1\n"
    )
    base, steps, _warnings = plan_dockerfile(text, {})
    assert base == "debian:bookworm-slim"
    assert len(steps) == 2 and steps[1] == ["ENV A=1"]
    (run,) = steps[0]
    result = run_as_the_builder_does(run, tmp_path)
    assert result.returncode == 0, result.stderr
    assert (tmp_path / "out.txt").read_text() == "it's 100% \\ done\ncontinued\n"


def test_heredoc_script_with_a_shebang_runs_with_that_interpreter(tmp_path):
    text = f"FROM a\nRUN <<'PY'\n#!{sys.executable}\nopen('py.txt', 'w').write(str(6 * 7))\nPY\n"
    ((run,),) = plan_dockerfile(text, {}).steps
    result = run_as_the_builder_does(run, tmp_path)
    assert result.returncode == 0, result.stderr
    assert (tmp_path / "py.txt").read_text() == "42"


def test_heredoc_script_failure_fails_the_step(tmp_path):
    ((run,),) = plan_dockerfile("FROM a\nRUN <<EOT\necho before\nexit 3\nEOT\n", {}).steps
    result = run_as_the_builder_does(run, tmp_path)
    assert result.returncode == 3 and result.stdout == "before\n"


def test_heredocs_given_to_a_command_tab_stripped_and_quoted(tmp_path):
    text = (
        "FROM a\n"
        "RUN --network=default cat <<-EOT > one.txt && cat <<\"RAW\" > two.txt\n"
        "\tindented with a tab $HOME\n"
        "\tEOT\n"
        "kept $HOME\n"
        "RAW\n"
        "RUN <<'EOT' sh -s -- arg1\n"
        "echo \"$1\" > three.txt\n"
        "EOT\n"
    )
    steps = plan_dockerfile(text, {}).steps
    assert [len(step) for step in steps] == [1, 1]
    assert steps[0][0].startswith("RUN --network=default ")
    for (run,) in steps:
        result = subprocess.run(
            ["/bin/sh", "-c", run.replace("RUN --network=default ", "RUN ")[4:]],
            cwd=tmp_path, capture_output=True, text=True, env={"HOME": "/home/x", "PATH": "/usr/bin:/bin"}, check=False,
        )
        assert result.returncode == 0, result.stderr
    assert (tmp_path / "one.txt").read_text() == "indented with a tab /home/x\n"
    assert (tmp_path / "two.txt").read_text() == "kept $HOME\n"
    assert (tmp_path / "three.txt").read_text() == "arg1\n"


def test_escape_directive_sets_the_continuation_character():
    text = "# escape=`\n# syntax=docker/dockerfile:1\nFROM a\nRUN echo C:\\dir `\n  && echo next\n"
    plan = plan_dockerfile(text, {})
    assert plan.steps == [["RUN echo C:\\dir && echo next"]]
    assert plan.warnings == []


def test_directives_only_at_the_top():
    # After an instruction, "# escape=`" is a comment: the backslash still continues the line.
    assert dockerfile_instructions("FROM a\n# escape=`\nRUN a \\\n  b\n") == ["FROM a", "RUN a b"]


def test_other_syntax_frontend_is_named_in_a_warning():
    plan = plan_dockerfile("# syntax=example.com/frontend:2\nFROM a\nRUN b\n", {})
    assert plan.steps == [["RUN b"]]
    assert len(plan.warnings) == 1 and "# syntax=example.com/frontend:2" in plan.warnings[0]


@pytest.mark.parametrize(
    "text, fragments",
    [
        ("# escape=x\nFROM a\n", ["# escape=x", "backslash", "backtick"]),
        ("# escape=`\n# escape=`\nFROM a\n", ["escape", "twice"]),
        ("# escape=`\nFROM a\nENV P=C:\\dir\n", ["ENV P=C:\\\\dir", "escape=`"]),
        ("FROM a\nRUN <<EOT\necho never closed\n", ["RUN <<EOT", "no closing EOT"]),
        ("FROM a\nCOPY <<EOT /etc/x\ncontent\nEOT\n", ["COPY <<EOT /etc/x", "heredocs in COPY"]),
    ],
)
def test_refused_directives_and_heredocs_name_what_is_wrong(text, fragments):
    with pytest.raises(DockerfileError) as info:
        plan_dockerfile(text, {})
    for fragment in fragments:
        assert fragment in str(info.value)
