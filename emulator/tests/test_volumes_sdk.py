"""Volumes through the real modal SDK against an emulator subprocess (no sandboxes needed)."""

from __future__ import annotations

import hashlib
import io
import os
import pathlib
import subprocess
import sys
import tempfile
from collections.abc import Iterator
from dataclasses import dataclass

import pytest

os.environ.setdefault("MODAL_CONFIG_PATH", os.path.join(tempfile.gettempdir(), "modal-emulator-tests-nonexistent.toml"))

import modal  # noqa: E402
from modal.exception import NotFoundError  # noqa: E402

EMULATOR_SRC = pathlib.Path(__file__).resolve().parents[1]

# A server with only the storage RPCs: enough for volumes, mounts and blobs, no root needed.
_STORAGE_SERVER = r"""
import asyncio, pathlib, sys
from grpclib.server import Server
from modal_proto.api_grpc import ModalClientBase
from modal_emulator.server import blobs, mounts, volumes
from modal_emulator.server.core import EmulatorState
from modal_emulator.server.unimplemented import unimplemented_rpcs

class Servicer(volumes.VolumeRpcs, mounts.MountRpcs, blobs.BlobRpcs, unimplemented_rpcs(ModalClientBase), ModalClientBase):
    def __init__(self, state):
        self.state = state

async def main():
    state = EmulatorState(pathlib.Path(sys.argv[1]))
    stop_http = await blobs.start_http_server(state)
    server = Server([Servicer(state)])
    await server.start("127.0.0.1", 0)
    port = server._server.sockets[0].getsockname()[1]
    print(f"MODAL_SERVER_URL=http://127.0.0.1:{port}", flush=True)
    try:
        await server.wait_closed()
    finally:
        await stop_http()

asyncio.run(main())
"""


@dataclass
class StorageServer:
    state_dir: pathlib.Path
    url: str = ""
    process: subprocess.Popen | None = None

    def start(self) -> None:
        env = {**os.environ, "PYTHONPATH": str(EMULATOR_SRC)}
        self.process = subprocess.Popen(
            [sys.executable, "-c", _STORAGE_SERVER, str(self.state_dir)],
            stdout=subprocess.PIPE,
            env=env,
            text=True,
        )
        assert self.process.stdout is not None
        line = self.process.stdout.readline().strip()
        if not line.startswith("MODAL_SERVER_URL="):
            self.stop()
            raise RuntimeError(f"storage server did not start: {line!r}")
        self.url = line.split("=", 1)[1]

    def stop(self) -> None:
        if self.process is not None and self.process.poll() is None:
            self.process.terminate()
            try:
                self.process.wait(timeout=10)
            except subprocess.TimeoutExpired:
                self.process.kill()
                self.process.wait()
        self.process = None

    def client(self) -> modal.Client:
        os.environ["MODAL_SERVER_URL"] = self.url
        return modal.Client.from_credentials("ak-test", "as-test")


@pytest.fixture(scope="module")
def server(tmp_path_factory: pytest.TempPathFactory) -> Iterator[StorageServer]:
    srv = StorageServer(tmp_path_factory.mktemp("volume-state"))
    srv.start()
    try:
        yield srv
    finally:
        srv.stop()


@pytest.fixture
def client(server: StorageServer) -> modal.Client:
    return server.client()


def read_all(vol: modal.Volume, path: str) -> bytes:
    return b"".join(vol.read_file(path))


