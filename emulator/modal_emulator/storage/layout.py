"""Where volumes, mounts and blobs live under the emulator's state dir.

::

    <state_dir>/data/content/<ab>/<sha256>      content store: uploaded files, v2 volume blocks
    <state_dir>/data/blobs/<blob id>            bodies PUT to BlobCreate upload URLs
    <state_dir>/data/mounts/<mount id>.json     a mount's manifest: [(path, sha256, mode)]
    <state_dir>/data/volumes/<volume id>/       one volume's files (bind-mounted into sandboxes)
    <state_dir>/data/volumes/.tmp/              partial writes, renamed into a volume when complete

The content store is never pruned: the SDK skips uploading content whose hash the server reports
as present, so forgetting content would need reference tracking (mount manifests, in-flight
uploads); deleting the state dir is how to reclaim it. Volume files are copies, not links into the
store, because sandboxes write to them in place.

All on the ordinary filesystem, not in the runtime's loop-mounted image store: a bind mount has
no overlayfs nesting restriction, and renames from ``.tmp`` into a volume stay on one filesystem.
"""

from __future__ import annotations

import pathlib
import re
from pathlib import Path

from modal_emulator.storage.content_store import ContentStore
from modal_emulator.storage.volume_tree import VolumeTree

_OBJECT_ID = re.compile(r"^[a-z]{2}-[A-Za-z0-9]{1,64}$")


def check_object_id(object_id: str) -> str:
    """Object ids end up in paths: accept only the ``xx-<letters/digits>`` shape the emulator hands out."""
    if not _OBJECT_ID.match(object_id):
        raise ValueError(f"malformed object id {object_id!r}")
    return object_id


class StorageLayout:
    """Paths and store objects under one state dir's ``data`` directory."""

    def __init__(self, data_root: pathlib.Path) -> None:
        self.data_root = data_root
        self.content = ContentStore(data_root / "content")
        self.blobs_dir = data_root / "blobs"
        self.mounts_dir = data_root / "mounts"
        self.volumes_dir = data_root / "volumes"
        self.volume_tmp_dir = self.volumes_dir / ".tmp"
        for path in (self.blobs_dir, self.mounts_dir, self.volume_tmp_dir):
            path.mkdir(parents=True, exist_ok=True)

    def clear_partial_writes(self) -> None:
        """Drop half-written files left by a process that stopped mid-upload (call before serving)."""
        for directory in (self.content.tmp_dir, self.volume_tmp_dir):
            for leftover in directory.iterdir():
                leftover.unlink(missing_ok=True)
        for leftover in self.blobs_dir.glob(".upload-*"):
            leftover.unlink(missing_ok=True)

    def blob_path(self, blob_id: str) -> pathlib.Path:
        return self.blobs_dir / check_object_id(blob_id)

    def mount_manifest_path(self, mount_id: str) -> pathlib.Path:
        return self.mounts_dir / f"{check_object_id(mount_id)}.json"

    def volume_dir(self, volume_id: str) -> pathlib.Path:
        return self.volumes_dir / check_object_id(volume_id)

    def volume_tree(self, volume_id: str) -> VolumeTree:
        """The tree of an existing volume directory (see :meth:`create_volume_dir`)."""
        return VolumeTree(self.volume_dir(volume_id), self.volume_tmp_dir)

    def create_volume_dir(self, volume_id: str) -> Path:
        root = self.volume_dir(volume_id)
        root.mkdir(mode=0o755, exist_ok=True)
        return root
