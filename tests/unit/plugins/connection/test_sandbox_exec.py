# Copyright (c) 2026, the mngr.modal authors
# GNU General Public License v3.0+ (see COPYING or https://www.gnu.org/licenses/gpl-3.0.txt)

"""The sandbox_exec connection plugin through a real broker socket, with the sandbox stand-ins of the broker's tests.

The broker serves in a thread of the test (Modal replaced by the stand-ins); the plugin finds its socket as in a run.
"""

from __future__ import annotations

import os
import pathlib
import shutil
import socket
import tempfile
import threading
import typing as t

import pytest

from ansible.errors import AnsibleConnectionFailure, AnsibleFileNotFound
from ansible.playbook.play_context import PlayContext
import yaml

from ansible_collections.mngr.modal.plugins.connection import sandbox_exec
from ansible_collections.mngr.modal.plugins.connection.sandbox_exec import remote_path
from ansible_collections.mngr.modal.plugins.plugin_utils import _broker_client, _broker_wire
from ansible_collections.mngr.modal.plugins.plugin_utils._broker import Broker, SandboxHandles, _Server
from ansible_collections.mngr.modal.plugins.plugin_utils._broker_client import BrokerClient

from ansible_collections.mngr.modal.tests.unit.plugins.plugin_utils.test__broker import FakeHandle, FakeSession


@pytest.fixture
def broker_dir(monkeypatch):
    # A short path: a Unix socket's path must fit in 108 bytes, and pytest's tmp_path is long.
    folder = pathlib.Path(tempfile.mkdtemp(prefix="mb-", dir="/tmp"))
    monkeypatch.setattr(_broker_client, "broker_folder", lambda: _broker_wire.broker_folder(str(folder)))
    yield folder
    shutil.rmtree(folder, ignore_errors=True)


@pytest.fixture
def serving(broker_dir, tmp_path):
    """A broker for the settings the plugin uses below, serving at the socket the plugin will look for."""
    session = FakeSession()
    session.modal.running["web1"] = FakeHandle("sb-1", str(tmp_path / "sb-1"))
    path = BrokerClient({"token_id": None, "token_secret": None, "environment": None, "app": "shop"}, 0).socket_path
    server = _Server(path, Broker(SandboxHandles(session)))
    thread = threading.Thread(target=server.serve_forever, kwargs={"poll_interval": 0.05}, daemon=True)
    thread.start()
    yield session
    server.shutdown()
    server.server_close()


DOC_OPTIONS = yaml.safe_load(sandbox_exec.DOCUMENTATION)["options"]


def connection(host: str = "web1", **options: t.Any) -> t.Any:
    """The plugin with its documented defaults and ``options``, set as Ansible's configuration would set them."""
    conn = sandbox_exec.Connection(PlayContext(), None)
    # Set directly, as the inventory's tests do: every supported ansible-core finds the plugin's options this way.
    conn._options = {name: spec.get("default") for name, spec in DOC_OPTIONS.items()}
    conn._options.update(dict({"host": host, "app": "shop"}, **options))
    return conn


def test_pipelining_is_on_by_default():
    conn = connection()
    assert conn.has_pipelining and conn.get_option("pipelining") is True


def test_exec_command_is_exact(serving):
    code, stdout, stderr = connection().exec_command("cat; echo oops >&2; exit 5", in_data=b"\x00\xffdata")
    assert (code, stdout, stderr) == (5, b"\x00\xffdata", b"oops\n")
    argv = serving.modal.running["web1"].execs[0].argv
    assert argv[:2] == ["/bin/sh", "-c"]


def test_put_and_fetch_odd_names(serving, tmp_path):
    conn = connection()
    local = tmp_path / "ünï 'q' \"d\".bin"
    local.write_bytes(os.urandom(3000))
    conn.put_file(str(local), "/tmp/dir with space/汉语 'x'.bin")
    back = tmp_path / "back.bin"
    conn.fetch_file("/tmp/dir with space/汉语 'x'.bin", str(back))
    assert back.read_bytes() == local.read_bytes()
    with pytest.raises(AnsibleFileNotFound):
        conn.fetch_file("/tmp/none", str(back))
    with pytest.raises(AnsibleFileNotFound):
        conn.put_file(str(tmp_path / "absent"), "/tmp/x")


def test_a_host_without_a_sandbox_is_unreachable(serving):
    with pytest.raises(AnsibleConnectionFailure, match=r"host ghost has no running sandbox.*state=started"):
        connection(host="ghost").exec_command("true")


def test_no_broker_socket_and_none_can_start_is_a_connection_failure(broker_dir, monkeypatch):
    monkeypatch.setattr(_broker_client, "_BOOT", "import sys; print('cannot start', file=sys.stderr); sys.exit(3)")
    with pytest.raises(AnsibleConnectionFailure, match=r"(?s)exited at start \(code 3\).*cannot start"):
        connection(app="other").exec_command("true")


@pytest.mark.parametrize("given, expected", [
    ("/tmp/a", "/tmp/a"), ("~", "/root"), ("~/x y", "/root/x y"), ("rel/file", "/root/rel/file"),
])
def test_remote_paths_are_absolute(given, expected):
    assert remote_path(given) == expected


def test_the_broker_key_keeps_no_secret_and_separates_settings():
    one = _broker_wire.broker_key({"token_secret": "as-secret"}, {"MODAL_SERVER_URL": "http://a"})
    two = _broker_wire.broker_key({"token_secret": "as-other"}, {"MODAL_SERVER_URL": "http://a"})
    three = _broker_wire.broker_key({"token_secret": "as-secret"}, {"MODAL_SERVER_URL": "http://b"})
    assert len({one, two, three}) == 3 and "secret" not in one


def test_messages_keep_binary_payloads(broker_dir):
    left, right = socket.socketpair()
    with left, right:
        _broker_wire.send_message(left, {"op": "x", "path": "é\udcff"}, bytes(range(256)))
        header, payload = _broker_wire.recv_message(right)
    assert header == {"op": "x", "path": "é\udcff"} and payload == bytes(range(256))


def test_a_broker_folder_others_can_enter_is_refused(broker_dir):
    folder = broker_dir / f"mngr-modal-{os.getuid()}"
    folder.mkdir(mode=0o755)
    os.chmod(folder, 0o755)
    with pytest.raises(PermissionError, match="mode 0700"):
        _broker_wire.broker_folder(str(broker_dir))
