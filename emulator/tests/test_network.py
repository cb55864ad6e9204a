"""A sandbox's outbound network as on Modal: open by default, blocked, or limited to a CIDR allowlist.

Through the real SDK, in both API families. The only service a sandbox is asked to reach is the
test's own TCP service on the host's loopback, which a sandbox sees as 10.0.2.2 (slirp4netns's
gateway). The apt tests reach the package registries through the image's own apt sources and the
host's DNS; no test names any other address.
"""

from __future__ import annotations

import json
import os
import pathlib
import signal
import socket
import subprocess
import threading
import time
from collections.abc import Iterator

import modal
import pytest

from sdk_harness import EmulatorProcess, serving_emulator

GREETING = "hello from the host"
HOST_FROM_SANDBOX = "10.0.2.2"
FAST_S = 5.0                 # a refused connection must fail well within this, not time out
UNUSED_BLOCK = "192.0.2.0/24"   # TEST-NET-1: documentation only, never routed


@pytest.fixture(scope="module")
def host_service() -> Iterator[int]:
    """A TCP service on the host's loopback only, greeting each client; yields its port."""
    listener = socket.create_server(("127.0.0.1", 0))
    listener.settimeout(0.2)
    stop = threading.Event()

    def serve() -> None:
        while not stop.is_set():
            try:
                client, _ = listener.accept()
            except (TimeoutError, socket.timeout):
                continue
            with client:
                client.sendall(f"{GREETING}\n".encode())

    thread = threading.Thread(target=serve, daemon=True)
    thread.start()
    try:
        yield listener.getsockname()[1]
    finally:
        stop.set()
        thread.join()
        listener.close()


def create(sandboxes: list, **kwargs) -> modal.Sandbox:
    sb = modal.Sandbox.create("sleep", "infinity", timeout=300, **kwargs)
    sandboxes.append(sb)
    return sb


def run(sb: modal.Sandbox, script: str) -> tuple[int, str, float]:
    """(exit status, stdout + stderr, seconds) of a shell script in the sandbox."""
    start = time.monotonic()
    process = sb.exec("bash", "-c", f"{script} 2>&1")
    output = process.stdout.read()
    status = process.wait()
    return status, output, time.monotonic() - start


def greet(sb: modal.Sandbox, port: int) -> tuple[int, str, float]:
    """Connect to the host's test service with bash alone (no client tool needed in the image)."""
    return run(sb, f"timeout 20 bash -c 'exec 3<>/dev/tcp/{HOST_FROM_SANDBOX}/{port} && cat <&3'")


def network_record(server: EmulatorProcess, sandbox_id: str) -> dict:
    """What the server recorded about the sandbox's network (its row in the ``sandboxes`` table)."""
    rows = json.loads((server.state_dir / "db" / "sandboxes.json").read_text())
    return rows[sandbox_id]["network"]


def slirp_children(server: EmulatorProcess) -> set[int]:
    """Live slirp4netns processes started by the emulator."""
    assert server.process is not None
    found = set()
    for stat in pathlib.Path("/proc").glob("[0-9]*/stat"):
        try:
            text = stat.read_text()
        except OSError:
            continue
        name = text[text.index("(") + 1 : text.rindex(")")]
        fields = text[text.rindex(")") + 2 :].split()
        if name == "slirp4netns" and int(fields[1]) == server.process.pid and fields[0] != "Z":
            found.add(int(stat.parent.name))
    return found


def wait_until(condition, timeout_s: float = 10.0) -> bool:
    deadline = time.monotonic() + timeout_s
    while time.monotonic() < deadline:
        if condition():
            return True
        time.sleep(0.05)
    return condition()


# -- reaching a service -------------------------------------------------------------------------

