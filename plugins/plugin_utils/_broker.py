# Copyright (c) 2026, the mngr.modal authors
# GNU General Public License v3.0+ (see COPYING or https://www.gnu.org/licenses/gpl-3.0.txt)

# This module is private to the mngr.modal collection: its interface may change at any time,
# do not use it from outside the collection.

"""The broker of the ``sandbox_exec`` connection: one Modal client and one sandbox handle per host, for a whole run.

Started by the first task that needs it (see :mod:`._broker_client`), it serves the workers on a Unix socket
(:mod:`._broker_wire`). Like SSH's ControlPersist, it stays while a run that used it goes on, and a set number of
seconds after the last such run has ended, so that the next run finds its Modal client open.
Its Modal settings come from its environment, exactly as a module's would; the token never leaves it.

Requests: ``exec`` (a command, its stdin; answers the return code, stdout and stderr), ``put`` and ``fetch`` (a file
between the controller and the sandbox, through Modal's sandbox filesystem API, streamed).
"""

from __future__ import annotations

import os
import socket
import socketserver
import struct
import sys
import threading
import time
import traceback
from typing import Any

from ansible_collections.mngr.modal.plugins.module_utils._client import ModalError, ModalSession, is_not_found, map_error
from ansible_collections.mngr.modal.plugins.module_utils._live import running_sandbox_of
from ansible_collections.mngr.modal.plugins.plugin_utils._broker_wire import (
    ENV_PERSIST,
    ENV_SOCKET,
    WireError,
    recv_message,
    send_message,
)

# Stdin goes to Modal in pieces well under the SDK's per-write buffer (16 MiB for an exec's stdin).
STDIN_CHUNK = 4 * 1024 * 1024
START_HELP = "Start it with mngr.modal.modal_sandbox (name={name}, state=started), then run again."


class Unreachable(Exception):
    """The target has no running sandbox (or Modal cannot be reached): the worker reports the host unreachable."""


class TransferFailed(Exception):
    """A file could not be copied; ``kind`` is ``not_found`` for a missing source, else ``error``."""

    def __init__(self, message: str, kind: str = "error") -> None:
        super().__init__(message)
        self.kind = kind


def describe_target(target: dict[str, Any]) -> str:
    return f"sandbox {target['sandbox_id']}" if target.get("sandbox_id") else f"host {target['host']}"


class SandboxHandles:
    """The Modal session of the broker and one sandbox handle per target, opened once and kept.

    A handle whose sandbox has ended is dropped, and a host name is looked up again once: a host started again
    since (a new sandbox under the same name) is then used; a host without a running sandbox is unreachable.
    """

    def __init__(self, session: ModalSession) -> None:
        self.session = session
        self._lock = threading.Lock()
        self._handles: dict[tuple[str, str], Any] = {}

    @staticmethod
    def _key(target: dict[str, Any]) -> tuple[str, str]:
        return ("id", target["sandbox_id"]) if target.get("sandbox_id") else ("host", target["host"])

    def get(self, target: dict[str, Any]) -> Any:
        key = self._key(target)
        with self._lock:
            handle = self._handles.get(key)
            if handle is None:
                handle = self._open(target)
                self._handles[key] = handle
            return handle

    def warm_up(self) -> None:
        """Open the Modal client and look the app up now, before the first request needs them."""
        with self._lock:
            self.session.app(create_if_missing=False)

    def forget(self, target: dict[str, Any]) -> None:
        with self._lock:
            self._handles.pop(self._key(target), None)

    def _open(self, target: dict[str, Any]) -> Any:
        session = self.session
        try:
            if target.get("sandbox_id"):
                handle = session.call(session.modal.Sandbox.from_id, target["sandbox_id"], client=session.client)
                if session.call(handle.poll) is not None:
                    raise Unreachable(self._no_sandbox_message(target, "it has ended"))
                return handle
            app = session.app(create_if_missing=False)
            handle = None if app is None else running_sandbox_of(session, app.app_id, target["host"])
        except ModalError as exc:
            if is_not_found(exc):
                raise Unreachable(self._no_sandbox_message(target, exc.msg)) from exc
            raise Unreachable(f"{describe_target(target)}: {exc.msg}") from exc
        if handle is None:
            raise Unreachable(self._no_sandbox_message(target, None))
        return handle

    def _no_sandbox_message(self, target: dict[str, Any], detail: str | None) -> str:
        session = self.session
        where = f"app {session.app_name}" + (f" (environment {session.environment})" if session.environment else "")
        if target.get("sandbox_id"):
            return (f"sandbox {target['sandbox_id']} of {where} is not running ({detail or 'not found'}). Use the "
                    "sandbox id of a running sandbox, or give the host's name instead.")
        because = f" ({detail})" if detail else ""
        return (f"host {target['host']} has no running sandbox in {where}{because}: it is stopped, its sandbox "
                f"ended (timeout, idle_timeout, crash) or was terminated, or no host has that name. "
                + START_HELP.format(name=target["host"]))

    def sandbox_ended(self, handle: Any) -> bool:
        """Whether a failed call failed because the sandbox has ended."""
        try:
            return self.session.call(handle.poll) is not None
        except ModalError as exc:
            return is_not_found(exc)

    def run(self, target: dict[str, Any], action: Any, retry_if_ended: bool = True) -> Any:
        """``action(handle)``, looking the target up again once when its sandbox turns out to have ended."""
        handle = self.get(target)
        try:
            return action(handle)
        except (TransferFailed, Unreachable):
            raise
        except Exception as exc:  # pylint: disable=broad-exception-caught
            if not self.sandbox_ended(handle):
                error = map_error(exc, self.session.server_url)
                raise Unreachable(f"{describe_target(target)}: Modal call failed: {error.msg}") from exc
            self.forget(target)
            if not retry_if_ended or target.get("sandbox_id"):
                raise Unreachable(self._no_sandbox_message(target, "its sandbox ended during the run")) from exc
            replacement = self.get(target)
            if replacement.object_id == handle.object_id:
                raise Unreachable(self._no_sandbox_message(target, "its sandbox ended during the run")) from exc
            return action(replacement)