def pattern(size: int, seed: int = 0) -> bytes:
    """Deterministic, non-compressible-looking bytes with zero runs (v2 strips trailing zeros per block)."""
    out = bytearray()
    counter = 0
    while len(out) < size:
        out += hashlib.sha256(f"{seed}-{counter}".encode()).digest()
        counter += 1
    data = bytearray(out[:size])
    data[size // 2 : size // 2 + 4096] = bytes(min(4096, size - size // 2))
    return bytes(data)


@pytest.mark.parametrize("version", [None, 1, 2])
def test_upload_list_read_remove(client: modal.Client, tmp_path: pathlib.Path, version: int | None) -> None:
    name = f"vol-basic-{version}"
    vol = modal.Volume.from_name(name, create_if_missing=True, version=version, client=client)
    small = b"hello from a small file\n"
    big = pattern(9 * 1024 * 1024 + 123, seed=1)  # > 4 MiB: blob path (v1); > 8 MiB: two blocks
    local_dir = tmp_path / "tree"
    (local_dir / "sub").mkdir(parents=True)
    (local_dir / "sub" / "x.txt").write_bytes(b"x" * 10)
    (local_dir / "y.txt").write_bytes(b"y")
    big_file = tmp_path / "big.bin"
    big_file.write_bytes(big)

    with vol.batch_upload() as batch:
        batch.put_file(io.BytesIO(small), "/small.txt")
        batch.put_file(big_file, "/data/big.bin")
        batch.put_directory(local_dir, "/tree")

    assert sorted(e.path for e in vol.listdir("/")) == ["data", "small.txt", "tree"]
    listing = {e.path: e for e in vol.listdir("/", recursive=True)}
    assert sorted(listing) == [
        "data",
        "data/big.bin",
        "small.txt",
        "tree",
        "tree/sub",
        "tree/sub/x.txt",
        "tree/y.txt",
    ]
    assert listing["data/big.bin"].size == len(big)
    assert listing["data/big.bin"].type == modal.volume.FileEntryType.FILE
    assert listing["tree/sub"].type == modal.volume.FileEntryType.DIRECTORY

    assert read_all(vol, "small.txt") == small
    assert read_all(vol, "/data/big.bin") == big
    assert read_all(vol, "tree/sub/x.txt") == b"x" * 10

    out = io.BytesIO()
    assert vol.read_file_into_fileobj("data/big.bin", out) == len(big)
    assert out.getvalue() == big

    vol.remove_file("small.txt")
    with pytest.raises(FileNotFoundError):
        read_all(vol, "small.txt")
    with pytest.raises(FileNotFoundError):
        vol.remove_file("small.txt")
    vol.remove_file("/tree", recursive=True)
    assert sorted(e.path for e in vol.listdir("/", recursive=True)) == ["data", "data/big.bin"]


@pytest.mark.parametrize("version", [1, 2])
def test_overwrite_needs_force(client: modal.Client, version: int) -> None:
    vol = modal.Volume.from_name(f"vol-force-{version}", create_if_missing=True, version=version, client=client)
    with vol.batch_upload() as batch:
        batch.put_file(io.BytesIO(b"first"), "f.txt")
    with pytest.raises(FileExistsError):
        with vol.batch_upload() as batch:
            batch.put_file(io.BytesIO(b"second"), "f.txt")
    assert read_all(vol, "f.txt") == b"first"
    with vol.batch_upload(force=True) as batch:
        batch.put_file(io.BytesIO(b"second"), "f.txt")
    assert read_all(vol, "f.txt") == b"second"


@pytest.mark.parametrize("version", [1, 2])
def test_copy_files(client: modal.Client, version: int) -> None:
    vol = modal.Volume.from_name(f"vol-copy-{version}", create_if_missing=True, version=version, client=client)
    with vol.batch_upload() as batch:
        batch.put_file(io.BytesIO(b"example"), "bar/example.txt")
    vol.copy_files(["bar/example.txt"], "bar2")
    vol.copy_files(["bar/example.txt"], "bar/example2.txt")
    assert read_all(vol, "bar2") == b"example"
    assert read_all(vol, "bar/example2.txt") == b"example"
    if version == 2:
        vol.copy_files(["bar"], "bar3", recursive=True)
        assert sorted(e.path for e in vol.listdir("bar3")) == ["bar3/example.txt", "bar3/example2.txt"]


def test_versions_and_lookup(client: modal.Client) -> None:
    modal.Volume.from_name("vol-v2-only", create_if_missing=True, version=2, client=client).hydrate()
    with pytest.raises(Exception, match="has version v2"):
        modal.Volume.from_name("vol-v2-only", version=1, client=client).hydrate()
    with pytest.raises(NotFoundError):
        modal.Volume.from_name("vol-never-created", client=client).hydrate()
    vol = modal.Volume.from_name("vol-v2-only", client=client).hydrate()
    assert modal.Volume.from_id(vol.object_id, client=client).hydrate().object_id == vol.object_id
    assert vol.info().name == "vol-v2-only"


def test_named_volume_management(client: modal.Client) -> None:
    modal.Volume.objects.create("vol-managed", client=client)
    modal.Volume.objects.create("vol-managed", allow_existing=True, client=client)
    with pytest.raises(modal.exception.AlreadyExistsError):
        modal.Volume.objects.create("vol-managed", client=client)
    names = [v.info().name for v in modal.Volume.objects.list(client=client)]
    assert "vol-managed" in names
    modal.Volume.objects.delete("vol-managed", client=client)
    with pytest.raises(NotFoundError):
        modal.Volume.from_name("vol-managed", client=client).hydrate()
    modal.Volume.objects.delete("vol-managed", allow_missing=True, client=client)


def test_ephemeral_volume(client: modal.Client) -> None:
    with modal.Volume.ephemeral(client=client) as vol:
        assert vol.listdir("/") == []
        with vol.batch_upload() as batch:
            batch.put_file(io.BytesIO(b"temporary"), "/t.txt")
        assert read_all(vol, "t.txt") == b"temporary"
        vol.commit()
        vol.reload()
    with modal.Volume.ephemeral(client=client, version=2) as vol2:
        with vol2.batch_upload() as batch:
            batch.put_file(io.BytesIO(b"v2 temporary"), "/t.txt")
        assert read_all(vol2, "t.txt") == b"v2 temporary"
    names = [v.info().name for v in modal.Volume.objects.list(client=client)]
    assert None not in names  # ephemeral volumes are not listed


def test_persists_across_restart(tmp_path: pathlib.Path) -> None:
    srv = StorageServer(tmp_path / "state")
    srv.start()
    try:
        vol = modal.Volume.from_name("vol-persist", create_if_missing=True, version=2, client=srv.client())
        big = pattern(5 * 1024 * 1024, seed=7)
        with vol.batch_upload() as batch:
            batch.put_file(io.BytesIO(big), "/keep/big.bin")
        volume_id = vol.object_id
        srv.stop()
        srv.start()
        again = modal.Volume.from_name("vol-persist", client=srv.client()).hydrate()
        assert again.object_id == volume_id
        assert [e.path for e in again.listdir("keep")] == ["keep/big.bin"]
        assert read_all(again, "keep/big.bin") == big
    finally:
        srv.stop()
