"""Volumes: named (or ephemeral) directory trees that the SDK fills, lists and reads, and sandboxes mount.

Storage. Each volume is a plain directory on the host, ``<state_dir>/data/volumes/<volume id>/``
(see :mod:`modal_emulator.storage.layout`), and its metadata a row of the ``volumes`` table. Both
survive emulator restarts. To mount a volume into a sandbox, the sandbox code passes
``volume_bind(state, volume_mount)`` — ``(host dir, container path, read_only)`` — to the runtime's
``ContainerSpec.volumes``; :func:`volume_host_path` gives the bare directory of a volume id.

Commit and reload. Modal gives each container its own view of a volume: writes inside a sandbox
become visible elsewhere after ``vol.commit()``, and a container sees others' changes after
``vol.reload()`` / ``sb.reload_volumes()``. The emulator bind-mounts the one directory into every
sandbox, so every write is visible everywhere at once; ``VolumeCommit``, ``VolumeReload`` (and the
router's reload) only check that the volume exists and succeed. Code that forgets to commit
therefore works against the emulator and not against Modal: the emulator does not catch that.

Protocols. Both VolumeFS versions end up in the same directory tree; they differ on the wire:

- v1 (``version`` unset or 1): uploads are ``MountPutFile`` (content store, see :mod:`.mounts`) then
  ``VolumePutFiles``; ``VolumeListFiles``, ``VolumeRemoveFile``, ``VolumeCopyFiles``.
- v2: ``VolumePutFiles2`` lists each file's 8 MiB blocks by SHA-256; the answer names the missing
  blocks with PUT URLs (:mod:`.blobs`), the SDK uploads them and repeats the call, which then writes
  the files. ``VolumeListFiles2``, ``VolumeRemoveFile2``, ``VolumeCopyFiles2``.
- Both read with ``VolumeGetFile2``: one signed GET URL per 8 MiB block of the range.

Paths are relative to the volume root; listings name entries without a leading slash, as Modal does.
Ephemeral volumes (``Volume.ephemeral()``) are deleted once no heartbeat came for
:data:`EPHEMERAL_TTL_SECONDS` (the SDK beats every 300 s while the ``with`` block runs).
"""

from __future__ import annotations

import asyncio
import pathlib
import shutil
import time
from typing import Any

from google.protobuf.empty_pb2 import Empty
from grpclib import Status
from modal_proto import api_pb2

from modal_emulator.server.blobs import BLOCK_SIZE, block_put_url, block_ranges, storage, volume_range_url
from modal_emulator.server.core import EmulatorState
from modal_emulator.storage.volume_tree import (
    InvalidVolumePath,
    VolumeFileExists,
    VolumeFileNotFound,
    VolumeIsADirectory,
    VolumeNotADirectory,
    VolumePathError,
    VolumeTree,
    split_volume_path,
)

EPHEMERAL_TTL_SECONDS = 900
_LIST_BATCH = 100
_INLINE_READ_LIMIT = 2 * 1024 * 1024
_V1 = api_pb2.VOLUME_FS_VERSION_V1
_V2 = api_pb2.VOLUME_FS_VERSION_V2


def _environment(name: str) -> str:
    return name or "main"


def volume_host_path(state: EmulatorState, volume_id: str) -> pathlib.Path:
    """The host directory holding a volume's files (bind-mount it into a sandbox). KeyError if unknown."""
    if state.table("volumes").get(volume_id) is None:
        raise KeyError(f"volume {volume_id} not found")
    return storage(state).layout.create_volume_dir(volume_id)


