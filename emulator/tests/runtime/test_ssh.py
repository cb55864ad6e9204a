"""The host's ssh client reaches the host's own sshd running in a sandbox, through the port-22 tunnel."""

from __future__ import annotations

import asyncio
import shutil
import subprocess
from pathlib import Path

import pytest
from runtime_helpers import default_base, running, sh, spec, unique

from modal_emulator.runtime.build import run_build_step
from modal_emulator.runtime.store import Store


async def _ssh(port: int, key: Path, known_hosts: Path, command: str) -> tuple[int, str, str]:
    process = await asyncio.create_subprocess_exec(
        "ssh", "-p", str(port), "-i", str(key), "-o", "StrictHostKeyChecking=yes",
        "-o", f"UserKnownHostsFile={known_hosts}", "-o", "BatchMode=yes", "-o", "ConnectTimeout=10",
        "root@127.0.0.1", command,
        stdin=asyncio.subprocess.DEVNULL, stdout=asyncio.subprocess.PIPE, stderr=asyncio.subprocess.PIPE)
    out, err = await asyncio.wait_for(process.communicate(), 60)
    return process.returncode or 0, out.decode(), err.decode()


def test_ssh_through_the_tunnel_with_a_pinned_host_key(store: Store, tmp_path: Path) -> None:
    if not (shutil.which("ssh") and shutil.which("ssh-keygen")):
        pytest.skip("needs openssh-client on the host")
    # The base has no sshd, as on Modal: a build step installs it, through the package registry.
    sshd_layer = unique("sshd")
    chunks: list[str] = []
    install_sshd = ("apt-get update -qq && apt-get install -y -qq --no-install-recommends openssh-server >/dev/null"
                    " && rm -rf /var/lib/apt/lists/*")
    code = asyncio.run(run_build_step(store, default_base(), [], sshd_layer, install_sshd,
                                      {"DEBIAN_FRONTEND": "noninteractive"}, None, chunks.append))
    assert code == 0, "".join(chunks)
    for name in ("client", "host"):
        subprocess.run(["ssh-keygen", "-q", "-t", "ed25519", "-N", "", "-C", name, "-f", str(tmp_path / name)],
                       check=True)
    host_key_type, host_key = (tmp_path / "host.pub").read_text().split()[:2]

    async def body() -> None:
        async with running(store, spec([sshd_layer], ports=[22])) as container:
            install = ("mkdir -p /root/.ssh /run/sshd && chmod 700 /root/.ssh"
                       " && cat > /root/.ssh/authorized_keys && chmod 600 /root/.ssh/authorized_keys")
            assert (await sh(container, install, stdin=(tmp_path / "client.pub").read_bytes()))[0] == 0
            assert (await sh(container, "umask 077 && cat > /etc/ssh/emu_host_key",
                             stdin=(tmp_path / "host").read_bytes()))[0] == 0
            sshd = await container.exec(["/usr/sbin/sshd", "-D", "-e", "-p", "22", "-h", "/etc/ssh/emu_host_key"],
                                        stdin=False)
            host, port = container.tunnels[22]
            assert host == "127.0.0.1"
            known_hosts = tmp_path / "known_hosts"
            known_hosts.write_text(f"[127.0.0.1]:{port} {host_key_type} {host_key}\n")
            # sshd needs a moment to listen; until then the tunnel closes connections at once.
            for _ in range(50):
                result = await _ssh(port, tmp_path / "client", known_hosts, "echo ok")
                if result[0] == 0 or sshd.returncode is not None:
                    break
                await asyncio.sleep(0.2)
            assert result[:2] == (0, "ok\n"), result
            # A second, concurrent pair of sessions through the same tunnel.
            both = await asyncio.gather(*(_ssh(port, tmp_path / "client", known_hosts, f"echo {n}") for n in (1, 2)))
            assert [r[1] for r in both] == ["1\n", "2\n"]

    asyncio.run(body())
