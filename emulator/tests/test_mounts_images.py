"""Mounts as images use them: local files added to images, Dockerfile contexts, ``add_python``."""

from __future__ import annotations

import pathlib

import modal
import pytest


def run(sandboxes: list, app, image: modal.Image, command: str) -> str:
    sb = modal.Sandbox.create(app=app, image=image)
    sandboxes.append(sb)
    p = sb.exec("bash", "-c", command)
    out = p.stdout.read()
    assert p.wait() == 0, p.stderr.read()
    return out


def make_project(root: pathlib.Path) -> pathlib.Path:
    (root / "pkg").mkdir(parents=True)
    (root / "pkg" / "mod.py").write_text("VALUE = 42\n")
    (root / "run.sh").write_text("#!/bin/sh\necho run ok\n")
    (root / "run.sh").chmod(0o755)
    (root / "big.bin").write_bytes(bytes(range(256)) * (5 * 4096))  # 5 MiB: a blob upload
    return root


def test_add_local_dir_and_file(app, sandboxes, tmp_path: pathlib.Path) -> None:
    project = make_project(tmp_path / "project")
    image = (
        modal.Image.debian_slim()
        .add_local_file(project / "run.sh", "/opt/tools/run.sh", copy=True)
        .run_commands("/opt/tools/run.sh > /opt/tools/ran.txt")
        .add_local_dir(project, "/srv/project")
    )
    out = run(
        sandboxes,
        app,
        image,
        "cat /opt/tools/ran.txt; cat /srv/project/pkg/mod.py; /srv/project/run.sh; wc -c < /srv/project/big.bin",
    )
    assert out.split("\n")[:4] == ["run ok", "VALUE = 42", "run ok", str(5 * 1024 * 1024)]


def test_dockerfile_copy_from_context(app, sandboxes, tmp_path: pathlib.Path) -> None:
    project = make_project(tmp_path / "context")
    dockerfile = tmp_path / "Dockerfile"
    dockerfile.write_text(
        "FROM debian:bookworm-slim\nCOPY pkg /app/pkg\nCOPY run.sh /app/\nRUN /app/run.sh > /app/ran\n"
    )
    image = modal.Image.from_dockerfile(dockerfile, context_dir=project)
    out = run(sandboxes, app, image, "cat /app/pkg/mod.py /app/ran; ls /app")
    assert out.split("\n")[:2] == ["VALUE = 42", "run ok"]
    assert sorted(out.split("\n")[2:-1]) == ["pkg", "ran", "run.sh"]


@pytest.mark.parametrize("version", ["3.13", "3.12"])  # 3.12's standalone release adds a `ln -s` step
def test_add_python(app, sandboxes, version: str) -> None:
    image = modal.Image.from_registry("debian:bookworm-slim", add_python=version)
    out = run(sandboxes, app, image, "python -c 'print(6 * 7)'")
    assert out == "42\n"
