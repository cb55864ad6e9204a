# Copyright (c) 2026, the mngr.modal authors
# GNU General Public License v3.0+ (see COPYING or https://www.gnu.org/licenses/gpl-3.0.txt)

# This module is private to the mngr.modal collection: its interface may change at any time,
# do not use it from outside the collection.

"""SSH keys on the controller: one key folder per host, generated here, so no trust on first use is needed.

For each host the controller generates an Ed25519 client key and an Ed25519 host key. The host key
pair and the client public key go into the sandbox (see :mod:`._ssh` for the bootstrap); sshd then proves
it holds the host key we generated, so the pinned ``known_hosts`` line is trusted from the first connection.

Key folder layout (``<key_dir>/<app>@<environment>/<host_id>/``, see :class:`KeyStore`; folders the
collection creates get mode 0700, keys 0600)::

    id_ed25519, id_ed25519.pub                  client key pair (Ansible's ansible_ssh_private_key_file)
    ssh_host_ed25519_key, ssh_host_ed25519_key.pub   the host's key pair, installed in the sandbox
    known_hosts                                 one pinned line: [host]:port ssh-ed25519 ... mngr-modal:<name>
    host_id                                     the host's id: a folder is only ever used for, or deleted by, that host
"""

from __future__ import annotations

import contextlib
import fcntl
import os
import shutil
import time
from typing import Callable, Iterable, Iterator

from ansible_collections.mngr.modal.plugins.module_utils._ssh import SSH_PORT

try:
    from cryptography.hazmat.primitives import serialization
    from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PrivateKey

    HAS_CRYPTOGRAPHY = True
except ImportError:  # pragma: no cover - reported by the modules with missing_required_lib
    HAS_CRYPTOGRAPHY = False

CLIENT_KEY = "id_ed25519"
HOST_KEY = "ssh_host_ed25519_key"
KNOWN_HOSTS = "known_hosts"
HOST_ID_FILE = "host_id"
# The environment part of a key scope when no environment option is given (the profile's default environment).
DEFAULT_ENVIRONMENT_LABEL = "default"
# How long a run waits for another run on this controller to finish with a host's key folder.
LOCK_TIMEOUT_SECONDS = 60


def generate_ed25519_keypair(comment: str) -> tuple[bytes, str]:
    """A new Ed25519 key pair: (private key in OpenSSH PEM form, public key line ``ssh-ed25519 AAAA... comment``)."""
    key = Ed25519PrivateKey.generate()
    private = key.private_bytes(
        encoding=serialization.Encoding.PEM,
        format=serialization.PrivateFormat.OpenSSH,
        encryption_algorithm=serialization.NoEncryption(),
    )
    public = key.public_key().public_bytes(
        encoding=serialization.Encoding.OpenSSH,
        format=serialization.PublicFormat.OpenSSH,
    ).decode("ascii")
    return private, f"{public} {comment}".strip()


def public_key_body(public_line: str) -> str:
    """``ssh-ed25519 AAAA...`` without the trailing comment."""
    parts = public_line.split()
    return " ".join(parts[:2])


def known_hosts_line(host: str, port: int, host_public_key: str, comment: str = "") -> str:
    """A pinned known_hosts line for the endpoint, as ssh looks it up (``[host]:port`` unless port 22)."""
    pattern = host if int(port) == SSH_PORT else f"[{host}]:{int(port)}"
    line = f"{pattern} {public_key_body(host_public_key)}"
    return f"{line} {comment}\n" if comment else line + "\n"


def _write_private_file(path: str, data: bytes) -> None:
    """Write ``data`` to ``path`` with mode 0600 from the first byte (never briefly world-readable)."""
    tmp = f"{path}.tmp{os.getpid()}"
    fd = os.open(tmp, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o600)
    try:
        os.fchmod(fd, 0o600)
        os.write(fd, data)
        os.fsync(fd)
    finally:
        os.close(fd)
    os.replace(tmp, path)


class KeyFolderBusy(Exception):
    """Another run holds the lock of a key folder for longer than we may wait."""


def make_private_dirs(path: str) -> list[str]:
    """Create ``path`` and any missing parent, each with mode 0700; return the folders created.

    Folders that already exist are left exactly as they are: a ``key_dir`` such as ``/tmp`` or a shared folder
    keeps its mode. Only what the collection creates is made private.
    """
    path = os.path.abspath(path)
    missing = []
    while not os.path.isdir(path):
        missing.append(path)
        parent = os.path.dirname(path)
        if parent == path:
            break
        path = parent
    created = []
    for folder in reversed(missing):
        try:
            os.mkdir(folder, 0o700)
        except FileExistsError:
            continue  # created meanwhile by another run: not ours, left alone
        os.chmod(folder, 0o700)  # the umask may have removed bits; never adds any for other users
        created.append(folder)
    return created


