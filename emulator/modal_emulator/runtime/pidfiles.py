"""Pid files of running sandboxes, for other processes: ``modal-emulator kill`` and crash recovery.

``<state_dir>/run/<sandbox_id>.pid`` is JSON: the host pids of the sandbox's init and of its launcher,
each with the kernel start time that makes a recycled pid number harmless, plus its cgroup dirs and
its helpers on the host (slirp4netns, same pid + start time pairs).
Killing the init of a PID namespace with SIGKILL kills every process in it, so one signal is a crash
of the whole sandbox.
"""

from __future__ import annotations

import contextlib
import json
import os
import shutil
import signal
import time
from pathlib import Path

from modal_emulator.runtime import cgroups
from modal_emulator.runtime._host import (is_same_process, mounts_under, process_start_time, sigkill,
                                          tool)


def pid_file(state_dir: Path, sandbox_id: str) -> Path:
    return Path(state_dir) / "run" / f"{sandbox_id}.pid"


def write(state_dir: Path, sandbox_id: str, init_pid: int, launcher_pid: int, cgroup_dirs: list[Path],
          helper_pids: list[int] | None = None) -> None:
    """`helper_pids`: host processes that serve the sandbox from outside it (its slirp4netns)."""
    path = pid_file(state_dir, sandbox_id)
    path.parent.mkdir(parents=True, exist_ok=True)
    record = {
        "sandbox_id": sandbox_id,
        "init_pid": init_pid,
        "init_start": process_start_time(init_pid),
        "launcher_pid": launcher_pid,
        "launcher_start": process_start_time(launcher_pid),
        "cgroups": [str(d) for d in cgroup_dirs],
        "helpers": [[pid, process_start_time(pid)] for pid in helper_pids or []],
    }
    partial = path.with_suffix(".pid.partial")
    partial.write_text(json.dumps(record))
    os.rename(partial, path)


def read(path: Path) -> dict | None:
    try:
        return json.loads(path.read_text())
    except (OSError, ValueError):
        return None


def remove(state_dir: Path, sandbox_id: str) -> None:
    pid_file(state_dir, sandbox_id).unlink(missing_ok=True)


def kill_sandbox(state_dir: Path, sandbox_id: str) -> bool:
    """SIGKILL a running sandbox's whole process tree, as if it had crashed; False if none is running."""
    record = read(pid_file(state_dir, sandbox_id))
    if record is None:
        return False
    killed = False
    # The launcher first, and with its whole process group (it and the init share it): unshare
    # reports a SIGKILLed child as a plain exit 1, so it must die with the init, not after it.
    if is_same_process(record.get("launcher_pid", 0), record.get("launcher_start")):
        with contextlib.suppress(ProcessLookupError):
            os.killpg(record["launcher_pid"], signal.SIGKILL)
        killed = True
    if is_same_process(record.get("init_pid", 0), record.get("init_start")):
        sigkill(record["init_pid"])
        killed = True
    for pid, start in record.get("helpers", []):
        if is_same_process(pid, start):
            sigkill(pid)
    return killed


def cleanup_stale(state_dir: Path) -> None:
    """Kill sandboxes an earlier, crashed emulator left behind, and free what they held.

    Every pid file found is stale by definition: a live emulator removes its pid files on terminate,
    and the store cannot be shared by two live emulators.
    """
    state_dir = Path(state_dir)
    run_dir = state_dir / "run"
    for path in sorted(run_dir.glob("*.pid")) if run_dir.is_dir() else []:
        record = read(path) or {}
        sandbox_id = record.get("sandbox_id") or path.stem
        kill_sandbox(state_dir, sandbox_id)
        _wait_gone(record)
        cgroups.remove(record.get("cgroups", []))
        path.unlink(missing_ok=True)
    sandboxes = state_dir / "store" / "sandboxes"
    for entry in mounts_under(sandboxes):
        os.spawnv(os.P_WAIT, tool("umount"), ["umount", "-l", entry.mount_point])
    if _is_mount_point(state_dir / "store"):
        # Upper dirs of dead sandboxes and half-built layers are garbage now.
        for leftover in [*sandboxes.glob("*"), *(state_dir / "store" / "tmp").glob("*")]:
            shutil.rmtree(leftover, ignore_errors=True)


def _wait_gone(record: dict, timeout_s: float = 5.0) -> None:
    deadline = time.monotonic() + timeout_s
    processes = [(record.get(f"{role}_pid", 0), record.get(f"{role}_start")) for role in ("init", "launcher")]
    for pid, start in processes + [tuple(helper) for helper in record.get("helpers", [])]:
        while is_same_process(pid, start) and time.monotonic() < deadline:
            time.sleep(0.05)


def _is_mount_point(path: Path) -> bool:
    return any(m.mount_point == str(path) for m in mounts_under(path))
