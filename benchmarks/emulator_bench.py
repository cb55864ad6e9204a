#!/usr/bin/env python3
"""Emulator figures for docs/emulator.md, printed side by side from one run.

- median time from Sandbox.create to a successful SSH command (system ssh, pinned host key), over N hosts;
- time to create 50 sandboxes concurrently, beside 50 one after the other;
- memory per idle sandbox (system memory in use before and after 50 idle sandboxes, divided by 50).

Run as root: .venv/bin/python benchmarks/emulator_bench.py [--ssh-runs 5] [--concurrent 50]
"""

from __future__ import annotations

import argparse
import asyncio
import os
import pathlib
import statistics
import subprocess
import tempfile
import time

from _emulator import descendants, pss_kib, running_emulator, sdk_environment


def mem_used_mib() -> float:
    """System memory in use (MemTotal - MemAvailable), in MiB."""
    info = dict(line.split(":", 1) for line in pathlib.Path("/proc/meminfo").read_text().splitlines())
    kib = lambda key: int(info[key].strip().split()[0])  # noqa: E731
    return (kib("MemTotal") - kib("MemAvailable")) / 1024


def ssh_keys(folder: pathlib.Path) -> tuple[pathlib.Path, pathlib.Path]:
    client, host = folder / "id_ed25519", folder / "host_key"
    for path in (client, host):
        subprocess.run(["ssh-keygen", "-q", "-t", "ed25519", "-N", "", "-f", str(path)], check=True)
    return client, host


def ssh_image(modal):
    """The collection's default image as its hosts get it: debian:bookworm-slim plus an sshd layer (cached after
    the warm-up run, so the runs measured build nothing)."""
    return modal.Image.from_registry("debian:bookworm-slim").run_commands(
        "apt-get update -qq && DEBIAN_FRONTEND=noninteractive apt-get install -y -qq --no-install-recommends "
        "openssh-server >/dev/null && rm -rf /var/lib/apt/lists/*")


def create_to_ssh(modal, app, client_key: pathlib.Path, host_key: pathlib.Path, work: pathlib.Path) -> float:
    """Seconds from Sandbox.create to the first successful `ssh ... true` into it."""
    start = time.monotonic()
    sb = modal.Sandbox.create(app=app, image=ssh_image(modal), unencrypted_ports=[22], timeout=600)
    try:
        setup = (
            "mkdir -p /root/.ssh /run/sshd && chmod 700 /root/.ssh && "
            f"printf '%s\\n' '{client_key.with_suffix('.pub').read_text().strip()}' > /root/.ssh/authorized_keys && "
            "chmod 600 /root/.ssh/authorized_keys && "
            f"printf '%s' '{host_key.read_text()}' > /etc/ssh/bench_host_key && chmod 600 /etc/ssh/bench_host_key"
        )
        sb.exec("sh", "-c", setup).wait()
        sb.exec("/usr/sbin/sshd", "-D", "-e", "-h", "/etc/ssh/bench_host_key", "-o", "PidFile=none")
        host, port = sb.tunnels()[22].tcp_socket
        known = work / f"known_{sb.object_id}"
        known.write_text(f"[{host}]:{port} {host_key.with_suffix('.pub').read_text().strip()}\n")
        ssh = ["ssh", "-p", str(port), "-i", str(client_key), "-o", "BatchMode=yes", "-o", "StrictHostKeyChecking=yes",
               "-o", f"UserKnownHostsFile={known}", "-o", "ConnectTimeout=5", f"root@{host}", "true"]
        while subprocess.run(ssh, capture_output=True).returncode != 0:
            if time.monotonic() - start > 120:
                raise RuntimeError("ssh never answered")
            time.sleep(0.05)
        return time.monotonic() - start
    finally:
        sb.terminate()


async def create_many(modal, app, count: int, concurrent: bool) -> tuple[float, list]:
    start = time.monotonic()
    if concurrent:
        sandboxes = await asyncio.gather(*(modal.Sandbox.create.aio(app=app, timeout=600) for _ in range(count)))
    else:
        sandboxes = [await modal.Sandbox.create.aio(app=app, timeout=600) for _ in range(count)]
    return time.monotonic() - start, list(sandboxes)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--ssh-runs", type=int, default=5)
    parser.add_argument("--concurrent", type=int, default=50)
    args = parser.parse_args()
    with tempfile.TemporaryDirectory(prefix="bench-emulator-") as tmp:
        work = pathlib.Path(tmp)
        with running_emulator(state_dir=work / "state") as emulator:
            os.environ.update(sdk_environment(emulator.url, work))
            import modal  # noqa: PLC0415 - after the environment points at the emulator

            app = modal.App.lookup("bench-emulator", create_if_missing=True)
            client_key, host_key = ssh_keys(work)
            create_to_ssh(modal, app, client_key, host_key, work)  # warm-up: image and caches
            times = [create_to_ssh(modal, app, client_key, host_key, work) for _ in range(args.ssh_runs)]

            before = mem_used_mib()
            concurrent_s, sandboxes = asyncio.run(create_many(modal, app, args.concurrent, concurrent=True))
            time.sleep(2)
            per_sandbox = (mem_used_mib() - before) / args.concurrent
            # The sandboxes' own processes (launchers, tini, entrypoints), shared pages divided among users:
            # unlike the system-wide figure, this does not move with whatever else the machine is doing.
            per_sandbox_pss = pss_kib(descendants(emulator.pid)) / args.concurrent
            for sb in sandboxes:
                sb.terminate()
            sequential_s, sandboxes = asyncio.run(create_many(modal, app, args.concurrent, concurrent=False))
            for sb in sandboxes:
                sb.terminate()

    print(f"{'measure':<48} {'value':>10}")
    print(f"{'create -> first SSH command, median of ' + str(args.ssh_runs):<48} {statistics.median(times):>9.2f}s")
    print(f"{'  (min / max)':<48} {min(times):>4.2f}/{max(times):.2f}s")
    print(f"{f'create {args.concurrent} sandboxes concurrently':<48} {concurrent_s:>9.2f}s")
    print(f"{f'create {args.concurrent} sandboxes one after another':<48} {sequential_s:>9.2f}s")
    print(f"{'  ratio sequential / concurrent':<48} {sequential_s / concurrent_s:>9.2f}x")
    print(f"{'memory per idle sandbox, its processes (PSS)':<48} {per_sandbox_pss:>8.0f}KiB")
    print(f"{'memory per idle sandbox, system-wide (noisy)':<48} {per_sandbox:>8.1f}MiB")


if __name__ == "__main__":
    main()
