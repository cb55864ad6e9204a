"""Modal's own sandbox guide and reference examples, run as written against the emulator.

Each test names the page its example comes from. The examples are kept as close to the page as
possible: only app names, sandbox names, (where the page prints) the assertions on what would be
printed, and one exec timeout too tight for a busy machine differ. What the page states about return
codes and errors is asserted.
"""

from __future__ import annotations

import asyncio
import re
import socket
import ssl
import time
import urllib.request

import modal
import pytest
from modal.exception import (
    AlreadyExistsError,
    InvalidError,
    NotFoundError,
    SandboxTerminatedError,
    SandboxTimeoutError,
)
from modal.exception import TimeoutError as ModalTimeoutError
from modal.stream_type import StreamType

from sdk_harness import EmulatorProcess


@pytest.fixture(scope="module")
def my_app(emulator: EmulatorProcess) -> modal.App:
    return modal.App.lookup("my-app", create_if_missing=True)


@pytest.fixture
def tracked(sandboxes: list) -> list:
    """The shared ``sandboxes`` fixture (terminated afterwards even when the test fails), under this file's name."""
    return sandboxes


def tunnel_ca(emulator: EmulatorProcess) -> ssl.SSLContext:
    """A client context trusting the emulator's tunnel CA (a real client trusts Modal's public CA)."""
    return ssl.create_default_context(cafile=str(emulator.state_dir / "tls" / "ca.pem"))


def retry_until(fetch, timeout: float = 20):  # noqa: ANN001, ANN201 - small polling helper
    """Call ``fetch`` until it stops raising OSError (a server in a sandbox takes a moment to listen)."""
    deadline = time.monotonic() + timeout
    while True:
        try:
            return fetch()
        except OSError:
            if time.monotonic() > deadline:
                raise
            time.sleep(0.2)


# -- https://modal.com/docs/guide/sandboxes ---------------------------------------------------
def test_guide_intro_example(emulator, tracked) -> None:
    """https://modal.com/docs/guide/sandboxes (first example)."""
    sb_app = modal.App.lookup("my-app", create_if_missing=True)
    sb = modal.Sandbox.create(app=sb_app)
    tracked.append(sb)

    p = sb.exec("python", "-c", "print('hello')", timeout=3)
    assert p.stdout.read() == "hello\n"

    # The guide says timeout=5, which ends the exec 0.5 s after its tenth line is due: on a busy machine the
    # line can come later and be cut off. A longer timeout keeps the example's meaning without that race.
    p = sb.exec("bash", "-c", "for i in {1..10}; do date +%T; sleep 0.5; done", timeout=20)
    lines = []
    for line in p.stdout:
        lines.append(line)
    assert len(lines) == 10 and all(re.fullmatch(r"\d\d:\d\d:\d\d\n", line) for line in lines)

    sb.terminate()
    sb.detach()


def test_guide_intro_example_async(emulator, tracked) -> None:
    """https://modal.com/docs/guide/sandboxes (the same example with the async API)."""

    async def main() -> tuple[str, list[str]]:
        sb_app = await modal.App.lookup.aio("my-app", create_if_missing=True)
        sb = await modal.Sandbox.create.aio(app=sb_app)
        tracked.append(sb)
        p = await sb.exec.aio("python", "-c", "print('hello')", timeout=3)
        hello = await p.stdout.read.aio()
        p = await sb.exec.aio("bash", "-c", "for i in {1..3}; do date +%T; sleep 0.5; done", timeout=5)
        lines = [line async for line in p.stdout]
        await sb.terminate.aio()
        await sb.detach.aio()
        return hello, lines

    hello, lines = asyncio.run(main())
    assert hello == "hello\n"
    assert len(lines) == 3


# -- https://modal.com/docs/guide/sandbox-spawn -----------------------------------------------
def test_spawn_exec_and_output(my_app, tracked) -> None:
    """https://modal.com/docs/guide/sandbox-spawn (Running commands)."""
    sb = modal.Sandbox.create(app=my_app)
    tracked.append(sb)

    process = sb.exec("echo", "hello", timeout=3)
    assert process.stdout.read() == "hello\n"

    process = sb.exec("python", "-c", "print(1 + 1)", timeout=3)
    assert process.stdout.read() == "2\n"

    process = sb.exec("bash", "-c", "for i in $(seq 1 10); do echo foo $i; sleep 0.1; done", timeout=5)
    assert [line for line in process.stdout] == [f"foo {i}\n" for i in range(1, 11)]
    assert process.wait() == 0

    sb.terminate()
    sb.detach()


