#!/usr/bin/env python3
"""modal_fleet figures for docs/performance.md, printed side by side from one run.

Creating hosts with one modal_fleet task (1, 10 and 50 hosts) versus a play of modal_sandbox tasks (1 host, and 10
hosts with forks 10): wall time, the ratio to one host of the same kind, and the controller's CPU seconds (user +
system of ansible-playbook and everything it started: module processes, ssh) per host. Each measure runs in its
own app after a warm-up that pays the image build, and its hosts are destroyed before the next measure. The
measures are taken ``--repeat`` times, interleaved (so that a busy minute of the machine hits all of them alike),
and the medians are printed, with the machine's load average before and after.

Run as root from the checkout after tools/setup.sh:  .venv/bin/python benchmarks/fleet_bench.py
"""

from __future__ import annotations

import argparse
import os
import pathlib
import resource
import statistics
import subprocess
import sys
import tempfile
import time

from _emulator import ROOT, running_emulator, sdk_environment

VENV_BIN = pathlib.Path(sys.executable).parent
COLLECTIONS = ROOT / "build" / "collections"

FLEET_PLAY = """
- name: A fleet of identical hosts, in one task
  hosts: localhost
  connection: local
  gather_facts: false
  tasks:
    - name: Fleet
      mngr.modal.modal_fleet:
        name: bench
        app: "{{ app }}"
        exact_count: "{{ count | int }}"
        state: "{{ fleet_state | default('present') }}"
"""

SANDBOX_PLAY = """
- name: One modal_sandbox task per inventory host, in parallel across forks
  hosts: all
  connection: local
  gather_facts: false
  tasks:
    - name: Host
      mngr.modal.modal_sandbox:
        name: "{{ inventory_hostname }}"
        app: "{{ app }}"
        state: "{{ host_state | default('present') }}"
"""


class Measure:
    """Wall seconds and the controller's CPU seconds of one ansible-playbook run."""

    def __init__(self, wall: float, cpu: float) -> None:
        self.wall = wall
        self.cpu = cpu

    @staticmethod
    def median(measures: list["Measure"]) -> "Measure":
        return Measure(statistics.median(m.wall for m in measures), statistics.median(m.cpu for m in measures))


def playbook(work: pathlib.Path, text: str, env: dict[str, str], *extra: str, inventory: str | None = None) -> Measure:
    """Run a playbook; return its wall time and CPU time (raise if it fails)."""
    path = work / f"play-{abs(hash(text))}.yml"
    path.write_text(text)
    command = [str(VENV_BIN / "ansible-playbook"), str(path), *extra]
    if inventory:
        command[1:1] = ["-i", inventory]
    before = resource.getrusage(resource.RUSAGE_CHILDREN)
    start = time.monotonic()
    result = subprocess.run(command, env=env, capture_output=True, text=True, check=False)
    wall = time.monotonic() - start
    after = resource.getrusage(resource.RUSAGE_CHILDREN)
    if result.returncode != 0:
        raise RuntimeError(f"{path.name} failed:\n{result.stdout[-3000:]}\n{result.stderr[-2000:]}")
    cpu = (after.ru_utime - before.ru_utime) + (after.ru_stime - before.ru_stime)
    return Measure(wall, cpu)


def inventory_of(work: pathlib.Path, names: list[str]) -> str:
    path = work / f"inv-{len(names)}-{names[0]}.ini"
    # Modules run on the controller, in the Python that has the modal SDK.
    path.write_text("".join(f"{name} ansible_python_interpreter={sys.executable}\n" for name in names))
    return str(path)


def fleet(work: pathlib.Path, env: dict[str, str], app: str, count: int) -> Measure:
    """Create a fleet of ``count`` hosts in its own app, then destroy it (not measured)."""
    extra = ("-e", f"app={app}", "-e", f"count={count}", "-e", f"ansible_python_interpreter={sys.executable}")
    measure = playbook(work, FLEET_PLAY, env, *extra)
    playbook(work, FLEET_PLAY, env, *extra, "-e", "fleet_state=absent")
    return measure


