"""The SDK's file tool, run for a sandbox by the emulator itself, whatever the sandbox's image holds.

``Sandbox.filesystem.*`` in the SDK execs ``/__modal/.bin/modal-sandbox-fs-tools`` inside the sandbox;
Modal provides that binary on its workers. A real image may have no Python at all, so the emulator does
not put a script there: an exec of that path runs :mod:`modal_emulator.runtime.sandbox_fs_tool` with the emulator's own Python
from the host, inside the sandbox's PID namespace (so that the sandbox sees it among its processes, as it
would see Modal's tool) and confined to the sandbox's root (``chroot`` into ``/proc/<init>/root``, which
shows the sandbox's files and mounts exactly as its processes see them). Nothing of it is in the image,
and snapshots never see it.
"""

from __future__ import annotations

import pathlib
import sys

from modal_emulator.runtime._host import tool

#: Where the SDK expects the tool (``modal/sandbox/_filesystem.py``).
FS_TOOLS_PATH = "/__modal/.bin/modal-sandbox-fs-tools"
_SCRIPT = pathlib.Path(__file__).parent.parent / "runtime" / "sandbox_fs_tool.py"


def is_fs_tool(argv: list[str]) -> bool:
    return bool(argv) and argv[0] == FS_TOOLS_PATH


def host_argv(init_pid: int, argv: list[str]) -> list[str]:
    """The host command that runs the tool with `argv`'s arguments for the sandbox whose PID 1 is `init_pid`."""
    return [tool("nsenter"), "-t", str(init_pid), "-p", "--",
            sys.executable, "-I", str(_SCRIPT), "--chroot", f"/proc/{init_pid}/root", *argv[1:]]
