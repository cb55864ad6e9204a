"""Fixtures: a real ``modal-emulator serve`` subprocess, and the real ``modal`` SDK pointed at it.

One server per test module (``emulator`` fixture), started with a temporary state dir and stopped
with SIGTERM in a ``finally``. The SDK's own config is isolated (``MODAL_CONFIG_PATH``), and its
cached client is reset so that each module talks to its own server. ``sandbox_api`` runs a test
once with V2 sandboxes (the SDK's default) and once with V1 (``MODAL_SANDBOX_V2=0``).
Plain helpers live in sdk_harness.py: a module named ``conftest`` cannot be imported by name once
a sub-folder has a conftest of its own.
"""

from __future__ import annotations

import os
import sys
from collections.abc import Iterator

import pytest

from sdk_harness import EmulatorProcess, serving_emulator


def pytest_configure(config: pytest.Config) -> None:
    config.addinivalue_line("markers", "server_args(*args): extra command line flags for the test's own server")


def _require_root() -> None:
    if sys.platform != "linux" or os.geteuid() != 0:
        pytest.skip("the emulator needs Linux and root")


@pytest.fixture(scope="module")
def emulator(tmp_path_factory: pytest.TempPathFactory, request: pytest.FixtureRequest) -> Iterator[EmulatorProcess]:
    """A running emulator for the whole module, with the SDK pointed at it."""
    _require_root()
    base = tmp_path_factory.mktemp("emulator")
    with serving_emulator(base, tuple(getattr(request.module, "EMULATOR_ARGS", ()))) as server:
        yield server


@pytest.fixture(params=["v2", "v1"])
def sandbox_api(request: pytest.FixtureRequest, monkeypatch: pytest.MonkeyPatch) -> str:
    """Run the test with V2 sandboxes (default) and with V1 ones (MODAL_SANDBOX_V2=0)."""
    monkeypatch.setenv("MODAL_SANDBOX_V2", "1" if request.param == "v2" else "0")
    return request.param


@pytest.fixture(scope="module")
def app(emulator: EmulatorProcess):  # noqa: ANN201 - modal.App
    import modal

    return modal.App.lookup("emulator-tests", create_if_missing=True)


@pytest.fixture
def sandboxes() -> Iterator[list]:
    """Sandboxes a test creates; terminated afterwards even if the test fails."""
    created: list = []
    yield created
    for sb in created:
        try:
            sb.terminate()
        except Exception:  # noqa: BLE001 - best effort cleanup
            pass
