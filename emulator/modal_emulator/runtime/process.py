"""A process running in a sandbox (its entrypoint or one exec), as the server sees it.

``pid`` is the host pid of the launcher the runtime waits on (``unshare`` for the entrypoint, ``nsenter``
for an exec); it leads its own process group, which ``kill`` signals. Exit statuses are reported as a
shell would: a death by signal N is 128 + N (SIGKILL -> 137).
"""

from __future__ import annotations

import asyncio
import errno
import os
import signal
from typing import Callable

from modal_emulator.runtime._host import exit_status


class Process:
    def __init__(self, process: asyncio.subprocess.Process, *,
                 stdin: asyncio.StreamWriter | None = None,
                 stdout: asyncio.StreamReader | None = None,
                 stderr: asyncio.StreamReader | None = None,
                 on_exit: Callable[["Process"], None] | None = None,
                 close_on_exit: list[asyncio.BaseTransport] | None = None) -> None:
        self._process = process
        self.pid = process.pid
        self.stdin = stdin if stdin is not None else process.stdin
        self.stdout = stdout if stdout is not None else process.stdout
        self.stderr = stderr if stderr is not None else process.stderr
        self._on_exit = on_exit
        self._close_on_exit = close_on_exit or []

    @property
    def returncode(self) -> int | None:
        code = self._process.returncode
        return None if code is None else exit_status(code)

    async def wait(self) -> int:
        code = exit_status(await self._process.wait())
        if self._on_exit is not None:
            callback, self._on_exit = self._on_exit, None
            callback(self)
        for transport in self._close_on_exit:
            transport.close()
        return code

    def kill(self) -> None:
        """SIGKILL the launcher's whole process group."""
        if self._process.returncode is not None:
            return
        try:
            os.killpg(self.pid, signal.SIGKILL)
        except ProcessLookupError:
            pass


class _PtyReaderProtocol(asyncio.StreamReaderProtocol):
    """Reading a pty master fails with EIO once the terminal's last user closes it: that is end of file."""

    def connection_lost(self, exc: Exception | None) -> None:
        if isinstance(exc, OSError) and exc.errno == errno.EIO:
            exc = None
        super().connection_lost(exc)


async def pty_streams(master_fd: int) -> tuple[asyncio.StreamWriter, asyncio.StreamReader,
                                               list[asyncio.BaseTransport]]:
    """Asyncio writer and reader over a pty master (takes ownership of `master_fd`)."""
    loop = asyncio.get_running_loop()
    reader = asyncio.StreamReader()
    read_transport, _ = await loop.connect_read_pipe(
        lambda: _PtyReaderProtocol(reader), os.fdopen(master_fd, "rb", buffering=0))
    write_protocol = asyncio.StreamReaderProtocol(asyncio.StreamReader())
    write_transport, _ = await loop.connect_write_pipe(
        lambda: write_protocol, os.fdopen(os.dup(master_fd), "wb", buffering=0))
    writer = asyncio.StreamWriter(write_transport, write_protocol, None, loop)
    return writer, reader, [write_transport]
