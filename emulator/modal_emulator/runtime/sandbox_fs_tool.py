#!/usr/bin/python3 -I
"""The file tool the ``modal`` SDK runs inside a sandbox for ``Sandbox.filesystem``.

The SDK implements ``sb.filesystem.read_bytes/write_text/list_files/make_directory/remove/stat/watch``
by exec'ing ``/__modal/.bin/modal-sandbox-fs-tools '<command json>'`` in the sandbox (Modal ships a
binary there). The emulator runs this script instead (see :mod:`modal_emulator.server.fs_tools`), with its own Python on the
host, started as ``sandbox_fs_tool.py --chroot /proc/<init>/root '<command json>'``: it imports all it
needs, then confines itself to the sandbox's root before touching any path. It uses only the standard
library, and imports nothing once confined (the host's modules are no longer reachable then).

Contract, as the SDK reads it (``modal/_utils/sandbox_fs_utils.py``):

- one argument, a JSON object with one key naming the command: ``ReadFile``, ``WriteFile``,
  ``ListFiles``, ``MakeDirectory``, ``Remove``, ``Stat`` or ``Watch``;
- success: exit 0; ReadFile writes the raw bytes to stdout, WriteFile copies stdin into the file,
  ListFiles prints a JSON list of entries, Stat one entry, Watch one JSON event per line;
- failure: exit 1 with ``{"error_kind": ..., "message": ...}`` on stderr; the SDK maps the kind to
  its typed ``SandboxFilesystem*Error``.
"""

from __future__ import annotations

import ctypes
import errno
import grp
import json
import os
import pwd
import select
import shutil
import stat
import struct
import sys
import time
from typing import Any, NoReturn

CHUNK = 1 << 20
#: Reads larger than this fail with FileTooLarge, as Modal's tool does.
MAX_READ_BYTES = 5 * 1024**3


class ToolError(Exception):
    def __init__(self, kind: str, message: str) -> None:
        super().__init__(message)
        self.kind = kind
        self.message = message


def fail(kind: str, message: str) -> NoReturn:
    raise ToolError(kind, message)


def error_kind(exc: OSError, not_found: str = "NotFound") -> str:
    """The tool's error kind for an OS error."""
    return {
        errno.ENOENT: not_found,
        errno.ENOTDIR: "NotDirectory",
        errno.EACCES: "PermissionDenied",
        errno.EPERM: "PermissionDenied",
        errno.EISDIR: "IsDirectory",
        errno.EEXIST: "PathAlreadyExists",
        errno.ENOTEMPTY: "DirectoryNotEmpty",
    }.get(exc.errno or 0, "Io")


def entry(name: str, path: str, st: os.stat_result) -> dict[str, Any]:
    """One file's metadata, in the shape of the SDK's ``FileInfo``."""
    if stat.S_ISLNK(st.st_mode):
        kind = "symlink"
    elif stat.S_ISDIR(st.st_mode):
        kind = "directory"
    else:
        kind = "file"
    try:
        owner = pwd.getpwuid(st.st_uid).pw_name
    except KeyError:
        owner = str(st.st_uid)
    try:
        group = grp.getgrgid(st.st_gid).gr_name
    except KeyError:
        group = str(st.st_gid)
    info: dict[str, Any] = {
        "name": name,
        "path": path,
        "type": kind,
        "size": st.st_size,
        "mode": st.st_mode,
        "permissions": f"{stat.S_IMODE(st.st_mode):04o}",
        "owner": owner,
        "group": group,
        "modified_time": st.st_mtime,
    }
    if kind == "symlink":
        info["symlink_target"] = os.readlink(path)
    return info


# -- commands ---------------------------------------------------------------------------------
def read_file(args: dict[str, Any]) -> None:
    path = args["path"]
    try:
        if os.path.isdir(path):
            fail("IsDirectory", "expected a file path")
        with open(path, "rb") as source:
            size = os.fstat(source.fileno()).st_size
            if size > MAX_READ_BYTES:
                fail("FileTooLarge", f"file is {size} bytes, which exceeds the {MAX_READ_BYTES} byte limit")
            while chunk := source.read(CHUNK):
                sys.stdout.buffer.write(chunk)
    except OSError as exc:
        fail(error_kind(exc), exc.strerror or str(exc))
    sys.stdout.buffer.flush()


