"""Start a payload as the init of fresh namespaces, over a root assembled by the setup script.

One place owns the process tree every build step and sandbox uses::

    setpriv --pdeathsig KILL -- unshare <namespaces> --fork --kill-child -- bash -p -c SCRIPT bash ARGS...

- ``setpriv --pdeathsig KILL``: if the emulator dies, ``unshare`` is killed with it, and
  ``--kill-child`` then kills the namespace's init, which takes the whole PID namespace down.
  (The parent-death signal follows the thread that forked: the asyncio loop's thread.)
- ``unshare`` stays as the small parent that reports the init's exit status to the emulator.
- The script (see :mod:`rootfs`) reports ``READY <host pid of the init>`` on a status pipe once the
  root is ready and execs the payload; anything before that is a setup failure with a message.
- With ``hold=True`` the script then waits for :meth:`Launched.release` before it execs the payload:
  the caller configures the namespace in between (a sandbox's network), and nothing of the payload
  runs before that is done. Closing the hold pipe without releasing makes the script exit instead.
"""

from __future__ import annotations

import asyncio
import os
import signal
from dataclasses import dataclass
from typing import Any

from modal_emulator.runtime._host import tool
from modal_emulator.runtime.rootfs import RootfsPlan, setup_script

SETUP_TIMEOUT_S = 60.0


@dataclass
class Launched:
    process: asyncio.subprocess.Process
    init_pid: int                       # host pid of the namespace's init (the payload, PID 1 inside)
    hold_fd: int = -1                   # write end of the hold pipe while the payload waits for release

    def release(self) -> None:
        """Let a held payload start (no-op if it was not held or is already released)."""
        if self.hold_fd >= 0:
            try:
                os.write(self.hold_fd, b"1")
            finally:
                self.close_hold()

    def close_hold(self) -> None:
        """Close the hold pipe without releasing: a still-held setup script exits, the payload never runs."""
        if self.hold_fd >= 0:
            os.close(self.hold_fd)
            self.hold_fd = -1


async def launch(plan: RootfsPlan, payload_argv: str, args: list[str], namespaces: list[str],
                 env: dict[str, str], hold: bool = False, **stdio: Any) -> Launched:
    """Spawn the tree above and wait until the payload runs (or, with `hold`, waits for release).

    RuntimeError (nothing left) on failure.
    """
    read_fd, write_fd = os.pipe()
    plan.status_fd = write_fd
    hold_read, hold_write = os.pipe2(os.O_CLOEXEC) if hold else (-1, -1)
    plan.hold_fd = hold_read
    try:
        launched = await _spawn(plan, payload_argv, args, namespaces, env, read_fd, write_fd, **stdio)
    except BaseException:
        if hold:
            os.close(hold_write)
        raise
    finally:
        if hold:
            os.close(hold_read)
    launched.hold_fd = hold_write
    return launched


async def _spawn(plan: RootfsPlan, payload_argv: str, args: list[str], namespaces: list[str],
                 env: dict[str, str], read_fd: int, write_fd: int, **stdio: Any) -> Launched:
    passed = (write_fd,) if plan.hold_fd < 0 else (write_fd, plan.hold_fd)
    argv = [tool("setpriv"), "--pdeathsig", "KILL", "--",
            tool("unshare"), *namespaces, "--fork", "--kill-child", "--",
            tool("bash"), "-p", "-c", setup_script(plan, payload_argv), "bash", *args]
    try:
        process = await asyncio.create_subprocess_exec(
            *argv, env=env, pass_fds=passed, start_new_session=True, **stdio)
    except BaseException:
        os.close(read_fd)
        raise
    finally:
        os.close(write_fd)
    # On a timeout the reading thread ends once the kill closes the pipe's writers.
    try:
        status = await asyncio.wait_for(asyncio.to_thread(_read_status, read_fd), SETUP_TIMEOUT_S)
    except BaseException:
        await _kill_and_reap(process)
        raise
    if not status.startswith("READY "):
        await _kill_and_reap(process)
        detail = status.strip() or f"setup exited with status {process.returncode}"
        raise RuntimeError(f"could not set up the container root: {detail}")
    return Launched(process, int(status.split()[1]))


def _read_status(fd: int) -> str:
    """Read the status pipe until the READY line or end of file (setup failed); closes `fd`."""
    data = b""
    try:
        while True:
            chunk = os.read(fd, 4096)
            if not chunk:
                return data.decode(errors="replace")
            data += chunk
            for line in data.decode(errors="replace").splitlines():
                if line.startswith("READY "):
                    return line
    finally:
        os.close(fd)


async def _kill_and_reap(process: asyncio.subprocess.Process) -> None:
    try:
        os.killpg(process.pid, signal.SIGKILL)
    except ProcessLookupError:
        pass
    await process.wait()
