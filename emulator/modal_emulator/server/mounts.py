"""Mounts: immutable sets of files uploaded by the SDK (local dirs, Dockerfile contexts, volumes' uploads).

How the SDK builds one: for each file it asks ``MountPutFile{sha256_hex}`` (or
``MountBatchedCheckExistence``) whether the content is known, sends what is missing with
``MountPutFile{data}`` (under 4 MiB) or ``MountPutFile{data_blob_id}`` (after a blob upload, see
:mod:`.blobs`), then ``MountGetOrCreate{files: [MountFile(filename, sha256_hex, mode)]}``. Content
goes to the content store; a mount is only a manifest of (absolute path, sha256, mode). Mount ids are
derived from the manifest's checksum, so the same files always give the same mount id (image layers
built from a mount can be cached by it).

``MountGetOrCreate`` by name in the global namespace is how ``Image.from_registry(add_python=...)``
finds its ``python-build-standalone.<release>.<version>-<libc>`` mount, whose ``/python/.`` is
copied to ``/usr/local``. That distribution cannot be fetched offline, so the emulator answers with
a small placeholder mount, and the image builder replaces the copy itself: the image moves onto the
python base, whose Debian python3 stands in for the version asked for (see :mod:`.image_builder`).

:func:`materialize_mount` gives the image builder a mount's files for ``COPY``.
"""

from __future__ import annotations

import asyncio
import hashlib
import json
import pathlib
import re
import string
import time

from google.protobuf.timestamp_pb2 import Timestamp
from grpclib import Status
from modal_proto import api_pb2

from modal_emulator.server.blobs import storage
from modal_emulator.server.core import EmulatorState, atomic_write_bytes
from modal_emulator.storage.content_store import ContentMismatchError, is_sha256_hex

_BASE62 = string.digits + string.ascii_letters
PYTHON_STANDALONE_PREFIX = "python-build-standalone."
_STANDALONE_NAME = re.compile(r"^python-build-standalone\.(\d+)\.(\d+)\.(\d+)\.\d+t?-(\w+)$")
_FIRST_RELEASE_WITH_PYTHON = "20241008"  # python-build-standalone releases from then on ship bin/python
_HOST_PYTHON_WRAPPER = b"""#!/bin/sh
# python-build-standalone cannot be downloaded offline: the emulator runs the host's python3 instead.
exec /usr/bin/python3 "$@"
"""

ManifestEntry = tuple[str, str, int | None]  # (absolute path in the mount, sha256 hex, mode or None)


def _now() -> Timestamp:
    ts = Timestamp()
    ts.FromNanoseconds(time.time_ns())
    return ts


def _normalize_mount_path(filename: str) -> str:
    parts = [p for p in filename.split("/") if p not in ("", ".")]
    if not parts or ".." in parts:
        raise ValueError(f"invalid file name in mount: {filename!r}")
    return "/" + "/".join(parts)


def manifest_checksum(entries: list[ManifestEntry]) -> str:
    digest = hashlib.sha256()
    for path, sha256_hex, mode in sorted(entries, key=lambda e: e[0]):
        digest.update(f"{path}\0{sha256_hex}\0{mode if mode is not None else ''}\n".encode())
    return digest.hexdigest()


def _mount_id_for(checksum: str) -> str:
    number = int(checksum, 16)
    chars = []
    for _ in range(22):
        number, digit = divmod(number, 62)
        chars.append(_BASE62[digit])
    return "mo-" + "".join(chars)


def _name_key(namespace: int, environment: str, name: str) -> str:
    if namespace == api_pb2.DEPLOYMENT_NAMESPACE_GLOBAL:
        return f"global/{name}"
    return f"workspace/{environment or 'main'}/{name}"


def save_mount(state: EmulatorState, entries: list[ManifestEntry]) -> tuple[str, str]:
    """Persist a manifest (paths normalised, later duplicates win); returns (mount_id, checksum)."""
    by_path: dict[str, ManifestEntry] = {}
    for path, sha256_hex, mode in entries:
        normalized = _normalize_mount_path(path)
        by_path[normalized] = (normalized, sha256_hex.lower(), mode)
    final = sorted(by_path.values())
    checksum = manifest_checksum(final)
    mount_id = _mount_id_for(checksum)
    manifest_path = storage(state).layout.mount_manifest_path(mount_id)
    if not manifest_path.exists():
        body = {"mount_id": mount_id, "checksum": checksum, "files": [list(e) for e in final]}
        atomic_write_bytes(manifest_path, json.dumps(body).encode())
    return mount_id, checksum


def load_manifest(state: EmulatorState, mount_id: str) -> tuple[list[ManifestEntry], str] | None:
    try:
        path = storage(state).layout.mount_manifest_path(mount_id)
    except ValueError:
        return None
    if not path.exists():
        return None
    body = json.loads(path.read_text())
    return [(p, s, m) for p, s, m in body["files"]], body["checksum"]


def materialize_mount(state: EmulatorState, mount_id: str) -> list[tuple[str, pathlib.Path | bytes, int | None]]:
    """A mount's files as (absolute path inside the mount, source file, mode or None).

    Paths are as the SDK named them: a Dockerfile context mount has them relative to the context
    root (``/src/app.py`` for ``COPY src /app``), ``add_local_dir(..., remote_path="/x")`` has
    ``/x/...``. Source files are read-only files in the content store: copy them, never modify them.
    Raises ``KeyError`` for an unknown mount.
    """
    loaded = load_manifest(state, mount_id)
    if loaded is None:
        raise KeyError(f"mount {mount_id} not found")
    content = storage(state).layout.content
    return [(path, content.path(sha256_hex), mode) for path, sha256_hex, mode in loaded[0]]


