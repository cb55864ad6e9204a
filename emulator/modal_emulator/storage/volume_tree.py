"""One volume's files: a plain directory tree, plus the operations Modal's volume RPCs need.

A volume is stored as an ordinary directory (``root``) so that sandboxes can bind-mount it and see
uploads at once. Paths in requests are relative to the volume's root ("/a/b", "a/b" and "a/./b"
are the same file); ``..`` is refused. Sandboxes can create symlinks in a mounted volume, so the
tree never follows a symlink on the server side: a symlink in the middle of a path is an error and
a symlink at the end is listed, removed or copied as a link, never read through. Writes land in
``tmp_dir`` (on the same filesystem) and are renamed into place, so a reader never sees half a file.
"""

from __future__ import annotations

import errno
import os
import pathlib
import shutil
import stat
import tempfile
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from enum import IntEnum


class VolumePathError(Exception):
    """A request named a path that cannot be used as asked. Subclasses say why."""


class InvalidVolumePath(VolumePathError):
    pass


class VolumeFileNotFound(VolumePathError):
    pass


class VolumeFileExists(VolumePathError):
    pass


class VolumeIsADirectory(VolumePathError):
    pass


class VolumeNotADirectory(VolumePathError):
    pass


class EntryType(IntEnum):
    """Values of ``api_pb2.FileEntry.FileType``."""

    UNSPECIFIED = 0
    FILE = 1
    DIRECTORY = 2
    SYMLINK = 3
    FIFO = 4
    SOCKET = 5


@dataclass(frozen=True)
class Entry:
    """One listed file: ``path`` relative to the volume root, without a leading slash (as Modal lists it)."""

    path: str
    type: EntryType
    mtime: int
    size: int


def split_volume_path(path: str) -> tuple[str, ...]:
    """The components of a path inside a volume; the root is ``()``."""
    parts = tuple(p for p in path.split("/") if p not in ("", "."))
    if ".." in parts:
        raise InvalidVolumePath(f"{path!r}: '..' is not allowed in volume paths")
    if any("\0" in p for p in parts):
        raise InvalidVolumePath(f"{path!r}: NUL byte in path")
    return parts


def _entry_type(mode: int) -> EntryType:
    if stat.S_ISREG(mode):
        return EntryType.FILE
    if stat.S_ISDIR(mode):
        return EntryType.DIRECTORY
    if stat.S_ISLNK(mode):
        return EntryType.SYMLINK
    if stat.S_ISFIFO(mode):
        return EntryType.FIFO
    if stat.S_ISSOCK(mode):
        return EntryType.SOCKET
    return EntryType.UNSPECIFIED


def _make_entry(rel_path: str, st: os.stat_result) -> Entry:
    kind = _entry_type(st.st_mode)
    size = st.st_size if kind in (EntryType.FILE, EntryType.SYMLINK) else 0
    return Entry(path=rel_path, type=kind, mtime=int(st.st_mtime), size=size)


