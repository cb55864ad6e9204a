"""Blobs and the HTTP side server: where the SDK PUTs and GETs bulk bytes.

The SDK never sends large content over gRPC. It asks for URLs and speaks plain HTTP to them:

- ``BlobCreate`` → ``blob_ids[]`` + ``upload_urls.items[]`` (one URL per id); the SDK PUTs the body
  and checks that the answer's ``ETag`` is ``"<md5 hex of the body>"``. Files of 4 MiB and more
  (``MountPutFile{data_blob_id}``) travel this way. ``BlobGet`` → ``download_url`` for a GET.
- v2 volumes: ``VolumePutFiles2`` answers ``missing_blocks[].put_url``; the SDK PUTs each 8 MiB
  block (trailing zeros stripped) and echoes the response body back as ``put_response``.
- ``VolumeGetFile2`` answers ``get_urls[]``, one per 8 MiB-aligned block of the requested range.

The side server is aiohttp on 127.0.0.1 in the emulator's own process and event loop
(:func:`start_http_server`). Volume block URLs carry an HMAC signature made with a key that lives
only in this process, so a URL cannot be forged to read arbitrary volume paths. Sandboxes cannot
reach the side server at all (they have their own network namespace).
"""

from __future__ import annotations

import asyncio
import base64
import hashlib
import hmac
import logging
import os
import secrets
import tempfile
import urllib.parse
import weakref
from collections.abc import Awaitable, Callable
from dataclasses import dataclass, field

from aiohttp import web
from grpclib import Status
from modal_proto import api_pb2

from modal_emulator.server.core import EmulatorState
from modal_emulator.storage.content_store import ContentMismatchError, is_sha256_hex
from modal_emulator.storage.layout import StorageLayout
from modal_emulator.storage.volume_tree import VolumePathError

log = logging.getLogger("modal_emulator.server.blobs")

#: Size of a volume block (``modal._utils.blob_utils.BLOCK_SIZE``).
BLOCK_SIZE = 8 * 1024 * 1024
_BODY_CHUNK = 256 * 1024


@dataclass
class StorageContext:
    """Per-process storage objects hung off an :class:`EmulatorState`."""

    layout: StorageLayout
    url_key: bytes = field(default_factory=lambda: secrets.token_bytes(32))
    locks: dict[str, asyncio.Lock] = field(default_factory=dict)

    def lock(self, name: str) -> asyncio.Lock:
        """An asyncio lock per object (e.g. per volume), to serialise writers to one tree."""
        if name not in self.locks:
            self.locks[name] = asyncio.Lock()
        return self.locks[name]

    def sign(self, message: str) -> str:
        return hmac.new(self.url_key, message.encode(), hashlib.sha256).hexdigest()[:32]

    def verify(self, message: str, signature: str) -> bool:
        return hmac.compare_digest(self.sign(message), signature)


_contexts: "weakref.WeakKeyDictionary[EmulatorState, StorageContext]" = weakref.WeakKeyDictionary()


def storage(state: EmulatorState) -> StorageContext:
    """The storage context of a state (created on first use)."""
    context = _contexts.get(state)
    if context is None:
        context = StorageContext(layout=StorageLayout(state.state_dir / "data"))
        _contexts[state] = context
    return context


def _require_http(state: EmulatorState) -> str:
    if not state.http_base_url:
        state.abort(Status.UNAVAILABLE, "the emulator's HTTP side server is not running")
    return state.http_base_url


# --- URLs handed to the SDK --------------------------------------------------------------------


def blob_url(state: EmulatorState, blob_id: str) -> str:
    return f"{_require_http(state)}/blobs/{blob_id}"


def block_put_url(state: EmulatorState, sha256_hex: str) -> str:
    signature = storage(state).sign(f"block:{sha256_hex}")
    return f"{_require_http(state)}/blocks/{sha256_hex}?sig={signature}"


def volume_range_url(state: EmulatorState, volume_id: str, path: str, start: int, length: int) -> str:
    signature = storage(state).sign(f"read:{volume_id}:{path}:{start}:{length}")
    query = urllib.parse.urlencode({"path": path, "start": start, "len": length, "sig": signature})
    return f"{_require_http(state)}/volumes/{volume_id}?{query}"