def _python_standalone_mount(state: EmulatorState, name: str) -> tuple[str, str] | None:
    match = _STANDALONE_NAME.match(name)
    if match is None:
        return None
    release, major_minor = match.group(1), f"{match.group(2)}.{match.group(3)}"
    executables = ["python3", f"python{major_minor}"]
    if release >= _FIRST_RELEASE_WITH_PYTHON:  # older ones lack it: the SDK adds `ln -s python3 python`
        executables.append("python")
    sha256_hex = storage(state).layout.content.add_bytes(_HOST_PYTHON_WRAPPER)
    entries: list[ManifestEntry] = [(f"/python/bin/{exe}", sha256_hex, 0o755) for exe in executables]
    return save_mount(state, entries)


class MountRpcs:
    """``MountPutFile``, ``MountBatchedCheckExistence``, ``MountGetOrCreate``."""

    state: EmulatorState

    async def MountPutFile(self, stream) -> None:
        request: api_pb2.MountPutFileRequest = await stream.recv_message()
        sha256_hex = request.sha256_hex.lower()
        if not is_sha256_hex(sha256_hex):
            self.state.abort(Status.INVALID_ARGUMENT, f"malformed sha256_hex {request.sha256_hex!r}")
        layout = storage(self.state).layout
        kind = request.WhichOneof("data_oneof")
        try:
            if kind == "data":
                await asyncio.to_thread(layout.content.add_bytes, request.data, sha256_hex)
            elif kind == "data_blob_id":
                try:
                    blob = layout.blob_path(request.data_blob_id)
                except ValueError:
                    self.state.abort(Status.INVALID_ARGUMENT, f"malformed blob id {request.data_blob_id!r}")
                if blob.is_file():
                    await asyncio.to_thread(layout.content.add_file, blob, sha256_hex)
                    blob.unlink(missing_ok=True)  # its bytes now live in the content store
                elif not layout.content.has(sha256_hex):  # (a retried call finds the blob consumed)
                    self.state.abort(Status.NOT_FOUND, f"blob {request.data_blob_id} was not uploaded")
        except ContentMismatchError as exc:
            self.state.abort(Status.INVALID_ARGUMENT, str(exc))
        exists = layout.content.has(sha256_hex)
        await stream.send_message(api_pb2.MountPutFileResponse(exists=exists, checked_at=_now()))

    async def MountBatchedCheckExistence(self, stream) -> None:
        request: api_pb2.MountBatchedCheckExistenceRequest = await stream.recv_message()
        content = storage(self.state).layout.content
        missing = [h for h in request.sha256_hex_hashes if not content.has(h.lower())]
        await stream.send_message(
            api_pb2.MountBatchedCheckExistenceResponse(missing_sha256_hex_hashes=missing, checked_at=_now())
        )

    async def MountGetOrCreate(self, stream) -> None:
        request: api_pb2.MountGetOrCreateRequest = await stream.recv_message()
        names = self.state.table("mount_names")
        name = request.deployment_name
        key = _name_key(request.namespace, request.environment_name, name) if name else ""
        creates = request.object_creation_type != api_pb2.OBJECT_CREATION_TYPE_UNSPECIFIED or bool(request.files)

        if not creates:
            if not name:
                self.state.abort(Status.INVALID_ARGUMENT, "MountGetOrCreate needs a name or files")
            row = names.get(key)
            if row is None and request.namespace == api_pb2.DEPLOYMENT_NAMESPACE_GLOBAL:
                made = await asyncio.to_thread(_python_standalone_mount, self.state, name)
                if made is not None:
                    row = {"mount_id": made[0], "checksum": made[1], "created_at": time.time()}
                    names.put(key, row)
            if row is None:
                self.state.abort(Status.NOT_FOUND, f"Mount '{name}' not found")
            await self._mount_respond(stream, row["mount_id"], row["checksum"])
            return

        if (
            name
            and key in names
            and (request.object_creation_type == api_pb2.OBJECT_CREATION_TYPE_CREATE_FAIL_IF_EXISTS)
        ):
            self.state.abort(Status.ALREADY_EXISTS, f"Mount '{name}' already exists")
        content = storage(self.state).layout.content
        entries: list[ManifestEntry] = []
        for f in request.files:
            if not content.has(f.sha256_hex):
                self.state.abort(
                    Status.FAILED_PRECONDITION, f"content of {f.filename} ({f.sha256_hex}) was never uploaded"
                )
            entries.append((f.filename, f.sha256_hex, f.mode if f.HasField("mode") else None))
        try:
            mount_id, checksum = await asyncio.to_thread(save_mount, self.state, entries)
        except ValueError as exc:
            self.state.abort(Status.INVALID_ARGUMENT, str(exc))
        if name:
            names.put(key, {"mount_id": mount_id, "checksum": checksum, "created_at": time.time()})
        await self._mount_respond(stream, mount_id, checksum)

    @staticmethod
    async def _mount_respond(stream, mount_id: str, checksum: str) -> None:
        await stream.send_message(
            api_pb2.MountGetOrCreateResponse(
                mount_id=mount_id,
                handle_metadata=api_pb2.MountHandleMetadata(content_checksum_sha256_hex=checksum),
            )
        )
