#!/usr/bin/env python3
"""Inventory figures for docs/performance.md, printed side by side from one run.

For N running sandboxes (default 500) in an emulator that delays every RPC (default 25 ms), times
``ansible-inventory --list`` with the mngr.modal.modal plugin and counts the RPCs it makes, beside the same
command on a static YAML inventory of the same N hosts (same variables), in three cases:

- list pages carry tags and tunnels (Modal's list RPC filled in): the plugin needs one call per page;
- list pages omit them (``--list-omits-details``): the plugin reads each sandbox's tags, concurrently;
- a warm cache (``cache: true``, jsonfile): no call at all.

Sandboxes are made directly with the SDK, tagged as modal_sandbox tags its hosts (no sshd: nothing connects).
Every timing is the median of ``--repeat`` runs, each compared with static runs interleaved with its own. Run as root from the checkout, after tools/setup.sh:

    .venv/bin/python benchmarks/inventory_bench.py [--hosts 500] [--latency-ms 25] [--repeat 3]
"""

from __future__ import annotations

import argparse
import asyncio
import json
import os
import pathlib
import signal
import statistics
import subprocess
import sys
import tempfile
import time

from _emulator import ROOT, running_emulator, sdk_environment

COUNTING_EMULATOR = pathlib.Path(__file__).resolve().with_name("inventory_counting_emulator.py")
VENV_BIN = pathlib.Path(sys.executable).parent
STAGE = ROOT / "build" / "collections"
APP = "bench-inventory"
PAGE_SIZE = 100  # the emulator's sandboxes per list page, as Modal's


def counting_emulator(state_dir: pathlib.Path, *serve_args: str):  # noqa: ANN201 - a context manager
    """An RPC-counting emulator (see inventory_counting_emulator.py), started and stopped by running_emulator."""
    return running_emulator(*serve_args, state_dir=state_dir, command=(sys.executable, str(COUNTING_EMULATOR)))


def rpc_counts(pid: int, state_dir: pathlib.Path) -> dict[str, int]:
    """RPCs the emulator served so far, per method."""
    path = state_dir / "rpc-counts.json"
    path.unlink(missing_ok=True)
    os.kill(pid, signal.SIGUSR1)
    deadline = time.monotonic() + 30
    while not path.exists():
        if time.monotonic() > deadline:
            raise RuntimeError("the emulator did not write its RPC counts")
        time.sleep(0.02)
    return json.loads(path.read_text())


def host_name(index: int) -> str:
    return f"bench-{index:04d}"


def host_tags(index: int) -> dict[str, str]:
    return {
        "mngr_host_id": f"host-bench{index:04d}",
        "mngr_host_name": host_name(index),
        "mngr_ssh": f"127.0.0.1:{20000 + index}",
        "mngr_user_role": ("web", "worker", "db")[index % 3],
    }


async def create_sandboxes(env: dict[str, str], count: int) -> None:
    """``count`` running sandboxes in the app, tagged like modal_sandbox's hosts, created 32 at a time."""
    os.environ.update(env)
    import modal  # pylint: disable=import-outside-toplevel

    app = await modal.App.lookup.aio(APP, create_if_missing=True)
    gate = asyncio.Semaphore(32)

    async def one(index: int) -> None:
        async with gate:
            await modal.Sandbox.create.aio(app=app, timeout=3600, tags=host_tags(index))

    await asyncio.gather(*(one(index) for index in range(count)))


def make_keys(key_dir: pathlib.Path, count: int) -> None:
    """A key folder per host, as modal_sandbox leaves them (ansible_ssh_private_key_file is then set)."""
    sys.path.insert(0, str(STAGE))
    from ansible_collections.mngr.modal.plugins.module_utils._keys import KeyFolder  # pylint: disable=import-outside-toplevel

    for index in range(count):
        KeyFolder(str(key_dir), host_name(index)).ensure(host_tags(index)["mngr_host_id"])


