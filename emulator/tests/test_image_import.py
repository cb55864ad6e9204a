"""``modal-emulator image import``: a rootfs tarball and an OCI image layout become registry references.

Both sources are made here with ``tar`` from the bookworm slim root of the machine's base cache. The
imports go to a base cache of this module's own (``--base-cache``), removed at the end.
"""

from __future__ import annotations

import hashlib
import json
import shutil
import subprocess
import sys
import tempfile
from pathlib import Path

import modal
import pytest

from modal_emulator.runtime.bases import BaseCache

IMPORT_CACHE = Path(tempfile.mkdtemp(prefix="emulator-import-cache-"))
EMULATOR_ARGS = ("--base-cache", str(IMPORT_CACHE))


@pytest.fixture(scope="module", autouse=True)
def _remove_import_cache():
    yield
    shutil.rmtree(IMPORT_CACHE, ignore_errors=True)


@pytest.fixture(scope="module")
def bookworm_root() -> Path:
    return BaseCache().resolve("debian:bookworm-slim").rootfs


def import_image(reference: str, source: Path) -> subprocess.CompletedProcess:
    return subprocess.run([sys.executable, "-m", "modal_emulator.cli", "image", "import", reference, str(source),
                           "--base-cache", str(IMPORT_CACHE)], capture_output=True, text=True, check=False)


def tar_of(directory: Path, archive: Path) -> Path:
    subprocess.run(["tar", "--numeric-owner", "-C", str(directory), "-cf", str(archive), "."], check=True)
    return archive


def add_blob(layout: Path, content: bytes, media_type: str) -> dict:
    digest = hashlib.sha256(content).hexdigest()
    (layout / "blobs" / "sha256").mkdir(parents=True, exist_ok=True)
    (layout / "blobs" / "sha256" / digest).write_bytes(content)
    return {"mediaType": media_type, "digest": f"sha256:{digest}", "size": len(content)}


def oci_layout(layout: Path, layers: list[Path]) -> Path:
    layer_type = "application/vnd.oci.image.layer.v1.tar"
    descriptors = [add_blob(layout, layer.read_bytes(), layer_type) for layer in layers]
    config = add_blob(layout, json.dumps({"architecture": "amd64", "os": "linux", "rootfs": {
        "type": "layers", "diff_ids": [d["digest"] for d in descriptors]}}).encode(),
        "application/vnd.oci.image.config.v1+json")
    manifest = add_blob(layout, json.dumps({"schemaVersion": 2, "mediaType": "application/vnd.oci.image.manifest.v1+json",
                                            "config": config, "layers": descriptors}).encode(),
                        "application/vnd.oci.image.manifest.v1+json")
    manifest["platform"] = {"architecture": "amd64", "os": "linux"}
    (layout / "index.json").write_text(json.dumps({"schemaVersion": 2, "manifests": [manifest]}))
    (layout / "oci-layout").write_text(json.dumps({"imageLayoutVersion": "1.0.0"}))
    return layout


def exec_out(sandboxes: list, app, reference: str, command: str) -> str:
    sb = modal.Sandbox.create(app=app, image=modal.Image.from_registry(reference))
    sandboxes.append(sb)
    process = sb.exec("sh", "-c", command)
    out = process.stdout.read()
    assert process.wait() == 0, process.stderr.read()
    return out


def test_import_a_rootfs_tarball(app, sandbox_api, sandboxes, bookworm_root, tmp_path) -> None:
    archive = tar_of(bookworm_root, tmp_path / "rootfs.tar")
    result = import_image("emulator-test/tarball:1", archive)
    assert result.returncode == 0, result.stderr
    assert exec_out(sandboxes, app, "emulator-test/tarball:1", "grep CODENAME= /etc/os-release") == \
        "VERSION_CODENAME=bookworm\n"


@pytest.mark.parametrize("as_archive", [False, True], ids=["directory", "archive"])
def test_import_an_oci_layout_applies_layers_and_whiteouts(app, sandboxes, bookworm_root, tmp_path,
                                                           as_archive) -> None:
    lower, upper = tmp_path / "lower", tmp_path / "upper"
    (lower / "opt/emu").mkdir(parents=True)
    (lower / "opt/emu/old").write_text("old\n")
    (lower / "opt/kept").write_text("kept\n")
    (upper / "opt/emu").mkdir(parents=True)
    (upper / "opt/emu/.wh..wh..opq").write_text("")   # empties /opt/emu of the layers below
    (upper / "opt/emu/new").write_text("new\n")
    (upper / "etc").mkdir()
    (upper / "etc/.wh.motd").write_text("")           # deletes /etc/motd of the base
    layers = [tar_of(bookworm_root, tmp_path / "l1.tar"), tar_of(lower, tmp_path / "l2.tar"),
              tar_of(upper, tmp_path / "l3.tar")]
    assert (bookworm_root / "etc/motd").exists(), "the whiteout must delete a file the base has"
    source = oci_layout(tmp_path / "layout", layers)
    if as_archive:
        source = tar_of(source, tmp_path / "layout.tar")
    reference = f"emulator-test/oci:{'archive' if as_archive else 'dir'}"
    result = import_image(reference, source)
    assert result.returncode == 0, result.stderr
    out = exec_out(sandboxes, app, reference, "ls /opt/emu; cat /opt/kept; test -e /etc/motd || echo no-motd; "
                                                "grep CODENAME= /etc/os-release")
    assert out == "new\nkept\nno-motd\nVERSION_CODENAME=bookworm\n"


def test_import_refuses_a_directory_that_is_not_an_oci_layout(tmp_path) -> None:
    result = import_image("emulator-test/bad:1", tmp_path)
    assert result.returncode == 1
    assert "not an OCI image layout" in result.stderr and str(tmp_path) in result.stderr


def test_importing_again_makes_a_new_base_and_keeps_the_old_one(tmp_path) -> None:
    first, second = tmp_path / "first", tmp_path / "second"
    for folder, marker in ((first, "one"), (second, "two")):
        (folder / "etc").mkdir(parents=True)
        (folder / "etc/marker").write_text(marker)
    assert import_image("emulator-test/again:1", tar_of(first, tmp_path / "first.tar")).returncode == 0
    cache = BaseCache(IMPORT_CACHE)
    old = cache.find("emulator-test/again:1")
    assert import_image("emulator-test/again:1", tar_of(second, tmp_path / "second.tar")).returncode == 0
    new = cache.find("emulator-test/again:1")
    assert new.rootfs != old.rootfs
    assert (new.rootfs / "etc/marker").read_text() == "two"
    # Images built on the first import (and sandboxes running on it) keep their root.
    assert (old.rootfs / "etc/marker").read_text() == "one"
