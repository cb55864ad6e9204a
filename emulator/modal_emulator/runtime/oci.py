"""Unpack an image someone supplies: a root-filesystem tarball, or an OCI image layout (directory or archive).

``docker export`` / ``podman export`` write a plain tarball of a container's root: it is extracted as is.
An OCI image layout (``skopeo copy docker://... oci:DIR``, ``podman save --format oci-archive``) holds an
index, manifests and layer blobs: the manifest for this machine's architecture is picked and its layers
are applied bottom to top, whiteouts included (``.wh.NAME`` deletes NAME from the layers below,
``.wh..wh..opq`` empties its directory first), as a container runtime does.

GNU tar does the extracting (owners, modes, xattrs, device nodes, and compression detected by itself).
"""

from __future__ import annotations

import json
import os
import platform
import shutil
import subprocess
import tempfile
from pathlib import Path, PurePosixPath
from typing import Callable

from modal_emulator.runtime._host import tool

LogFn = Callable[[str], None]

_WHITEOUT_PREFIX = ".wh."
_OPAQUE_MARKER = ".wh..wh..opq"
_INDEX_TYPES = ("application/vnd.oci.image.index.v1+json", "application/vnd.docker.distribution.manifest.list.v2+json")
_ARCHITECTURES = {"x86_64": "amd64", "aarch64": "arm64", "armv7l": "arm"}


class ImportFailed(Exception):
    """The source is neither a usable tarball nor a usable OCI layout; the message says what is wrong."""


def unpack_source(source: Path, rootfs: Path, log: LogFn) -> None:
    """Fill the empty directory `rootfs` from `source`."""
    if source.is_dir():
        if not (source / "oci-layout").is_file():
            raise ImportFailed(f"{source} is a directory but not an OCI image layout (no oci-layout file)")
        log(f"importing the OCI image layout {source}\n")
        apply_oci_layout(source, rootfs, log)
        return
    names = _members(source)
    if any(_clean(name) == "oci-layout" for name in names):
        log(f"importing the OCI image archive {source}\n")
        with tempfile.TemporaryDirectory(prefix="oci-", dir=rootfs.parent) as unpacked:
            _extract(source, Path(unpacked))
            apply_oci_layout(Path(unpacked), rootfs, log)
        return
    log(f"importing the root-filesystem tarball {source}\n")
    _extract(source, rootfs)


def apply_oci_layout(layout: Path, rootfs: Path, log: LogFn) -> None:
    manifest = _manifest_for_this_machine(layout)
    layers = manifest.get("layers") or []
    if not layers:
        raise ImportFailed(f"the OCI manifest in {layout} lists no layers")
    for number, layer in enumerate(layers, start=1):
        log(f"applying layer {number}/{len(layers)} {layer.get('digest', '?')}\n")
        apply_layer(_blob(layout, layer["digest"]), rootfs)


def apply_layer(archive: Path, rootfs: Path) -> None:
    """Apply one layer tarball over `rootfs`: its whiteouts first (they concern lower layers), then its files."""
    names = [_clean(name) for name in _members(archive)]
    for name in names:
        path = PurePosixPath(name)
        if path.name == _OPAQUE_MARKER:
            _empty_directory(rootfs, path.parent)
        elif path.name.startswith(_WHITEOUT_PREFIX):
            _remove(rootfs, path.parent / path.name[len(_WHITEOUT_PREFIX):])
    _extract(archive, rootfs, exclude=f"{_WHITEOUT_PREFIX}*")


def _manifest_for_this_machine(layout: Path) -> dict:
    document = _read_json(layout / "index.json")
    wanted = _ARCHITECTURES.get(platform.machine(), platform.machine())
    while True:
        entries = document.get("manifests") or []
        if not entries:
            raise ImportFailed(f"the OCI index in {layout} lists no manifests")
        matching = [e for e in entries
                    if (e.get("platform") or {}).get("architecture", wanted) == wanted
                    and (e.get("platform") or {}).get("os", "linux") == "linux"]
        if not matching:
            found = sorted({(e.get("platform") or {}).get("architecture", "?") for e in entries})
            raise ImportFailed(f"the OCI image in {layout} has no manifest for linux/{wanted} (it has {found})")
        document = _read_json(_blob(layout, matching[0]["digest"]))
        if document.get("mediaType") not in _INDEX_TYPES and "layers" in document:
            return document


def _blob(layout: Path, digest: str) -> Path:
    algorithm, _, value = digest.partition(":")
    path = layout / "blobs" / algorithm / value
    if not value or "/" in value or not path.is_file():
        raise ImportFailed(f"the OCI layout {layout} lacks the blob {digest}")
    return path


def _read_json(path: Path) -> dict:
    try:
        return json.loads(path.read_text())
    except (OSError, ValueError) as exc:
        raise ImportFailed(f"cannot read {path}: {exc}") from exc


def _members(archive: Path) -> list[str]:
    result = subprocess.run([tool("tar"), "-tf", str(archive)], capture_output=True, text=True, check=False)
    if result.returncode != 0:
        raise ImportFailed(f"{archive} is not a tar archive tar can read: {result.stderr.strip()}")
    return result.stdout.splitlines()


def _extract(archive: Path, target: Path, exclude: str | None = None) -> None:
    argv = [tool("tar"), "-xpf", str(archive), "-C", str(target), "--numeric-owner", "--same-owner",
            "--xattrs", "--xattrs-include=*"]
    if exclude:
        argv.append(f"--exclude={exclude}")
    result = subprocess.run(argv, capture_output=True, text=True, check=False)
    if result.returncode != 0:
        raise ImportFailed(f"extracting {archive} failed: {result.stderr.strip()[-2000:]}")


def _clean(name: str) -> str:
    return name[2:] if name.startswith("./") else name.lstrip("/")


def _inside(rootfs: Path, relative: PurePosixPath) -> Path | None:
    """`relative` under `rootfs`, or None if it would leave it (``..``) or is the root itself."""
    normalized = os.path.normpath(str(relative))
    if normalized in (".", "") or normalized.startswith(".."):
        return None
    return rootfs / normalized


def _remove(rootfs: Path, relative: PurePosixPath) -> None:
    path = _inside(rootfs, relative)
    if path is None:
        return
    if path.is_dir() and not path.is_symlink():
        shutil.rmtree(path)
    elif path.is_symlink() or path.exists():
        path.unlink()


def _empty_directory(rootfs: Path, relative: PurePosixPath) -> None:
    path = _inside(rootfs, relative)
    if path is None or path.is_symlink() or not path.is_dir():
        return
    for child in path.iterdir():
        _remove(rootfs, relative / child.name)
