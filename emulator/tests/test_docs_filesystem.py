"""The sandbox filesystem API (``sb.filesystem.*``) as Modal documents it, against the emulator.

Examples from https://modal.com/docs/guide/sandbox-files and the ``Sandbox.filesystem`` reference
(https://modal.com/docs/reference/modal.Sandbox#filesystem), plus the typed errors the reference
lists for each call. The SDK runs a file tool inside the sandbox for every call; the emulator
provides it at the path the SDK uses.
"""

from __future__ import annotations

import tempfile
import threading
import time
from pathlib import Path

import modal
import pytest
from modal.exception import (
    InvalidError,
    SandboxFilesystemDirectoryNotEmptyError,
    SandboxFilesystemIsADirectoryError,
    SandboxFilesystemNotADirectoryError,
    SandboxFilesystemNotFoundError,
    SandboxFilesystemPathAlreadyExistsError,
)
from modal.types import FileType, FileWatchEventType


@pytest.fixture(scope="module")
def sandbox(emulator):  # noqa: ANN001, ANN201 - the reference examples' ``sandbox`` fixture
    app = modal.App.lookup("sandbox-fs-demo", create_if_missing=True)
    sb = modal.Sandbox.create(app=app)
    try:
        yield sb
    finally:
        sb.terminate()


def test_guide_example(emulator) -> None:
    """https://modal.com/docs/guide/sandbox-files (Filesystem API)."""
    app = modal.App.lookup("sandbox-fs-demo", create_if_missing=True)

    sb = modal.Sandbox.create(app=app)
    try:
        # Write text to a file in the Sandbox.
        sb.filesystem.write_text("Hello World!\n", "/tmp/test.txt")

        # Read the file back from the Sandbox into a string.
        contents = sb.filesystem.read_text("/tmp/test.txt")
        assert contents == "Hello World!\n"
        # The file is really there for the sandbox's own processes.
        assert sb.exec("cat", "/tmp/test.txt").stdout.read() == "Hello World!\n"
    finally:
        sb.terminate()
    sb.detach()


def test_read_write_bytes_and_text(sandbox) -> None:
    """Reference: write_bytes / read_bytes / write_text / read_text."""
    sandbox.filesystem.write_bytes(b"Hello, world!\n", "/tmp/hello.bin")
    contents = sandbox.filesystem.read_bytes("/tmp/hello.bin")
    assert contents.decode("utf-8") == "Hello, world!\n"
    payload = bytes(range(256)) * 4096  # 1 MiB, every byte value
    sandbox.filesystem.write_bytes(payload, "/tmp/deep/new/dirs/blob.bin")  # parents are created
    assert sandbox.filesystem.read_bytes("/tmp/deep/new/dirs/blob.bin") == payload
    sandbox.filesystem.write_text("héllo ✓\n", "/tmp/hello.txt")
    assert sandbox.filesystem.read_text("/tmp/hello.txt") == "héllo ✓\n"
    sandbox.filesystem.write_text("replaced\n", "/tmp/hello.txt")  # overwritten if it exists
    assert sandbox.exec("cat", "/tmp/hello.txt").stdout.read() == "replaced\n"


def test_copy_from_and_to_local(sandbox, tmp_path) -> None:
    """Reference: copy_from_local / copy_to_local."""
    local_path = Path(tempfile.mktemp(dir=tmp_path))
    local_path.write_text("Hello, world!\n")
    sandbox.filesystem.copy_from_local(local_path, "/tmp/hello.txt")
    sandbox.filesystem.copy_to_local("/tmp/hello.txt", tmp_path / "out" / "local-hello.txt")
    assert (tmp_path / "out" / "local-hello.txt").read_text() == "Hello, world!\n"