def test_open_by_default(emulator, app, sandbox_api, sandboxes, host_service) -> None:
    sb = create(sandboxes, app=app)
    status, output, _ = greet(sb, host_service)
    assert (status, output.strip()) == (0, GREETING)
    assert network_record(emulator, sb.object_id) == {
        "access": "open", "block_network": False, "cidr_allowlist": None, "mode": "slirp4netns"}
    # The sandbox's resolver is slirp4netns's DNS, whatever the image says.
    assert run(sb, "cat /etc/resolv.conf")[1] == "nameserver 10.0.2.3\n"
    assert run(sb, "ls /sys/class/net")[1].split() == ["lo", "tap0"]


def test_entrypoint_starts_with_its_network_ready(app, sandbox_api, sandboxes, host_service) -> None:
    # The very first thing an entrypoint does already sees the configured network, even an entrypoint
    # that is over in a millisecond.
    quick = modal.Sandbox.create("ls", "/sys/class/net", app=app, timeout=60)
    sandboxes.append(quick)
    quick.wait()
    assert (quick.returncode, quick.stdout.read()) == (0, "lo\ntap0\n")
    sb = modal.Sandbox.create("bash", "-c", f"exec 3<>/dev/tcp/{HOST_FROM_SANDBOX}/{host_service} && cat <&3",
                              app=app, timeout=60)
    sandboxes.append(sb)
    sb.wait()
    assert (sb.returncode, sb.stdout.read()) == (0, f"{GREETING}\n")


def test_block_network_is_loopback_only(emulator, app, sandbox_api, sandboxes, host_service) -> None:
    sb = create(sandboxes, app=app, block_network=True)
    status, output, seconds = greet(sb, host_service)
    assert status != 0 and GREETING not in output
    assert "unreachable" in output.lower(), output
    assert seconds < FAST_S
    assert run(sb, "ls /sys/class/net")[1].split() == ["lo"]
    assert network_record(emulator, sb.object_id) == {
        "access": "blocked", "block_network": True, "cidr_allowlist": None, "mode": "loopback only"}


def test_allowlist_without_the_service_refuses_it(emulator, app, sandbox_api, sandboxes, host_service) -> None:
    sb = create(sandboxes, app=app, outbound_cidr_allowlist=[UNUSED_BLOCK])
    status, output, seconds = greet(sb, host_service)
    assert status != 0 and GREETING not in output
    assert "refused" in output.lower(), output
    assert seconds < FAST_S
    assert network_record(emulator, sb.object_id) == {
        "access": "allowlist", "block_network": False, "cidr_allowlist": [UNUSED_BLOCK],
        "mode": "slirp4netns + nftables"}


def test_allowlist_naming_the_service_reaches_it(emulator, app, sandbox_api, sandboxes, host_service) -> None:
    # Given as a host address with a prefix: recorded as the block it names.
    sb = create(sandboxes, app=app, outbound_cidr_allowlist=["10.0.2.2/31"])
    status, output, _ = greet(sb, host_service)
    assert (status, output.strip()) == (0, GREETING)
    assert network_record(emulator, sb.object_id)["cidr_allowlist"] == ["10.0.2.2/31"]


def test_empty_allowlist_refuses_everything_but_keeps_tunnels(emulator, app, sandbox_api, sandboxes,
                                                              host_service) -> None:
    sb = create(sandboxes, app=app, outbound_cidr_allowlist=[], unencrypted_ports=[8000])
    status, output, seconds = greet(sb, host_service)
    assert status != 0 and GREETING not in output and seconds < FAST_S
    # Inbound traffic through a tunnel is not outbound traffic: it still arrives.
    # perl-base is in every Debian root, even a minimal one.
    sb.exec("perl", "-MIO::Socket::INET", "-e", 'my $s = IO::Socket::INET->new(LocalAddr => "127.0.0.1", '
            'LocalPort => 8000, Listen => 5, ReuseAddr => 1) or die "$!"; '
            'while (my $c = $s->accept) { print $c "HTTP/1.0 200 OK\\r\\n\\r\\nok"; close $c }')
    host, port = sb.tunnels()[8000].tcp_socket

    def answers() -> bool:
        try:
            with socket.create_connection((host, port), timeout=2) as conn:
                conn.sendall(b"GET / HTTP/1.0\r\n\r\n")
                return conn.recv(100).startswith(b"HTTP/1.")
        except OSError:
            return False

    assert wait_until(answers)