def test_spawn_stdin(my_app, tracked) -> None:
    """https://modal.com/docs/guide/sandbox-spawn (Input: ContainerProcess stdin, sync and async)."""
    sb = modal.Sandbox.create(app=my_app)
    tracked.append(sb)
    p = sb.exec("bash", "-c", "while read line; do echo $line; done")
    p.stdin.write(b"foo bar\n")
    p.stdin.write_eof()
    p.stdin.drain()
    p.wait()
    assert p.stdout.read() == "foo bar\n"
    assert p.returncode == 0

    async def run_async() -> str:
        p = await sb.exec.aio("bash", "-c", "while read line; do echo $line; done")
        p.stdin.write(b"foo bar\n")
        p.stdin.write_eof()
        await p.stdin.drain.aio()
        await p.wait.aio()
        return await p.stdout.read.aio()

    assert asyncio.run(run_async()) == "foo bar\n"
    sb.terminate()
    sb.detach()


def test_spawn_entrypoint_stdin(my_app, tracked) -> None:
    """https://modal.com/docs/guide/sandbox-spawn (Input: the Sandbox's own stdin handle)."""
    sb = modal.Sandbox.create("cat", app=my_app)
    tracked.append(sb)
    sb.stdin.write(b"first line\n")
    sb.stdin.write(b"second line\n")
    sb.stdin.write_eof()
    sb.stdin.drain()
    sb.wait()
    assert sb.stdout.read() == "first line\nsecond line\n"
    assert sb.returncode == 0


def test_spawn_output_stream_types(my_app, tracked, capfd) -> None:
    """https://modal.com/docs/guide/sandbox-spawn (Output: StreamType.DEVNULL and StreamType.STDOUT)."""
    sb = modal.Sandbox.create(app=my_app)
    tracked.append(sb)
    p = sb.exec("bash", "-c", "echo to-devnull; echo err >&2", stdout=StreamType.DEVNULL)
    assert p.wait() == 0
    with pytest.raises(ValueError):
        p.stdout.read()  # the SDK refuses to read a DEVNULL stream
    assert p.stderr.read() == "err\n"
    p = sb.exec("bash", "-c", "echo printed-locally", stdout=StreamType.STDOUT)
    assert p.wait() == 0
    deadline = time.monotonic() + 10
    seen = ""
    while "printed-locally" not in seen and time.monotonic() < deadline:
        seen += capfd.readouterr().out
        time.sleep(0.1)
    assert "printed-locally" in seen


def test_spawn_exec_timeout(my_app, tracked) -> None:
    """https://modal.com/docs/guide/sandbox-spawn: ``timeout`` bounds an exec; the SDK reports -1 for it."""
    sb = modal.Sandbox.create(app=my_app)
    tracked.append(sb)
    p = sb.exec("bash", "-c", "sleep 100", timeout=1)
    assert p.wait() == -1
    # The command itself is stopped inside the sandbox, not only given up on by the client.
    deadline = time.monotonic() + 10
    while sb.exec("pgrep", "-f", "sleep 100").wait() == 0:
        assert time.monotonic() < deadline, "the timed-out exec is still running"
        time.sleep(0.2)


def test_spawn_workdir_env_secrets(my_app, tracked) -> None:
    """https://modal.com/docs/guide/sandbox-spawn and /docs/guide/sandboxes (env, secrets, workdir)."""
    secret = modal.Secret.from_dict({"MY_SECRET": "hello"})
    sb = modal.Sandbox.create(app=my_app, secrets=[secret], env={"GREETING": "hi"}, workdir="/srv")
    tracked.append(sb)
    assert sb.exec("bash", "-c", "echo $MY_SECRET").stdout.read() == "hello\n"
    assert sb.exec("pwd").stdout.read() == "/srv\n"
    assert sb.exec("pwd", workdir="/tmp").stdout.read() == "/tmp\n"
    assert sb.exec("bash", "-c", "echo $GREETING $X", env={"X": "y"}).stdout.read() == "hi y\n"


def test_spawn_entrypoint_output(my_app, tracked) -> None:
    """https://modal.com/docs/guide/sandbox-spawn (a Sandbox created with a command)."""
    sandbox = modal.Sandbox.create("python", "-c", "print('hello')", app=my_app)
    tracked.append(sandbox)
    assert sandbox.stdout.read() == "hello\n"
    sandbox.wait()
    assert sandbox.returncode == 0


