"""Shared state of the emulator's gRPC server, and the contract every RPC mixin plugs into.

The servicer is one class composed of small mixins, one per API area (apps, images, sandboxes,
tags and listing, volumes, mounts, blobs). A mixin is a plain class whose ``async def Rpc(self, stream)``
methods implement RPCs of ``modal_proto.api_grpc.ModalClientBase``; it reaches everything it shares
with the other mixins through ``self.state``, an :class:`EmulatorState`::

    class VolumeRpcs:
        state: EmulatorState

        async def VolumeGetOrCreate(self, stream) -> None:
            request = await stream.recv_message()
            volumes = self.state.table("volumes")          # persistent dict of JSON rows
            ...
            await stream.send_message(api_pb2.VolumeGetOrCreateResponse(...))

What :class:`EmulatorState` offers:

- ``state_dir``: the directory given by ``--state-dir``; a mixin may keep files under
  ``state.data_dir(name)`` (``<state_dir>/data/<name>``, created on demand).
- ``store``: the runtime's :class:`~modal_emulator.runtime.store.Store` (opened before RPCs are served).
- ``new_id(prefix)``: a fresh object id such as ``vo-`` + 22 letters/digits.
- ``table(name)``: a :class:`JsonTable`, a dict of JSON-serialisable rows persisted atomically to
  ``<state_dir>/db/<name>.json`` on every ``put``/``delete``; rows survive a restart of the emulator.
- ``http_base_url``: base URL (``http://127.0.0.1:PORT``) of the HTTP side server that serves blob
  uploads/downloads and volume blocks; set by whoever starts that server (see below).
- ``server_url``: the gRPC server's own URL (the task command router is served on the same port).
- ``abort(status, message)``: raise a gRPC error with a given ``grpclib.Status``.
- ``services``: in-memory registries shared by mixins of both services, keyed by area
  (``"sandboxes"``: live sandboxes, ``"images"``: image records and builds).

Functions some mixin modules offer to the others (imported directly where they are used):

- ``server/blobs.py``: ``async def start_http_server(state: EmulatorState) -> Callable[[], Awaitable[None]]``
  starts the HTTP side server, sets ``state.http_base_url`` and returns a coroutine function that stops it
  (used by :mod:`.serve`).
- ``server/mounts.py``: ``def materialize_mount(state: EmulatorState, mount_id: str)
  -> list[tuple[str, pathlib.Path | bytes, int | None]]`` returns a mount's files as
  (absolute path inside the mount, content or source file, mode or None); used for COPY in image builds
  (:mod:`.image_builder`).
- ``server/volumes.py``: ``def volume_bind(state: EmulatorState, mount: api_pb2.VolumeMount)
  -> tuple[pathlib.Path, str, bool]`` returns the host directory, container path and read-only flag of
  a sandbox's volume mount, bind-mounted into the sandbox (:mod:`.sandboxes`); ``volume_host_path``
  returns a volume's host directory.

Naming inside a mixin. All control-plane mixins become ONE class, so two mixins defining the same
attribute would silently replace each other's. Every attribute that is not an RPC therefore carries
its area as a prefix (``_vol_row``, ``_listing_live``, ``_router_exec``...), or is a module-level
function; ``tests/test_servicer_composition.py`` fails when two mixins define the same name.

Faults and latency (``--latency-ms``, ``--fail``) are applied to every RPC before its handler runs, by
:class:`FaultInjector`, so mixins never deal with them.
"""

from __future__ import annotations

import asyncio
import json
import logging
import os
import pathlib
import random
import secrets
import string
import tempfile
import threading
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any, NoReturn

import grpclib.events
from grpclib import GRPCError, Status

if TYPE_CHECKING:
    from modal_emulator.runtime.store import Store

log = logging.getLogger("modal_emulator.server")

_ID_ALPHABET = string.ascii_letters + string.digits


def atomic_write_bytes(path: pathlib.Path, data: bytes) -> None:
    """Write a file so that readers see either the old or the new content, never a mix."""
    path.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp_name = tempfile.mkstemp(dir=path.parent, prefix=f".{path.name}.", suffix=".tmp")
    try:
        with os.fdopen(fd, "wb") as f:
            f.write(data)
            f.flush()
            os.fsync(f.fileno())
        os.replace(tmp_name, path)
    except BaseException:
        pathlib.Path(tmp_name).unlink(missing_ok=True)
        raise


