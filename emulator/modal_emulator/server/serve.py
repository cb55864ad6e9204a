"""Run the emulator: open the store, serve both gRPC services on one loopback port, stop cleanly.

Start-up order: recover from a crashed earlier process (stale sandboxes and mounts), open the
store, load the persisted state, start the HTTP side server (blobs) if present, listen, then announce
``MODAL_SERVER_URL=...`` on stdout and in the ready file (before logging the side server's URL, so that
the first URL in a combined log is the one to use). On SIGINT/SIGTERM: stop accepting calls,
terminate every sandbox, stop the side server, close the store (unmount everything), exit 0.
"""

from __future__ import annotations

import asyncio
import logging
import pathlib
import random
import signal
import sys
from dataclasses import dataclass, field
from typing import Awaitable, Callable

from grpclib.server import Server

from .blobs import start_http_server
from .core import EmulatorState, FaultInjector, FaultRule, atomic_write_bytes
from .images import image_registry
from .sandboxes import sandbox_registry
from .servicer import build_servicers

log = logging.getLogger("modal_emulator.server")


@dataclass
class ServeOptions:
    state_dir: pathlib.Path
    host: str = "127.0.0.1"
    port: int = 0
    ready_file: pathlib.Path | None = None
    latency_ms: int = 0
    faults: list[FaultRule] = field(default_factory=list)
    fault_seed: int | None = None   # None: a different choice of failing calls on every run
    list_omits_details: bool = False
    base_cache: pathlib.Path | None = None   # None: $MODAL_EMULATOR_BASE_CACHE or the default
    unavailable_gpus: frozenset[str] = frozenset()   # GPU types SandboxCreate refuses (INVALID_ARGUMENT)


async def serve(options: ServeOptions) -> None:
    from modal_emulator.runtime.container import cleanup_stale
    from modal_emulator.runtime.store import Store

    options.state_dir.mkdir(parents=True, exist_ok=True)
    state = EmulatorState(options.state_dir, list_omits_details=options.list_omits_details,
                          base_cache=options.base_cache, unavailable_gpus=options.unavailable_gpus)
    await asyncio.to_thread(cleanup_stale, state.state_dir)
    store = Store(state.state_dir)
    await asyncio.to_thread(store.open)
    state.store = store
    stop_http: Callable[[], Awaitable[None]] | None = None
    server: Server | None = None
    try:
        image_registry(state)
        sandboxes = sandbox_registry(state)
        stop_http = await start_http_server(state)
        server = Server(build_servicers(state))
        fault_rng = random.Random(options.fault_seed)
        FaultInjector(latency_ms=options.latency_ms, rules=options.faults, rng=fault_rng).attach(server)
        await server.start(options.host, options.port)
        assert server._server is not None
        port = server._server.sockets[0].getsockname()[1]
        state.server_url = f"http://{options.host}:{port}"
        announce(state.server_url, options.ready_file)
        if state.http_base_url:
            # After the announcement: the first URL in a combined log must be the one to point the SDK at.
            log.info("HTTP side server (blobs, volume blocks) on %s", state.http_base_url)

        stopping = asyncio.Event()
        loop = asyncio.get_running_loop()
        for sig in (signal.SIGINT, signal.SIGTERM):
            loop.add_signal_handler(sig, stopping.set)
        await stopping.wait()
        log.info("stopping: terminating sandboxes")
        server.close()
        await sandboxes.shutdown()
        await image_registry(state).wait_all()
    finally:
        if server is not None:
            server.close()
            try:
                await asyncio.wait_for(server.wait_closed(), 5)
            except asyncio.TimeoutError:
                log.warning("some RPCs did not finish within 5s of shutdown")
        if "sandboxes" in state.services:
            await state.services["sandboxes"].shutdown()
        if stop_http is not None:
            await stop_http()
        await asyncio.to_thread(store.close)
        log.info("stopped")


def announce(url: str, ready_file: pathlib.Path | None) -> None:
    line = f"MODAL_SERVER_URL={url}"
    print(line, flush=True)
    if ready_file is not None:
        atomic_write_bytes(ready_file, (line + "\n").encode())


def run(options: ServeOptions) -> int:
    logging.basicConfig(
        level=logging.INFO, stream=sys.stderr, format="%(asctime)s %(levelname)s %(name)s: %(message)s"
    )
    asyncio.run(serve(options))
    return 0
