"""Sandboxes: entrypoint and exec I/O, exit codes, env, workdir, isolation from the host, namespaces."""

from __future__ import annotations

import asyncio
from pathlib import Path

import pytest
from runtime_helpers import running, sh, spec, unique

from modal_emulator.runtime.container import Container
from modal_emulator.runtime.private_layers import TINI_PATH
from modal_emulator.runtime.store import Store


def test_entrypoint_uses_stdin_stdout_stderr_pipes(store: Store) -> None:
    async def body() -> None:
        script = "echo started; echo to-stderr >&2; read line; echo got:$line; exit 4"
        async with running(store, spec(entrypoint=["sh", "-c", script])) as container:
            entry = container.entrypoint
            assert entry is not None and entry.stdin and entry.stdout and entry.stderr
            assert await entry.stdout.readline() == b"started\n"
            entry.stdin.write(b"hello\n")
            await entry.stdin.drain()
            assert await entry.stdout.readline() == b"got:hello\n"
            assert await entry.stderr.readline() == b"to-stderr\n"
            assert await asyncio.wait_for(container.wait(), 30) == 4
            assert container.returncode == 4
            with pytest.raises(RuntimeError):
                await container.exec(["true"])

    asyncio.run(body())


def test_exec_output_exit_codes_stdin_env_and_workdir(store: Store) -> None:
    async def body() -> None:
        async with running(store, spec(env={"A": "from-spec"}, workdir="/srv/emu-wd")) as container:
            assert await sh(container, "cat; echo err >&2; exit 5", stdin=b"round trip\n") == (5, "round trip\n", "err\n")
            assert await sh(container, 'echo "$A $B"; pwd', env={"B": "from-exec"}) == (0, "from-spec from-exec\n/srv/emu-wd\n", "")
            assert await sh(container, "pwd", workdir="/etc") == (0, "/etc\n", "")
            missing = await container.exec(["/no/such/program"])
            assert await missing.wait() in (126, 127)
            killed = await container.exec(["sleep", "1000"])
            killed.kill()
            assert await asyncio.wait_for(killed.wait(), 30) == 137

    asyncio.run(body())


def test_exec_with_a_pty_gets_a_terminal_of_the_sandbox(store: Store) -> None:
    async def body() -> None:
        async with running(store, spec()) as container:
            process = await container.exec(["sh", "-c", "tty; echo done"], pty=True)
            assert process.stdout is not None
            output = await asyncio.wait_for(process.stdout.read(), 30)
            assert await process.wait() == 0
            assert output.replace(b"\r\n", b"\n") == b"/dev/pts/0\ndone\n"

    asyncio.run(body())


def test_sandboxes_are_isolated_from_each_other_and_the_host(store: Store) -> None:
    marker = f"/opt/{unique('isolation')}"

    async def body() -> None:
        async with running(store, spec()) as first, running(store, spec()) as second:
            assert (await sh(first, f"echo mine > {marker} && cat {marker}"))[:2] == (0, "mine\n")
            assert (await sh(second, f"test -e {marker}"))[0] == 1
            assert not Path(marker).exists()
            assert (await sh(first, f"cat {marker}"))[1] == "mine\n"

    asyncio.run(body())


def test_the_root_is_the_image_not_the_host_and_namespaces_are_private(store: Store) -> None:
    # The host's /tmp holds at least this test run's own directories, the state dir the store.
    assert any(Path("/tmp").iterdir())
    state_dir = store.state_dir

    async def body() -> None:
        async with running(store, spec(hostname="emu-host")) as container:
            for path in ("/tmp", "/var/tmp", "/home", "/run", "/srv"):
                code, out, _ = await sh(container, f"ls -A {path}")
                assert (code, out) == (0, ""), f"{path} is not empty inside: {out!r}"
            for host_only in (str(state_dir), str(store.image), "/usr/bin/python3", "/usr/sbin/sshd"):
                assert (await sh(container, f"test -e {host_only}"))[0] == 1, f"{host_only} is the host's"
            assert "bookworm" in (await sh(container, "cat /etc/os-release"))[1]
            assert await sh(container, "hostname") == (0, "emu-host\n", "")
            # Its own network namespace: loopback and slirp4netns's tap0, none of the host's interfaces.
            code, out, _ = await sh(container, "ls /sys/class/net")
            assert (code, out) == (0, "lo\ntap0\n")
            code, out, _ = await sh(container, "cat /proc/1/cmdline | tr '\\0' ' '")
            assert out == f"{TINI_PATH} -- sleep infinity "
            code, out, _ = await sh(container, "ls /proc | grep -c '^[0-9]'")
            assert int(out) <= 5, "only the sandbox's own processes are visible"  # tini, sleep, sh, ls, grep
            code, out, _ = await sh(container, "ls /dev/null /dev/zero /dev/random /dev/urandom /dev/tty /dev/ptmx")
            assert code == 0
            assert (await sh(container, "echo x > /tmp/f && cat /tmp/f"))[1] == "x\n"

        async with running(store, spec()) as default_host:
            assert (await sh(default_host, "hostname"))[1] == default_host.spec.sandbox_id + "\n"

    asyncio.run(body())


