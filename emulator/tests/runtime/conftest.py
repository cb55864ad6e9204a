"""Fixtures for the container runtime's own tests (no gRPC server involved).

These tests mount filesystems and create namespaces for real, so they need Linux, root, overlayfs
and the util-linux tools; they are skipped with the reason otherwise. Every test cleans up what it
starts in ``finally`` blocks; the session store is closed (and its loop device detached) at the end.
"""

from __future__ import annotations

import os
import shutil
from collections.abc import Iterator
from pathlib import Path

import pytest

from modal_emulator.runtime.container import cleanup_stale
from modal_emulator.runtime.store import Store

_TOOLS = ("unshare", "nsenter", "setpriv", "pivot_root", "mount", "umount", "losetup", "mkfs.ext4", "ip", "bash")


def _missing_requirement() -> str | None:
    if os.name != "posix" or not Path("/proc/self/mountinfo").exists():
        return "the container runtime needs Linux"
    if os.geteuid() != 0:
        return "the container runtime needs root (mounts, namespaces)"
    if "overlay" not in Path("/proc/filesystems").read_text():
        return "the container runtime needs overlayfs (modprobe overlay)"
    missing = [t for t in _TOOLS if not shutil.which(t, path="/usr/sbin:/usr/bin:/sbin:/bin")]
    if missing:
        return f"the container runtime needs these tools: {', '.join(missing)}"
    return None


@pytest.fixture(autouse=True)
def _requirements() -> None:
    reason = _missing_requirement()
    if reason:
        pytest.skip(reason)


@pytest.fixture(scope="session")
def store(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Store]:
    reason = _missing_requirement()
    if reason:
        pytest.skip(reason)
    the_store = Store(tmp_path_factory.mktemp("runtime") / "state", size_gb=4)
    the_store.open()
    try:
        yield the_store
    finally:
        cleanup_stale(the_store.state_dir)
        the_store.close()
