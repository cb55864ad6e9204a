"""Tunnels: every opened port is reachable on host loopback; a real sshd in a sandbox takes a real login."""

from __future__ import annotations

import pathlib
import socket
import subprocess
import time

import modal

SSHD_CONFIG = """\
Port 22
HostKey /etc/ssh/emulator_host_key
PermitRootLogin prohibit-password
PasswordAuthentication no
AuthorizedKeysFile /root/.ssh/authorized_keys
UsePAM no
StrictModes no
"""


def keypair(directory: pathlib.Path, name: str) -> tuple[pathlib.Path, str]:
    key = directory / name
    subprocess.run(["ssh-keygen", "-q", "-t", "ed25519", "-N", "", "-f", str(key)], check=True)
    return key, (directory / f"{name}.pub").read_text().strip()


def write_file(sb: modal.Sandbox, path: str, content: str, mode: str) -> None:
    p = sb.exec("bash", "-c", f"mkdir -p $(dirname {path}) && cat > {path} && chmod {mode} {path}")
    p.stdin.write(content.encode())
    p.stdin.write_eof()
    p.stdin.drain()
    assert p.wait() == 0, p.stderr.read()


def wait_for_banner(host: str, port: int, timeout: float = 20) -> None:
    deadline = time.monotonic() + timeout
    while True:
        try:
            with socket.create_connection((host, port), timeout=2) as conn:
                if conn.recv(64).startswith(b"SSH-"):
                    return
        except OSError:
            pass
        if time.monotonic() > deadline:
            raise TimeoutError(f"no SSH banner on {host}:{port}")
        time.sleep(0.2)


def test_tunnel_echo_server(app, sandbox_api, sandboxes) -> None:
    sb = modal.Sandbox.create(
        "python3", "-c",
        "import socket\ns=socket.socket();s.setsockopt(socket.SOL_SOCKET,socket.SO_REUSEADDR,1)\n"
        "s.bind(('0.0.0.0',8000));s.listen()\nwhile True:\n c,_=s.accept();c.sendall(c.recv(100).upper());c.close()",
        app=app, unencrypted_ports=[8000], encrypted_ports=[8443],
    )
    sandboxes.append(sb)
    tunnels = sb.tunnels()
    assert set(tunnels) == {8000, 8443}
    host, port = tunnels[8000].tcp_socket
    assert host == "127.0.0.1"
    deadline = time.monotonic() + 20
    while True:
        try:
            with socket.create_connection((host, port), timeout=2) as conn:
                conn.sendall(b"hello tunnel")
                reply = conn.recv(100)
            if reply:
                break
        except OSError:
            pass
        assert time.monotonic() < deadline, "the tunnel never answered"
        time.sleep(0.2)
    assert reply == b"HELLO TUNNEL"


def test_real_ssh_login(app, sandbox_api, sandboxes, tmp_path) -> None:
    client_key, client_pub = keypair(tmp_path, "client")
    host_key, host_pub = keypair(tmp_path, "host")
    # Modal's images have no sshd: install it, as a user would, through the package registry.
    image = modal.Image.debian_slim().apt_install("openssh-server")
    sb = modal.Sandbox.create(app=app, image=image, unencrypted_ports=[22])
    sandboxes.append(sb)
    write_file(sb, "/root/.ssh/authorized_keys", client_pub + "\n", "600")
    write_file(sb, "/etc/ssh/emulator_host_key", host_key.read_text(), "600")
    write_file(sb, "/etc/ssh/emulator_sshd_config", SSHD_CONFIG, "644")
    sb.exec("bash", "-c", "mkdir -p /run/sshd && exec /usr/sbin/sshd -D -e -f /etc/ssh/emulator_sshd_config")
    host, port = sb.tunnels()[22].tcp_socket
    wait_for_banner(host, port)
    known_hosts = tmp_path / "known_hosts"
    known_hosts.write_text(f"[{host}]:{port} {host_pub}\n")
    result = subprocess.run(
        [
            "ssh", "-i", str(client_key), "-p", str(port),
            "-o", f"UserKnownHostsFile={known_hosts}", "-o", "StrictHostKeyChecking=yes",
            "-o", "BatchMode=yes", "-o", "ConnectTimeout=10",
            f"root@{host}", "echo logged-in-as-$(whoami) on $(hostname)",
        ],
        capture_output=True, text=True, timeout=60,
    )
    assert result.returncode == 0, result.stderr
    assert result.stdout.strip() == f"logged-in-as-root on {sb.exec('hostname').stdout.read().strip()}"