class KeyFolder:
    """One host's key folder: its two key pairs, its pinned known_hosts line and its host id.

    ``path`` is the folder; ``name`` is the host's current name, used only in the comment of the pinned line.
    """

    def __init__(self, path: str, name: str) -> None:
        self.path = os.path.abspath(os.path.expanduser(path))
        self.name = name

    @property
    def client_key(self) -> str:
        return os.path.join(self.path, CLIENT_KEY)

    @property
    def host_key(self) -> str:
        return os.path.join(self.path, HOST_KEY)

    @property
    def known_hosts(self) -> str:
        return os.path.join(self.path, KNOWN_HOSTS)

    def exists(self) -> bool:
        return os.path.isfile(self.client_key) and os.path.isfile(self.host_key)

    def host_id(self) -> str | None:
        try:
            with open(os.path.join(self.path, HOST_ID_FILE), encoding="utf-8") as handle:
                return handle.read().strip() or None
        except OSError:
            return None

    def belongs_to(self, host_id: str) -> bool:
        """True when the folder holds keys and records ``host_id`` as its host."""
        return self.exists() and self.host_id() == host_id

    def ensure(self, host_id: str) -> bool:
        """Create the folder and both key pairs if missing; True if anything was created.

        Existing keys are kept: a host keeps its keys across restarts, so its pinned host key stays valid.
        A folder that records another host's id is never written to (ValueError).
        """
        recorded = self.host_id()
        if recorded is not None and recorded != host_id:
            raise ValueError(f"key folder {self.path} belongs to host {recorded}, not to {host_id}: left untouched")
        created = bool(make_private_dirs(self.path))
        for filename, comment in ((CLIENT_KEY, f"mngr-modal-client:{host_id}"), (HOST_KEY, f"mngr-modal-host:{host_id}")):
            private_path = os.path.join(self.path, filename)
            if os.path.isfile(private_path) and os.path.isfile(private_path + ".pub"):
                continue
            private, public = generate_ed25519_keypair(comment)
            _write_private_file(private_path, private)
            _write_private_file(private_path + ".pub", (public + "\n").encode("ascii"))
            created = True
        if recorded != host_id:
            _write_private_file(os.path.join(self.path, HOST_ID_FILE), (host_id + "\n").encode("ascii"))
            created = True
        return created

    def read_public(self, which: str) -> str:
        with open(os.path.join(self.path, which + ".pub"), encoding="ascii") as handle:
            return handle.read().strip()

    def read_private(self, which: str) -> str:
        with open(os.path.join(self.path, which), encoding="ascii") as handle:
            return handle.read()

    def pin(self, host: str, port: int) -> bool:
        """Write the known_hosts line for the endpoint; True if the file changed."""
        line = known_hosts_line(host, port, self.read_public(HOST_KEY), f"mngr-modal:{self.name}")
        try:
            with open(self.known_hosts, encoding="ascii") as handle:
                if handle.read() == line:
                    return False
        except OSError:
            pass
        _write_private_file(self.known_hosts, line.encode("ascii"))
        return True

    def pinned_endpoint_matches(self, host: str, port: int) -> bool:
        try:
            with open(self.known_hosts, encoding="ascii") as handle:
                content = handle.read()
        except OSError:
            return False
        return content == known_hosts_line(host, port, self.read_public(HOST_KEY), f"mngr-modal:{self.name}")

    @contextlib.contextmanager
    def locked(self, timeout: float, create: bool = False,
               sleep: Callable[[float], None] = time.sleep,
               clock: Callable[[], float] = time.monotonic) -> Iterator[bool]:
        """Hold this machine's lock on the folder (``flock`` on the folder itself) for the ``with`` block.

        Runs on one controller that work on one host (create, start, destroy, migrate) take turns. With
        ``create``, the folder is made first (mode 0700); the block gets True when this call created it.
        Raises KeyFolderBusy after ``timeout`` seconds, and FileNotFoundError when the folder does not exist
        (or is removed while we wait).
        """
        created = bool(make_private_dirs(self.path)) if create else False
        fd = os.open(self.path, os.O_RDONLY | getattr(os, "O_DIRECTORY", 0))
        try:
            deadline = clock() + timeout
            while True:
                try:
                    fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
                    break
                except BlockingIOError:
                    if clock() >= deadline:
                        raise KeyFolderBusy(
                            f"key folder {self.path} is still in use by another run after {timeout:g} seconds"
                        ) from None
                    sleep(0.2)
            if not os.path.isdir(self.path) or os.stat(self.path).st_ino != os.fstat(fd).st_ino:
                raise FileNotFoundError(f"key folder {self.path} was removed by another run")
            yield created
        finally:
            os.close(fd)  # releases the lock

    def remove(self, host_id: str) -> bool:
        """Delete the folder if it is ``host_id``'s (or records no host at all); True if it was removed.

        A folder recording another host's id is never deleted: it holds the only keys of that host.
        """
        recorded = self.host_id()
        if recorded is not None and recorded != host_id:
            return False
        shutil.rmtree(self.path, ignore_errors=True)
        return True