def write_sources(work: pathlib.Path, key_dir: pathlib.Path, count: int) -> dict[str, pathlib.Path]:
    """The plugin's source files (without and with cache) and a static inventory with the same hosts and variables."""
    base = f"plugin: mngr.modal.modal\napp: {APP}\nkey_dir: {key_dir}\n"
    plain = work / "plain.modal.yml"
    plain.write_text(base)
    cached = work / "cached.modal.yml"
    cached.write_text(base + f"cache: true\ncache_plugin: ansible.builtin.jsonfile\ncache_connection: {work}/cache\n")
    hosts = {}
    for index in range(count):
        tags = host_tags(index)
        folder = key_dir / host_name(index)
        hosts[host_name(index)] = {
            "ansible_host": "127.0.0.1",
            "ansible_port": 20000 + index,
            "ansible_user": "root",
            "ansible_ssh_private_key_file": str(folder / "id_ed25519"),
            "ansible_ssh_common_args": f"-o UserKnownHostsFile={folder}/known_hosts -o StrictHostKeyChecking=yes "
                                       "-o GlobalKnownHostsFile=/dev/null -o IdentitiesOnly=yes",
            "modal_host_id": tags["mngr_host_id"],
            "modal_name": host_name(index),
            "modal_state": "running",
            "modal_sandbox_id": f"sb-{index:022d}",
            "modal_app": APP,
            "modal_tags": {"role": tags["mngr_user_role"]},
            "modal_spec": {},
            "modal_gpu": None,
            "modal_created_at": "2026-01-01T00:00:00+00:00",
            "modal_started_at": "2026-01-01T00:00:00+00:00",
        }
    static = work / "static.yml"
    static.write_text(json.dumps({"modal": {"hosts": hosts}}))  # JSON is YAML
    return {"plain": plain, "cached": cached, "static": static}


def inventory_env(server_env: dict[str, str], work: pathlib.Path) -> dict[str, str]:
    env = dict(os.environ)
    env.update(server_env)
    env.update({
        "PATH": f"{VENV_BIN}:{env.get('PATH', '')}",
        "ANSIBLE_COLLECTIONS_PATH": str(STAGE),
        "ANSIBLE_LOCAL_TEMP": str(work / "tmp"),
        "ANSIBLE_INVENTORY_UNPARSED_FAILED": "true",
    })
    return env


def list_inventory(source: pathlib.Path, env: dict[str, str], count: int, extra: tuple[str, ...] = ()) -> float:
    """Seconds for one ``ansible-inventory --list``; checks that every host is there."""
    start = time.monotonic()
    done = subprocess.run([str(VENV_BIN / "ansible-inventory"), "-i", str(source), "--list", *extra],
                          env=env, capture_output=True, text=True, check=False)
    elapsed = time.monotonic() - start
    if done.returncode != 0:
        raise RuntimeError(f"ansible-inventory failed on {source.name}:\n{done.stderr[-3000:]}")
    listed = len(json.loads(done.stdout)["_meta"]["hostvars"])
    if listed != count:
        raise RuntimeError(f"{source.name}: {listed} hosts listed, {count} expected:\n{done.stderr[-3000:]}")
    return elapsed


def median_times(sources: list[pathlib.Path], env: dict[str, str], count: int, repeat: int,
                 extra: tuple[str, ...] = ()) -> list[float]:
    """Median time of each source, run in turn (A B A B ...) so that a load change affects all alike."""
    times: list[list[float]] = [[] for _ in sources]
    for _ in range(repeat):
        for index, source in enumerate(sources):
            times[index].append(list_inventory(source, env, count, extra))
    return [statistics.median(each) for each in times]


def wait_until_idle(max_wait: float = 180.0, idle_share: float = 0.85) -> None:
    """Wait until the machine is mostly idle (sandboxes just created keep the CPUs busy for a while)."""
    def cpu_times() -> tuple[int, int]:
        fields = [int(value) for value in pathlib.Path("/proc/stat").read_text().splitlines()[0].split()[1:]]
        return fields[3] + fields[4], sum(fields)

    deadline = time.monotonic() + max_wait
    while time.monotonic() < deadline:
        idle0, total0 = cpu_times()
        time.sleep(1.0)
        idle1, total1 = cpu_times()
        if total1 > total0 and (idle1 - idle0) / (total1 - total0) >= idle_share:
            return


