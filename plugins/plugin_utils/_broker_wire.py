# Copyright (c) 2026, the mngr.modal authors
# GNU General Public License v3.0+ (see COPYING or https://www.gnu.org/licenses/gpl-3.0.txt)

# This module is private to the mngr.modal collection: its interface may change at any time,
# do not use it from outside the collection.

"""How the ``sandbox_exec`` connection talks to its broker: where the socket is, and the message framing.

Ansible runs every task of every host in a fresh worker process. Importing the Modal SDK and opening a client
costs most of a second, so the workers do neither: they hand each command and file transfer to one broker
process per controller run (see :mod:`._broker`), which keeps one Modal client and one sandbox handle per host.
A worker and the broker exchange messages on a Unix socket in a folder only the user can enter.

A message is a fixed header (two lengths), a JSON object, and raw bytes (stdin, or stdout followed by stderr),
so binary data is passed through exactly. Only the standard library is used: workers must stay light.
"""

from __future__ import annotations

import hashlib
import json
import os
import socket
import struct
import tempfile
from typing import Any

_HEADER = struct.Struct("!IQ")
# A JSON object larger than this is not one of ours: refuse it rather than allocate it.
MAX_JSON_BYTES = 1 << 20

# Environment variables that change which Modal account, server or configuration the broker would use: two runs
# that differ in one of them never share a broker.
MODAL_SETTING_PREFIXES = ("MODAL_",)


# What the connection passes a new broker, besides the Modal settings, in its environment.
ENV_SOCKET = "MNGR_MODAL_BROKER_SOCKET"
ENV_PERSIST = "MNGR_MODAL_BROKER_PERSIST"


class WireError(Exception):
    """The other side closed the socket mid-message, or sent something that is not a message."""


def send_message(sock: socket.socket, header: dict[str, Any], payload: bytes = b"") -> None:
    body = json.dumps(header).encode("utf-8")
    sock.sendall(_HEADER.pack(len(body), len(payload)) + body)
    if payload:
        sock.sendall(payload)


def _recv_exactly(sock: socket.socket, size: int) -> bytes:
    view = bytearray(size)
    received = 0
    while received < size:
        count = sock.recv_into(memoryview(view)[received:], size - received)
        if count == 0:
            raise WireError(f"the connection closed after {received} of {size} bytes")
        received += count
    return bytes(view)


def recv_message(sock: socket.socket) -> tuple[dict[str, Any], bytes]:
    json_size, payload_size = _HEADER.unpack(_recv_exactly(sock, _HEADER.size))
    if json_size > MAX_JSON_BYTES:
        raise WireError(f"a message header of {json_size} bytes is larger than {MAX_JSON_BYTES}")
    header = json.loads(_recv_exactly(sock, json_size).decode("utf-8"))
    if not isinstance(header, dict):
        raise WireError("a message header is not a JSON object")
    payload = _recv_exactly(sock, payload_size) if payload_size else b""
    return header, payload


def broker_folder(base: str | None = None) -> str:
    """The folder of this user's broker sockets (under ``base``, else the temporary folder): created with mode
    0700, refused if another user owns it or others may enter it."""
    folder = os.path.join(base or tempfile.gettempdir(), f"mngr-modal-{os.getuid()}")
    try:
        os.mkdir(folder, 0o700)
    except FileExistsError:
        pass
    info = os.lstat(folder)
    if info.st_uid != os.getuid() or (info.st_mode & 0o077) or not os.path.isdir(folder) or os.path.islink(folder):
        raise PermissionError(f"{folder} must be a folder owned by this user with mode 0700: it is not, so the "
                              "sandbox_exec connection will not put its socket there")
    return folder


def broker_key(settings: dict[str, str | None], environ: dict[str, str]) -> str:
    """Which broker serves a worker: one per user and Modal settings (credentials, app, server...).

    Only a digest is kept, so the token never appears in a file name.
    """
    modal_env = {name: value for name, value in environ.items() if name.startswith(MODAL_SETTING_PREFIXES)}
    material = json.dumps([settings, modal_env], sort_keys=True)
    return hashlib.sha256(material.encode("utf-8")).hexdigest()[:24]


def socket_path(folder: str, key: str) -> str:
    return os.path.join(folder, f"{key}.sock")


def lock_path(folder: str, key: str) -> str:
    return os.path.join(folder, f"{key}.lock")


def log_path(folder: str, key: str) -> str:
    return os.path.join(folder, f"{key}.log")