# --- the three operations -----------------------------------------------------------------------------------


def run_command(handle: Any, argv: list[str], stdin: bytes, timeout: int | None) -> tuple[int, bytes, bytes]:
    """Run ``argv`` in the sandbox with ``stdin``; its exit code, stdout and stderr, byte for byte."""
    process = handle.exec(*argv, text=False, timeout=timeout)
    # stderr and the exit code are awaited while stdin is written and stdout read: each is its own round trip to
    # Modal, and none may wait on another.
    results: dict[str, Any] = {}
    waiters = [threading.Thread(target=lambda: results.update(stderr=process.stderr.read()), daemon=True),
               threading.Thread(target=lambda: results.update(code=process.wait()), daemon=True)]
    for waiter in waiters:
        waiter.start()
    for start in range(0, len(stdin), STDIN_CHUNK):
        process.stdin.write(stdin[start:start + STDIN_CHUNK])
        process.stdin.drain()
    process.stdin.write_eof()
    process.stdin.drain()
    stdout = process.stdout.read()
    for waiter in waiters:
        waiter.join()
    if "code" not in results:
        raise RuntimeError("the command's exit code could not be read")
    return results["code"], stdout, results.get("stderr", b"")


def _filesystem_error_kind(exc: BaseException) -> str | None:
    """``not_found``/``error`` for a failure of Modal's sandbox filesystem API, else None (not a file error)."""
    name = type(exc).__name__
    if name == "SandboxFilesystemNotFoundError":
        return "not_found"
    if name.startswith("SandboxFilesystem"):
        return "error"
    return None


def put_file(handle: Any, local: str, remote: str) -> None:
    try:
        handle.filesystem.copy_from_local(local, remote)
    except FileNotFoundError as exc:
        raise TransferFailed(f"file or module does not exist: {local}", "not_found") from exc
    except Exception as exc:
        kind = _filesystem_error_kind(exc)
        if kind is None:
            raise
        raise TransferFailed(f"copying {local} to {remote} in the sandbox failed: {exc}", kind) from exc


def fetch_file(handle: Any, remote: str, local: str) -> None:
    try:
        handle.filesystem.copy_to_local(remote, local)
    except Exception as exc:
        kind = _filesystem_error_kind(exc)
        if kind is None:
            raise
        raise TransferFailed(f"copying {remote} from the sandbox to {local} failed: {exc}", kind) from exc


# --- the server ------------------------------------------------------------------------------------------------


