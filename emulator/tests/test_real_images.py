"""Registry references resolve to real root filesystems, as on Modal: never the host's own root."""

from __future__ import annotations

import re

import modal
import pytest
from modal.exception import ImageBuildError


def run(sandboxes: list, app, image: modal.Image, command: str) -> tuple[int, str, str]:
    sb = modal.Sandbox.create(app=app, image=image)
    sandboxes.append(sb)
    process = sb.exec("sh", "-c", command)
    out, err = process.stdout.read(), process.stderr.read()
    return process.wait(), out, err


@pytest.mark.parametrize("reference", ["debian:bookworm-slim", "debian:12-slim", "debian:stable-slim"])
def test_debian_slim_references_have_neither_python_nor_sshd(app, sandbox_api, sandboxes, reference) -> None:
    code, out, err = run(sandboxes, app, modal.Image.from_registry(reference),
                         "grep VERSION_CODENAME /etc/os-release; command -v python3 || echo no-python3; "
                         "test -e /usr/sbin/sshd || echo no-sshd; ls /usr/share/man 2>/dev/null | wc -l")
    assert code == 0, err
    assert out.split("\n")[:4] == ["VERSION_CODENAME=bookworm", "no-python3", "no-sshd", "0"]


def test_python_slim_reference_runs_python_and_pip(app, sandbox_api, sandboxes) -> None:
    code, out, err = run(sandboxes, app, modal.Image.from_registry("python:3.11-slim"),
                         "python --version && pip --version >/dev/null && echo pip-ok; grep CODENAME= /etc/os-release")
    assert code == 0, err
    lines = out.split("\n")
    assert lines[0].startswith("Python 3.11") and lines[1] == "pip-ok" and "bookworm" in lines[2]


def test_debian_slim_image_has_python_and_no_sshd(app, sandboxes) -> None:
    code, out, err = run(sandboxes, app, modal.Image.debian_slim(python_version="3.12"),
                         "python -c 'import sys; print(sys.version_info[0])'; test -e /usr/sbin/sshd || echo no-sshd")
    assert (code, out) == (0, "3\nno-sshd\n"), err


def test_unknown_reference_fails_the_build_naming_it(app, sandbox_api, sandboxes) -> None:
    with pytest.raises(ImageBuildError, match=r"'emulator-missing/thing:1\.0'.*modal-emulator image import"):
        modal.Sandbox.create(app=app, image=modal.Image.from_registry("emulator-missing/thing:1.0"))


def test_dockerfile_from_a_real_base_runs_its_steps_inside_it(app, sandboxes, tmp_path) -> None:
    dockerfile = tmp_path / "Dockerfile"
    dockerfile.write_text("FROM debian:bookworm-slim\nRUN test ! -e /usr/bin/python3 && echo built > /built\n")
    code, out, err = run(sandboxes, app, modal.Image.from_dockerfile(str(dockerfile)), "cat /built")
    assert (code, out) == (0, "built\n"), err


def test_images_are_immutable_and_host_files_never_show(app, sandboxes) -> None:
    image = modal.Image.from_registry("debian:bookworm-slim")
    first = modal.Sandbox.create(app=app, image=image)
    sandboxes.append(first)
    assert first.exec("sh", "-c", "echo changed > /etc/emulator-marker").wait() == 0
    code, out, _ = run(sandboxes, app, image, "cat /etc/emulator-marker 2>/dev/null; ls /work 2>/dev/null; echo end")
    assert (code, out) == (0, "end\n"), "another sandbox's writes or the host's files leaked into the image"


def test_build_log_says_which_python_stands_in(app, sandboxes, capfd) -> None:
    image = modal.Image.debian_slim(python_version="3.13").run_commands("echo stand-in-check")
    with modal.enable_output():
        sb = modal.Sandbox.create(app=app, image=image)
    sandboxes.append(sb)
    assert re.search(r"python 3\.13[.0-9]* was asked for; Debian's python3 3\.11 stands in", capfd.readouterr().out)


def test_the_same_step_on_two_bases_builds_two_layers(app, sandboxes) -> None:
    # A RUN step's result depends on the root it ran in: the same command on another base must not reuse its layer.
    step = "test -e /usr/bin/python3 && echo with-python > /which || echo without-python > /which"
    python_image = modal.Image.from_registry("python:3.11-slim").run_commands(step)
    debian_image = modal.Image.from_registry("debian:bookworm-slim").run_commands(step)
    assert run(sandboxes, app, python_image, "cat /which")[:2] == (0, "with-python\n")
    assert run(sandboxes, app, debian_image, "cat /which")[:2] == (0, "without-python\n")