def test_pty_exec(my_app, tracked) -> None:
    """https://modal.com/docs/reference/modal.Sandbox#exec (``pty=True``: stderr is merged into stdout)."""
    sb = modal.Sandbox.create(app=my_app)
    tracked.append(sb)
    p = sb.exec("bash", "-c", "tty; echo to-stderr >&2; test -t 0 && test -t 1 && echo is-a-tty", pty=True)
    assert p.wait() == 0
    out = p.stdout.read().replace("\r\n", "\n").splitlines()
    assert re.fullmatch(r"/dev/pts/\d+", out[0]), out
    assert out[1:] == ["to-stderr", "is-a-tty"]
    assert p.stderr.read() == ""


# -- lifecycle: https://modal.com/docs/guide/sandboxes, /docs/reference/modal.Sandbox --------
def test_poll_wait_returncode(my_app, tracked) -> None:
    """https://modal.com/docs/reference/modal.Sandbox#poll / #wait / #returncode."""
    sb = modal.Sandbox.create("bash", "-c", "sleep 1; exit 3", app=my_app)
    tracked.append(sb)
    assert sb.poll() is None
    assert sb.returncode is None
    sb.wait()
    assert sb.returncode == 3
    assert sb.poll() == 3


def test_terminate(my_app, tracked) -> None:
    """https://modal.com/docs/reference/modal.Sandbox#terminate: a terminated sandbox waits with an error."""
    sb = modal.Sandbox.create(app=my_app)
    tracked.append(sb)
    sb.terminate()
    with pytest.raises(SandboxTerminatedError):
        sb.wait()
    sb.wait(raise_on_termination=False)
    assert sb.returncode == 137
    assert sb.terminate(wait=True) == 137


def test_timeout(my_app, tracked) -> None:
    """https://modal.com/docs/guide/sandboxes#timeouts: the sandbox ends after ``timeout`` seconds."""
    sb = modal.Sandbox.create(app=my_app, timeout=2)
    tracked.append(sb)
    with pytest.raises(SandboxTimeoutError):
        sb.wait()
    assert sb.returncode == 124


def test_idle_timeout(my_app, tracked) -> None:
    """https://modal.com/docs/guide/sandboxes#idle-timeouts: no exec, stdin or tunnel traffic ends it."""
    sb = modal.Sandbox.create(app=my_app, idle_timeout=2)
    tracked.append(sb)
    # A running exec keeps the sandbox alive past its idle timeout.
    assert sb.exec("sleep", "3").wait() == 0
    assert sb.poll() is None
    sb.wait(raise_on_termination=False)  # the idle timeout does not count as an external termination
    assert sb.returncode == 0
    assert modal.Sandbox.from_id(sb.object_id).poll() == 0


def test_idle_timeout_open_tunnel_is_activity(my_app, tracked) -> None:
    """https://modal.com/docs/guide/sandboxes#idle-timeouts: an open tunnel connection is activity."""
    sb = modal.Sandbox.create(
        "python3", "-c",
        "import socket\ns=socket.socket();s.setsockopt(socket.SOL_SOCKET,socket.SO_REUSEADDR,1)\n"
        "s.bind(('0.0.0.0',7000));s.listen()\nc,_=s.accept()\nc.sendall(b'hi')\nimport time\ntime.sleep(600)",
        app=my_app, idle_timeout=2, unencrypted_ports=[7000],
    )
    tracked.append(sb)
    host, port = sb.tunnels()[7000].tcp_socket

    def connect() -> socket.socket:
        # The tunnel accepts at once and closes the connection if nothing listens in the sandbox yet: only a
        # greeting proves that the connection reached the server, and so is open through the tunnel.
        conn = socket.create_connection((host, port), timeout=5)
        if conn.recv(2) != b"hi":
            conn.close()
            raise ConnectionResetError("the server in the sandbox was not listening yet")
        return conn

    conn = retry_until(connect)
    try:
        time.sleep(4)
        assert sb.poll() is None, "an open tunnel connection must keep the sandbox alive"
    finally:
        conn.close()
    sb.wait(raise_on_termination=False)
    assert sb.poll() is not None