def volume_bind(state: EmulatorState, mount: api_pb2.VolumeMount) -> tuple[pathlib.Path, str, bool]:
    """``(host dir, container path, read_only)`` for a ``VolumeMount`` of a sandbox definition.

    Honours ``sub_path`` (a directory inside the volume, created if missing). KeyError if the
    volume is unknown, ValueError for a bad ``sub_path``.
    """
    host = volume_host_path(state, mount.volume_id)
    if mount.HasField("sub_path") and mount.sub_path.strip("/"):
        try:
            parts = split_volume_path(mount.sub_path)
        except InvalidVolumePath as exc:
            raise ValueError(str(exc)) from None
        for depth in range(1, len(parts) + 1):
            # Every component must be a real directory (or absent): a symlink written by a sandbox into
            # the volume would otherwise make the bind mount point anywhere on the host.
            step = host.joinpath(*parts[:depth])
            if step.is_symlink() or (step.exists() and not step.is_dir()):
                raise ValueError(f"sub_path {mount.sub_path!r} is not a directory in the volume")
        host = host.joinpath(*parts)
        host.mkdir(parents=True, exist_ok=True)
    return host, mount.mount_path, mount.read_only


def _metadata(row: dict[str, Any]) -> api_pb2.VolumeMetadata:
    return api_pb2.VolumeMetadata(
        version=row["version"],
        name=row.get("name") or "",
        creation_info=api_pb2.CreationInfo(created_at=row["created_at"], created_by="emulator"),
    )


def _status_for(exc: VolumePathError, *, writing: bool = False) -> Status:
    if isinstance(exc, VolumeFileNotFound):
        return Status.NOT_FOUND
    if isinstance(exc, VolumeFileExists) or (writing and isinstance(exc, VolumeIsADirectory)):
        return Status.ALREADY_EXISTS
    if isinstance(exc, (VolumeIsADirectory, VolumeNotADirectory)):
        return Status.FAILED_PRECONDITION
    return Status.INVALID_ARGUMENT


def _write_from_blocks(tmp: pathlib.Path, block_files: list[pathlib.Path], size: int) -> None:
    """Assemble a v2 file: block i at offset i * BLOCK_SIZE; stripped trailing zeros come back by truncate."""
    with open(tmp, "r+b") as out:
        for index, block in enumerate(block_files):
            out.seek(index * BLOCK_SIZE)
            with open(block, "rb") as src:
                shutil.copyfileobj(src, out, 1024 * 1024)
        out.truncate(size)


