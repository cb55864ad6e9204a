# Copyright (c) 2026, the mngr.modal authors
# GNU General Public License v3.0+ (see COPYING or https://www.gnu.org/licenses/gpl-3.0.txt)

# This module is private to the mngr.modal collection: its interface may change at any time,
# do not use it from outside the collection.

"""The app's state volume ``<app>-state``: the files every installation shares, and the one place that opens it.

It holds the host records (``hosts/<host_id>.json``, :mod:`._records`), the snapshot catalog
(``snapshots/<host_id>/<name>.json``, :mod:`._snapshots`) and the name reservations (``names/<name>.json``,
:mod:`._reservations`). All of them use the few file operations of :class:`StateFiles`, implemented on the
volume (:class:`VolumeStateFiles`, opened with :func:`state_files`) and in memory (:class:`MemoryStateFiles`,
for tests and for the check-mode view of an app that does not exist yet).

Reading never creates anything (info modules, check mode, the inventory): opened with ``create=False``, a
missing volume reads as empty, and writing to it fails with a message saying so.
"""

from __future__ import annotations

import datetime
import io
import threading
from typing import Any, Protocol

from ansible_collections.mngr.modal.plugins.module_utils._client import is_not_found
from ansible_collections.mngr.modal.plugins.module_utils._errors import ModalCollectionError


def state_volume_name(app_name: str) -> str:
    return f"{app_name}-state"


def utc_now() -> datetime.datetime:
    """Now, in UTC, to the second: the times written on the state volume."""
    return datetime.datetime.now(datetime.timezone.utc).replace(microsecond=0)


class StateVolumeMissing(ModalCollectionError):
    """A write to a state volume that was opened read-only and does not exist."""


class StateFiles(Protocol):
    """The few file operations the state needs. Paths are relative to the volume root."""

    def list(self, folder: str) -> list[str]:
        """Paths of the files under ``folder`` (recursively), sorted; empty when it does not exist."""

    def read(self, path: str) -> bytes | None:
        """The file's content, or None when it does not exist."""

    def create(self, path: str, data: bytes, overwrite: bool) -> bool:
        """Write the file; with ``overwrite=False`` return False (writing nothing) when it already exists."""

    def remove(self, path: str) -> bool:
        """Delete the file; False when it did not exist."""


class MemoryStateFiles:
    """State files in a dict: for tests, and for the check-mode view of an app that does not exist yet."""

    def __init__(self, files: dict[str, bytes] | None = None) -> None:
        self.files: dict[str, bytes] = dict(files or {})
        self._lock = threading.Lock()  # create() must be check-and-write in one step, as on the volume

    def list(self, folder: str) -> list[str]:
        prefix = folder.rstrip("/") + "/"
        return sorted(path for path in self.files if path.startswith(prefix))

    def read(self, path: str) -> bytes | None:
        return self.files.get(path)

    def create(self, path: str, data: bytes, overwrite: bool) -> bool:
        with self._lock:
            if path in self.files and not overwrite:
                return False
            self.files[path] = data
            return True

    def remove(self, path: str) -> bool:
        return self.files.pop(path, None) is not None


class VolumeStateFiles:
    """StateFiles on an app's state volume, every SDK call through ``session.call`` (retries, error mapping).

    The volume is looked up on first use. With ``create=False`` a missing volume reads as empty and nothing
    is created; writing then raises :class:`StateVolumeMissing`.
    """

    def __init__(self, session: Any, volume_name: str, create: bool) -> None:
        self.session = session
        self.volume_name = volume_name
        self.create_volume = create
        self._volume: Any = None
        self._missing = False

    def _get(self) -> Any:
        if self._volume is None and not self._missing:
            session = self.session
            volume = session.modal.Volume.from_name(self.volume_name, environment_name=session.environment,
                                                    create_if_missing=self.create_volume, client=session.client)
            try:
                session.call(volume.hydrate)
            except Exception as exc:  # pylint: disable=broad-exception-caught
                if self.create_volume or not is_not_found(exc):
                    raise
                volume = None
            self._volume = volume
            self._missing = volume is None
        return self._volume

    def list(self, folder: str) -> list[str]:
        volume = self._get()
        if volume is None:
            return []
        try:
            entries = self.session.call(volume.listdir, folder, recursive=True)
        except Exception as exc:  # pylint: disable=broad-exception-caught
            if is_not_found(exc):
                return []
            raise
        file_type = getattr(getattr(self.session.modal, "volume", None), "FileEntryType", None)
        paths = []
        for entry in entries:
            if file_type is not None and getattr(entry, "type", None) not in (None, file_type.FILE):
                continue
            paths.append(getattr(entry, "path", "").lstrip("/"))
        return sorted(path for path in paths if path)

    def read(self, path: str) -> bytes | None:
        volume = self._get()
        if volume is None:
            return None
        try:
            return self.session.call(lambda: b"".join(volume.read_file(path)))
        except Exception as exc:  # pylint: disable=broad-exception-caught
            if is_not_found(exc):
                return None
            raise

    def create(self, path: str, data: bytes, overwrite: bool) -> bool:
        volume = self._get()
        if volume is None:
            raise StateVolumeMissing(
                f"the state volume {self.volume_name} does not exist, so nothing can be recorded on it")

        def upload() -> bool:
            # The SDK raises FileExistsError when force=False meets an existing file. It is caught here,
            # inside the call, because the session would report any OSError as a network failure.
            try:
                with volume.batch_upload(force=overwrite) as batch:
                    batch.put_file(io.BytesIO(data), "/" + path)
            except FileExistsError:
                return False
            return True

        return bool(self.session.call(upload))

    def remove(self, path: str) -> bool:
        volume = self._get()
        if volume is None:
            return False
        try:
            self.session.call(volume.remove_file, path)
        except Exception as exc:  # pylint: disable=broad-exception-caught
            if is_not_found(exc):
                return False
            raise
        return True


def state_files(session: Any, create: bool, app_name: str | None = None) -> VolumeStateFiles:
    """The state volume of ``app_name`` (the session's app by default): the one way to open it.

    ``create`` says whether a missing volume is created (a run that changes hosts) or reads as empty.
    """
    return VolumeStateFiles(session, state_volume_name(app_name or session.app_name), create)
