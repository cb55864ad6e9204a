"""Layers the runtime lays over every build step and sandbox, above the image: never part of an image.

- The tools layer, under ``/__modal/.bin`` (where Modal keeps its own in-container tools): a static
  ``busybox`` for the container setup steps that run after ``pivot_root`` (an image may have no coreutils),
  and a static ``tini`` as each sandbox's PID 1 (an image has no tini of its own).
- The registry layer: the host's package-registry settings (:mod:`host_registry`), so that ``apt-get`` and
  ``pip`` in builds and sandboxes reach the registries the host reaches.

A layer's id is derived from its content, so a changed host setting or tool gets a new layer and running
sandboxes keep theirs. Snapshots copy a sandbox's writable layer only, so these never reach a snapshot,
and a build step's layer holds only what its command wrote.
"""

from __future__ import annotations

import hashlib
import threading
from pathlib import Path

from modal_emulator.runtime import host_registry
from modal_emulator.runtime._host import find_tool
from modal_emulator.runtime.store import Store

TOOLS_DIR = "/__modal/.bin"
BUSYBOX_PATH = f"{TOOLS_DIR}/busybox"
TINI_PATH = f"{TOOLS_DIR}/tini"

_lock = threading.Lock()
_known: dict[Path, list[str]] = {}   # per store: the layers are checked once per process


def _static_tool(names: tuple[str, ...], package: str) -> Path:
    for name in names:
        found = find_tool(name)
        if found:
            return Path(found)
    raise RuntimeError(f"the emulator's runtime needs a static `{names[0]}` on this host (Debian package {package})")


def _busybox() -> Path:
    # busybox-static installs /bin/busybox; the dynamic busybox package would need the image's libc.
    path = _static_tool(("busybox",), "busybox-static")
    if b"ld-linux" in path.read_bytes()[:4096]:
        raise RuntimeError(f"{path} is dynamically linked: install the Debian package busybox-static")
    return path


def _publish(store: Store, prefix: str, files: list[tuple[str, bytes, int]]) -> str:
    from modal_emulator.runtime.build import write_files_layer

    digest = hashlib.sha256()
    for path, content, mode in sorted(files):
        digest.update(f"{path}\0{mode}\0{len(content)}\0".encode())
        digest.update(content)
    layer_id = f"{prefix}-{digest.hexdigest()[:24]}"
    with _lock:
        if not store.has_layer(layer_id):
            write_files_layer(store, layer_id, files)
    return layer_id


def ensure_private_layers(store: Store) -> list[str]:
    """Ids of the private layers (bottom -> top), created in the store on first use. Blocking."""
    known = _known.get(store.root)
    if known and all(store.has_layer(layer) for layer in known):
        return list(known)
    tools = [
        (BUSYBOX_PATH, _busybox().read_bytes(), 0o755),
        (TINI_PATH, _static_tool(("tini-static",), "tini").read_bytes(), 0o755),
    ]
    layers = []
    registry = host_registry.settings_files()
    if registry:
        layers.append(_publish(store, "registry", registry))
    layers.append(_publish(store, "tools", tools))
    _known[store.root] = layers
    return list(layers)
