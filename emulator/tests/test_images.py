"""Image builds through the real SDK: layers run for real, are cached, and failures carry their output."""

from __future__ import annotations

import time

import modal
import pytest
from modal.exception import ImageBuildError


def run(sandboxes: list, app, image: modal.Image, command: str) -> str:
    sb = modal.Sandbox.create(app=app, image=image)
    sandboxes.append(sb)
    p = sb.exec("bash", "-c", command)
    out = p.stdout.read()
    assert p.wait() == 0, p.stderr.read()
    return out


def test_layers_env_workdir(app, sandboxes) -> None:
    image = (
        modal.Image.debian_slim()
        .run_commands("echo built > /built.txt")
        .env({"GREETING": "hi there"})
        .workdir("/srv/app")
        .run_commands("pwd > here.txt")
    )
    out = run(sandboxes, app, image, "cat /built.txt; echo $GREETING; pwd; cat /srv/app/here.txt")
    assert out.split("\n")[:4] == ["built", "hi there", "/srv/app", "/srv/app"]


def test_build_is_cached(app, sandboxes, capsys) -> None:
    marker = f"stamp-{time.time_ns()}"

    def definition() -> modal.Image:
        return modal.Image.debian_slim().run_commands(f"echo {marker}-ran; echo $(date +%s%N) > /stamp")

    image = definition()
    with modal.enable_output():
        image.build(app)
    assert f"{marker}-ran" in capsys.readouterr().out
    first = run(sandboxes, app, image, "cat /stamp")
    # The same definition again is served from the cache: same image, same layer, no RUN executes.
    again = definition()
    with modal.enable_output():
        again.build(app)
    assert f"{marker}-ran" not in capsys.readouterr().out
    assert again.object_id == image.object_id
    assert run(sandboxes, app, again, "cat /stamp") == first
    # A new image sharing the steps reuses the layer too.
    extended = definition().run_commands("true")
    assert run(sandboxes, app, extended, "cat /stamp") == first


def test_build_logs_stream(app, capsys) -> None:
    marker = f"log-{time.time_ns()}"
    image = modal.Image.debian_slim().run_commands(f"echo {marker}-printed")
    with modal.enable_output():
        image.build(app)
    assert f"{marker}-printed" in capsys.readouterr().out


def test_failing_run_fails_the_build(app) -> None:
    image = modal.Image.debian_slim().run_commands("echo about-to-fail; exit 42")
    with pytest.raises(ImageBuildError) as info:
        image.build(app)
    assert "42" in str(info.value) and "about-to-fail" in str(info.value)


def test_dockerfile_commands_and_from_id(app, sandboxes) -> None:
    image = modal.Image.debian_slim().dockerfile_commands(
        ["ENV COLOR=blue", "RUN echo $COLOR > /color", 'CMD ["sleep", "1000"]']
    ).build(app)
    same = modal.Image.from_id(image.object_id)
    assert run(sandboxes, app, same, "cat /color; echo $COLOR") == "blue\nblue\n"


def test_pip_install(app, sandboxes) -> None:
    # A local wheel keeps the test off the network; pip itself runs for real inside the build.
    image = modal.Image.debian_slim().run_commands(
        "mkdir -p /pkg/emulated_pkg && echo 'VALUE = 41 + 1' > /pkg/emulated_pkg/__init__.py",
        "printf '[project]\\nname = \"emulated-pkg\"\\nversion = \"1.0\"\\n' > /pkg/pyproject.toml",
    ).pip_install("/pkg", extra_options="--no-build-isolation --no-index")
    assert run(sandboxes, app, image, "python -c 'import emulated_pkg; print(emulated_pkg.VALUE)'") == "42\n"
