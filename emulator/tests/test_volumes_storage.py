"""The storage under volumes: the content store and a volume's directory tree, without gRPC."""

from __future__ import annotations

import hashlib
import os
import pathlib

import pytest

from modal_emulator.server.blobs import BLOCK_SIZE, block_ranges
from modal_emulator.storage.content_store import ContentMismatchError, ContentStore
from modal_emulator.storage.volume_tree import (
    EntryType,
    InvalidVolumePath,
    VolumeFileExists,
    VolumeFileNotFound,
    VolumeIsADirectory,
    VolumeNotADirectory,
    VolumeTree,
)


@pytest.fixture
def tree(tmp_path: pathlib.Path) -> VolumeTree:
    root = tmp_path / "vol"
    root.mkdir()
    tmp = tmp_path / "tmp"
    tmp.mkdir()
    return VolumeTree(root, tmp)


def put(tree: VolumeTree, path: str, data: bytes, *, mode: int | None = None, overwrite: bool = True) -> None:
    tree.write_file(path, lambda tmp: tmp.write_bytes(data), mode, overwrite)


def test_content_store_checks_and_dedupes(tmp_path: pathlib.Path) -> None:
    store = ContentStore(tmp_path / "cas")
    data = b"hello volumes"
    digest = hashlib.sha256(data).hexdigest()
    assert not store.has(digest)
    assert store.add_bytes(data, digest) == digest
    assert store.has(digest)
    assert store.path(digest).read_bytes() == data
    assert store.add_bytes(data) == digest  # same content again: no error, same name
    with pytest.raises(ContentMismatchError):
        store.add_bytes(b"other bytes", digest)
    assert store.missing([digest, "0" * 64]) == ["0" * 64]
    assert not store.has("not-a-hash")
    assert list((tmp_path / "cas" / "tmp").iterdir()) == []


def test_content_store_imports_a_file(tmp_path: pathlib.Path) -> None:
    store = ContentStore(tmp_path / "cas")
    source = tmp_path / "big.bin"
    source.write_bytes(os.urandom(100_000))
    digest = store.add_file(source, hashlib.sha256(source.read_bytes()).hexdigest())
    assert store.path(digest).read_bytes() == source.read_bytes()
    with pytest.raises(ContentMismatchError):
        store.add_file(source, "0" * 64)


def test_write_list_read(tree: VolumeTree) -> None:
    put(tree, "/a/b/c.txt", b"abc", mode=0o600)
    put(tree, "top.txt", b"0123456789")
    assert [e.path for e in tree.list("/", recursive=False)] == ["a", "top.txt"]
    entries = {e.path: e for e in tree.list("", recursive=True)}
    assert sorted(entries) == ["a", "a/b", "a/b/c.txt", "top.txt"]
    assert entries["a/b"].type == EntryType.DIRECTORY
    assert entries["a/b/c.txt"].type == EntryType.FILE and entries["a/b/c.txt"].size == 3
    assert [e.path for e in tree.list("a/b/c.txt", recursive=False)] == ["a/b/c.txt"]
    assert (tree.root / "a/b/c.txt").stat().st_mode & 0o777 == 0o600
    assert tree.read_range("top.txt", 2, 3) == b"234"
    assert tree.read_range("/top.txt", 8, 100) == b"89"
    assert tree.file_size("top.txt") == 10
    assert list(tree.list("a", recursive=True, max_entries=1)) == [next(iter(tree.list("a", recursive=True)))]


def test_overwrite_rules(tree: VolumeTree) -> None:
    put(tree, "f.txt", b"one")
    with pytest.raises(VolumeFileExists):
        put(tree, "f.txt", b"two", overwrite=False)
    put(tree, "f.txt", b"two", overwrite=True)
    assert tree.read_range("f.txt", 0, 10) == b"two"
    put(tree, "d/x", b"x")
    with pytest.raises(VolumeIsADirectory):
        put(tree, "d", b"file over a directory")
    with pytest.raises(VolumeNotADirectory):
        put(tree, "f.txt/inner", b"under a file")


