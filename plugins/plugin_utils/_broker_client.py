# Copyright (c) 2026, the mngr.modal authors
# GNU General Public License v3.0+ (see COPYING or https://www.gnu.org/licenses/gpl-3.0.txt)

# This module is private to the mngr.modal collection: its interface may change at any time,
# do not use it from outside the collection.

"""The worker's side of the ``sandbox_exec`` broker: find the run's broker, start it when there is none, ask it.

Several workers (forks) may need a broker at the same moment: a lock file lets one of them start it while the
others wait for its socket.
"""

from __future__ import annotations

import errno
import fcntl
import os
import pathlib
import socket
import subprocess
import sys
import time
from typing import Any

from ansible_collections.mngr.modal.plugins.plugin_utils._broker_wire import (
    ENV_PERSIST,
    ENV_SOCKET,
    WireError,
    broker_folder,
    broker_key,
    lock_path,
    log_path,
    recv_message,
    send_message,
    socket_path,
)

# The broker is started with a plain Python, which finds the collection on sys.path (the folder that holds
# ansible_collections/) rather than through Ansible's collection loader.
_BOOT = ("import sys; sys.path.insert(0, sys.argv[1]); "
         "from ansible_collections.mngr.modal.plugins.plugin_utils._broker import main; main()")
_COLLECTIONS_ROOT = str(pathlib.Path(__file__).resolve().parents[5])

# How long a new broker may take to listen (it only binds its socket, then imports the SDK).
START_TIMEOUT_SECONDS = 30.0


class BrokerUnavailable(Exception):
    """No broker could be started or reached; the message says why (with the end of its log when it has one)."""


class BrokerClient:
    """Requests to the broker of this controller run and these Modal settings.

    ``settings`` are the connection's Modal options (token, environment, app; None when unset): they are passed to
    a new broker in its environment, the way the modules read them, and select which broker serves this worker.
    """

    def __init__(self, settings: dict[str, str | None], persist: int, controller_pid: int | None = None) -> None:
        self.settings = settings
        self.persist = persist
        # Each task runs in a worker forked from the controller process (ansible-playbook): the broker stays while
        # that process lives, and ``persist`` seconds after the last such process has ended.
        self.controller_pid = controller_pid or os.getppid()
        self.folder = broker_folder()
        self.key = broker_key(settings, dict(os.environ))
        self.socket_path = socket_path(self.folder, self.key)

    def request(self, header: dict[str, Any], payload: bytes = b"") -> tuple[dict[str, Any], bytes]:
        header = dict(header, controller=self.controller_pid)
        sock = self._connect()
        try:
            send_message(sock, header, payload)
            return recv_message(sock)
        except (OSError, WireError) as exc:
            raise BrokerUnavailable(f"the sandbox_exec broker stopped answering ({exc}){self._log_tail()}") from exc
        finally:
            sock.close()

    def _try_connect(self) -> socket.socket | None:
        sock = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
        try:
            sock.connect(self.socket_path)
        except OSError as exc:
            sock.close()
            if exc.errno in (errno.ENOENT, errno.ECONNREFUSED):
                return None
            raise BrokerUnavailable(f"cannot reach the sandbox_exec broker at {self.socket_path}: {exc}") from exc
        return sock

    def _connect(self) -> socket.socket:
        sock = self._try_connect()
        if sock is not None:
            return sock
        with open(lock_path(self.folder, self.key), "a", encoding="utf-8") as lock:
            fcntl.flock(lock, fcntl.LOCK_EX)
            sock = self._try_connect()
            if sock is not None:
                return sock
            process = self._start()
            deadline = time.monotonic() + START_TIMEOUT_SECONDS
            while time.monotonic() < deadline:
                sock = self._try_connect()
                if sock is not None:
                    return sock
                if process.poll() is not None:
                    raise BrokerUnavailable(f"the sandbox_exec broker exited at start (code {process.returncode})"
                                            f"{self._log_tail()}")
                time.sleep(0.01)
            raise BrokerUnavailable(f"the sandbox_exec broker did not listen within {START_TIMEOUT_SECONDS:g} seconds"
                                    f"{self._log_tail()}")

    def _start(self) -> subprocess.Popen:
        try:
            os.unlink(self.socket_path)  # left by a broker that did not end cleanly
        except FileNotFoundError:
            pass
        env = dict(os.environ)
        for name, variable in (("token_id", "MODAL_TOKEN_ID"), ("token_secret", "MODAL_TOKEN_SECRET"),
                               ("environment", "MODAL_ENVIRONMENT"), ("app", "MNGR_MODAL_APP")):
            if self.settings.get(name):
                env[variable] = str(self.settings[name])
        env.update({ENV_SOCKET: self.socket_path, ENV_PERSIST: str(self.persist)})
        # Its own session, so a Ctrl-C in the terminal reaches the controller (which then ends the broker) only.
        with open(log_path(self.folder, self.key), "wb") as log:
            return subprocess.Popen(  # pylint: disable=consider-using-with
                [sys.executable, "-c", _BOOT, _COLLECTIONS_ROOT], env=env, stdin=subprocess.DEVNULL,
                stdout=log, stderr=log, close_fds=True, start_new_session=True, cwd="/",
            )

    def _log_tail(self) -> str:
        try:
            with open(log_path(self.folder, self.key), "rb") as log:
                text = log.read()[-2000:].decode("utf-8", "replace").strip()
        except OSError:
            return ""
        return f"\n--- end of the broker's log ---\n{text}" if text else ""