class VolumeRpcs:
    """The ``Volume*`` RPCs, v1 and v2."""

    state: EmulatorState

    # --- helpers ----------------------------------------------------------------------------

    def _vol_volumes(self):
        return self.state.table("volumes")

    def _vol_row(self, volume_id: str) -> dict[str, Any]:
        row = self._vol_volumes().get(volume_id)
        if row is None:
            self.state.abort(Status.NOT_FOUND, f"Volume {volume_id} not found")
        return row

    def _vol_tree(self, volume_id: str) -> VolumeTree:
        self._vol_row(volume_id)
        layout = storage(self.state).layout
        layout.create_volume_dir(volume_id)
        return layout.volume_tree(volume_id)

    def _vol_find_named(self, environment: str, name: str) -> dict[str, Any] | None:
        for row in self._vol_volumes().values():
            if row.get("name") == name and row["environment"] == environment:
                return row
        return None

    def _vol_create(self, *, name: str, environment: str, version: int, ephemeral: bool) -> dict[str, Any]:
        volume_id = self.state.new_id("vo")
        now = time.time()
        row = {
            "volume_id": volume_id,
            "name": name,
            "environment": environment,
            "version": version if version in (_V1, _V2) else _V1,
            "created_at": now,
            "ephemeral": ephemeral,
            "heartbeat_at": now,
        }
        storage(self.state).layout.create_volume_dir(volume_id)
        self._vol_volumes().put(volume_id, row)
        return row

    async def _vol_delete(self, volume_id: str) -> None:
        self._vol_volumes().delete(volume_id)
        directory = storage(self.state).layout.volume_dir(volume_id)
        await asyncio.to_thread(shutil.rmtree, directory, True)

    async def _vol_expire_ephemeral(self) -> None:
        deadline = time.time() - EPHEMERAL_TTL_SECONDS
        for row in self._vol_volumes().values():
            if row.get("ephemeral") and row.get("heartbeat_at", 0) < deadline:
                await self._vol_delete(row["volume_id"])

    async def _vol_run_tree_op(self, volume_id: str, fn, *args, writing: bool = False):
        """Run a blocking tree operation in a thread, mapping path errors to gRPC statuses."""
        try:
            return await asyncio.to_thread(fn, *args)
        except VolumePathError as exc:
            self.state.abort(_status_for(exc, writing=writing), str(exc))

    # --- lifecycle --------------------------------------------------------------------------

    async def VolumeGetOrCreate(self, stream) -> None:
        request: api_pb2.VolumeGetOrCreateRequest = await stream.recv_message()
        await self._vol_expire_ephemeral()
        environment = _environment(request.environment_name)
        creation = request.object_creation_type
        if creation == api_pb2.OBJECT_CREATION_TYPE_EPHEMERAL:
            row = self._vol_create(name="", environment=environment, version=request.version, ephemeral=True)
        elif creation == api_pb2.OBJECT_CREATION_TYPE_ANONYMOUS_OWNED_BY_APP:
            row = self._vol_create(name="", environment=environment, version=request.version, ephemeral=False)
        else:
            name = request.deployment_name
            if not name:
                self.state.abort(Status.INVALID_ARGUMENT, "a volume name is required")
            row = self._vol_find_named(environment, name)
            if row is not None and creation == api_pb2.OBJECT_CREATION_TYPE_CREATE_FAIL_IF_EXISTS:
                self.state.abort(Status.ALREADY_EXISTS, f"Volume '{name}' already exists")
            if row is not None and creation == api_pb2.OBJECT_CREATION_TYPE_CREATE_OVERWRITE_IF_EXISTS:
                await self._vol_delete(row["volume_id"])
                row = None
            if row is None:
                if creation == api_pb2.OBJECT_CREATION_TYPE_UNSPECIFIED:
                    self.state.abort(Status.NOT_FOUND, f"Volume '{name}' not found in environment '{environment}'")
                row = self._vol_create(name=name, environment=environment, version=request.version, ephemeral=False)
        await stream.send_message(
            api_pb2.VolumeGetOrCreateResponse(
                volume_id=row["volume_id"], version=row["version"], metadata=_metadata(row)
            )
        )

    async def VolumeGetById(self, stream) -> None:
        request: api_pb2.VolumeGetByIdRequest = await stream.recv_message()
        row = self._vol_row(request.volume_id)
        await stream.send_message(api_pb2.VolumeGetByIdResponse(volume_id=row["volume_id"], metadata=_metadata(row)))

    async def VolumeList(self, stream) -> None:
        request: api_pb2.VolumeListRequest = await stream.recv_message()
        await self._vol_expire_ephemeral()
        environment = _environment(request.environment_name)
        created_before = request.pagination.created_before
        rows = [
            row
            for row in self._vol_volumes().values()
            if row.get("name")
            and row["environment"] == environment
            and (not created_before or row["created_at"] < created_before)
        ]
        rows.sort(key=lambda r: r["created_at"], reverse=True)
        if request.pagination.max_objects > 0:
            rows = rows[: request.pagination.max_objects]
        items = [
            api_pb2.VolumeListItem(
                label=row["name"], volume_id=row["volume_id"], created_at=row["created_at"], metadata=_metadata(row)
            )
            for row in rows
        ]
        await stream.send_message(api_pb2.VolumeListResponse(items=items, environment_name=environment))

    async def VolumeDelete(self, stream) -> None:
        request: api_pb2.VolumeDeleteRequest = await stream.recv_message()
        self._vol_row(request.volume_id)
        async with storage(self.state).lock(request.volume_id):
            await self._vol_delete(request.volume_id)
        await stream.send_message(Empty())

    async def VolumeRename(self, stream) -> None:
        request: api_pb2.VolumeRenameRequest = await stream.recv_message()
        row = self._vol_row(request.volume_id)
        if not request.name:
            self.state.abort(Status.INVALID_ARGUMENT, "a volume name is required")
        other = self._vol_find_named(row["environment"], request.name)
        if other is not None and other["volume_id"] != row["volume_id"]:
            self.state.abort(Status.ALREADY_EXISTS, f"Volume '{request.name}' already exists")
        self._vol_volumes().put(row["volume_id"], {**row, "name": request.name})
        await stream.send_message(Empty())

    async def VolumeHeartbeat(self, stream) -> None:
        request: api_pb2.VolumeHeartbeatRequest = await stream.recv_message()
        row = self._vol_row(request.volume_id)
        self._vol_volumes().put(row["volume_id"], {**row, "heartbeat_at": time.time()})
        await stream.send_message(Empty())

    async def VolumeCommit(self, stream) -> None:
        request: api_pb2.VolumeCommitRequest = await stream.recv_message()
        self._vol_row(request.volume_id)  # writes are already visible everywhere (see module docstring)
        await stream.send_message(api_pb2.VolumeCommitResponse(skip_reload=False))

    async def VolumeReload(self, stream) -> None:
        request: api_pb2.VolumeReloadRequest = await stream.recv_message()
        self._vol_row(request.volume_id)
        await stream.send_message(Empty())

    # --- uploads ----------------------------------------------------------------------------

    async def VolumePutFiles(self, stream) -> None:
        request: api_pb2.VolumePutFilesRequest = await stream.recv_message()
        tree = self._vol_tree(request.volume_id)
        content = storage(self.state).layout.content
        overwrite = not request.disallow_overwrite_existing_files
        for f in request.files:
            if not content.has(f.sha256_hex):
                self.state.abort(Status.FAILED_PRECONDITION, f"content of {f.filename} was never uploaded")

        def write_all() -> None:
            for f in request.files:  # check every file first: a refused batch writes nothing
                tree.check_can_write(f.filename, overwrite)
            for f in request.files:
                source = content.path(f.sha256_hex)
                mode = f.mode if f.HasField("mode") else None
                tree.write_file(f.filename, lambda tmp, src=source: shutil.copyfile(src, tmp), mode, overwrite)

        async with storage(self.state).lock(request.volume_id):
            await self._vol_run_tree_op(request.volume_id, write_all, writing=True)
        await stream.send_message(Empty())

    async def VolumePutFiles2(self, stream) -> None:
        request: api_pb2.VolumePutFiles2Request = await stream.recv_message()
        tree = self._vol_tree(request.volume_id)
        content = storage(self.state).layout.content
        overwrite = not request.disallow_overwrite_existing_files
        missing: list[api_pb2.VolumePutFiles2Response.MissingBlock] = []
        for file_index, f in enumerate(request.files):
            if len(f.blocks) != -(-f.size // BLOCK_SIZE):
                self.state.abort(
                    Status.INVALID_ARGUMENT, f"{f.path}: {len(f.blocks)} blocks do not cover {f.size} bytes"
                )
            for block_index, block in enumerate(f.blocks):
                sha256_hex = block.contents_sha256.hex()
                if not content.has(sha256_hex):
                    missing.append(
                        api_pb2.VolumePutFiles2Response.MissingBlock(
                            file_index=file_index,
                            block_index=block_index,
                            put_url=block_put_url(self.state, sha256_hex),
                        )
                    )

        def check_all() -> None:
            for f in request.files:
                tree.check_can_write(f.path, overwrite)

        def write_all() -> None:
            check_all()
            for f in request.files:
                blocks = [content.path(b.contents_sha256.hex()) for b in f.blocks]
                mode = f.mode if f.HasField("mode") else None
                tree.write_file(
                    f.path, lambda tmp, bl=blocks, size=f.size: _write_from_blocks(tmp, bl, size), mode, overwrite
                )

        async with storage(self.state).lock(request.volume_id):
            if missing:
                await self._vol_run_tree_op(request.volume_id, check_all, writing=True)
            else:
                await self._vol_run_tree_op(request.volume_id, write_all, writing=True)
        await stream.send_message(api_pb2.VolumePutFiles2Response(missing_blocks=missing))

    # --- listing, reading -------------------------------------------------------------------

    async def _vol_list(self, stream, response_type) -> None:
        request = await stream.recv_message()
        tree = self._vol_tree(request.volume_id)
        max_entries = request.max_entries if request.HasField("max_entries") else None
        entries = await self._vol_run_tree_op(
            request.volume_id, lambda: list(tree.list(request.path, request.recursive, max_entries))
        )
        for start in range(0, len(entries), _LIST_BATCH):
            batch = [
                api_pb2.FileEntry(path=e.path, type=int(e.type), mtime=e.mtime, size=e.size)
                for e in entries[start : start + _LIST_BATCH]
            ]
            await stream.send_message(response_type(entries=batch))

    async def VolumeListFiles(self, stream) -> None:
        await self._vol_list(stream, api_pb2.VolumeListFilesResponse)

    async def VolumeListFiles2(self, stream) -> None:
        await self._vol_list(stream, api_pb2.VolumeListFiles2Response)

    def _vol_read_range(self, size: int, start: int, length: int) -> tuple[int, int]:
        if start > size:
            self.state.abort(Status.OUT_OF_RANGE, f"start {start} is past the end of the file ({size} bytes)")
        available = size - start
        return start, available if length == 0 else min(length, available)

    async def VolumeGetFile2(self, stream) -> None:
        request: api_pb2.VolumeGetFile2Request = await stream.recv_message()
        tree = self._vol_tree(request.volume_id)
        size = await self._vol_run_tree_op(request.volume_id, tree.file_size, request.path)
        start, length = self._vol_read_range(size, request.start, request.len)
        urls = [
            volume_range_url(self.state, request.volume_id, request.path, block_start, block_len)
            for block_start, block_len in block_ranges(start, length)
        ]
        await stream.send_message(api_pb2.VolumeGetFile2Response(get_urls=urls, size=size, start=start, len=length))

    async def VolumeGetFile(self, stream) -> None:
        request: api_pb2.VolumeGetFileRequest = await stream.recv_message()
        tree = self._vol_tree(request.volume_id)
        size = await self._vol_run_tree_op(request.volume_id, tree.file_size, request.path)
        start, length = self._vol_read_range(size, request.start, request.len)
        data = await self._vol_run_tree_op(request.volume_id, tree.read_range, request.path, start, length)
        response = api_pb2.VolumeGetFileResponse(size=size, start=start, len=len(data))
        if len(data) <= _INLINE_READ_LIMIT:
            response.data = data
        else:
            blob_id = self.state.new_id("bl")
            blob_path = storage(self.state).layout.blob_path(blob_id)
            await asyncio.to_thread(blob_path.write_bytes, data)
            response.data_blob_id = blob_id
        await stream.send_message(response)

    # --- removing, copying ------------------------------------------------------------------

    async def _vol_remove(self, stream) -> None:
        request = await stream.recv_message()
        tree = self._vol_tree(request.volume_id)
        async with storage(self.state).lock(request.volume_id):
            await self._vol_run_tree_op(request.volume_id, tree.remove, request.path, request.recursive)
        await stream.send_message(Empty())

    async def VolumeRemoveFile(self, stream) -> None:
        await self._vol_remove(stream)

    async def VolumeRemoveFile2(self, stream) -> None:
        await self._vol_remove(stream)

    async def _vol_copy(self, stream) -> None:
        request = await stream.recv_message()
        tree = self._vol_tree(request.volume_id)
        async with storage(self.state).lock(request.volume_id):
            await self._vol_run_tree_op(
                request.volume_id, tree.copy, list(request.src_paths), request.dst_path, request.recursive, writing=True
            )
        await stream.send_message(Empty())

    async def VolumeCopyFiles(self, stream) -> None:
        await self._vol_copy(stream)

    async def VolumeCopyFiles2(self, stream) -> None:
        await self._vol_copy(stream)


__all__ = ["VolumeRpcs", "volume_bind", "volume_host_path", "EPHEMERAL_TTL_SECONDS"]
