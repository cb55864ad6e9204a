"""Start and stop a modal-emulator for a benchmark, and point the modal SDK at it."""

from __future__ import annotations

import contextlib
import os
import pathlib
import signal
import subprocess
import sys
import tempfile
import time
from collections.abc import Iterator
from dataclasses import dataclass

ROOT = pathlib.Path(__file__).resolve().parent.parent
EMULATOR = pathlib.Path(sys.executable).with_name("modal-emulator")


@dataclass(frozen=True)
class Emulator:
    url: str  # MODAL_SERVER_URL
    pid: int  # the serving process; its descendants are the sandboxes' processes


@contextlib.contextmanager
def running_emulator(*serve_args: str, state_dir: pathlib.Path | None = None,
                     command: tuple[str, ...] = (str(EMULATOR),)) -> Iterator[Emulator]:
    """Yield a fresh emulator (URL and pid); stop it (SIGTERM) afterwards, whatever happens.

    ``command`` runs the emulator's command line (a wrapper such as the RPC-counting one may stand in).
    """
    with contextlib.ExitStack() as stack:
        if state_dir is None:
            state_dir = pathlib.Path(stack.enter_context(tempfile.TemporaryDirectory(prefix="bench-state-")))
        ready = state_dir / "ready"
        log = open(state_dir.parent / f"{state_dir.name}.log", "w")  # noqa: SIM115 - closed by the stack
        stack.callback(log.close)
        proc = subprocess.Popen(
            [*command, "serve", "--port", "0", "--state-dir", str(state_dir), "--ready-file", str(ready), *serve_args],
            stdout=log, stderr=subprocess.STDOUT, start_new_session=True,
        )
        try:
            deadline = time.monotonic() + 120
            while not (ready.exists() and ready.read_text().strip()):
                if proc.poll() is not None or time.monotonic() > deadline:
                    raise RuntimeError(f"modal-emulator did not start; see {log.name}")
                time.sleep(0.05)
            yield Emulator(url=ready.read_text().strip().split("=", 1)[1], pid=proc.pid)
        finally:
            proc.send_signal(signal.SIGTERM)
            try:
                proc.wait(timeout=300)  # hundreds of sandboxes take a while to end
            except subprocess.TimeoutExpired:
                os.killpg(proc.pid, signal.SIGKILL)
                proc.wait()


def sdk_environment(server_url: str, home: pathlib.Path) -> dict[str, str]:
    """Environment for a process using the SDK against the emulator, isolated from the user's config."""
    return {
        "MODAL_SERVER_URL": server_url,
        "MODAL_TOKEN_ID": "ak-bench",
        "MODAL_TOKEN_SECRET": "as-bench",
        "MODAL_CONFIG_PATH": str(home / "modal.toml"),
    }


def descendants(root_pid: int) -> list[int]:
    """Every process below ``root_pid`` (not itself), from /proc."""
    children: dict[int, list[int]] = {}
    for stat in pathlib.Path("/proc").glob("[0-9]*/stat"):
        try:
            text = stat.read_text()
        except OSError:
            continue
        pid = int(stat.parent.name)
        ppid = int(text[text.rindex(")") + 2:].split()[1])
        children.setdefault(ppid, []).append(pid)
    found, todo = [], list(children.get(root_pid, []))
    while todo:
        pid = todo.pop()
        found.append(pid)
        todo.extend(children.get(pid, []))
    return found


def pss_kib(pids: list[int]) -> int:
    """Proportional set size of these processes, in KiB (shared pages divided among their users)."""
    total = 0
    for pid in pids:
        try:
            for line in pathlib.Path(f"/proc/{pid}/smaps_rollup").read_text().splitlines():
                if line.startswith("Pss:"):
                    total += int(line.split()[1])
                    break
        except OSError:
            continue
    return total
