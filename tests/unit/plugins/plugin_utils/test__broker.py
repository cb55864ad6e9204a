# Copyright (c) 2026, the mngr.modal authors
# GNU General Public License v3.0+ (see COPYING or https://www.gnu.org/licenses/gpl-3.0.txt)

"""The sandbox_exec broker without Modal: sandboxes stand-ins run commands locally and copy files in a folder.

The same stand-ins serve the connection plugin's tests (see tests/unit/plugins/connection), which go through a real
broker socket.
"""

from __future__ import annotations

import os
import shutil
import subprocess
import threading
import typing as t

import pytest

from ansible_collections.mngr.modal.plugins.plugin_utils import _broker
from ansible_collections.mngr.modal.plugins.plugin_utils._broker import Broker, SandboxHandles


class SandboxFilesystemNotFoundError(Exception):
    """Named as the SDK names it: the broker recognises the SDK's errors by name."""


class FakeStdin:
    def __init__(self, process: "FakeProcess") -> None:
        self.process = process
        self.chunks: list[bytes] = []
        self.drains = 0

    def write(self, data: bytes) -> None:
        assert len(data) <= _broker.STDIN_CHUNK
        self.chunks.append(bytes(data))

    def drain(self) -> None:
        self.drains += 1

    def write_eof(self) -> None:
        self.process.start(b"".join(self.chunks))


class FakeStream:
    def __init__(self, process: "FakeProcess", which: str) -> None:
        self.process = process
        self.which = which

    def read(self) -> bytes:
        self.process.finished.wait(10)
        return getattr(self.process.result, self.which)


class FakeProcess:
    """Runs the command on this machine once stdin is closed, as a sandbox would run it."""

    def __init__(self, argv: tuple[str, ...]) -> None:
        self.argv = list(argv)
        self.stdin = FakeStdin(self)
        self.stdout = FakeStream(self, "stdout")
        self.stderr = FakeStream(self, "stderr")
        self.finished = threading.Event()
        self.result: t.Any = None

    def start(self, data: bytes) -> None:
        self.result = subprocess.run(self.argv, input=data, capture_output=True, check=False)
        self.finished.set()

    def wait(self) -> int:
        self.finished.wait(10)
        return self.result.returncode


class FakeFilesystem:
    def __init__(self, root: str) -> None:
        self.root = root

    def _inside(self, remote: str) -> str:
        assert remote.startswith("/"), "Modal's filesystem API takes absolute paths only"
        return os.path.join(self.root, remote.lstrip("/"))

    def copy_from_local(self, local: str, remote: str) -> None:
        os.makedirs(os.path.dirname(self._inside(remote)), exist_ok=True)
        shutil.copyfile(local, self._inside(remote))

    def copy_to_local(self, remote: str, local: str) -> None:
        if not os.path.exists(self._inside(remote)):
            raise SandboxFilesystemNotFoundError(f"{remote}: not found")
        shutil.copyfile(self._inside(remote), local)


class FakeHandle:
    def __init__(self, object_id: str, root: str) -> None:
        self.object_id = object_id
        self.filesystem = FakeFilesystem(root)
        self.ended = False
        self.execs: list[FakeProcess] = []

    def exec(self, *argv: str, text: bool = True, timeout: int | None = None) -> FakeProcess:
        assert text is False, "exec must be binary-safe"
        if self.ended:
            raise RuntimeError("Task has finished")
        process = FakeProcess(argv)
        self.execs.append(process)
        return process

    def poll(self) -> int | None:
        return 0 if self.ended else None


class FakeModal:
    """``modal.Sandbox.list``/``from_id`` over a table of running sandboxes by host name."""

    def __init__(self) -> None:
        self.running: dict[str, FakeHandle] = {}
        self.list_calls = 0
        outer = self

        class Sandbox:
            @staticmethod
            def list(app_id: str, tags: dict[str, str], client: t.Any) -> list[FakeHandle]:
                outer.list_calls += 1
                handle = outer.running.get(tags["mngr_host_name"])
                return [handle] if handle is not None and not handle.ended else []

            @staticmethod
            def from_id(sandbox_id: str, client: t.Any) -> FakeHandle:
                for handle in outer.running.values():
                    if handle.object_id == sandbox_id:
                        return handle
                raise LookupError(sandbox_id)

        self.Sandbox = Sandbox


class FakeApp:
    app_id = "ap-1"


class FakeSession:
    app_name = "shop"
    environment = None
    server_url = "http://127.0.0.1:1"
    client = object()

    def __init__(self) -> None:
        self.modal = FakeModal()

    def call(self, fn: t.Callable[..., t.Any], *args: t.Any, **kwargs: t.Any) -> t.Any:
        return fn(*args, **kwargs)

    def app(self, create_if_missing: bool) -> FakeApp:
        return FakeApp()

    def close(self) -> None:
        pass


