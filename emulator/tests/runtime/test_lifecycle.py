"""Killing from another process, what terminate leaves behind (nothing), crash recovery, store close."""

from __future__ import annotations

import asyncio
import os
import socket
import subprocess
import sys
import time
from pathlib import Path

from runtime_helpers import default_base, running, sh, spec

from modal_emulator.runtime._host import process_start_time
from modal_emulator.runtime.container import Container, cleanup_stale
from modal_emulator.runtime.store import Store


def _all_netns_inodes() -> set[int]:
    inodes = set()
    for task in Path("/proc").glob("[0-9]*/task/[0-9]*"):
        try:
            inodes.add(os.stat(task / "ns/net").st_ino)
        except OSError:
            pass
    return inodes


def _mounts_anywhere_mentioning(text: str) -> list[str]:
    found = []
    for mountinfo in Path("/proc").glob("[0-9]*/mountinfo"):
        try:
            found += [line for line in mountinfo.read_text().splitlines() if text in line]
        except OSError:
            pass
    return found


def _gone(pid: int, start: int | None, timeout_s: float = 10) -> bool:
    deadline = time.monotonic() + timeout_s
    while process_start_time(pid) == start and start is not None:
        if time.monotonic() > deadline:
            return False
        time.sleep(0.05)
    return True


def test_kill_sandbox_from_another_process_ends_wait(store: Store) -> None:
    async def body() -> None:
        async with running(store, spec()) as container:
            killer = await asyncio.create_subprocess_exec(
                sys.executable, "-c",
                "import sys, pathlib; from modal_emulator.runtime.container import kill_sandbox;"
                "print(kill_sandbox(pathlib.Path(sys.argv[1]), sys.argv[2]))",
                str(store.state_dir), container.spec.sandbox_id, stdout=asyncio.subprocess.PIPE)
            out, _ = await killer.communicate()
            assert out == b"True\n"
            assert await asyncio.wait_for(container.wait(), 30) == 137

    asyncio.run(body())


def test_terminate_leaves_no_process_mount_netns_tunnel_or_files(store: Store) -> None:
    async def body() -> None:
        container = await Container.start(store, spec(ports=[8080], cpu=1.0))
        try:
            background = await container.exec(["sleep", "1000"])
            _, inner_pid, _ = await sh(container, "sleep 1000 >/dev/null 2>&1 & echo $!")
            pids = [container.init_pid, container.entrypoint.pid, background.pid]
            starts = [process_start_time(pid) for pid in pids]
            netns = os.stat(f"/proc/{container.init_pid}/ns/net").st_ino
            sandbox_dir = store.sandbox_dir(container.spec.sandbox_id)
            pid_file = store.state_dir / "run" / f"{container.spec.sandbox_id}.pid"
            port = container.tunnels[8080][1]
            assert int(inner_pid) > 1 and pid_file.exists() and sandbox_dir.exists()
            assert _mounts_anywhere_mentioning(str(sandbox_dir)), "the overlay should be mounted while running"
        finally:
            await container.terminate()
        await container.terminate()  # idempotent
        assert all(_gone(pid, start) for pid, start in zip(pids, starts))
        assert _mounts_anywhere_mentioning(str(sandbox_dir)) == []
        assert not any(str(store.root) in line and "overlay" in line for line in Path("/proc/self/mountinfo").read_text().splitlines())
        assert netns not in _all_netns_inodes()
        assert not sandbox_dir.exists() and not pid_file.exists()
        for directory in container.info()["cgroups"]:
            assert not Path(directory).exists()
        with socket.socket() as probe:
            assert probe.connect_ex(("127.0.0.1", port)) != 0

    asyncio.run(body())


_CRASHING_SERVER = """
import asyncio, pathlib, sys
from modal_emulator.runtime.store import Store
from modal_emulator.runtime.container import Container, ContainerSpec
async def main():
    store = Store(pathlib.Path(sys.argv[1]))
    store.open()
    container = await Container.start(store, ContainerSpec(sys.argv[2], pathlib.Path(sys.argv[3]), [],
                                                           ["sleep", "infinity"], {}))
    print(container.init_pid, flush=True)
    await asyncio.sleep(1000)
asyncio.run(main())
"""


def test_cleanup_stale_after_a_crashed_server(store: Store) -> None:
    sandbox_id = "sb-crashed"
    server = subprocess.Popen([sys.executable, "-c", _CRASHING_SERVER, str(store.state_dir), sandbox_id,
                               str(default_base())],
                              stdout=subprocess.PIPE, text=True)
    try:
        init_pid = int(server.stdout.readline())
        start = process_start_time(init_pid)
        assert start is not None
    finally:
        server.kill()
        server.wait()
    assert (store.state_dir / "run" / f"{sandbox_id}.pid").exists()
    cleanup_stale(store.state_dir)
    assert _gone(init_pid, start)
    assert not (store.state_dir / "run" / f"{sandbox_id}.pid").exists()
    assert not store.sandbox_dir(sandbox_id).exists()


def test_store_close_detaches_its_loop_device(tmp_path: Path) -> None:
    own = Store(tmp_path / "state", size_gb=1)
    own.open()
    try:
        async def body() -> None:
            async with running(own, spec()) as container:
                assert (await sh(container, "echo ok"))[1] == "ok\n"

        asyncio.run(body())
        own.open()  # idempotent on a mounted store
    finally:
        own.close()
    assert not own.is_mounted()
    attached = subprocess.run(["losetup", "-j", str(own.image)], capture_output=True, text=True, check=True)
    assert attached.stdout.strip() == ""
