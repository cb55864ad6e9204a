"""Tunnels: a TCP listener on host loopback per sandbox port, relayed into the sandbox's network namespace.

A sandbox has its own network namespace with only loopback, so nothing on the host can reach it
directly. A socket belongs to the namespace of the thread that created it, for its whole life: a
worker thread switches into the sandbox's namespace with ``setns``, creates the socket, and switches
back. The connect and the byte relay then run as ordinary asyncio tasks on the server's loop, with no
process or thread per sandbox.
"""

from __future__ import annotations

import asyncio
import contextlib
import ctypes
import os
import socket

_CLONE_NEWNET = 0x40000000
_libc = ctypes.CDLL(None, use_errno=True)
_RELAY_CHUNK = 65536


def _setns(fd: int) -> None:
    if _libc.setns(fd, _CLONE_NEWNET) != 0:
        err = ctypes.get_errno()
        raise OSError(err, f"setns(net): {os.strerror(err)}")


def socket_in_netns(netns_fd: int) -> socket.socket:
    """A TCP socket created in the network namespace `netns_fd` (call from a worker thread)."""
    own = os.open("/proc/thread-self/ns/net", os.O_RDONLY)
    try:
        _setns(netns_fd)
        try:
            return socket.socket(socket.AF_INET, socket.SOCK_STREAM)
        finally:
            # A thread left in the sandbox's namespace would leak it into unrelated work.
            _setns(own)
    finally:
        os.close(own)


class Tunnel:
    """Forwards connections on 127.0.0.1:<host_port> to 127.0.0.1:<port> inside a namespace."""

    def __init__(self, netns_fd: int, port: int) -> None:
        self.netns_fd = netns_fd
        self.port = port
        self.host_port = 0
        self._server: asyncio.base_events.Server | None = None
        self._relays: set[asyncio.Task] = set()

    async def start(self) -> tuple[str, int]:
        self._server = await asyncio.start_server(self._on_client, "127.0.0.1", 0)
        self.host_port = self._server.sockets[0].getsockname()[1]
        return "127.0.0.1", self.host_port

    async def close(self) -> None:
        if self._server is not None:
            self._server.close()
        for task in list(self._relays):
            task.cancel()
        for task in list(self._relays):
            with contextlib.suppress(BaseException):
                await task
        if self._server is not None:
            with contextlib.suppress(Exception):
                await asyncio.wait_for(self._server.wait_closed(), 1)

    async def _on_client(self, client_reader: asyncio.StreamReader, client_writer: asyncio.StreamWriter) -> None:
        task = asyncio.current_task()
        assert task is not None
        self._relays.add(task)
        inner_writer: asyncio.StreamWriter | None = None
        try:
            sock = await asyncio.to_thread(socket_in_netns, self.netns_fd)
            sock.setblocking(False)
            try:
                await asyncio.get_running_loop().sock_connect(sock, ("127.0.0.1", self.port))
            except OSError:
                sock.close()
                return  # nothing listens on that port in the sandbox: the client sees the connection close
            inner_reader, inner_writer = await asyncio.open_connection(sock=sock)
            await asyncio.gather(_pipe(client_reader, inner_writer), _pipe(inner_reader, client_writer))
        except asyncio.CancelledError:
            # close() cancels open relays when the sandbox stops: an expected end, not an error. Ending
            # the task normally matters, as asyncio (3.11) logs a cancelled connection task as an ERROR.
            pass
        finally:
            for writer in (client_writer, inner_writer):
                if writer is not None:
                    writer.close()
            self._relays.discard(task)


async def _pipe(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
    try:
        while chunk := await reader.read(_RELAY_CHUNK):
            writer.write(chunk)
            await writer.drain()
        if writer.can_write_eof():
            writer.write_eof()
    except (ConnectionError, OSError):
        writer.close()