class JsonTable:
    """A dict of JSON rows keyed by id, persisted as one JSON file rewritten atomically on each change."""

    def __init__(self, path: pathlib.Path) -> None:
        self.path = path
        self._lock = threading.Lock()
        self.rows: dict[str, dict[str, Any]] = {}
        if path.exists():
            self.rows = json.loads(path.read_text() or "{}")

    def get(self, key: str) -> dict[str, Any] | None:
        return self.rows.get(key)

    def __contains__(self, key: str) -> bool:
        return key in self.rows

    def values(self) -> list[dict[str, Any]]:
        return list(self.rows.values())

    def items(self) -> list[tuple[str, dict[str, Any]]]:
        return list(self.rows.items())

    def put(self, key: str, row: dict[str, Any]) -> None:
        self.rows[key] = row
        self.save()

    def delete(self, key: str) -> None:
        if self.rows.pop(key, None) is not None:
            self.save()

    def save(self) -> None:
        with self._lock:
            atomic_write_bytes(self.path, json.dumps(self.rows, indent=1, sort_keys=True).encode())


@dataclass
class FaultRule:
    """Fail ``rate`` (0..1) of the calls to ``rpc`` (a method name, or ``*`` for all) with ``status``."""

    rpc: str
    rate: float
    status: Status = Status.UNAVAILABLE

    @classmethod
    def parse(cls, text: str) -> "FaultRule":
        """Parse ``RPC=RATE[:CODE]``, e.g. ``SandboxCreate=0.5:UNAVAILABLE`` or ``*=0.1``."""
        rpc, sep, rest = text.partition("=")
        if not sep or not rpc:
            raise ValueError(f"fault rule {text!r} is not of the form RPC=RATE[:CODE]")
        rate_text, _, code = rest.partition(":")
        rate = float(rate_text)
        if not 0.0 <= rate <= 1.0:
            raise ValueError(f"fault rate {rate} is not between 0 and 1")
        status = Status.UNAVAILABLE
        if code:
            try:
                status = Status[code.strip().upper()]
            except KeyError:
                raise ValueError(f"unknown gRPC status {code!r}") from None
        return cls(rpc=rpc.strip(), rate=rate, status=status)


@dataclass
class FaultInjector:
    """Delays every RPC by ``latency_ms`` and fails a fraction of calls, before their handler runs."""

    latency_ms: int = 0
    rules: list[FaultRule] = field(default_factory=list)
    rng: random.Random = field(default_factory=random.Random)

    def attach(self, server: Any) -> None:
        grpclib.events.listen(server, grpclib.events.RecvRequest, self._on_request)

    async def _on_request(self, event: grpclib.events.RecvRequest) -> None:
        rpc = event.method_name.rsplit("/", 1)[-1]
        if self.latency_ms:
            await asyncio.sleep(self.latency_ms / 1000.0)
        for rule in self.rules:
            if rule.rpc in ("*", rpc) and self.rng.random() < rule.rate:
                log.info("fault injected: %s -> %s", rpc, rule.status.name)
                raise GRPCError(rule.status, f"injected fault for {rpc}")


class EmulatorState:
    """Everything the RPC mixins share; one instance per ``modal-emulator serve`` process."""

    def __init__(self, state_dir: pathlib.Path, *, list_omits_details: bool = False,
                 base_cache: pathlib.Path | None = None, unavailable_gpus: frozenset[str] = frozenset()) -> None:
        from modal_emulator.runtime.bases import BaseCache

        self.state_dir = state_dir.resolve()
        self.bases = BaseCache(base_cache)
        self.list_omits_details = list_omits_details
        # GPU types (upper case) that SandboxCreate refuses, as Modal refuses a type it does not offer.
        self.unavailable_gpus = frozenset(gpu.upper() for gpu in unavailable_gpus)
        self.store: Store | None = None
        self.server_url: str = ""
        self.http_base_url: str = ""
        self.services: dict[str, Any] = {}
        self._tables: dict[str, JsonTable] = {}

    def data_dir(self, name: str) -> pathlib.Path:
        path = self.state_dir / "data" / name
        path.mkdir(parents=True, exist_ok=True)
        return path

    def table(self, name: str) -> JsonTable:
        if name not in self._tables:
            self._tables[name] = JsonTable(self.state_dir / "db" / f"{name}.json")
        return self._tables[name]

    @staticmethod
    def new_id(prefix: str, length: int = 22) -> str:
        return f"{prefix}-" + "".join(secrets.choice(_ID_ALPHABET) for _ in range(length))

    @staticmethod
    def abort(status: Status, message: str) -> NoReturn:
        raise GRPCError(status, message)

    def require_store(self) -> "Store":
        if self.store is None:
            raise GRPCError(Status.UNAVAILABLE, "the container store is not open")
        return self.store
