"""CPU and memory limits for a sandbox with cgroups v1, where the machine allows it.

Each sandbox gets ``<controller mount>/<the emulator's own cgroup>/modal-emulator-<tag>/<sandbox_id>``
for the ``cpu`` and ``memory`` controllers, nested under the emulator's own cgroup so that whatever
limits the emulator runs under still apply to its sandboxes. The entrypoint joins them during setup
and every exec joins them before entering the namespaces.

Limits are best effort: on a host without writable v1 controllers (cgroup v2 only, read-only cgroupfs,
a container without delegation) the limit is recorded with the reason it is not enforced, and the
sandbox runs anyway. A test double must not refuse to start over a limit.
"""

from __future__ import annotations

import hashlib
import os
import time
from dataclasses import dataclass, field
from pathlib import Path

from modal_emulator.runtime._host import mounts

_CFS_PERIOD_US = 100_000


@dataclass
class SandboxCgroups:
    dirs: list[Path] = field(default_factory=list)     # created cgroup directories (to join and remove)
    limits: dict[str, str] = field(default_factory=dict)  # "cpu"/"memory" -> what was done, for info()

    @property
    def procs_files(self) -> list[Path]:
        return [d / "cgroup.procs" for d in self.dirs]


def _v1_controller_dir(controller: str) -> Path | None:
    """Mount point of a v1 hierarchy carrying `controller`, joined with this process's cgroup in it."""
    mount_point = None
    for entry in mounts():
        if entry.fs_type == "cgroup" and controller in entry.super_options.split(","):
            mount_point = Path(entry.mount_point)
            break
    if mount_point is None:
        return None
    for line in Path("/proc/self/cgroup").read_text().splitlines():
        _, controllers, path = line.split(":", 2)
        if controller in controllers.split(","):
            return mount_point / path.lstrip("/")
    return mount_point


def group_name(state_dir: Path) -> str:
    """The per-emulator parent group: two emulators with different state dirs never share sandboxes."""
    return "modal-emulator-" + hashlib.sha256(str(state_dir).encode()).hexdigest()[:8]


def create(state_dir: Path, sandbox_id: str, cpu: float | None, memory_mb: int | None) -> SandboxCgroups:
    """Create and configure the sandbox's cgroups for the limits requested (none if none requested)."""
    result = SandboxCgroups()
    wanted: list[tuple[str, str, list[tuple[str, str]]]] = []
    if cpu is not None:
        quota = max(1000, int(cpu * _CFS_PERIOD_US))
        wanted.append(("cpu", f"{cpu} cores",
                       [("cpu.cfs_period_us", str(_CFS_PERIOD_US)), ("cpu.cfs_quota_us", str(quota))]))
    if memory_mb is not None:
        wanted.append(("memory", f"{memory_mb} MiB", [("memory.limit_in_bytes", str(memory_mb * 1024 * 1024))]))
    for controller, description, settings in wanted:
        base = _v1_controller_dir(controller)
        if base is None:
            result.limits[controller] = f"{description}, recorded only: no cgroup v1 '{controller}' hierarchy"
            continue
        directory = base / group_name(state_dir) / sandbox_id
        try:
            directory.mkdir(parents=True, exist_ok=True)
            for name, value in settings:
                (directory / name).write_text(value)
        except OSError as exc:
            _remove_dir(directory)
            result.limits[controller] = f"{description}, recorded only: {exc.strerror or exc}"
            continue
        result.dirs.append(directory)
        result.limits[controller] = f"{description}, enforced by cgroup {directory}"
    return result


def remove(dirs: list[Path] | list[str]) -> None:
    """Remove sandbox cgroups once their processes are gone (the kernel empties them asynchronously)."""
    for directory in dirs:
        _remove_dir(Path(directory))


def remove_group(state_dir: Path) -> None:
    """Remove the emulator's parent groups once no sandbox is left (they are empty by then)."""
    for controller in ("cpu", "memory"):
        base = _v1_controller_dir(controller)
        if base is not None:
            try:
                os.rmdir(base / group_name(state_dir))
            except OSError:
                pass  # absent, or still holding a sandbox


def _remove_dir(directory: Path) -> None:
    deadline = time.monotonic() + 5
    while directory.exists():
        try:
            os.rmdir(directory)
        except FileNotFoundError:
            return
        except OSError:
            if time.monotonic() > deadline:
                return
            time.sleep(0.05)