def test_readiness_probe_tcp(my_app, tracked) -> None:
    """https://modal.com/docs/sdk/py/latest/Probe (TCP probe) and Sandbox.wait_until_ready."""
    readiness_probe = modal.Probe.with_tcp(8080)
    sandbox = modal.Sandbox.create(
        "bash", "-c", "sleep 1; exec python3 -m http.server 8080",
        readiness_probe=readiness_probe,
        app=my_app,
    )
    tracked.append(sandbox)
    sandbox.wait_until_ready()
    fetch = "import urllib.request; print(urllib.request.urlopen('http://127.0.0.1:8080/').status)"
    assert sandbox.exec("python3", "-c", fetch).stdout.read() == "200\n"


def test_readiness_probe_exec(my_app, tracked) -> None:
    """https://modal.com/docs/sdk/py/latest/Probe (exec probe: wait until a file exists)."""
    readiness_probe = modal.Probe.with_exec("sh", "-c", "test -f /tmp/ready")
    sandbox = modal.Sandbox.create(
        "sh", "-c", "sleep 1; touch /tmp/ready; sleep 600",
        readiness_probe=readiness_probe,
        app=my_app,
    )
    tracked.append(sandbox)
    sandbox.wait_until_ready()
    assert sandbox.exec("test", "-f", "/tmp/ready").wait() == 0


def test_wait_until_ready_times_out(my_app, tracked) -> None:
    """https://modal.com/docs/reference/modal.Sandbox#wait_until_ready: a probe that never passes times out."""
    sandbox = modal.Sandbox.create(readiness_probe=modal.Probe.with_tcp(9), app=my_app)
    tracked.append(sandbox)
    with pytest.raises(ModalTimeoutError):
        sandbox.wait_until_ready(timeout=2)


# -- https://modal.com/docs/guide/sandbox-networking ------------------------------------------
def test_encrypted_tunnel(emulator, my_app, tracked) -> None:
    """https://modal.com/docs/guide/sandbox-networking (Tunnels: ``encrypted_ports`` and ``tunnel.url``)."""
    sb = modal.Sandbox.create(
        "python3", "-m", "http.server", "12345",
        encrypted_ports=[12345],
        app=my_app,
    )
    tracked.append(sb)
    tunnel = sb.tunnels()[12345]
    assert tunnel.url == f"https://{tunnel.host}:{tunnel.port}"
    assert tunnel.tls_socket == (tunnel.host, tunnel.port)
    with pytest.raises(InvalidError):
        tunnel.tcp_socket  # noqa: B018 - an encrypted tunnel has no raw TCP endpoint
    context = tunnel_ca(emulator)
    with retry_until(lambda: urllib.request.urlopen(tunnel.url, context=context, timeout=10)) as response:
        assert response.status == 200
        assert b"Directory listing" in response.read()


def test_unencrypted_tunnel(my_app, tracked) -> None:
    """https://modal.com/docs/guide/sandbox-networking (``unencrypted_ports`` and ``tunnel.tcp_socket``)."""
    sb = modal.Sandbox.create(
        "python3", "-c",
        "import socket\ns=socket.socket();s.setsockopt(socket.SOL_SOCKET,socket.SO_REUSEADDR,1)\n"
        "s.bind(('0.0.0.0',8765));s.listen()\nwhile True:\n c,_=s.accept();c.sendall(b'pong:'+c.recv(64));c.close()",
        unencrypted_ports=[8765],
        app=my_app,
    )
    tracked.append(sb)
    tunnel = sb.tunnels()[8765]
    host, port = tunnel.tcp_socket
    assert (host, port) == (tunnel.unencrypted_host, tunnel.unencrypted_port)

    def ping() -> bytes:
        with socket.create_connection((host, port), timeout=5) as conn:
            conn.sendall(b"ping")
            reply = conn.recv(64)
        if not reply:
            raise ConnectionResetError("the server was not listening yet")
        return reply

    assert retry_until(ping) == b"pong:ping"


def test_block_network(my_app, tracked) -> None:
    """https://modal.com/docs/guide/sandbox-networking: ``block_network=True`` leaves no outbound access."""
    sb = modal.Sandbox.create(app=my_app, block_network=True)
    tracked.append(sb)
    probe = "import socket; socket.create_connection(('1.1.1.1', 53), timeout=3)"
    assert sb.exec("python3", "-c", probe).wait() != 0


