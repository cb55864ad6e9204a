"""The volume RPCs and the HTTP side server in-process, for what the SDK never sends on its own."""

from __future__ import annotations

import asyncio
import hashlib
import pathlib
from typing import Any

import aiohttp
import pytest
from grpclib import GRPCError, Status
from modal_proto import api_pb2

from modal_emulator.server import volumes
from modal_emulator.server.blobs import BlobRpcs, start_http_server, storage
from modal_emulator.server.core import EmulatorState
from modal_emulator.server.mounts import MountRpcs
from modal_emulator.server.volumes import VolumeRpcs, volume_bind


class FakeStream:
    """Enough of grpclib's server stream for unary and server-streaming handlers."""

    def __init__(self, request: Any) -> None:
        self.request = request
        self.sent: list[Any] = []

    async def recv_message(self) -> Any:
        return self.request

    async def send_message(self, message: Any) -> None:
        self.sent.append(message)


class Rpcs(VolumeRpcs, MountRpcs, BlobRpcs):
    def __init__(self, state: EmulatorState) -> None:
        self.state = state

    async def call(self, name: str, request: Any) -> list[Any]:
        stream = FakeStream(request)
        await getattr(self, name)(stream)
        return stream.sent


@pytest.fixture
def state(tmp_path: pathlib.Path) -> EmulatorState:
    (tmp_path / "state").mkdir()
    return EmulatorState(tmp_path / "state")


def test_ephemeral_volumes_expire_without_heartbeats(state: EmulatorState) -> None:
    rpcs = Rpcs(state)

    async def scenario() -> None:
        [created] = await rpcs.call(
            "VolumeGetOrCreate",
            api_pb2.VolumeGetOrCreateRequest(object_creation_type=api_pb2.OBJECT_CREATION_TYPE_EPHEMERAL),
        )
        volume_id = created.volume_id
        host_dir = volumes.volume_host_path(state, volume_id)
        assert host_dir.is_dir()
        await rpcs.call("VolumeHeartbeat", api_pb2.VolumeHeartbeatRequest(volume_id=volume_id))
        await rpcs.call("VolumeList", api_pb2.VolumeListRequest())
        assert state.table("volumes").get(volume_id) is not None  # beating: kept

        row = state.table("volumes").get(volume_id)
        state.table("volumes").put(
            volume_id, {**row, "heartbeat_at": row["heartbeat_at"] - 2 * volumes.EPHEMERAL_TTL_SECONDS}
        )
        await rpcs.call("VolumeList", api_pb2.VolumeListRequest())
        assert state.table("volumes").get(volume_id) is None
        assert not host_dir.exists()
        with pytest.raises(KeyError):
            volumes.volume_host_path(state, volume_id)

    asyncio.run(scenario())


def test_requests_cannot_leave_the_volume(state: EmulatorState) -> None:
    rpcs = Rpcs(state)
    (state.state_dir / "secret.txt").write_text("not in any volume")

    async def scenario() -> None:
        [created] = await rpcs.call(
            "VolumeGetOrCreate",
            api_pb2.VolumeGetOrCreateRequest(
                deployment_name="v", object_creation_type=api_pb2.OBJECT_CREATION_TYPE_CREATE_IF_MISSING
            ),
        )
        state.http_base_url = "http://127.0.0.1:9"  # URLs are only built here, never fetched
        for path in ("../../secret.txt", "/../secret.txt"):
            with pytest.raises(GRPCError) as info:
                await rpcs.call("VolumeGetFile2", api_pb2.VolumeGetFile2Request(volume_id=created.volume_id, path=path))
            assert info.value.status == Status.INVALID_ARGUMENT
        with pytest.raises(GRPCError) as info:
            await rpcs.call("VolumeGetFile2", api_pb2.VolumeGetFile2Request(volume_id="vo-unknown", path="x"))
        assert info.value.status == Status.NOT_FOUND
        mount = api_pb2.VolumeMount(volume_id=created.volume_id, mount_path="/m", sub_path="/../..")
        with pytest.raises(ValueError):
            volume_bind(state, mount)

    asyncio.run(scenario())


def test_put_files2_rejects_blocks_that_do_not_cover_the_size(state: EmulatorState) -> None:
    rpcs = Rpcs(state)

    async def scenario() -> None:
        [created] = await rpcs.call(
            "VolumeGetOrCreate",
            api_pb2.VolumeGetOrCreateRequest(
                deployment_name="v2",
                object_creation_type=api_pb2.OBJECT_CREATION_TYPE_CREATE_IF_MISSING,
                version=api_pb2.VOLUME_FS_VERSION_V2,
            ),
        )
        state.http_base_url = "http://127.0.0.1:9"
        block = api_pb2.VolumePutFiles2Request.Block(contents_sha256=hashlib.sha256(b"x").digest())
        bad = api_pb2.VolumePutFiles2Request.File(path="f", size=20 * 1024 * 1024, blocks=[block])
        with pytest.raises(GRPCError) as info:
            await rpcs.call("VolumePutFiles2", api_pb2.VolumePutFiles2Request(volume_id=created.volume_id, files=[bad]))
        assert info.value.status == Status.INVALID_ARGUMENT
        ok = api_pb2.VolumePutFiles2Request.File(path="f", size=1, blocks=[block])
        [response] = await rpcs.call(
            "VolumePutFiles2", api_pb2.VolumePutFiles2Request(volume_id=created.volume_id, files=[ok])
        )
        assert len(response.missing_blocks) == 1 and "/blocks/" in response.missing_blocks[0].put_url

    asyncio.run(scenario())