@pytest.fixture
def session(tmp_path) -> FakeSession:
    session = FakeSession()
    session.modal.running["web1"] = FakeHandle("sb-1", str(tmp_path / "sb-1"))
    return session


def exec_request(argv: list[str], host: str = "web1") -> dict[str, t.Any]:
    return {"op": "exec", "argv": argv, "target": {"host": host}, "timeout": 60}


def test_exec_passes_stdin_stdout_stderr_and_code_byte_for_byte(session):
    broker = Broker(SandboxHandles(session))
    stdin = bytes(range(256)) * 4
    script = "cat; printf 'e\\377r' >&2; exit 7"
    reply, data = broker.answer(exec_request(["/bin/sh", "-c", script]), stdin)
    assert reply["ok"] and reply["rc"] == 7
    assert data[:reply["stdout_size"]] == stdin
    assert data[reply["stdout_size"]:] == b"e\xffr"


def test_large_stdin_goes_in_chunks_the_sdk_accepts(session, monkeypatch):
    monkeypatch.setattr(_broker, "STDIN_CHUNK", 1000)
    broker = Broker(SandboxHandles(session))
    reply, data = broker.answer(exec_request(["wc", "-c"]), b"x" * 4500)
    assert int(data[:reply["stdout_size"]]) == 4500
    assert len(session.modal.running["web1"].execs[0].stdin.chunks) == 5


def test_one_lookup_per_host_for_many_requests(session):
    broker = Broker(SandboxHandles(session))
    for _attempt in range(5):
        assert broker.answer(exec_request(["true"]), b"")[0]["ok"]
    assert session.modal.list_calls == 1


def test_an_unknown_host_is_unreachable_with_how_to_start_it(session):
    reply, _data = Broker(SandboxHandles(session)).answer(exec_request(["true"], host="ghost"), b"")
    assert reply["ok"] is False and reply["kind"] == "unreachable"
    assert "host ghost has no running sandbox in app shop" in reply["msg"]
    assert "mngr.modal.modal_sandbox (name=ghost, state=started)" in reply["msg"]


def test_a_sandbox_that_ends_mid_run_makes_the_host_unreachable(session):
    broker = Broker(SandboxHandles(session))
    assert broker.answer(exec_request(["true"]), b"")[0]["ok"]
    session.modal.running["web1"].ended = True
    reply, _data = broker.answer(exec_request(["true"]), b"")
    assert reply["kind"] == "unreachable"
    assert "host web1 has no running sandbox" in reply["msg"] and "state=started" in reply["msg"]


def test_a_host_started_again_mid_run_is_found_in_its_new_sandbox(session, tmp_path):
    broker = Broker(SandboxHandles(session))
    assert broker.answer(exec_request(["true"]), b"")[0]["ok"]
    session.modal.running["web1"].ended = True
    session.modal.running["web1"] = FakeHandle("sb-2", str(tmp_path / "sb-2"))
    reply, data = broker.answer(exec_request(["echo", "again"]), b"")
    assert reply["ok"] and data == b"again\n"
    assert session.modal.list_calls == 2


def test_files_go_both_ways_and_a_missing_remote_file_is_not_found(session, tmp_path):
    broker = Broker(SandboxHandles(session))
    local = tmp_path / "in.bin"
    local.write_bytes(os.urandom(5000))
    target = {"host": "web1"}
    assert broker.answer({"op": "put", "target": target, "local": str(local), "remote": "/tmp/a b.bin"}, b"")[0]["ok"]
    back = tmp_path / "back.bin"
    assert broker.answer({"op": "fetch", "target": target, "remote": "/tmp/a b.bin", "local": str(back)}, b"")[0]["ok"]
    assert back.read_bytes() == local.read_bytes()
    reply, _data = broker.answer({"op": "fetch", "target": target, "remote": "/nope", "local": str(back)}, b"")
    assert reply["kind"] == "not_found" and "/nope" in reply["msg"]
    reply, _data = broker.answer({"op": "put", "target": target, "local": str(tmp_path / "missing"), "remote": "/x"}, b"")
    assert reply["kind"] == "not_found"


def test_a_sandbox_id_target_is_never_looked_up_by_name(session):
    broker = Broker(SandboxHandles(session))
    reply, data = broker.answer({"op": "exec", "argv": ["echo", "hi"], "target": {"sandbox_id": "sb-1"}}, b"")
    assert reply["ok"] and data == b"hi\n"
    assert session.modal.list_calls == 0
    session.modal.running["web1"].ended = True
    reply, _data = broker.answer({"op": "exec", "argv": ["true"], "target": {"sandbox_id": "sb-1"}}, b"")
    assert reply["kind"] == "unreachable" and "sandbox sb-1" in reply["msg"]


def test_controllers_are_remembered_so_the_broker_outlives_none_of_them(session):
    broker = Broker(SandboxHandles(session))
    broker.answer({"op": "ping", "controller": os.getpid()}, b"")
    assert broker.controllers == {os.getpid()}
    assert _broker.process_alive(os.getpid())
