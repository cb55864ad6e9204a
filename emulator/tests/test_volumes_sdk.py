"""Volumes through the real modal SDK against ``modal-emulator serve`` (no sandboxes needed).

The calls are Modal's own documented examples (the ``modal.Volume`` reference and the
``modal volume`` CLI), run unchanged: the SDK's default client points at the emulator.
"""

from __future__ import annotations

import hashlib
import io
import os
import pathlib
import subprocess
import sys

import modal
import pytest
from modal.exception import AlreadyExistsError, NotFoundError

from sdk_harness import EmulatorProcess, point_sdk_at, restore_env

MODAL_CLI = str(pathlib.Path(sys.executable).parent / "modal")

pytestmark = pytest.mark.usefixtures("emulator")


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
def test_upload_list_read_remove(tmp_path: pathlib.Path, version: int | None) -> None:
    name = f"vol-basic-{version}"
    vol = modal.Volume.from_name(name, create_if_missing=True, version=version)
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
def test_overwrite_needs_force(version: int) -> None:
    vol = modal.Volume.from_name(f"vol-force-{version}", create_if_missing=True, version=version)
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
def test_copy_files(version: int) -> None:
    vol = modal.Volume.from_name(f"vol-copy-{version}", create_if_missing=True, version=version)
    with vol.batch_upload() as batch:
        batch.put_file(io.BytesIO(b"example"), "bar/example.txt")
    vol.copy_files(["bar/example.txt"], "bar2")
    vol.copy_files(["bar/example.txt"], "bar/example2.txt")
    assert read_all(vol, "bar2") == b"example"
    assert read_all(vol, "bar/example2.txt") == b"example"
    if version == 2:
        vol.copy_files(["bar"], "bar3", recursive=True)
        assert sorted(e.path for e in vol.listdir("bar3")) == ["bar3/example.txt", "bar3/example2.txt"]


def test_versions_and_lookup(emulator) -> None:
    modal.Volume.from_name("vol-v2-only", create_if_missing=True, version=2).hydrate()
    with pytest.raises(Exception, match="has version v2"):
        modal.Volume.from_name("vol-v2-only", version=1).hydrate()
    with pytest.raises(NotFoundError):
        modal.Volume.from_name("vol-never-created").hydrate()
    vol = modal.Volume.from_name("vol-v2-only").hydrate()
    assert modal.Volume.from_id(vol.object_id).hydrate().object_id == vol.object_id
    assert vol.info().name == "vol-v2-only"


def test_named_volume_management(emulator) -> None:
    modal.Volume.objects.create("vol-managed")
    modal.Volume.objects.create("vol-managed", allow_existing=True)
    with pytest.raises(AlreadyExistsError):
        modal.Volume.objects.create("vol-managed")
    names = [v.info().name for v in modal.Volume.objects.list()]
    assert "vol-managed" in names
    modal.Volume.objects.delete("vol-managed")
    with pytest.raises(NotFoundError):
        modal.Volume.from_name("vol-managed").hydrate()
    modal.Volume.objects.delete("vol-managed", allow_missing=True)


def test_ephemeral_volume(emulator) -> None:
    with modal.Volume.ephemeral() as vol:
        assert vol.listdir("/") == []
        with vol.batch_upload() as batch:
            batch.put_file(io.BytesIO(b"temporary"), "/t.txt")
        assert read_all(vol, "t.txt") == b"temporary"
        vol.commit()
        vol.reload()
    with modal.Volume.ephemeral(version=2) as vol2:
        with vol2.batch_upload() as batch:
            batch.put_file(io.BytesIO(b"v2 temporary"), "/t.txt")
        assert read_all(vol2, "t.txt") == b"v2 temporary"
    names = [v.info().name for v in modal.Volume.objects.list()]
    assert None not in names  # ephemeral volumes are not listed