# -- what the server refuses --------------------------------------------------------------------

def test_bad_cidr_is_refused_and_nothing_starts(emulator, app, sandboxes) -> None:
    before = json.loads((emulator.state_dir / "db" / "sandboxes.json").read_text())
    with pytest.raises(Exception, match=r"'10\.0\.0\.300/8' is not a CIDR block"):
        create(sandboxes, app=app, outbound_cidr_allowlist=["10.0.0.300/8"])
    assert json.loads((emulator.state_dir / "db" / "sandboxes.json").read_text()).keys() == before.keys()


def test_domain_allowlist_is_refused(emulator, app, sandboxes) -> None:
    with pytest.raises(Exception, match="outbound_domain_allowlist .* is not emulated"):
        create(sandboxes, app=app, outbound_domain_allowlist=["example.org"])


# -- slirp4netns never outlives its sandbox -----------------------------------------------------

def test_slirp_goes_with_its_sandbox(emulator, app, sandbox_api, sandboxes) -> None:
    before = slirp_children(emulator)
    blocked = create(sandboxes, app=app, block_network=True)
    assert slirp_children(emulator) == before   # no helper at all for a blocked sandbox
    sb = create(sandboxes, app=app)
    (helper,) = slirp_children(emulator) - before
    sb.terminate()
    assert wait_until(lambda: helper not in slirp_children(emulator))
    # A sandbox whose entrypoint ends on its own loses its helper too.
    short = modal.Sandbox.create("true", app=app)
    sandboxes.append(short)
    short.wait()
    assert wait_until(lambda: slirp_children(emulator) == before)
    blocked.terminate()


def test_slirp_dies_with_a_crashed_emulator(tmp_path: pathlib.Path) -> None:
    with serving_emulator(tmp_path) as server:
        app = modal.App.lookup("network-crash", create_if_missing=True)
        modal.Sandbox.create("sleep", "infinity", app=app)
        helpers = slirp_children(server)
        assert len(helpers) == 1
        assert server.process is not None
        os.killpg(server.process.pid, signal.SIGKILL)
        server.process.wait()
        # The emulator's end closes slirp4netns's exit pipe: it exits by itself.
        assert wait_until(lambda: not any(pathlib.Path(f"/proc/{pid}").exists() and
                                          pathlib.Path(f"/proc/{pid}/stat").read_text().split()[2] != "Z"
                                          for pid in helpers))
        # A restart on the same state dir cleans up what the crashed server left (sandboxes, mounts).
        server.start()


# -- package registries through the image's own apt -------------------------------------------

# --error-on=any: a failed download is an error even where older package lists are already present.
APT_UPDATE = "apt-get update --error-on=any -o Acquire::Retries=0"


def test_apt_install_works(app, sandbox_api, sandboxes) -> None:
    sb = create(sandboxes, app=app)
    # --reinstall: an image that already has jq must still download it.
    status, output, _ = run(sb, f"{APT_UPDATE} && DEBIAN_FRONTEND=noninteractive "
                                "apt-get install -y --reinstall jq && echo '{\"a\": 42}' | jq .a")
    assert status == 0, output
    assert output.splitlines()[-1] == "42"


@pytest.mark.parametrize("restriction", [{"block_network": True}, {"outbound_cidr_allowlist": [UNUSED_BLOCK]}],
                         ids=["block_network", "allowlist"])
def test_apt_update_fails_fast_when_restricted(app, sandbox_api, sandboxes, restriction) -> None:
    sb = create(sandboxes, app=app, **restriction)
    status, output, seconds = run(sb, APT_UPDATE)
    assert status != 0, output
    assert "Temporary failure resolving" in output or "Could not resolve" in output, output
    assert seconds < 10, output
