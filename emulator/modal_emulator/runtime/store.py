"""The runtime's storage: a sparse ext4 image, loop-mounted under the state dir, holding layers and sandboxes.

Why a separate filesystem: overlayfs refuses (ELOOP) a layer or upper dir that lives inside another layer
of the same filesystem, and a state dir may well sit inside a base root's filesystem. Layers and sandbox
upper/work dirs therefore live on their own filesystem, the store; base roots live in the machine's base
cache (:mod:`bases`), outside any state dir.

Layout under ``root``::

    layers/<layer_id>       overlayfs upper-dir content of one image layer (whiteouts, opaque xattrs)
    layers/tools-*, registry-*   the runtime's private layers (see :mod:`private_layers`)
    sandboxes/<id>/         upper/ and work/ of one running sandbox
    tmp/                    layers being built; renamed into layers/ only once complete

All methods block (mkfs, mount): the asyncio server calls them through ``asyncio.to_thread``.
"""

from __future__ import annotations

import os
import shutil
import subprocess
import time
from pathlib import Path

from modal_emulator.runtime import cgroups
from modal_emulator.runtime._host import mounts, mounts_under, require_root, tool


class Store:
    def __init__(self, state_dir: Path, size_gb: int = 64) -> None:
        self.state_dir = Path(state_dir).absolute()
        self.size_gb = size_gb
        self.image = self.state_dir / "store.img"
        self.root = self.state_dir / "store"

    # -- lifecycle -------------------------------------------------------------------------------

    def open(self) -> None:
        """Make sure the image exists and is mounted at ``root``; idempotent, recovers a stale mount."""
        require_root()
        self.state_dir.mkdir(parents=True, exist_ok=True)
        if not self.image.exists():
            self._create_image()
        if self.is_mounted() and not self._mounted_image_is_ours():
            self._unmount_all()
        if not self.is_mounted():
            self.root.mkdir(exist_ok=True)
            _run([tool("mount"), "-o", "loop,discard", str(self.image), str(self.root)])
        else:
            # A crashed earlier process may have left sandbox mounts behind (bind or overlay mounts).
            for entry in mounts_under(self.root):
                if entry.mount_point != str(self.root):
                    _run([tool("umount"), "-l", entry.mount_point], check=False)
        for sub in ("layers", "sandboxes", "tmp"):
            (self.root / sub).mkdir(exist_ok=True)

    def close(self) -> None:
        """Unmount everything under the store, then the store itself, and detach its loop device."""
        if self.is_mounted():
            self._unmount_all()
        self._detach_loop_devices()
        cgroups.remove_group(self.state_dir)

    def is_mounted(self) -> bool:
        return any(m.mount_point == str(self.root) for m in mounts())

    # -- layers ----------------------------------------------------------------------------------

    def layer_path(self, layer_id: str) -> Path:
        _check_id(layer_id)
        return self.root / "layers" / layer_id

    def image_dirs(self, layers: list[str], base: Path) -> list[Path]:
        """The directories an image is made of, top first: its layers (given bottom -> top), then its base."""
        return [*(self.layer_path(layer) for layer in reversed(layers)), base]

    def has_layer(self, layer_id: str) -> bool:
        return self.layer_path(layer_id).is_dir()

    def delete_layer(self, layer_id: str) -> None:
        path = self.layer_path(layer_id)
        if path.exists():
            # Rename first so a half-deleted layer is never visible under its id.
            doomed = self.new_tmp_dir(f"del-{layer_id}")
            doomed.rmdir()
            os.rename(path, doomed)
            shutil.rmtree(doomed)

    def new_tmp_dir(self, hint: str) -> Path:
        """A fresh empty directory on the store (same filesystem as layers, so a rename publishes it)."""
        path = self.root / "tmp" / f"{hint}-{os.getpid()}-{time.monotonic_ns()}"
        path.mkdir(parents=True)
        return path

    def publish(self, built: Path, layer_id: str) -> bool:
        """Atomically move a finished directory to ``layers/<layer_id>``; False if that id already exists."""
        try:
            os.rename(built, self.layer_path(layer_id))
            return True
        except OSError as exc:
            if self.has_layer(layer_id):
                return False
            raise RuntimeError(f"could not publish layer {layer_id}: {exc}") from exc

    def sandbox_dir(self, sandbox_id: str) -> Path:
        _check_id(sandbox_id)
        return self.root / "sandboxes" / sandbox_id

    # -- internals -------------------------------------------------------------------------------

    def _create_image(self) -> None:
        partial = self.image.with_suffix(".img.partial")
        with open(partial, "wb") as handle:
            handle.truncate(self.size_gb * 1024**3)
        # lazy init keeps creation instant on a sparse file; the root of the fs is owned by root.
        _run([tool("mkfs.ext4"), "-q", "-F", "-E", "lazy_itable_init=1,lazy_journal_init=1", str(partial)])
        os.rename(partial, self.image)

    def _mounted_image_is_ours(self) -> bool:
        """True if the filesystem mounted at ``root`` is a loop device backed by our image."""
        entry = next(m for m in mounts() if m.mount_point == str(self.root))
        device = Path(entry.source).name
        backing = Path(f"/sys/block/{device}/loop/backing_file")
        try:
            return Path(backing.read_text().strip()) == self.image
        except OSError:
            return False

    def _unmount_all(self) -> None:
        for entry in mounts_under(self.root):
            _run([tool("umount"), entry.mount_point], check=False)
        # Anything still busy (a mount namespace being torn down) is detached lazily.
        for entry in mounts_under(self.root):
            _run([tool("umount"), "-l", entry.mount_point], check=False)

    def _detach_loop_devices(self) -> None:
        """Mounts were made with autoclear; wait for the kernel to release them, then force a detach."""
        deadline = time.monotonic() + 10
        while self._loop_devices() and time.monotonic() < deadline:
            time.sleep(0.1)
        for device in self._loop_devices():
            _run([tool("losetup"), "-d", device], check=False)

    def _loop_devices(self) -> list[str]:
        if not self.image.exists():
            return []
        out = _run([tool("losetup"), "-j", str(self.image)], check=False)
        return [line.split(":", 1)[0] for line in out.splitlines() if line.strip()]


def _check_id(identifier: str) -> None:
    # Ids end up as directory names: refuse anything that could escape the store.
    if not identifier or "/" in identifier or identifier in (".", "..") or "\0" in identifier:
        raise ValueError(f"invalid id for a store directory: {identifier!r}")


def _run(argv: list[str], check: bool = True) -> str:
    result = subprocess.run(argv, capture_output=True, text=True)
    if check and result.returncode != 0:
        raise RuntimeError(f"{' '.join(argv)} failed ({result.returncode}): {result.stderr.strip()}")
    return result.stdout
