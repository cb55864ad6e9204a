"""The mask layer: opaque empty directories placed just above the host root.

The host root is every sandbox's bottom layer, so without a mask a sandbox would see the emulator's
state dir (other sandboxes' data), the host's /tmp, home directories, the checkout under /work, and so
on. An opaque directory (xattr ``trusted.overlay.opaque=y``) in a layer hides everything below it, so
each masked path looks empty inside; writes there land in the sandbox's upper layer, where snapshots
capture them.

Directories created on the way to a masked path copy the host's mode and owner: a directory in an upper
layer overrides the metadata of the same directory below it.
"""

from __future__ import annotations

import hashlib
import json
import os
import shutil
import threading
from pathlib import Path

from modal_emulator.runtime.store import Store

DEFAULT_MASKED_PATHS = ("/tmp", "/var/tmp", "/root", "/home", "/work", "/run")

_OPAQUE_XATTR = "trusted.overlay.opaque"
_build_lock = threading.Lock()


def masked_paths(store: Store, extra: list[str] | tuple[str, ...] = ()) -> list[str]:
    """The normalised set of paths to mask: defaults, the state dir, and `extra`, minus nested ones."""
    wanted = {os.path.normpath(p) for p in (*DEFAULT_MASKED_PATHS, str(store.state_dir), *extra)}
    wanted.discard("/")
    ordered = sorted(wanted)
    # A path below another masked path is already hidden by its opaque ancestor.
    return [p for p in ordered if not any(p.startswith(other + "/") for other in ordered if other != p)]


def ensure_mask_layer(store: Store, extra: list[str] | tuple[str, ...] = ()) -> str:
    """Return the id of the mask layer for these paths, building it once (blocking, thread-safe)."""
    paths = masked_paths(store, extra)
    layer_id = ".mask-" + hashlib.sha256(json.dumps(paths).encode()).hexdigest()[:16]
    with _build_lock:
        if store.has_layer(layer_id):
            return layer_id
        tmp = store.new_tmp_dir("mask")
        try:
            for path in paths:
                _add_opaque_dir(tmp, path)
            store.publish(tmp, layer_id)
        finally:
            if tmp.exists():
                shutil.rmtree(tmp)
    return layer_id


def _add_opaque_dir(layer_root: Path, path: str) -> None:
    parts = Path(path).relative_to("/").parts
    for depth in range(1, len(parts) + 1):
        host_dir = Path("/", *parts[:depth])
        layer_dir = layer_root.joinpath(*parts[:depth])
        if not layer_dir.exists():
            layer_dir.mkdir()
            copy_dir_metadata(host_dir, layer_dir)
    os.setxattr(layer_root.joinpath(*parts), _OPAQUE_XATTR, b"y")


def copy_dir_metadata(host_dir: Path, layer_dir: Path) -> None:
    """Give `layer_dir` the mode and owner of the host directory it will cover (0755 root if none)."""
    try:
        st = os.stat(host_dir)
        mode, uid, gid = (st.st_mode & 0o7777, st.st_uid, st.st_gid) if host_dir.is_dir() else (0o755, 0, 0)
    except OSError:
        mode, uid, gid = 0o755, 0, 0
    os.chown(layer_dir, uid, gid)
    os.chmod(layer_dir, mode)
