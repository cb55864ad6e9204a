#!/usr/bin/env python3
"""``modal-emulator`` that also counts the RPCs it serves, for the inventory benchmark.

Same command line as ``modal-emulator``. On SIGUSR1 the serving process writes the number of RPCs served
so far, per method, to ``<state dir>/rpc-counts.json``; a benchmark reads it before and after a run and
takes the difference. The counter listens to the same server event that ``--latency-ms`` uses, so every
counted RPC is also a delayed one.
"""

from __future__ import annotations

import asyncio
import collections
import json
import pathlib
import signal
import sys

import grpclib.events

from modal_emulator import cli
from modal_emulator.server import core

COUNTS: collections.Counter[str] = collections.Counter()
COUNTS_FILE = "rpc-counts.json"


def _state_dir(argv: list[str]) -> pathlib.Path:
    return pathlib.Path(argv[argv.index("--state-dir") + 1])


def _install_counter(state_dir: pathlib.Path) -> None:
    original_attach = core.FaultInjector.attach

    def attach(self: core.FaultInjector, server: object) -> None:
        async def count(event: grpclib.events.RecvRequest) -> None:
            COUNTS[event.method_name.rsplit("/", 1)[-1]] += 1

        grpclib.events.listen(server, grpclib.events.RecvRequest, count)
        original_attach(self, server)

        def dump() -> None:
            core.atomic_write_bytes(state_dir / COUNTS_FILE, json.dumps(dict(COUNTS)).encode())

        asyncio.get_running_loop().add_signal_handler(signal.SIGUSR1, dump)

    core.FaultInjector.attach = attach  # type: ignore[method-assign]


def main() -> int:
    argv = sys.argv[1:]
    _install_counter(_state_dir(argv).resolve())
    return cli.main(argv)


if __name__ == "__main__":
    sys.exit(main())