def test_paths_cannot_escape(tree: VolumeTree, tmp_path: pathlib.Path) -> None:
    outside = tmp_path / "outside"
    outside.mkdir()
    (outside / "secret").write_text("host file")
    with pytest.raises(InvalidVolumePath):
        put(tree, "../outside/evil", b"x")
    os.symlink(outside, tree.root / "link")  # as a sandbox could create
    with pytest.raises(VolumeNotADirectory):
        put(tree, "link/evil", b"x")
    with pytest.raises(VolumeNotADirectory):
        tree.read_range("link/secret", 0, 100)
    os.symlink(outside / "secret", tree.root / "filelink")
    with pytest.raises(VolumeFileNotFound):
        tree.read_range("filelink", 0, 100)
    assert not (outside / "evil").exists()
    assert {e.path: e.type for e in tree.list("/", recursive=True)}["link"] == EntryType.SYMLINK


def test_remove(tree: VolumeTree) -> None:
    put(tree, "d/x", b"x")
    put(tree, "d/y", b"y")
    put(tree, "z", b"z")
    with pytest.raises(VolumeFileNotFound):
        tree.remove("missing", recursive=False)
    with pytest.raises(VolumeIsADirectory):
        tree.remove("d", recursive=False)
    tree.remove("d/x", recursive=False)
    tree.remove("d", recursive=True)
    assert [e.path for e in tree.list("/", recursive=True)] == ["z"]
    tree.remove("/", recursive=True)
    assert tree.root.is_dir() and list(tree.list("/", recursive=True)) == []


def test_copy_follows_cp(tree: VolumeTree) -> None:
    put(tree, "bar/example.txt", b"ex", mode=0o640)
    tree.copy(["bar/example.txt"], "bar/example2.txt", recursive=False)
    tree.copy(["bar/example.txt"], "bar2", recursive=False)  # missing destination: a file named bar2
    assert tree.read_range("bar2", 0, 10) == b"ex"
    put(tree, "dest/keep", b"k")
    tree.copy(["bar/example.txt", "bar/example2.txt"], "dest", recursive=False)
    assert sorted(e.path for e in tree.list("dest", recursive=False)) == [
        "dest/example.txt",
        "dest/example2.txt",
        "dest/keep",
    ]
    assert (tree.root / "dest/example.txt").stat().st_mode & 0o777 == 0o640
    with pytest.raises(VolumeIsADirectory):
        tree.copy(["bar"], "bar3", recursive=False)
    tree.copy(["bar"], "bar3", recursive=True)
    assert tree.read_range("bar3/example2.txt", 0, 10) == b"ex"
    with pytest.raises(InvalidVolumePath):
        tree.copy(["bar"], "bar/inner", recursive=True)


def test_block_ranges_match_the_sdk_split() -> None:
    from modal.volume import _expected_block_lengths

    for start, length in [
        (0, 0),
        (0, 1),
        (0, BLOCK_SIZE),
        (0, BLOCK_SIZE + 1),
        (5, 3 * BLOCK_SIZE),
        (BLOCK_SIZE - 1, 2),
    ]:
        ranges = block_ranges(start, length)
        assert [n for _, n in ranges] == _expected_block_lengths(start, length, len(ranges))
        assert sum(n for _, n in ranges) == length


def test_partial_writes_are_cleared(tmp_path: pathlib.Path) -> None:
    from modal_emulator.storage.layout import StorageLayout

    layout = StorageLayout(tmp_path / "data")
    kept = layout.content.add_bytes(b"complete")
    pending = layout.content.pending()
    pending.write(b"half")  # a process stopped here
    (layout.volume_tmp_dir / "upload-x").write_bytes(b"half a file")
    (layout.blobs_dir / ".upload-y").write_bytes(b"half a blob")
    layout.create_volume_dir("vo-abc")
    StorageLayout(tmp_path / "data").clear_partial_writes()
    assert list(layout.content.tmp_dir.iterdir()) == []
    assert list(layout.volume_tmp_dir.iterdir()) == []
    assert list(layout.blobs_dir.iterdir()) == []
    assert layout.content.has(kept) and layout.volume_dir("vo-abc").is_dir()
    with pytest.raises(ValueError):
        layout.volume_dir("../escape")
