"""Helpers shared by the emulator tests: a real ``modal-emulator serve`` subprocess and the SDK pointed at it.

Imported by name (``from sdk_harness import ...``); the fixtures built on them are in conftest.py.

One server per test module (``emulator`` fixture), started with a temporary state dir and stopped
with SIGTERM in a ``finally``. The SDK's own config is isolated (``MODAL_CONFIG_PATH``), and its
cached client is reset so that each module talks to its own server. ``sandbox_api`` runs a test
once with V2 sandboxes (the SDK's default) and once with V1 (``MODAL_SANDBOX_V2=0``).
"""

from __future__ import annotations

import contextlib
import os
import pathlib
import shutil
import signal
import subprocess
import sys
import time
from collections.abc import Iterator
from dataclasses import dataclass

# MODAL_EMULATOR: an emulator of another virtualenv, so that the SDK under test may be another release than the
# emulator's own (the server side then speaks the newest protocol, as Modal's servers do).
EMULATOR = (os.environ.get("MODAL_EMULATOR") or shutil.which("modal-emulator")
            or str(pathlib.Path(sys.executable).parent / "modal-emulator"))
READY_TIMEOUT_S = 90


@dataclass
class EmulatorProcess:
    state_dir: pathlib.Path
    log_path: pathlib.Path
    extra_args: tuple[str, ...] = ()
    process: subprocess.Popen[bytes] | None = None
    url: str = ""

    def start(self) -> None:
        ready_file = self.state_dir.parent / f"{self.state_dir.name}.ready"
        ready_file.unlink(missing_ok=True)
        log = self.log_path.open("ab")
        self.process = subprocess.Popen(
            [EMULATOR, "serve", "--state-dir", str(self.state_dir), "--ready-file", str(ready_file), *self.extra_args],
            stdout=subprocess.PIPE,
            stderr=log,
            start_new_session=True,
        )
        deadline = time.monotonic() + READY_TIMEOUT_S
        while not ready_file.exists():
            if self.process.poll() is not None:
                raise RuntimeError(f"modal-emulator exited with {self.process.returncode}: {self.log_tail()}")
            if time.monotonic() > deadline:
                self.stop()
                raise RuntimeError(f"modal-emulator not ready after {READY_TIMEOUT_S}s: {self.log_tail()}")
            time.sleep(0.05)
        line = ready_file.read_text().strip()
        assert line.startswith("MODAL_SERVER_URL=http://127.0.0.1:"), line
        self.url = line.split("=", 1)[1]

    def stop(self, timeout: float = 60) -> int | None:
        """SIGTERM, wait; SIGKILL the process group if it hangs. Returns the exit code."""
        process, self.process = self.process, None
        if process is None:
            return None
        if process.poll() is None:
            process.send_signal(signal.SIGTERM)
            try:
                process.wait(timeout)
            except subprocess.TimeoutExpired:
                os.killpg(process.pid, signal.SIGKILL)
                process.wait()
        if process.stdout is not None:
            process.stdout.close()
        return process.returncode

    def log_tail(self, size: int = 4000) -> str:
        return self.log_path.read_text(errors="replace")[-size:] if self.log_path.exists() else ""


def reset_sdk_client() -> None:
    """Forget the SDK's cached client, so that the next call connects to the current MODAL_SERVER_URL."""
    from modal.client import _Client
    from modal.sandbox._common import _default_image

    _Client._client_from_env = None
    _Client._client_from_env_lock = None
    # The SDK keeps its default sandbox image hydrated for the process; a server with another state dir
    # does not know that image id, so let it be resolved (built) again.
    _default_image._unhydrate()


def point_sdk_at(url: str, config_dir: pathlib.Path) -> dict[str, str | None]:
    """Set the environment the SDK reads; returns the previous values."""
    config_dir.mkdir(parents=True, exist_ok=True)
    values = {
        "MODAL_SERVER_URL": url,
        "MODAL_TOKEN_ID": "ak-emulator",
        "MODAL_TOKEN_SECRET": "as-emulator",
        "MODAL_CONFIG_PATH": str(config_dir / "modal.toml"),
    }
    previous = {key: os.environ.get(key) for key in values}
    os.environ.update(values)
    reset_sdk_client()
    return previous


def restore_env(previous: dict[str, str | None]) -> None:
    for key, value in previous.items():
        if value is None:
            os.environ.pop(key, None)
        else:
            os.environ[key] = value
    reset_sdk_client()


@contextlib.contextmanager
def serving_emulator(base: pathlib.Path, extra_args: tuple[str, ...] = ()) -> Iterator[EmulatorProcess]:
    """A new emulator under ``base`` with the SDK pointed at it; SDK settings restored and server stopped after."""
    server = EmulatorProcess(state_dir=base / "state", log_path=base / "server.log", extra_args=extra_args)
    previous: dict[str, str | None] | None = None
    try:
        server.start()
        previous = point_sdk_at(server.url, base / "config")
        yield server
    finally:
        if previous is not None:
            restore_env(previous)
        server.stop()


def is_v1_id(sandbox_id: str) -> bool:
    from modal.sandbox._common import _is_v1_sandbox_id

    return _is_v1_sandbox_id(sandbox_id)