def measure(label: str, serve_args: tuple[str, ...], args: argparse.Namespace, work: pathlib.Path,
            warm_cache: bool) -> dict[str, float | int]:
    """Time the plugin against one emulator (and the static inventory in the same minutes)."""
    state = work / f"state-{label}"
    state.mkdir()
    results: dict[str, float | int] = {}
    with counting_emulator(state, "--latency-ms", str(args.latency_ms), *serve_args) as emulator:
        url, pid = emulator.url, emulator.pid
        server_env = sdk_environment(url, work)
        subprocess.run([sys.executable, __file__, "--create-only", "--hosts", str(args.hosts)],
                       env={**os.environ, **server_env}, check=True)
        env = inventory_env(server_env, work)
        sources = write_sources(work, work / "keys", args.hosts)
        wait_until_idle()
        list_inventory(sources["static"], env, args.hosts)  # warm-up: file system caches, byte-compiled files
        before = rpc_counts(pid, state)
        list_inventory(sources["plain"], env, args.hosts)
        after = rpc_counts(pid, state)
        results["rpcs"] = sum(after.values()) - sum(before.values())
        results["rpc_detail"] = {name: after[name] - before.get(name, 0) for name in after if after[name] != before.get(name, 0)}
        results["static_s"], results["plugin_s"] = median_times([sources["static"], sources["plain"]], env, args.hosts,
                                                                 args.repeat)
        if warm_cache:
            list_inventory(sources["cached"], env, args.hosts, ("--flush-cache",))
            before = rpc_counts(pid, state)
            results["cached_static_s"], results["cached_s"] = median_times([sources["static"], sources["cached"]], env,
                                                                           args.hosts, args.repeat)
            results["cached_rpcs"] = sum(rpc_counts(pid, state).values()) - sum(before.values())
    return results


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--hosts", type=int, default=500)
    parser.add_argument("--latency-ms", type=int, default=25)
    parser.add_argument("--repeat", type=int, default=3)
    parser.add_argument("--create-only", action="store_true", help=argparse.SUPPRESS)
    args = parser.parse_args()
    if args.create_only:  # a child process, so the benchmark's own process never imports modal
        asyncio.run(create_sandboxes(dict(os.environ), args.hosts))
        return
    if not (STAGE / "ansible_collections" / "mngr" / "modal").is_dir():
        sys.exit(f"the collection is not staged at {STAGE}: run tools/setup.sh first")
    with tempfile.TemporaryDirectory(prefix="bench-inventory-") as tmp:
        work = pathlib.Path(tmp)
        (work / "tmp").mkdir()
        make_keys(work / "keys", args.hosts)
        pages = -(-args.hosts // PAGE_SIZE) + 1  # the last, empty page ends the listing
        details = measure("details", (), args, work, warm_cache=True)
        omitted = measure("omitted", ("--list-omits-details",), args, work, warm_cache=False)

    print(f"\n{args.hosts} running sandboxes, {args.latency_ms} ms per RPC, medians of {args.repeat} runs "
          f"of ansible-inventory --list; list pages: {pages} (including the final empty one)\n")
    rows = [
        ("static YAML inventory", details["static_s"], "-", "-"),
        ("plugin, list pages with details", details["plugin_s"], details["rpcs"], f"{details['plugin_s'] - details['static_s']:+.2f} s"),
        ("static YAML inventory (2nd emulator)", omitted["static_s"], "-", "-"),
        ("plugin, list pages without details", omitted["plugin_s"], omitted["rpcs"], f"{omitted['plugin_s'] - omitted['static_s']:+.2f} s"),
        ("static YAML inventory (beside the cache)", details["cached_static_s"], "-", "-"),
        ("plugin, warm cache", details["cached_s"], details["cached_rpcs"], f"x{details['cached_s'] / details['cached_static_s']:.2f}"),
    ]
    print(f"{'case':<40} {'time':>8} {'RPCs':>6}  vs static")
    for label, seconds, rpcs, versus in rows:
        print(f"{label:<40} {seconds:>7.2f}s {rpcs!s:>6}  {versus}")
    print(f"\nRPCs with details:    {details['rpc_detail']}")
    print(f"RPCs without details: {omitted['rpc_detail']}")
    print("\nTargets: with details RPCs <= pages + 3 and time <= static + 1 s; without, time <= static + 3 s; "
          "warm cache <= static x 1.1")
    print(f"  RPCs {details['rpcs']} <= {pages + 3}: {details['rpcs'] <= pages + 3}")
    print(f"  with details {details['plugin_s']:.2f} <= {details['static_s'] + 1:.2f}: {details['plugin_s'] <= details['static_s'] + 1}")
    print(f"  without details {omitted['plugin_s']:.2f} <= {omitted['static_s'] + 3:.2f}: "
          f"{omitted['plugin_s'] <= omitted['static_s'] + 3}")
    print(f"  warm cache {details['cached_s']:.2f} <= {details['cached_static_s'] * 1.1:.2f}: "
          f"{details['cached_s'] <= details['cached_static_s'] * 1.1}")


if __name__ == "__main__":
    main()