def test_volumes_are_bound_read_write_and_read_only(store: Store, tmp_path: Path) -> None:
    writable, read_only = tmp_path / "rw", tmp_path / "ro"
    writable.mkdir()
    read_only.mkdir()
    (read_only / "given").write_text("given\n")

    async def body() -> None:
        volumes = [(writable, "/mnt/emu-rw", False), (read_only, "/data/emu-ro", True)]
        async with running(store, spec(volumes=volumes)) as container:
            assert (await sh(container, "echo out > /mnt/emu-rw/new"))[0] == 0
            assert (await sh(container, "cat /data/emu-ro/given"))[1] == "given\n"
            assert (await sh(container, "echo no > /data/emu-ro/refused"))[0] != 0
        assert (writable / "new").read_text() == "out\n"
        assert not (read_only / "refused").exists()

    asyncio.run(body())


def test_limits_are_enforced_with_cgroups_or_recorded(store: Store) -> None:
    async def body() -> None:
        async with running(store, spec(cpu=0.5, memory_mb=128)) as container:
            assert set(container.limits) == {"cpu", "memory"}
            _, cgroup_file, _ = await sh(container, "cat /proc/self/cgroup")
            for controller, how in container.limits.items():
                if "enforced" in how:
                    line = next(x for x in cgroup_file.splitlines() if f":{controller}:" in x or f",{controller}:" in x)
                    assert line.endswith("/" + container.spec.sandbox_id), line
            print("limits:", container.limits)

    asyncio.run(body())


def test_start_failure_is_a_clear_error_leaving_nothing(store: Store) -> None:
    sandbox_id = unique("sb")
    with pytest.raises(RuntimeError, match="does not exist"):
        asyncio.run(Container.start(store, spec(["no-such-layer"], sandbox_id=sandbox_id)))
    bad = spec(sandbox_id=unique("sb"), volumes=[(Path("/nonexistent-emu-dir"), "/mnt/x", False)])
    with pytest.raises(RuntimeError, match="could not set up"):
        asyncio.run(Container.start(store, bad))
    assert not store.sandbox_dir(bad.sandbox_id).exists()
    assert not (store.state_dir / "run" / f"{bad.sandbox_id}.pid").exists()


def _state_in(container: Container, pid: int) -> str | None:
    """State letter (R, S, Z...) of a process of the sandbox, by its pid inside; None once it is gone."""
    try:
        stat = Path(f"/proc/{container.init_pid}/root/proc/{pid}/stat").read_text()
    except (FileNotFoundError, ProcessLookupError):
        return None
    return stat[stat.rindex(")") + 2:].split()[0]


def test_orphans_are_reaped(store: Store) -> None:
    """A process orphaned in the sandbox (its parent exec returned) is reaped by PID 1 once it exits."""

    async def body() -> None:
        async with running(store, spec()) as container:
            code, out, _ = await sh(container, "sleep 0.2 >/dev/null 2>&1 & echo $!")
            orphan = int(out)
            assert code == 0 and orphan > 1
            # Bounded wait for the orphan to end; a zombie never ends, so it shows as the state left.
            for _ in range(600):
                if _state_in(container, orphan) in (None, "Z"):
                    break
                await asyncio.sleep(0.05)
            for _ in range(100):  # its reaping follows its exit closely
                if _state_in(container, orphan) is None:
                    break
                await asyncio.sleep(0.05)
            assert _state_in(container, orphan) is None, "the orphan was left a zombie"
            assert container.returncode is None

    asyncio.run(body())


@pytest.mark.parametrize(("script", "status"), [("exit 5", 5), ("kill -TERM $$", 143), ("kill -KILL $$", 137)])
def test_entrypoint_status(store: Store, script: str, status: int) -> None:
    """The sandbox's status is its entrypoint's: exit code as is, 128 + N for death by signal N."""
    async def body() -> None:
        async with running(store, spec(entrypoint=["sh", "-c", f"cat; echo done; {script}"])) as container:
            assert container.entrypoint.stdin is not None and container.entrypoint.stdout is not None
            container.entrypoint.stdin.write(b"in\n")
            container.entrypoint.stdin.close()
            output = await asyncio.wait_for(container.entrypoint.stdout.read(), 60)
            assert (output, await asyncio.wait_for(container.wait(), 60)) == (b"in\ndone\n", status)

    asyncio.run(body())
