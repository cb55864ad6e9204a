"""Mounts through the real modal SDK: uploads (inline and blob), named mounts, the global Python mount."""

from __future__ import annotations

import hashlib
import os
import pathlib
from pathlib import PurePosixPath

import pytest
from modal.exception import AlreadyExistsError, NotFoundError
from modal.mount import Mount, python_standalone_mount_name
from modal_emulator.server.core import EmulatorState
from modal_emulator.server.mounts import materialize_mount
from modal_proto import api_pb2

from sdk_harness import EmulatorProcess


def state_of(emulator: EmulatorProcess) -> EmulatorState:
    """A read-only view of the running emulator's state dir (manifests and content are plain files)."""
    return EmulatorState(emulator.state_dir)


def local_tree(root: pathlib.Path) -> dict[str, bytes]:
    files = {
        "pkg/__init__.py": b"",
        "pkg/mod.py": b"VALUE = 42\n",
        "data/big.bin": os.urandom(5 * 1024 * 1024),  # >= 4 MiB: uploaded as a blob
    }
    for rel, data in files.items():
        (root / rel).parent.mkdir(parents=True, exist_ok=True)
        (root / rel).write_bytes(data)
    (root / "run.sh").write_bytes(b"#!/bin/sh\necho hi\n")
    (root / "run.sh").chmod(0o755)
    files["run.sh"] = b"#!/bin/sh\necho hi\n"
    return files


def test_deploy_and_materialize(emulator: EmulatorProcess, tmp_path: pathlib.Path) -> None:
    files = local_tree(tmp_path / "src")
    mount = Mount._add_local_dir(tmp_path / "src", PurePosixPath("/opt/app"), ignore=lambda _: False)
    mount._deploy("app-files")
    same = Mount.from_name("app-files").hydrate()
    assert same.object_id == mount.object_id

    files_in_mount = materialize_mount(state_of(emulator), mount.object_id)
    materialized = {path: (source, mode) for path, source, mode in files_in_mount}
    assert sorted(materialized) == sorted(f"/opt/app/{rel}" for rel in files)
    for rel, data in files.items():
        source, mode = materialized[f"/opt/app/{rel}"]
        assert pathlib.Path(source).read_bytes() == data
        assert hashlib.sha256(data).hexdigest() == pathlib.Path(source).name
    assert materialized["/opt/app/run.sh"][1] == 0o755
    assert materialized["/opt/app/pkg/mod.py"][1] == 0o644

    # Same files again: same mount id (ids follow content); a second name may not clash.
    again = Mount._add_local_dir(tmp_path / "src", PurePosixPath("/opt/app"), ignore=lambda _: False)
    again._deploy("app-files-2")
    assert again.object_id == mount.object_id
    with pytest.raises(AlreadyExistsError):
        Mount._add_local_dir(tmp_path / "src", PurePosixPath("/x"), ignore=lambda _: False)._deploy("app-files")


def test_unknown_mount_name(emulator: EmulatorProcess) -> None:
    with pytest.raises(NotFoundError):
        Mount.from_name("no-such-mount").hydrate()
    with pytest.raises(NotFoundError):
        Mount.from_name("no-such-global", namespace=api_pb2.DEPLOYMENT_NAMESPACE_GLOBAL).hydrate()


@pytest.mark.parametrize("version", ["3.11", "3.12", "3.13", "3.14t"])
def test_python_standalone_mount(emulator: EmulatorProcess, version: str) -> None:
    name = python_standalone_mount_name(version, "2025.06")
    mount = Mount.from_name(name, namespace=api_pb2.DEPLOYMENT_NAMESPACE_GLOBAL).hydrate()
    files = materialize_mount(state_of(emulator), mount.object_id)
    paths = sorted(path for path, _, _ in files)
    assert "/python/bin/python3" in paths
    # Releases before 20241008 ship no bin/python (the SDK then adds a symlink step itself).
    assert ("/python/bin/python" in paths) == (name.split(".")[1] >= "20241008")
    for _, source, mode in files:
        assert mode == 0o755
        assert b"exec /usr/bin/python3" in pathlib.Path(source).read_bytes()


def test_unknown_mount_id_is_a_key_error(emulator: EmulatorProcess) -> None:
    with pytest.raises(KeyError):
        materialize_mount(state_of(emulator), "mo-doesnotexist")