class Broker:
    """Answers the requests of one connection from a worker."""

    def __init__(self, handles: SandboxHandles) -> None:
        self.handles = handles
        self.last_request = time.monotonic()
        # The controller processes (ansible-playbook...) whose workers sent requests: the broker outlives none of them.
        self.controllers: set[int] = set()

    def answer(self, header: dict[str, Any], payload: bytes) -> tuple[dict[str, Any], bytes]:
        self.last_request = time.monotonic()
        if isinstance(header.get("controller"), int):
            self.controllers.add(header["controller"])
        target = header.get("target") or {}
        op = header.get("op")
        try:
            if op == "exec":
                argv = [str(arg) for arg in header["argv"]]
                timeout = header.get("timeout")
                code, stdout, stderr = self.handles.run(target, lambda h: run_command(h, argv, payload, timeout))
                return {"ok": True, "rc": code, "stdout_size": len(stdout)}, stdout + stderr
            if op == "put":
                self.handles.run(target, lambda h: put_file(h, header["local"], header["remote"]))
                return {"ok": True}, b""
            if op == "fetch":
                self.handles.run(target, lambda h: fetch_file(h, header["remote"], header["local"]))
                return {"ok": True}, b""
            if op == "ping":
                return {"ok": True}, b""
            return {"ok": False, "kind": "error", "msg": f"unknown request {op!r}"}, b""
        except Unreachable as exc:
            return {"ok": False, "kind": "unreachable", "msg": str(exc)}, b""
        except TransferFailed as exc:
            return {"ok": False, "kind": exc.kind, "msg": str(exc)}, b""
        except Exception as exc:  # pylint: disable=broad-exception-caught
            error = map_error(exc, self.handles.session.server_url)
            return {"ok": False, "kind": "unreachable", "msg": f"{describe_target(target)}: {error.msg}"}, b""
        finally:
            self.last_request = time.monotonic()


def peer_uid(sock: socket.socket) -> int:
    creds = sock.getsockopt(socket.SOL_SOCKET, socket.SO_PEERCRED, struct.calcsize("3i"))
    return struct.unpack("3i", creds)[1]


class _RequestHandler(socketserver.BaseRequestHandler):
    server: "_Server"

    def handle(self) -> None:
        # The folder is the user's alone; the peer's uid is checked as well, in case its mode is ever widened.
        if peer_uid(self.request) != os.getuid():
            return
        try:
            header, payload = recv_message(self.request)
        except (WireError, OSError, ValueError):
            return
        self.server.busy += 1
        try:
            reply, data = self.server.broker.answer(header, payload)
        finally:
            self.server.busy -= 1
        try:
            send_message(self.request, reply, data)
        except OSError:
            pass


class _Server(socketserver.ThreadingMixIn, socketserver.UnixStreamServer):
    daemon_threads = True

    def __init__(self, path: str, broker: Broker) -> None:
        self.broker = broker
        self.busy = 0
        super().__init__(path, _RequestHandler)


def process_alive(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:
        return True
    return True


def watch(server: _Server, persist: float) -> None:
    """Stop serving ``persist`` seconds after the last request, once no run that used the broker goes on."""
    broker = server.broker
    while True:
        time.sleep(0.2)
        broker.controllers = {pid for pid in broker.controllers if process_alive(pid)}
        if broker.controllers or server.busy:
            continue
        if time.monotonic() - broker.last_request >= persist:
            break
    server.shutdown()


def main() -> None:
    path = os.environ[ENV_SOCKET]
    persist = float(os.environ.get(ENV_PERSIST) or 0)
    session = ModalSession(token_id=os.environ.get("MODAL_TOKEN_ID"), token_secret=os.environ.get("MODAL_TOKEN_SECRET"),
                           environment=os.environ.get("MODAL_ENVIRONMENT"), app=os.environ.get("MNGR_MODAL_APP"))
    # Variables that carried settings to this process are not passed on to anything it starts.
    for name in (ENV_SOCKET, ENV_PERSIST):
        os.environ.pop(name, None)
    server = _Server(path, Broker(SandboxHandles(session)))
    os.chmod(path, 0o600)
    listening = os.stat(path)
    watcher = threading.Thread(target=watch, args=(server, persist), daemon=True)
    watcher.start()
    # Connect to Modal while the first request is on its way (the SDK import is most of a second).
    threading.Thread(target=_warm_up, args=(server.broker.handles,), daemon=True).start()
    try:
        server.serve_forever(poll_interval=0.5)
    finally:
        server.server_close()
        _unlink_if_ours(path, listening)
        session.close()
    # Ended as planned: its log and lock file are of no further use (a failed start keeps its log for the worker).
    base = path[:-len(".sock")]
    for leftover in (f"{base}.log", f"{base}.lock"):
        try:
            os.unlink(leftover)
        except OSError:
            pass


def _unlink_if_ours(path: str, listening: os.stat_result) -> None:
    """Remove the socket file, unless a newer broker has replaced it already."""
    try:
        if os.stat(path).st_ino == listening.st_ino:
            os.unlink(path)
    except OSError:
        pass


def _warm_up(handles: SandboxHandles) -> None:
    try:
        handles.warm_up()
    except Exception:  # pylint: disable=broad-exception-caught
        # The first request reports the problem, with its host's name.
        traceback.print_exc(file=sys.stderr)
