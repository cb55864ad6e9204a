"""A content-addressed file store: each file is named by the SHA-256 of its bytes.

The SDK names uploaded content by its SHA-256 (``MountPutFile.sha256_hex`` for mounts and v1
volumes, ``VolumePutFiles2.Block.contents_sha256`` for the 8 MiB blocks of v2 volumes), and asks
whether the server already has it before sending it. This store answers that question and keeps
the bytes. Layout: ``<root>/<first two hex digits>/<64 hex digits>``, files read-only; partial
writes go to ``<root>/tmp`` and are renamed into place once their hash is checked, so a name in the
store always holds complete, verified content.
"""

from __future__ import annotations

import hashlib
import os
import pathlib
import re
import shutil
import tempfile
from types import TracebackType

_HEX_SHA256 = re.compile(r"^[0-9a-f]{64}$")
_READ_CHUNK = 1024 * 1024


class ContentMismatchError(ValueError):
    """Content did not hash to the SHA-256 the client announced."""


def is_sha256_hex(text: str) -> bool:
    return bool(_HEX_SHA256.match(text))


def sha256_of_file(path: pathlib.Path) -> str:
    digest = hashlib.sha256()
    with open(path, "rb") as f:
        while chunk := f.read(_READ_CHUNK):
            digest.update(chunk)
    return digest.hexdigest()


class PendingContent:
    """A file being written into the store; hashes as it goes. Use as a context manager.

    ``commit(expected_sha256_hex)`` moves it into place (or drops it if identical content is already
    stored); leaving the ``with`` block without a commit discards it.
    """

    def __init__(self, store: "ContentStore") -> None:
        self._store = store
        fd, name = tempfile.mkstemp(dir=store.tmp_dir, prefix="pending-")
        self._file = os.fdopen(fd, "wb")
        self.tmp_path = pathlib.Path(name)
        self._sha256 = hashlib.sha256()
        self._md5 = hashlib.md5()
        self.size = 0
        self._done = False

    def write(self, data: bytes) -> None:
        self._file.write(data)
        self._sha256.update(data)
        self._md5.update(data)
        self.size += len(data)

    @property
    def md5_hex(self) -> str:
        return self._md5.hexdigest()

    @property
    def sha256_hex(self) -> str:
        return self._sha256.hexdigest()

    def commit(self, expected_sha256_hex: str | None = None) -> str:
        """Verify the hash and publish the content; returns its SHA-256 hex."""
        self._file.close()
        actual = self.sha256_hex
        try:
            if expected_sha256_hex is not None and expected_sha256_hex.lower() != actual:
                raise ContentMismatchError(
                    f"content has sha256 {actual}, not the announced {expected_sha256_hex.lower()}"
                )
            self._store._publish(self.tmp_path, actual)
        finally:
            self._done = True
            self.tmp_path.unlink(missing_ok=True)
        return actual

    def __enter__(self) -> "PendingContent":
        return self

    def __exit__(
        self, exc_type: type[BaseException] | None, exc: BaseException | None, tb: TracebackType | None
    ) -> None:
        if not self._done:
            self._file.close()
            self.tmp_path.unlink(missing_ok=True)
            self._done = True


class ContentStore:
    """Files named by their SHA-256, under ``root``."""

    def __init__(self, root: pathlib.Path) -> None:
        self.root = root
        self.tmp_dir = root / "tmp"
        self.tmp_dir.mkdir(parents=True, exist_ok=True)

    def path(self, sha256_hex: str) -> pathlib.Path:
        """Where content with this hash lives (whether or not it is stored)."""
        sha256_hex = sha256_hex.lower()
        if not is_sha256_hex(sha256_hex):
            raise ValueError(f"not a SHA-256 hex digest: {sha256_hex!r}")
        return self.root / sha256_hex[:2] / sha256_hex

    def has(self, sha256_hex: str) -> bool:
        try:
            return self.path(sha256_hex).is_file()
        except ValueError:
            return False

    def missing(self, sha256_hexes: list[str]) -> list[str]:
        return [h for h in sha256_hexes if not self.has(h)]

    def pending(self) -> PendingContent:
        """Start writing new content (see :class:`PendingContent`)."""
        return PendingContent(self)

    def add_bytes(self, data: bytes, expected_sha256_hex: str | None = None) -> str:
        with self.pending() as pending:
            pending.write(data)
            return pending.commit(expected_sha256_hex)

    def add_file(self, source: pathlib.Path, expected_sha256_hex: str | None = None) -> str:
        """Store a copy of ``source`` (hard-linked when possible, so no bytes are duplicated)."""
        actual = sha256_of_file(source)
        if expected_sha256_hex is not None and expected_sha256_hex.lower() != actual:
            raise ContentMismatchError(
                f"{source.name} has sha256 {actual}, not the announced {expected_sha256_hex.lower()}"
            )
        if self.has(actual):
            return actual
        fd, name = tempfile.mkstemp(dir=self.tmp_dir, prefix="import-")
        os.close(fd)
        tmp = pathlib.Path(name)
        try:
            tmp.unlink()
            try:
                os.link(source, tmp)
            except OSError:
                shutil.copyfile(source, tmp)
            self._publish(tmp, actual)
        finally:
            tmp.unlink(missing_ok=True)
        return actual

    def _publish(self, tmp_path: pathlib.Path, sha256_hex: str) -> None:
        target = self.path(sha256_hex)
        if target.exists():
            return
        target.parent.mkdir(parents=True, exist_ok=True)
        os.chmod(tmp_path, 0o444)
        # link() fails if another writer published the same content meanwhile: that is fine.
        try:
            os.link(tmp_path, target)
        except FileExistsError:
            pass
