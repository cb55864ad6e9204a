"""Scale smoke test: many idle sandboxes at once; prints the memory they cost (no timing assertions)."""

from __future__ import annotations

import asyncio
import time
from pathlib import Path

from runtime_helpers import sh, spec

from modal_emulator.runtime.container import Container
from modal_emulator.runtime.store import Store

COUNT = 50


def _smaps_kib(pid: int) -> dict[str, int]:
    """Rss, Pss and private memory of a process, from /proc/<pid>/smaps_rollup."""
    values: dict[str, int] = {}
    for line in Path(f"/proc/{pid}/smaps_rollup").read_text().splitlines()[1:]:
        name, _, rest = line.partition(":")
        values[name] = int(rest.split()[0])
    values["Private"] = values.get("Private_Clean", 0) + values.get("Private_Dirty", 0)
    return values


def _host_processes(container: Container) -> list[int]:
    """Host pids of an idle sandbox: the launcher, PID 1 and PID 1's children (the entrypoint under tini)."""
    children = Path(f"/proc/{container.init_pid}/task/{container.init_pid}/children").read_text().split()
    return [container.entrypoint.pid, container.init_pid, *map(int, children)]


def _kernel_kib() -> int:
    """Kernel memory that namespaces, mounts and processes consume (slab, stacks, page tables)."""
    meminfo = {line.split(":")[0]: int(line.split()[1]) for line in Path("/proc/meminfo").read_text().splitlines()}
    return meminfo["Slab"] + meminfo["KernelStack"] + meminfo["PageTables"]


def test_fifty_idle_sandboxes(store: Store) -> None:
    async def body() -> None:
        containers: list[Container] = []
        kernel_before = _kernel_kib()
        started = time.monotonic()
        try:
            for _ in range(COUNT):
                containers.append(await Container.start(store, spec(ports=[22])))
            elapsed = time.monotonic() - started
            assert all(c.returncode is None for c in containers)
            assert (await sh(containers[-1], "echo alive"))[1] == "alive\n"
            kernel_after = _kernel_kib()
            usage = [_smaps_kib(pid) for c in containers for pid in _host_processes(c)]
            per = {key: sum(u[key] for u in usage) / COUNT for key in ("Rss", "Pss", "Private")}
            print(f"\n{COUNT} idle sandboxes started in {elapsed:.1f}s ({elapsed / COUNT * 1000:.0f} ms each)")
            print(f"per sandbox (unshare, init, entrypoint): RSS {per['Rss']:.0f} KiB, "
                  f"PSS {per['Pss']:.0f} KiB, "
                  f"private {per['Private']:.0f} KiB")
            print(f"kernel memory (slab + stacks + page tables) added: {(kernel_after - kernel_before) / COUNT:.0f} KiB "
                  "per sandbox (noisy: the whole machine is measured)")
        finally:
            stop_started = time.monotonic()
            await asyncio.gather(*(c.terminate() for c in containers))
            print(f"terminated {len(containers)} in {time.monotonic() - stop_started:.1f}s")
        assert list((store.root / "sandboxes").iterdir()) == []

    asyncio.run(body())