def test_reference_examples(tmp_path: pathlib.Path, monkeypatch: pytest.MonkeyPatch) -> None:
    """The examples of the ``modal.Volume`` reference, as written there."""
    (tmp_path / "local-path.txt").write_text("local file\n")
    (tmp_path / "directory").mkdir()
    (tmp_path / "directory" / "inner.txt").write_text("inner\n")
    csv = b"a,b\n" * (1024 * 1024 // 4)
    monkeypatch.chdir(tmp_path)  # the example names a relative local path

    vol = modal.Volume.from_name("my-modal-volume", create_if_missing=True)
    with vol.batch_upload() as batch:
        batch.put_file("local-path.txt", "/remote-path.txt")
        batch.put_directory(str(tmp_path / "directory"), "/remote/directory")
        batch.put_file(io.BytesIO(b"some data"), "/foobar")
        batch.put_file(io.BytesIO(csv), "/1mb.csv")

    vol = modal.Volume.from_name("my-modal-volume")
    data = b""
    for chunk in vol.read_file("1mb.csv"):
        data += chunk
    assert len(data) == 1024 * 1024

    vol.copy_files(["remote-path.txt"], "bar2")
    vol.copy_files(["remote/directory/inner.txt"], "remote/example2.txt")
    assert read_all(vol, "bar2") == b"local file\n"
    assert read_all(vol, "remote/example2.txt") == b"inner\n"
    assert read_all(vol, "foobar") == b"some data"


def test_cli_round_trip(emulator, tmp_path: pathlib.Path) -> None:
    """``modal volume`` commands, as a user types them."""
    local = tmp_path / "hello.txt"
    local.write_text("hello cli\n")

    def cli(*args: str) -> str:
        result = subprocess.run(
            [MODAL_CLI, "volume", *args], capture_output=True, text=True, timeout=120, env=dict(os.environ)
        )
        assert result.returncode == 0, f"modal volume {' '.join(args)}: {result.stdout}{result.stderr}"
        return result.stdout

    cli("create", "cli-volume")
    cli("put", "cli-volume", str(local), "/dir/")
    assert cli("ls", "cli-volume", "/dir").split() == ["dir/hello.txt"]
    assert cli("get", "cli-volume", "/dir/hello.txt", "-").startswith("hello cli")
    cli("cp", "cli-volume", "/dir/hello.txt", "/copy.txt")
    cli("get", "cli-volume", "/copy.txt", str(tmp_path / "copy.txt"))
    assert (tmp_path / "copy.txt").read_text() == "hello cli\n"
    cli("rm", "cli-volume", "/copy.txt")
    assert "cli-volume" in cli("list")
    cli("rename", "-y", "cli-volume", "cli-volume-renamed")
    cli("delete", "-y", "cli-volume-renamed")
    with pytest.raises(NotFoundError):
        modal.Volume.from_name("cli-volume-renamed").hydrate()


def test_persists_across_restart(emulator, tmp_path: pathlib.Path) -> None:
    server = EmulatorProcess(state_dir=tmp_path / "state", log_path=tmp_path / "server.log")
    previous = None
    try:
        server.start()
        previous = point_sdk_at(server.url, tmp_path / "config")
        vol = modal.Volume.from_name("vol-persist", create_if_missing=True, version=2)
        big = pattern(5 * 1024 * 1024, seed=7)
        with vol.batch_upload() as batch:
            batch.put_file(io.BytesIO(big), "/keep/big.bin")
        v1 = modal.Volume.from_name("vol-persist-v1", create_if_missing=True, version=1)
        with v1.batch_upload() as batch:
            batch.put_file(io.BytesIO(b"v1 content"), "/keep.txt")
        volume_id = vol.object_id
        assert server.stop() == 0

        server.start()
        point_sdk_at(server.url, tmp_path / "config")
        again = modal.Volume.from_name("vol-persist").hydrate()
        assert again.object_id == volume_id
        assert [e.path for e in again.listdir("keep")] == ["keep/big.bin"]
        assert read_all(again, "keep/big.bin") == big
        assert read_all(modal.Volume.from_name("vol-persist-v1"), "keep.txt") == b"v1 content"
    finally:
        if previous is not None:
            restore_env(previous)
        server.stop()