def write_file(args: dict[str, Any]) -> None:
    path = args["path"]
    if os.path.isdir(path):
        fail("IsDirectory", "expected a file path")
    parent = os.path.dirname(path)
    try:
        if parent:
            os.makedirs(parent, exist_ok=True)
    except FileExistsError:
        fail("NotDirectory", "a component of the path is not a directory")
    except OSError as exc:
        fail(error_kind(exc), exc.strerror or str(exc))
    try:
        with open(path, "wb") as target:
            while chunk := sys.stdin.buffer.read(CHUNK):
                target.write(chunk)
    except OSError as exc:
        fail(error_kind(exc), exc.strerror or str(exc))


def list_files(args: dict[str, Any]) -> None:
    path = args["path"]
    try:
        st = os.stat(path)
    except OSError as exc:
        fail(error_kind(exc), exc.strerror or str(exc))
    if not stat.S_ISDIR(st.st_mode):
        fail("NotDirectory", "expected a directory path")
    entries = []
    try:
        names = sorted(os.listdir(path))
    except OSError as exc:
        fail(error_kind(exc), exc.strerror or str(exc))
    for name in names:
        full = os.path.join(os.path.abspath(path), name)
        try:
            entries.append(entry(name, full, os.lstat(full)))
        except OSError:
            continue  # removed while listing
    sys.stdout.write(json.dumps(entries))


def make_directory(args: dict[str, Any]) -> None:
    path = args["path"]
    try:
        if args.get("parents", True):
            if os.path.isdir(path):
                return
            os.makedirs(path)
        else:
            os.mkdir(path)
    except FileExistsError:
        fail("PathAlreadyExists", "path already exists")
    except OSError as exc:
        fail(error_kind(exc), exc.strerror or str(exc))


def remove(args: dict[str, Any]) -> None:
    path = args["path"]
    try:
        if os.path.islink(path) or not os.path.isdir(path):
            os.remove(path)
        elif args.get("recursive", False):
            shutil.rmtree(path)
        else:
            os.rmdir(path)
    except OSError as exc:
        fail(error_kind(exc), exc.strerror or str(exc))


def stat_path(args: dict[str, Any]) -> None:
    path = args["path"]
    try:
        st = os.lstat(path)
    except OSError as exc:
        fail(error_kind(exc), exc.strerror or str(exc))
    sys.stdout.write(json.dumps(entry(os.path.basename(path.rstrip("/")) or "/", path, st)))


# -- watch (inotify) --------------------------------------------------------------------------
IN_ACCESS, IN_MODIFY, IN_ATTRIB, IN_CLOSE_WRITE = 0x1, 0x2, 0x4, 0x8
IN_MOVED_FROM, IN_MOVED_TO, IN_CREATE, IN_DELETE = 0x40, 0x80, 0x100, 0x200
IN_DELETE_SELF, IN_MOVE_SELF, IN_ISDIR, IN_CLOEXEC = 0x400, 0x800, 0x40000000, 0o2000000
WATCH_MASK = IN_ACCESS | IN_MODIFY | IN_ATTRIB | IN_MOVED_FROM | IN_MOVED_TO | IN_CREATE | IN_DELETE | IN_DELETE_SELF
EVENT_HEADER = struct.Struct("iIII")


def event_type(mask: int) -> str:
    if mask & IN_CREATE:
        return "Create"
    if mask & (IN_DELETE | IN_DELETE_SELF):
        return "Remove"
    if mask & IN_MOVED_FROM:
        return "RenameFrom"
    if mask & IN_MOVED_TO:
        return "RenameTo"
    if mask & (IN_MODIFY | IN_ATTRIB):
        return "Modify"
    if mask & IN_ACCESS:
        return "Access"
    return "Unknown"