def test_list_files_and_stat(sandbox) -> None:
    """Reference: list_files / stat, with FileInfo fields."""
    sandbox.exec("bash", "-c", "rm -rf /tmp/ls && mkdir -p /tmp/ls/sub && printf 12345 > /tmp/ls/five "
                 "&& chmod 640 /tmp/ls/five && ln -s five /tmp/ls/link").wait()
    entries = {entry.name: entry for entry in sandbox.filesystem.list_files("/tmp/ls")}
    assert sorted(entries) == ["five", "link", "sub"]
    five = entries["five"]
    assert five.type == FileType.FILE and five.is_file()
    assert (five.path, five.size, five.permissions, five.owner, five.group) == ("/tmp/ls/five", 5, "0640", "root", "root")
    assert entries["sub"].is_dir()
    assert entries["link"].is_symlink() and entries["link"].symlink_target == "five"
    info = sandbox.filesystem.stat("/tmp/ls/five")
    assert (info.name, info.size, info.mode & 0o777) == ("five", 5, 0o640)
    assert abs(info.modified_time - time.time()) < 600


def test_make_directory_and_remove(sandbox) -> None:
    """Reference: make_directory / remove (file, empty dir, recursive)."""
    sandbox.filesystem.make_directory("/tmp/a/b/c")
    sandbox.filesystem.make_directory("/tmp/a/b/c")  # idempotent with create_parents=True
    assert sandbox.exec("test", "-d", "/tmp/a/b/c").wait() == 0
    with pytest.raises(SandboxFilesystemPathAlreadyExistsError):
        sandbox.filesystem.make_directory("/tmp/a/b/c", create_parents=False)
    with pytest.raises(SandboxFilesystemNotFoundError):
        sandbox.filesystem.make_directory("/tmp/missing-parent/x", create_parents=False)

    sandbox.filesystem.write_bytes(b"Hello, world!\n", "/tmp/hello.bin")
    sandbox.filesystem.remove("/tmp/hello.bin")
    assert sandbox.exec("test", "-e", "/tmp/hello.bin").wait() == 1
    sandbox.filesystem.make_directory("/tmp/mydir/subdir")
    with pytest.raises(SandboxFilesystemDirectoryNotEmptyError):
        sandbox.filesystem.remove("/tmp/mydir")
    sandbox.filesystem.remove("/tmp/mydir", recursive=True)
    assert sandbox.exec("test", "-e", "/tmp/mydir").wait() == 1


def test_typed_errors(sandbox) -> None:
    """Reference: the errors each call raises."""
    with pytest.raises(SandboxFilesystemNotFoundError):
        sandbox.filesystem.read_text("/tmp/does-not-exist")
    with pytest.raises(SandboxFilesystemIsADirectoryError):
        sandbox.filesystem.read_bytes("/tmp")
    with pytest.raises(SandboxFilesystemNotADirectoryError):
        sandbox.filesystem.list_files("/etc/hostname")
    with pytest.raises(SandboxFilesystemNotFoundError):
        sandbox.filesystem.stat("/tmp/does-not-exist")
    with pytest.raises(SandboxFilesystemNotFoundError):
        sandbox.filesystem.remove("/tmp/does-not-exist")
    with pytest.raises(SandboxFilesystemIsADirectoryError):
        sandbox.filesystem.write_text("x", "/tmp")
    with pytest.raises(SandboxFilesystemNotADirectoryError):
        sandbox.filesystem.write_text("x", "/etc/hostname/child")
    with pytest.raises(InvalidError):
        sandbox.filesystem.read_text("relative/path")


def test_watch(sandbox) -> None:
    """Reference: watch (events for entries in a directory, filtered, ended by timeout)."""
    sandbox.filesystem.make_directory("/tmp/watched")

    def make_files() -> None:
        # Only once the watch is in place (an inotify watch shows in its fdinfo), so that no event is missed.
        sandbox.exec(
            "bash", "-c",
            "for i in $(seq 300); do grep -qs '^inotify wd' /proc/[0-9]*/fdinfo/* && break; sleep 0.1; done; "
            "touch /tmp/watched/a.done && echo x > /tmp/watched/b.txt",
        ).wait()

    writer = threading.Thread(target=make_files)
    writer.start()
    created = []
    try:
        for event in sandbox.filesystem.watch("/tmp/watched", filter=[FileWatchEventType.Create], timeout=20):
            assert event.type == FileWatchEventType.Create
            created += event.paths
            if any(p.endswith(".done") for p in event.paths):
                break
    finally:
        writer.join()
    assert created[0] == "/tmp/watched/a.done"