def test_http_side_server(state: EmulatorState) -> None:
    rpcs = Rpcs(state)

    async def scenario() -> None:
        stop = await start_http_server(state)
        try:
            async with aiohttp.ClientSession() as session:
                [blob] = await rpcs.call("BlobCreate", api_pb2.BlobCreateRequest(content_length=5))
                assert blob.blob_ids == [blob.blob_id] and len(blob.upload_urls.items) == 1
                async with session.put(blob.upload_urls.items[0], data=b"hello") as response:
                    assert response.status == 200
                    assert response.headers["ETag"] == f'"{hashlib.md5(b"hello").hexdigest()}"'
                [got] = await rpcs.call("BlobGet", api_pb2.BlobGetRequest(blob_id=blob.blob_id))
                async with session.get(got.download_url) as response:
                    assert await response.read() == b"hello"

                # A v2 block: the body must hash to the name in the (signed) URL.
                [created] = await rpcs.call(
                    "VolumeGetOrCreate",
                    api_pb2.VolumeGetOrCreateRequest(
                        deployment_name="h",
                        object_creation_type=api_pb2.OBJECT_CREATION_TYPE_CREATE_IF_MISSING,
                        version=api_pb2.VOLUME_FS_VERSION_V2,
                    ),
                )
                data = b"block content"
                block = api_pb2.VolumePutFiles2Request.Block(contents_sha256=hashlib.sha256(data).digest())
                file = api_pb2.VolumePutFiles2Request.File(path="dir/f.bin", size=len(data) + 100, blocks=[block])
                request = api_pb2.VolumePutFiles2Request(volume_id=created.volume_id, files=[file])
                [missing] = await rpcs.call("VolumePutFiles2", request)
                put_url = missing.missing_blocks[0].put_url
                async with session.put(put_url, data=b"other content") as response:
                    assert response.status == 400
                async with session.put(put_url.replace("sig=", "sig=0"), data=data) as response:
                    assert response.status == 403
                async with session.put(put_url, data=data) as response:
                    assert response.status == 200
                [done] = await rpcs.call("VolumePutFiles2", request)
                assert not done.missing_blocks

                [read] = await rpcs.call(
                    "VolumeGetFile2", api_pb2.VolumeGetFile2Request(volume_id=created.volume_id, path="dir/f.bin")
                )
                assert (read.size, read.start, read.len) == (len(data) + 100, 0, len(data) + 100)
                async with session.get(read.get_urls[0]) as response:
                    assert await response.read() == data + bytes(100)  # trailing zeros restored by size
                async with session.get(read.get_urls[0].replace("path=dir", "path=..%2Fdir")) as response:
                    assert response.status == 403  # the signature covers the path
        finally:
            await stop()
        assert storage(state).layout.content.has(hashlib.sha256(data).hexdigest())

    asyncio.run(scenario())


def test_legacy_get_file_inline_and_by_blob(state: EmulatorState) -> None:
    rpcs = Rpcs(state)
    small, large = b"small content", bytes(range(256)) * 12 * 1024  # 3 MiB: over the inline limit

    async def scenario() -> None:
        [created] = await rpcs.call(
            "VolumeGetOrCreate",
            api_pb2.VolumeGetOrCreateRequest(
                deployment_name="legacy", object_creation_type=api_pb2.OBJECT_CREATION_TYPE_CREATE_IF_MISSING
            ),
        )
        files = []
        for name, data in (("small", small), ("large", large)):
            digest = hashlib.sha256(data).hexdigest()
            [put] = await rpcs.call("MountPutFile", api_pb2.MountPutFileRequest(sha256_hex=digest, data=data))
            assert put.exists
            files.append(api_pb2.MountFile(filename=f"/{name}", sha256_hex=digest, mode=0o600))
        await rpcs.call("VolumePutFiles", api_pb2.VolumePutFilesRequest(volume_id=created.volume_id, files=files))

        [got] = await rpcs.call(
            "VolumeGetFile", api_pb2.VolumeGetFileRequest(volume_id=created.volume_id, path="small")
        )
        assert got.data == small and got.size == len(small)
        [got] = await rpcs.call(
            "VolumeGetFile", api_pb2.VolumeGetFileRequest(volume_id=created.volume_id, path="large", start=1, len=10)
        )
        assert got.data == large[1:11] and (got.start, got.len) == (1, 10)
        [got] = await rpcs.call(
            "VolumeGetFile", api_pb2.VolumeGetFileRequest(volume_id=created.volume_id, path="large")
        )
        assert got.WhichOneof("data_oneof") == "data_blob_id"
        assert storage(state).layout.blob_path(got.data_blob_id).read_bytes() == large

    asyncio.run(scenario())
