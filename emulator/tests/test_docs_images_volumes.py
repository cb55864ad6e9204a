"""Images and volumes in sandboxes, as Modal's guides show them, against the emulator.

Images: https://modal.com/docs/guide/images and https://modal.com/docs/guide/sandboxes (custom images).
Volumes: https://modal.com/docs/guide/sandbox-files (Volumes, ephemeral volumes, sync) and
https://modal.com/docs/reference/modal.Sandbox#reload_volumes. ``apt_install`` and ``pip_install``
fetch packages from the package indexes, as they do on Modal; everything else stays local.
"""

from __future__ import annotations

import io
import time

import modal
import pytest


@pytest.fixture(scope="module")
def my_app(emulator):  # noqa: ANN001, ANN201
    return modal.App.lookup("my-app", create_if_missing=True)


@pytest.fixture
def tracked(sandboxes: list) -> list:
    """The shared ``sandboxes`` fixture (terminated afterwards even when the test fails), under this file's name."""
    return sandboxes


def run_in(tracked: list, app: modal.App, image: modal.Image, *command: str) -> str:
    sb = modal.Sandbox.create(app=app, image=image)
    tracked.append(sb)
    p = sb.exec(*command)
    out = p.stdout.read()
    assert p.wait() == 0, p.stderr.read()
    return out


# -- images -----------------------------------------------------------------------------------
def test_apt_install(my_app, tracked) -> None:
    """https://modal.com/docs/guide/images#add-system-packages-with-apt_install."""
    image = modal.Image.debian_slim().apt_install("git", "curl")
    out = run_in(tracked, my_app, image, "bash", "-c", "git --version && curl --version | head -1")
    assert out.startswith("git version ") and "\ncurl " in out


def test_pip_install(my_app, tracked) -> None:
    """https://modal.com/docs/guide/images#add-python-packages-with-pip_install (a small package)."""
    image = modal.Image.debian_slim(python_version="3.11").pip_install("humanize")
    out = run_in(tracked, my_app, image, "python", "-c", "import humanize; print(humanize.intcomma(1234567))")
    assert out == "1,234,567\n"


def test_run_commands_and_env(my_app, tracked) -> None:
    """https://modal.com/docs/guide/images#run-shell-commands-with-run_commands and #set-environment-variables."""
    image = (
        modal.Image.debian_slim()
        .run_commands("mkdir -p /opt/app && echo 'built by run_commands' > /opt/app/readme.txt")
        .env({"PORT": "6443"})
    )
    out = run_in(tracked, my_app, image, "bash", "-c", "cat /opt/app/readme.txt; echo $PORT")
    assert out == "built by run_commands\n6443\n"


def test_from_registry(my_app, tracked) -> None:
    """https://modal.com/docs/guide/images#use-an-existing-container-image-with-from_registry.

    The emulator builds every registry image on the host's root file system (no registry is reached).
    """
    image = modal.Image.from_registry("python:3.11-slim-bookworm").run_commands("echo from-registry > /marker")
    out = run_in(tracked, my_app, image, "bash", "-c", "cat /marker; python -c 'print(2 ** 10)'")
    assert out == "from-registry\n1024\n"


def test_from_dockerfile(my_app, tracked, tmp_path, monkeypatch) -> None:
    """https://modal.com/docs/guide/images#define-your-image-with-a-dockerfile (with a COPY from the context)."""
    (tmp_path / "config.txt").write_text("copied from the build context\n")
    (tmp_path / "Dockerfile").write_text(
        "FROM python:3.11-slim-bookworm\n"
        "ENV APP_HOME=/app\n"
        "WORKDIR /app\n"
        "COPY config.txt /app/config.txt\n"
        "RUN echo \"built in $APP_HOME\" > built.txt\n"
    )
    monkeypatch.chdir(tmp_path)
    image = modal.Image.from_dockerfile("Dockerfile")
    out = run_in(tracked, my_app, image, "bash", "-c", "pwd; cat /app/config.txt /app/built.txt")
    assert out == "/app\ncopied from the build context\nbuilt in /app\n"


# -- volumes ----------------------------------------------------------------------------------
def test_ephemeral_volume_batch_upload(my_app, tracked, tmp_path) -> None:
    """https://modal.com/docs/guide/sandbox-files#volumes (batch_upload into an ephemeral Volume)."""
    local = tmp_path / "local-path.txt"
    local.write_text("uploaded from the client\n")
    with modal.Volume.ephemeral() as vol:
        with vol.batch_upload() as batch:
            batch.put_file(str(local), "/remote-path.txt")
            batch.put_file(io.BytesIO(b"some data"), "/foobar")

        sb = modal.Sandbox.create(volumes={"/cache": vol}, app=my_app)
        tracked.append(sb)
        p = sb.exec("cat", "/cache/remote-path.txt", "/cache/foobar")
        assert p.stdout.read() == "uploaded from the client\nsome data"
        sb.terminate()


def test_files_written_in_sandbox_are_readable_after(my_app, tracked) -> None:
    """https://modal.com/docs/guide/sandbox-files#volumes (read a file the Sandbox wrote, after it ended)."""
    with modal.Volume.ephemeral() as vol:
        sb = modal.Sandbox.create(volumes={"/cache": vol}, app=my_app)
        tracked.append(sb)
        p = sb.exec("bash", "-c", "echo foo > /cache/a.txt")
        p.wait()
        sb.terminate()
        sb.wait(raise_on_termination=False)
        data = b"".join(vol.read_file("a.txt"))
        assert data == b"foo\n"


def test_named_volume_persists_between_sandboxes(my_app, tracked) -> None:
    """https://modal.com/docs/guide/sandbox-files#volumes (a persisted Volume with a dynamic label)."""
    label = f"sandbox-vol-{time.time_ns()}"
    vol = modal.Volume.from_name(label, create_if_missing=True)
    first = modal.Sandbox.create(volumes={"/cache": vol}, app=my_app)
    tracked.append(first)
    assert first.exec("bash", "-c", "echo state > /cache/state.txt").wait() == 0
    first.terminate()
    second = modal.Sandbox.create(volumes={"/cache": modal.Volume.from_name(label)}, app=my_app)
    tracked.append(second)
    assert second.exec("cat", "/cache/state.txt").stdout.read() == "state\n"
    modal.Volume.objects.delete(label) if hasattr(modal.Volume, "objects") else modal.Volume.delete(label)


def test_v2_volume_sync_commits(my_app, tracked) -> None:
    """https://modal.com/docs/guide/sandbox-files#committing-volume-changes-with-sync-v2-only."""
    with modal.Volume.ephemeral(version=2) as vol:
        sb = modal.Sandbox.create(volumes={"/cache": vol}, app=my_app)
        tracked.append(sb)
        assert sb.exec("bash", "-c", "echo committed > /cache/c.txt && sync /cache").wait() == 0
        assert b"".join(vol.read_file("c.txt")) == b"committed\n"


def test_reload_volumes(my_app, tracked) -> None:
    """https://modal.com/docs/reference/modal.Sandbox#reload_volumes: see files added from outside."""
    with modal.Volume.ephemeral() as vol:
        sb = modal.Sandbox.create(volumes={"/cache": vol}, app=my_app)
        tracked.append(sb)
        with vol.batch_upload() as batch:
            batch.put_file(io.BytesIO(b"late file"), "/late.txt")
        sb.reload_volumes()
        assert sb.exec("cat", "/cache/late.txt").stdout.read() == "late file"