def _path_part(text: str) -> str:
    """``text`` as one safe path component (Modal app and environment names already are)."""
    cleaned = "".join(c if c.isalnum() or c in "._-" else "_" for c in text)
    return cleaned if cleaned and cleaned[0] not in "." else "_" + cleaned


def key_scope(app: str, environment: str | None) -> str:
    """The folder, under ``key_dir``, of the key folders of one Modal app in one environment: ``APP@ENV``.

    The ``@`` cannot occur in a host name, so a scope never collides with a key folder of the older layout
    (``<key_dir>/<host name>/``). Without an environment option the scope says ``default`` (the profile's
    environment); a host is found by its id in any scope, so a change of that label loses no keys.
    """
    return f"{_path_part(app)}@{_path_part(environment or DEFAULT_ENVIRONMENT_LABEL)}"


class KeyStore:
    """Where the key folders of one Modal environment and app live under ``key_dir``.

    Layout: ``<key_dir>/<app>@<environment>/<host_id>/``. The folder is named after the host id, which never
    changes and is never reused, so a host keeps its folder across renames, and hosts of the same name in
    other apps or environments (or a later host that reuses a destroyed host's name) never share one.

    Folders of the older layout, ``<key_dir>/<host name>/``, are still read: a folder there whose ``host_id``
    file names the host is moved into the new layout the first time a module that changes hosts uses it
    (``migrate=True``); read-only callers (info module, inventory) use it where it is.
    """

    def __init__(self, key_dir: str, app: str, environment: str | None = None) -> None:
        self.key_dir = os.path.abspath(os.path.expanduser(key_dir))
        self.scope = os.path.join(self.key_dir, key_scope(app, environment))

    def folder_for(self, host_id: str, name: str) -> KeyFolder:
        """The folder a host's keys belong in (it may not exist yet)."""
        return KeyFolder(os.path.join(self.scope, _path_part(host_id)), name)

    def find(self, host_id: str, name: str, other_names: Iterable[str | None] = (),
             migrate: bool = False) -> KeyFolder | None:
        """The key folder of ``host_id``, or None when this controller has none.

        Looked up in this scope, then in the other scopes of ``key_dir``, then in the older layout under
        ``name``, ``other_names`` (a rename in progress) and finally any folder whose ``host_id`` file names the
        host. A folder recording another host's id is never returned.
        """
        own = self.folder_for(host_id, name)
        if own.exists() and own.host_id() in (host_id, None):
            return own
        for scope in self._entries(lambda entry: "@" in entry):
            folder = KeyFolder(os.path.join(self.key_dir, scope, _path_part(host_id)), name)
            if folder.belongs_to(host_id):
                return folder
        legacy = self._legacy_folder(host_id, name, other_names)
        if legacy is None or not migrate:
            return legacy
        return self._migrate(legacy, own)

    def is_older_layout(self, folder: KeyFolder) -> bool:
        """True for a folder of the older layout (``<key_dir>/<host name>/``), which ``find(migrate=True)`` moves."""
        return os.path.dirname(folder.path) == self.key_dir

    def _entries(self, keep: Callable[[str], bool]) -> list[str]:
        try:
            return sorted(entry for entry in os.listdir(self.key_dir) if keep(entry))
        except OSError:
            return []

    def _legacy_folder(self, host_id: str, name: str, other_names: Iterable[str | None]) -> KeyFolder | None:
        candidates = [name] + [other for other in other_names if other]
        candidates += [entry for entry in self._entries(_is_legacy_entry) if entry not in candidates]
        for candidate in candidates:
            if not _is_legacy_entry(candidate):
                continue
            folder = KeyFolder(os.path.join(self.key_dir, candidate), name)
            if folder.belongs_to(host_id):
                return folder
        return None

    def _migrate(self, legacy: KeyFolder, target: KeyFolder) -> KeyFolder:
        """Move a folder of the older layout to the host's folder (one rename: same file system)."""
        make_private_dirs(self.scope)
        with legacy.locked(LOCK_TIMEOUT_SECONDS):
            if os.path.exists(target.path):
                # Only a crash can leave both: keep the older layout's keys, the ones the sandbox was given.
                return legacy
            os.rename(legacy.path, target.path)
        return target


def _is_legacy_entry(entry: str) -> bool:
    """A folder name of the older layout: a host name (never starts with '.', never contains '@')."""
    return bool(entry) and not entry.startswith(".") and "@" not in entry
