"""Small facts about the host the runtime needs everywhere: tool paths, /proc and mountinfo parsing.

The runtime drives standard Linux tools (util-linux, coreutils, iproute2) rather than re-implementing
mounts and namespaces, so everything here is about finding those tools and reading kernel state.
"""

from __future__ import annotations

import os
import shutil
import signal
from dataclasses import dataclass
from pathlib import Path

# The PATH used to find host tools, independent of whatever PATH the server runs with.
_SYSTEM_PATH = "/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin"

# The PATH a sandbox or build step gets when its image sets none (the usual container default).
DEFAULT_CONTAINER_PATH = "/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin"


def find_tool(name: str) -> str | None:
    """Absolute path of a host tool, or None if the host does not have it."""
    return shutil.which(name, path=_SYSTEM_PATH)


def tool(name: str, package: str = "util-linux/coreutils/iproute2") -> str:
    """Absolute path of a host tool; RuntimeError naming the missing tool (and its package) otherwise."""
    found = find_tool(name)
    if not found:
        raise RuntimeError(f"the emulator's runtime needs `{name}` on this host (Debian package {package})")
    return found


def require_root() -> None:
    if os.geteuid() != 0:
        raise RuntimeError("the emulator's sandboxes need root (mounts and namespaces); run it as root")


def exit_status(returncode: int) -> int:
    """Exit status as a shell reports it: a death by signal N becomes 128 + N (SIGKILL -> 137)."""
    return 128 - returncode if returncode < 0 else returncode


def process_start_time(pid: int) -> int | None:
    """The kernel's start time of `pid` (field 22 of /proc/<pid>/stat); None if it is gone (or a zombie).

    A pid plus its start time names one process for good, even after the pid number is reused.
    """
    try:
        stat = Path(f"/proc/{pid}/stat").read_text()
    except (FileNotFoundError, ProcessLookupError):
        return None
    # The command name (field 2) may contain spaces and parentheses: split after its closing paren.
    fields = stat[stat.rindex(")") + 2 :].split()
    return None if fields[0] in ("Z", "X") else int(fields[19])


def is_same_process(pid: int, start_time: int | None) -> bool:
    return pid > 0 and start_time is not None and process_start_time(pid) == start_time


def sigkill(pid: int) -> None:
    try:
        os.kill(pid, signal.SIGKILL)
    except ProcessLookupError:
        pass


@dataclass(frozen=True)
class MountEntry:
    mount_id: int
    mount_point: str
    fs_type: str
    source: str
    super_options: str


def _unescape(field: str) -> str:
    # mountinfo escapes space, tab, newline and backslash as octal (\040 ...).
    return field.encode().decode("unicode_escape") if "\\" in field else field


def mounts(pid: str = "self") -> list[MountEntry]:
    entries = []
    for line in Path(f"/proc/{pid}/mountinfo").read_text().splitlines():
        left, _, right = line.partition(" - ")
        fields, tail = left.split(), right.split()
        entries.append(MountEntry(int(fields[0]), _unescape(fields[4]), tail[0], _unescape(tail[1]),
                                  tail[2] if len(tail) > 2 else ""))
    return entries


def mounts_under(path: Path) -> list[MountEntry]:
    """Mounts at or below `path`, deepest first (the order to unmount them in)."""
    prefix = str(path).rstrip("/") + "/"
    found = [m for m in mounts() if m.mount_point == str(path) or m.mount_point.startswith(prefix)]
    return sorted(found, key=lambda m: (m.mount_point.count("/"), m.mount_id), reverse=True)
