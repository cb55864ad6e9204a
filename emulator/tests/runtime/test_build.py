"""RUN steps and file layers: layers stack, failures leave nothing, env/workdir apply, output streams."""

from __future__ import annotations

import asyncio
import os
from pathlib import Path

from runtime_helpers import default_base, running, sh, spec, unique

from modal_emulator.runtime.build import run_build_step, write_files_layer
from modal_emulator.runtime.store import Store


def build(store: Store, lower: list[str], layer_id: str, command: str, env: dict[str, str] | None = None,
          workdir: str | None = None) -> tuple[int, list[str]]:
    chunks: list[str] = []
    code = asyncio.run(run_build_step(store, default_base(), lower, layer_id, command, env or {}, workdir, chunks.append))
    return code, chunks


def test_run_step_layer_is_seen_by_the_next_step(store: Store) -> None:
    first, second = unique("layer"), unique("layer")
    code, log = build(store, [], first, "mkdir -p /opt/emu-build && echo built > /opt/emu-build/a")
    assert code == 0, "".join(log)
    assert (store.layer_path(first) / "opt/emu-build/a").read_text() == "built\n"
    assert not Path("/opt/emu-build").exists(), "a build step must not write to the host"

    code, log = build(store, [first], second, 'test "$(cat /opt/emu-build/a)" = built && echo more > /opt/emu-build/b')
    assert code == 0, "".join(log)
    assert (store.layer_path(second) / "opt/emu-build/b").exists()
    assert not (store.layer_path(second) / "opt/emu-build/a").exists(), "a layer holds only its own writes"


def test_failing_step_returns_its_status_and_leaves_no_layer(store: Store) -> None:
    layer = unique("layer")
    code, log = build(store, [], layer, "echo partial > /opt/partial; echo failing >&2; exit 7")
    assert code == 7
    assert "failing" in "".join(log)
    assert not store.has_layer(layer)
    assert list((store.root / "tmp").iterdir()) == [], "no scratch directory may be left behind"


def test_env_and_workdir_apply_and_stdout_stderr_are_logged(store: Store) -> None:
    layer = unique("layer")
    code, log = build(store, [], layer, 'echo "greeting=$GREETING"; pwd; echo on-stderr >&2',
                      env={"GREETING": "hello world"}, workdir="/srv/emu-app")
    text = "".join(log)
    assert code == 0, text
    assert "greeting=hello world" in text
    assert "/srv/emu-app" in text
    assert "on-stderr" in text
    assert (store.layer_path(layer) / "srv/emu-app").is_dir(), "the workdir is created, as WORKDIR does"


def test_output_is_streamed_while_the_step_runs(store: Store) -> None:
    code, log = build(store, [], unique("layer"), "echo first; sleep 1; echo second")
    assert code == 0
    assert "first" in log[0] and "second" not in log[0], f"output arrived in one piece: {log!r}"
    assert "second" in "".join(log)


def test_write_files_layer_places_files_with_modes(store: Store, tmp_path: Path) -> None:
    source = tmp_path / "script.sh"
    source.write_text("#!/bin/sh\necho from-script\n")
    os.chmod(source, 0o755)
    layer = unique("files")
    write_files_layer(store, layer, [("/etc/emu/config.txt", b"value\n", None),
                                     ("/opt/emu/secret", b"s3cret\n", 0o600),
                                     ("/usr/local/bin/emu-script", source, None),
                                     ("/tmp/emu-file", b"in tmp\n", None)], below=[default_base()])
    root = store.layer_path(layer)
    assert (root / "etc/emu/config.txt").stat().st_mode & 0o777 == 0o644
    assert (root / "opt/emu/secret").stat().st_mode & 0o777 == 0o600
    # Directories the layer creates on the way keep the metadata of the image's own (/tmp stays 1777).
    assert (root / "etc").stat().st_mode & 0o7777 == (default_base() / "etc").stat().st_mode & 0o7777
    assert (root / "tmp").stat().st_mode & 0o7777 == 0o1777

    async def check() -> None:
        async with running(store, spec([layer])) as container:
            assert await sh(container, "cat /etc/emu/config.txt; emu-script") == (0, "value\nfrom-script\n", "")

    asyncio.run(check())