def sandboxes(work: pathlib.Path, env: dict[str, str], app: str, count: int) -> Measure:
    """Create ``count`` hosts with one modal_sandbox task each (forks ``count``), then destroy them."""
    inventory = inventory_of(work, [f"{app}-{index}" for index in range(1, count + 1)])
    measure = playbook(work, SANDBOX_PLAY, env, "-e", f"app={app}", "-f", str(count), inventory=inventory)
    playbook(work, SANDBOX_PLAY, env, "-e", f"app={app}", "-e", "host_state=absent", "-f", "10", inventory=inventory)
    return measure


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--sizes", default="1,10,50", help="fleet sizes, the first one being the baseline")
    parser.add_argument("--play-hosts", type=int, default=10, help="hosts of the modal_sandbox play")
    parser.add_argument("--repeat", type=int, default=3, help="rounds of every measure; medians are printed")
    args = parser.parse_args()
    sizes = [int(size) for size in args.sizes.split(",")]
    load_before = os.getloadavg()
    with tempfile.TemporaryDirectory(prefix="bench-fleet-") as tmp:
        work = pathlib.Path(tmp)
        with running_emulator(state_dir=work / "state") as emulator:
            env = dict(os.environ, **sdk_environment(emulator.url, work), ANSIBLE_COLLECTIONS_PATH=str(COLLECTIONS),
                       MNGR_MODAL_KEY_DIR=str(work / "keys"), ANSIBLE_HOST_KEY_CHECKING="True",
                       ANSIBLE_LOCALHOST_WARNING="False", ANSIBLE_INVENTORY_UNPARSED_WARNING="False")
            # Warm-up: the image build and the first imports are paid once, outside every measure.
            fleet(work, env, "bench-warmup", 1)
            rounds: dict[str, list[Measure]] = {}
            for round_index in range(args.repeat):
                for size in sizes:
                    rounds.setdefault(f"fleet-{size}", []).append(
                        fleet(work, env, f"bench-fleet-{size}-{round_index}", size))
                rounds.setdefault("play-1", []).append(sandboxes(work, env, f"bench-play1-{round_index}", 1))
                rounds.setdefault("play-many", []).append(
                    sandboxes(work, env, f"bench-play{args.play_hosts}-{round_index}", args.play_hosts))
    fleets = {size: Measure.median(rounds[f"fleet-{size}"]) for size in sizes}
    play_one = Measure.median(rounds["play-1"])
    play_many = Measure.median(rounds["play-many"])

    base = fleets[sizes[0]]
    rows = [(f"modal_fleet, {size} host{'s' if size > 1 else ''} (one task)", size, fleets[size], base) for size in sizes]
    rows.append(("modal_sandbox play, 1 host", 1, play_one, play_one))
    rows.append((f"modal_sandbox play, {args.play_hosts} hosts (forks {args.play_hosts})", args.play_hosts, play_many,
                 play_one))
    print(f"medians of {args.repeat} interleaved rounds; load average before {load_before[0]:.2f}, "
          f"after {os.getloadavg()[0]:.2f} (2 cores: above 2, other work shares the CPU)")
    print(f"{'measure':<46} {'wall':>8} {'ratio':>7} {'CPU':>8} {'CPU/host':>9}")
    for label, count, measure, baseline in rows:
        print(f"{label:<46} {measure.wall:>7.2f}s {measure.wall / baseline.wall:>6.2f}x {measure.cpu:>7.2f}s "
              f"{measure.cpu / count:>8.2f}s")
    print()
    print("targets (ratio to one host with modal_fleet):")
    for size, limit in ((10, 1.5), (50, 3.0)):
        if size in fleets:
            ratio = fleets[size].wall / base.wall
            verdict = "met" if ratio <= limit else f"missed by {ratio - limit:.2f}x ({ratio / limit:.0%} of the limit)"
            print(f"  {size} hosts <= {limit}x one host: {ratio:.2f}x, {verdict}")
    if 10 in fleets:
        print(f"  modal_fleet 10 hosts vs modal_sandbox play of {args.play_hosts}: "
              f"{play_many.wall / fleets[10].wall:.2f}x faster, "
              f"{play_many.cpu / max(fleets[10].cpu, 0.01):.2f}x less controller CPU")


if __name__ == "__main__":
    main()