def block_ranges(start: int, length: int) -> list[tuple[int, int]]:
    """Split a byte range at ``BLOCK_SIZE`` boundaries, as the SDK expects its ``get_urls`` split."""
    ranges = []
    pos, end = start, start + length
    while pos < end:
        block_end = min(end, (pos // BLOCK_SIZE + 1) * BLOCK_SIZE)
        ranges.append((pos, block_end - pos))
        pos = block_end
    return ranges


# --- gRPC --------------------------------------------------------------------------------------


class BlobRpcs:
    """``BlobCreate`` / ``BlobGet``."""

    state: EmulatorState

    async def BlobCreate(self, stream) -> None:
        request: api_pb2.BlobCreateRequest = await stream.recv_message()
        if request.content_length < 0:
            self.state.abort(Status.INVALID_ARGUMENT, "content_length must not be negative")
        blob_id = self.state.new_id("bl")
        url = blob_url(self.state, blob_id)
        # Fill the new repeated fields and the legacy single ones: the SDK reads blob_ids/upload_urls.
        await stream.send_message(
            api_pb2.BlobCreateResponse(
                blob_id=blob_id,
                blob_ids=[blob_id],
                upload_urls=api_pb2.UploadUrlList(items=[url]),
            )
        )

    async def BlobGet(self, stream) -> None:
        request: api_pb2.BlobGetRequest = await stream.recv_message()
        try:
            path = storage(self.state).layout.blob_path(request.blob_id)
        except ValueError:
            self.state.abort(Status.INVALID_ARGUMENT, f"malformed blob id {request.blob_id!r}")
        if not path.is_file():
            self.state.abort(Status.NOT_FOUND, f"blob {request.blob_id} not found")
        await stream.send_message(api_pb2.BlobGetResponse(download_url=blob_url(self.state, request.blob_id)))


# --- HTTP side server --------------------------------------------------------------------------


async def _receive_body(request: web.Request, write: Callable[[bytes], None]) -> None:
    while chunk := await request.content.read(_BODY_CHUNK):
        write(chunk)


def _routes(state: EmulatorState) -> list[web.RouteDef]:
    context = storage(state)
    layout = context.layout

    async def put_blob(request: web.Request) -> web.Response:
        try:
            target = layout.blob_path(request.match_info["blob_id"])
        except ValueError:
            raise web.HTTPBadRequest(text="malformed blob id") from None
        md5 = hashlib.md5()
        fd, tmp_name = tempfile.mkstemp(dir=layout.blobs_dir, prefix=".upload-")
        try:
            with os.fdopen(fd, "wb") as f:

                def write(chunk: bytes) -> None:
                    f.write(chunk)
                    md5.update(chunk)

                await _receive_body(request, write)
            os.replace(tmp_name, target)
        finally:
            if os.path.exists(tmp_name):
                os.unlink(tmp_name)
        return web.Response(status=200, headers={"ETag": f'"{md5.hexdigest()}"'})

    async def get_blob(request: web.Request) -> web.StreamResponse:
        try:
            path = layout.blob_path(request.match_info["blob_id"])
        except ValueError:
            raise web.HTTPBadRequest(text="malformed blob id") from None
        if not path.is_file():
            raise web.HTTPNotFound(text="no such blob")
        return web.FileResponse(path)

    async def put_block(request: web.Request) -> web.Response:
        sha256_hex = request.match_info["sha256"].lower()
        if not is_sha256_hex(sha256_hex) or not context.verify(f"block:{sha256_hex}", request.query.get("sig", "")):
            raise web.HTTPForbidden(text="bad block URL")
        with layout.content.pending() as pending:
            await _receive_body(request, pending.write)
            try:
                pending.commit(sha256_hex)
            except ContentMismatchError as exc:
                raise web.HTTPBadRequest(text=str(exc)) from None
        # The SDK hands this body back in VolumePutFiles2 as the block's put_response.
        return web.Response(status=200, body=sha256_hex.encode())

    async def get_volume_range(request: web.Request) -> web.Response:
        volume_id = request.match_info["volume_id"]
        query = request.query
        try:
            path, start, length = query["path"], int(query["start"]), int(query["len"])
        except (KeyError, ValueError):
            raise web.HTTPBadRequest(text="path, start and len are required") from None
        if not context.verify(f"read:{volume_id}:{path}:{start}:{length}", query.get("sig", "")):
            raise web.HTTPForbidden(text="bad volume URL")

        def read_and_hash() -> tuple[bytes, str]:
            data = layout.volume_tree(volume_id).read_range(path, start, length)
            return data, base64.b64encode(hashlib.sha256(data).digest()).decode()

        try:
            data, digest = await asyncio.to_thread(read_and_hash)
        except (ValueError, VolumePathError) as exc:
            raise web.HTTPNotFound(text=str(exc)) from None
        return web.Response(status=200, body=data, headers={"Repr-Digest": f"sha-256=:{digest}:"})

    return [
        web.put("/blobs/{blob_id}", put_blob),
        web.get("/blobs/{blob_id}", get_blob),
        web.put("/blocks/{sha256}", put_block),
        web.get("/volumes/{volume_id}", get_volume_range),
    ]


async def start_http_server(
    state: EmulatorState, host: str = "127.0.0.1", port: int = 0
) -> Callable[[], Awaitable[None]]:
    """Serve blob and volume-block HTTP on ``host`` (loopback); sets ``state.http_base_url``.

    Called once at startup, before RPCs are served: it also drops partial writes of an earlier run.

    Returns a coroutine function that stops the server.
    """
    await asyncio.to_thread(storage(state).layout.clear_partial_writes)
    app = web.Application()
    app.add_routes(_routes(state))
    runner = web.AppRunner(app, access_log=None)
    await runner.setup()
    site = web.TCPSite(runner, host, port)
    await site.start()
    bound_port = runner.addresses[0][1]
    state.http_base_url = f"http://{host}:{bound_port}"
    # Not logged here: serve() reports this URL after MODAL_SERVER_URL, the one users need.

    async def stop() -> None:
        await runner.cleanup()

    return stop
