"""Closing a tunnel with a connection still open logs nothing: a stop or destroy is not an error.

Tunnels relay into a network namespace; here that namespace is the test's own, so no sandbox is
needed. The loop's exception handler records anything asyncio would have logged as ``ERROR asyncio``.
"""

from __future__ import annotations

import asyncio
import os
import ssl
from pathlib import Path
from typing import Any

from modal_emulator.runtime.tunnels import Tunnel
from modal_emulator.server.tls_tunnels import TlsTerminator, _create_certificates


async def _silent_peer() -> tuple[asyncio.AbstractServer, int]:
    """A TCP server that accepts and never answers: relays to it stay open until cancelled."""

    async def hold(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        await reader.read()
        writer.close()

    server = await asyncio.start_server(hold, "127.0.0.1", 0)
    return server, server.sockets[0].getsockname()[1]


def _run_recording_loop_errors(scenario) -> list[dict[str, Any]]:
    errors: list[dict[str, Any]] = []

    async def main() -> None:
        asyncio.get_running_loop().set_exception_handler(lambda _loop, context: errors.append(context))
        await scenario()
        await asyncio.sleep(0.2)  # let done callbacks of the cancelled relays run

    asyncio.run(main())
    return errors


def test_closing_a_tunnel_with_an_open_connection_logs_no_error() -> None:
    async def scenario() -> None:
        peer, port = await _silent_peer()
        own_netns = os.open("/proc/self/ns/net", os.O_RDONLY)
        try:
            tunnel = Tunnel(own_netns, port)
            host, host_port = await tunnel.start()
            reader, writer = await asyncio.open_connection(host, host_port)
            writer.write(b"hello")
            await writer.drain()
            await asyncio.sleep(0.3)  # the relay is connected and waiting
            await tunnel.close()
            writer.close()
        finally:
            os.close(own_netns)
            peer.close()

    assert _run_recording_loop_errors(scenario) == []


def test_closing_a_tls_terminator_with_an_open_connection_logs_no_error(tmp_path: Path) -> None:
    _create_certificates(tmp_path)
    server_context = ssl.create_default_context(ssl.Purpose.CLIENT_AUTH)
    server_context.load_cert_chain(tmp_path / "server.pem", tmp_path / "server.key")
    client_context = ssl.create_default_context(cafile=str(tmp_path / "ca.pem"))

    async def scenario() -> None:
        peer, port = await _silent_peer()
        try:
            terminator = TlsTerminator(("127.0.0.1", port))
            tls_port = await terminator.start(server_context)
            reader, writer = await asyncio.open_connection("127.0.0.1", tls_port, ssl=client_context)
            writer.write(b"hello")
            await writer.drain()
            await asyncio.sleep(0.3)
            await terminator.close()
            writer.close()
        finally:
            peer.close()

    assert _run_recording_loop_errors(scenario) == []