class VolumeTree:
    """File operations on the directory ``root``; ``tmp_dir`` must be on the same filesystem."""

    def __init__(self, root: pathlib.Path, tmp_dir: pathlib.Path) -> None:
        self.root = root
        self.tmp_dir = tmp_dir

    # --- path resolution -------------------------------------------------------------------

    def _walk_to_parent(self, parts: tuple[str, ...], create: bool) -> pathlib.Path:
        """The host directory that holds ``parts[-1]``, checking every component on the way."""
        current = self.root
        for i, part in enumerate(parts[:-1]):
            current = current / part
            try:
                st = os.lstat(current)
            except FileNotFoundError:
                if not create:
                    raise VolumeFileNotFound(f"/{'/'.join(parts)}: no such file or directory") from None
                current.mkdir(mode=0o755)
                continue
            if not stat.S_ISDIR(st.st_mode):
                raise VolumeNotADirectory(f"/{'/'.join(parts[: i + 1])} is not a directory")
        return current

    def host_path(self, path: str, *, create_parents: bool = False) -> tuple[pathlib.Path, tuple[str, ...]]:
        """The host path for a volume path (parents checked; the last component may not exist)."""
        parts = split_volume_path(path)
        if not parts:
            return self.root, parts
        return self._walk_to_parent(parts, create_parents) / parts[-1], parts

    def _lstat(self, path: str) -> tuple[pathlib.Path, tuple[str, ...], os.stat_result]:
        host, parts = self.host_path(path)
        try:
            return host, parts, os.lstat(host)
        except FileNotFoundError:
            raise VolumeFileNotFound(f"/{'/'.join(parts)}: no such file or directory") from None

    # --- reading ---------------------------------------------------------------------------

    def list(self, path: str, recursive: bool, max_entries: int | None = None) -> Iterator[Entry]:
        """Entries under a directory (all descendants if ``recursive``), or the entry of one file."""
        host, parts, st = self._lstat(path)
        prefix = "/".join(parts)
        if not stat.S_ISDIR(st.st_mode):
            yield _make_entry(prefix, st)
            return
        count = 0
        for entry in self._iter_dir(host, prefix, recursive):
            if max_entries is not None and count >= max_entries:
                return
            count += 1
            yield entry

    def _iter_dir(self, host_dir: pathlib.Path, prefix: str, recursive: bool) -> Iterator[Entry]:
        try:
            names = sorted(os.listdir(host_dir))
        except (FileNotFoundError, NotADirectoryError):
            return  # removed while listing (a sandbox may be writing to the volume)
        for name in names:
            child = host_dir / name
            try:
                st = os.lstat(child)
            except FileNotFoundError:
                continue
            rel = f"{prefix}/{name}" if prefix else name
            yield _make_entry(rel, st)
            if recursive and stat.S_ISDIR(st.st_mode):
                yield from self._iter_dir(child, rel, recursive)

    def file_size(self, path: str) -> int:
        """Size of a regular file; errors for directories, links and missing paths."""
        _, parts, st = self._lstat(path)
        if stat.S_ISDIR(st.st_mode):
            raise VolumeIsADirectory(f"/{'/'.join(parts)} is a directory")
        if not stat.S_ISREG(st.st_mode):
            raise VolumeFileNotFound(f"/{'/'.join(parts)} is not a regular file")
        return st.st_size

    def read_range(self, path: str, start: int, length: int) -> bytes:
        """Up to ``length`` bytes from ``start`` (shorter at the end of the file)."""
        host, parts = self.host_path(path)
        try:
            fd = os.open(host, os.O_RDONLY | os.O_NOFOLLOW)
        except FileNotFoundError:
            raise VolumeFileNotFound(f"/{'/'.join(parts)}: no such file or directory") from None
        except OSError as exc:
            if exc.errno == errno.ELOOP:
                raise VolumeFileNotFound(f"/{'/'.join(parts)} is a symlink, not a regular file") from None
            raise
        try:
            if not stat.S_ISREG(os.fstat(fd).st_mode):
                raise VolumeIsADirectory(f"/{'/'.join(parts)} is not a regular file")
            chunks = []
            remaining = length
            offset = start
            while remaining > 0:
                chunk = os.pread(fd, min(remaining, 4 * 1024 * 1024), offset)
                if not chunk:
                    break
                chunks.append(chunk)
                offset += len(chunk)
                remaining -= len(chunk)
            return b"".join(chunks)
        finally:
            os.close(fd)

    # --- writing ---------------------------------------------------------------------------

    def check_can_write(self, path: str, overwrite: bool) -> None:
        """Raise if a file could not be written at ``path`` (parents are not created here)."""
        parts = split_volume_path(path)
        if not parts:
            raise VolumeIsADirectory("/ is a directory")
        current = self.root
        for i, part in enumerate(parts):
            current = current / part
            try:
                st = os.lstat(current)
            except FileNotFoundError:
                return
            shown = "/" + "/".join(parts[: i + 1])
            if i < len(parts) - 1:
                if not stat.S_ISDIR(st.st_mode):
                    raise VolumeNotADirectory(f"{shown} is not a directory")
            elif stat.S_ISDIR(st.st_mode):
                raise VolumeIsADirectory(f"{shown} is a directory and cannot be overwritten by a file")
            elif not overwrite:
                raise VolumeFileExists(f"{shown} already exists")

    def write_file(self, path: str, fill: Callable[[pathlib.Path], None], mode: int | None, overwrite: bool) -> None:
        """Create or replace a file; ``fill(tmp_path)`` writes its content into a temporary file."""
        self.check_can_write(path, overwrite)
        host, _ = self.host_path(path, create_parents=True)
        fd, tmp_name = tempfile.mkstemp(dir=self.tmp_dir, prefix="upload-")
        os.close(fd)
        tmp = pathlib.Path(tmp_name)
        try:
            fill(tmp)
            os.chmod(tmp, (mode if mode is not None else 0o644) & 0o7777)
            # A concurrent upload may have created a directory there meanwhile: re-check just before.
            self.check_can_write(path, overwrite)
            os.replace(tmp, host)
        finally:
            tmp.unlink(missing_ok=True)

    def remove(self, path: str, recursive: bool) -> None:
        host, parts, st = self._lstat(path)
        shown = "/" + "/".join(parts)
        if not stat.S_ISDIR(st.st_mode):
            os.unlink(host)
            return
        children = os.listdir(host)
        if children and not recursive:
            raise VolumeIsADirectory(f"{shown} is a non-empty directory: remove it recursively")
        if not parts:  # the root stays (it may be bind-mounted); only its content goes
            for name in children:
                self._remove_host_path(host / name)
            return
        self._remove_host_path(host)

    @staticmethod
    def _remove_host_path(host: pathlib.Path) -> None:
        if host.is_dir() and not host.is_symlink():
            shutil.rmtree(host)
        else:
            host.unlink()

    def copy(self, src_paths: list[str], dst_path: str, recursive: bool) -> None:
        """Copy like ``cp [-r] SRC... DST``: into DST if it is a directory, else onto DST."""
        if not src_paths:
            raise InvalidVolumePath("no source paths given")
        dst_host, dst_parts = self.host_path(dst_path, create_parents=True)
        dst_is_dir = dst_host.is_dir() and not dst_host.is_symlink()
        if not dst_is_dir and (len(src_paths) > 1 or dst_path.endswith("/")):
            if dst_host.exists() or dst_host.is_symlink():
                raise VolumeNotADirectory(f"/{'/'.join(dst_parts)} is not a directory")
            dst_host.mkdir(mode=0o755)
            dst_is_dir = True
        for src in src_paths:
            src_host, src_parts, st = self._lstat(src)
            if not src_parts:
                raise InvalidVolumePath("cannot copy the volume root")
            target = dst_host / src_parts[-1] if dst_is_dir else dst_host
            if stat.S_ISDIR(st.st_mode):
                if not recursive:
                    raise VolumeIsADirectory(f"/{'/'.join(src_parts)} is a directory: copy it recursively")
                if target.resolve().is_relative_to(src_host.resolve()):
                    raise InvalidVolumePath(f"cannot copy /{'/'.join(src_parts)} into itself")
                shutil.copytree(src_host, target, symlinks=True, dirs_exist_ok=True)
            elif stat.S_ISLNK(st.st_mode):
                if target.is_symlink() or target.is_file():
                    target.unlink()
                os.symlink(os.readlink(src_host), target)
            else:
                if target.is_dir() and not target.is_symlink():
                    raise VolumeIsADirectory(f"{target.relative_to(self.root)} is a directory")
                if target.is_symlink():  # replace the link itself, never write through it
                    target.unlink()
                shutil.copyfile(src_host, target, follow_symlinks=False)
                shutil.copymode(src_host, target, follow_symlinks=False)