# -- https://modal.com/docs/guide/sandboxes (names, tags, from_id) ----------------------------
def test_named_sandboxes(my_app, tracked) -> None:
    """https://modal.com/docs/guide/sandboxes#named-sandboxes."""
    name = f"my-name-{time.time_ns()}"
    sb = modal.Sandbox.create(app=my_app, name=name)
    tracked.append(sb)
    sb2 = modal.Sandbox.from_name("my-app", name)
    assert sb2.object_id == sb.object_id
    with pytest.raises(AlreadyExistsError):
        tracked.append(modal.Sandbox.create(app=my_app, name=name))
    sb.terminate()
    sb.wait(raise_on_termination=False)
    with pytest.raises(NotFoundError):
        modal.Sandbox.from_name("my-app", name)


def test_tags_and_list(my_app, tracked) -> None:
    """https://modal.com/docs/guide/sandboxes#tagging (set_tags, get_tags, Sandbox.list with tags)."""
    run = f"run-{time.time_ns()}"
    sandbox_v1_1 = modal.Sandbox.create("sleep", "10", app=my_app)
    sandbox_v1_2 = modal.Sandbox.create("sleep", "20", app=my_app)
    tracked += [sandbox_v1_1, sandbox_v1_2]
    sandbox_v1_1.set_tags({"major_version": "1", "minor_version": "1", "run": run})
    sandbox_v1_2.set_tags({"major_version": "1", "minor_version": "2", "run": run})
    assert sandbox_v1_1.get_tags() == {"major_version": "1", "minor_version": "1", "run": run}

    for sandbox in modal.Sandbox.list(app_id=my_app.app_id):  # all sandboxes of the app
        assert sandbox.object_id.startswith("sb-")
    found = {sb.object_id for sb in modal.Sandbox.list(app_id=my_app.app_id, tags={"major_version": "1", "run": run})}
    assert found == {sandbox_v1_1.object_id, sandbox_v1_2.object_id}
    minor_2 = modal.Sandbox.list(app_id=my_app.app_id, tags={"minor_version": "2", "run": run})
    found = [sb.object_id for sb in minor_2]
    assert found == [sandbox_v1_2.object_id]


def test_from_id(my_app, tracked) -> None:
    """https://modal.com/docs/reference/modal.Sandbox#from_id: reconnect to a running sandbox by id."""
    sb = modal.Sandbox.create(app=my_app)
    tracked.append(sb)
    sandbox_id = sb.object_id
    sb.detach()
    sb2 = modal.Sandbox.from_id(sandbox_id)
    assert sb2.exec("echo", "again").stdout.read() == "again\n"
    assert sb2.poll() is None
    sb2.terminate()
    assert modal.Sandbox.from_id(sandbox_id).returncode == 137


# -- https://modal.com/docs/guide/sandbox-snapshots -------------------------------------------
def test_filesystem_snapshot(my_app, tracked) -> None:
    """https://modal.com/docs/guide/sandbox-snapshots#filesystem-snapshots."""
    sb = modal.Sandbox.create(app=my_app)
    tracked.append(sb)
    sb.exec("bash", "-c", "mkdir /foo && echo bar > /foo/bar.txt").wait()
    image = sb.snapshot_filesystem()
    sb.terminate()

    sb2 = modal.Sandbox.create(image=image, app=my_app)
    tracked.append(sb2)
    assert sb2.exec("cat", "/foo/bar.txt").stdout.read() == "bar\n"


def test_chained_filesystem_snapshots(my_app, tracked) -> None:
    """https://modal.com/docs/guide/sandbox-snapshots: a snapshot of a sandbox restored from a snapshot."""
    first = modal.Sandbox.create(app=my_app)
    tracked.append(first)
    first.exec("bash", "-c", "echo one > /one.txt && echo doomed > /doomed.txt").wait()
    image_one = first.snapshot_filesystem()

    second = modal.Sandbox.create(image=image_one, app=my_app)
    tracked.append(second)
    second.exec("bash", "-c", "echo two > /two.txt && rm /doomed.txt && echo changed > /one.txt").wait()
    image_two = second.snapshot_filesystem()

    third = modal.Sandbox.create(image=image_two, app=my_app)
    tracked.append(third)
    p = third.exec("bash", "-c", "cat /one.txt /two.txt; test -e /doomed.txt && echo doomed-is-back || true")
    assert p.stdout.read() == "changed\ntwo\n"
    # The first snapshot is unchanged by what came after it.
    again = modal.Sandbox.create(image=modal.Image.from_id(image_one.object_id), app=my_app)
    tracked.append(again)
    p = again.exec("bash", "-c", "cat /one.txt /doomed.txt; test -e /two.txt || echo no-two")
    assert p.stdout.read() == "one\ndoomed\nno-two\n"