class Inotify:
    def __init__(self) -> None:
        self.libc = ctypes.CDLL(None, use_errno=True)
        self.fd = self.libc.inotify_init1(IN_CLOEXEC)
        if self.fd < 0:
            err = ctypes.get_errno()
            raise OSError(err, os.strerror(err))
        self.paths: dict[int, str] = {}

    def add(self, path: str) -> None:
        wd = self.libc.inotify_add_watch(self.fd, os.fsencode(path), WATCH_MASK)
        if wd < 0:
            err = ctypes.get_errno()
            raise OSError(err, os.strerror(err), path)
        self.paths[wd] = path

    def add_tree(self, root: str) -> None:
        self.add(root)
        for directory, subdirs, _ in os.walk(root):
            for name in subdirs:
                try:
                    self.add(os.path.join(directory, name))
                except OSError:
                    continue

    def events(self) -> list[tuple[int, str]]:
        data = os.read(self.fd, 64 * 1024)
        found, offset = [], 0
        while offset < len(data):
            wd, mask, _cookie, length = EVENT_HEADER.unpack_from(data, offset)
            offset += EVENT_HEADER.size
            name = data[offset : offset + length].rstrip(b"\0").decode(errors="surrogateescape")
            offset += length
            base = self.paths.get(wd)
            if base is not None:
                found.append((mask, os.path.join(base, name) if name else base))
        return found


def watch(args: dict[str, Any]) -> None:
    path = os.path.realpath(args["path"])
    recursive = bool(args.get("recursive"))
    wanted = args.get("filter")
    timeout = args.get("timeout_secs")
    deadline = None if timeout is None else time.monotonic() + float(timeout)
    if not os.path.lexists(path):
        fail("NotFound", "path does not exist")
    inotify = Inotify()
    try:
        inotify.add_tree(path) if recursive and os.path.isdir(path) else inotify.add(path)
    except OSError as exc:
        fail(error_kind(exc), exc.strerror or str(exc))
    stdin_open = True
    while True:
        remaining = None if deadline is None else deadline - time.monotonic()
        if remaining is not None and remaining <= 0:
            return
        sources = [inotify.fd] + ([sys.stdin.fileno()] if stdin_open else [])
        readable, _, _ = select.select(sources, [], [], remaining)
        if sys.stdin.fileno() in readable and not os.read(sys.stdin.fileno(), 4096):
            return  # the SDK closes stdin to stop the watch
        if inotify.fd not in readable:
            continue
        for mask, event_path in inotify.events():
            if recursive and mask & IN_CREATE and mask & IN_ISDIR:
                try:
                    inotify.add_tree(event_path)
                except OSError:
                    pass
            kind = event_type(mask)
            if wanted is not None and kind not in wanted:
                continue
            sys.stdout.write(json.dumps({"event_type": kind, "paths": [event_path]}) + "\n")
            sys.stdout.flush()


COMMANDS = {
    "ReadFile": read_file,
    "WriteFile": write_file,
    "ListFiles": list_files,
    "MakeDirectory": make_directory,
    "Remove": remove,
    "Stat": stat_path,
    "Watch": watch,
}


def confine(argv: list[str]) -> list[str]:
    """Handle a leading ``--chroot ROOT``: chroot there and return the remaining argv."""
    if len(argv) > 2 and argv[1] == "--chroot":
        os.chroot(argv[2])
        os.chdir("/")
        return [argv[0], *argv[3:]]
    return argv


def main(argv: list[str]) -> int:
    try:
        argv = confine(argv)
        if len(argv) != 2:
            fail("InvalidArgument", "usage: modal-sandbox-fs-tools '<command json>'")
        try:
            command = json.loads(argv[1])
        except json.JSONDecodeError as exc:
            fail("InvalidArgument", f"the command is not JSON: {exc}")
        if not isinstance(command, dict) or len(command) != 1:
            fail("InvalidArgument", "the command must be an object with one key")
        ((name, args),) = command.items()
        handler = COMMANDS.get(name)
        if handler is None:
            fail("InvalidArgument", f"unknown command {name!r}")
        handler(args)
    except ToolError as exc:
        sys.stderr.write(json.dumps({"version": 1, "error_kind": exc.kind, "message": exc.message}))
        return 1
    sys.stdout.flush()
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv))
