# Copyright (c) 2026, the mngr.modal authors
# GNU General Public License v3.0+ (see COPYING or https://www.gnu.org/licenses/gpl-3.0.txt)

"""HostLauncher: a launch that fails leaves no orphan, no record saying running, no keys and no name held."""

from __future__ import annotations

import pytest

from ansible_collections.mngr.modal.plugins.module_utils import _launch
from ansible_collections.mngr.modal.plugins.module_utils._keys import KeyStore
from ansible_collections.mngr.modal.plugins.module_utils._launch import HostLauncher, Launch, NameTaken
from ansible_collections.mngr.modal.plugins.module_utils._provision import CreateFailure
from ansible_collections.mngr.modal.plugins.module_utils._records import STATUS_FAILED, HostRecords
from ansible_collections.mngr.modal.plugins.module_utils._reservations import NameReservations
from ansible_collections.mngr.modal.plugins.module_utils._state_volume import MemoryStateFiles


class FakeSandbox:
    def __init__(self, sandbox_id):
        self.object_id = sandbox_id
        self.terminated = False

    def terminate(self):
        self.terminated = True


class FakeSession:
    key_dir = ""
    app_name = "app"
    environment = None

    @staticmethod
    def call(fn, *args, **kwargs):
        return fn(*args, **kwargs)


class FakeDirectory:
    app = object()

    def __init__(self):
        self.store = HostRecords(MemoryStateFiles())

    @staticmethod
    def tagged_sandbox_ids(host_id):
        return []


@pytest.fixture
def launcher(tmp_path):
    session = FakeSession()
    session.key_dir = str(tmp_path)
    directory = FakeDirectory()
    return HostLauncher(session, directory, NameReservations(MemoryStateFiles()), True, 30, None, [])


def test_a_failed_bootstrap_terminates_the_sandbox_and_undoes_the_host(launcher, monkeypatch):
    created = FakeSandbox("sb-1")
    monkeypatch.setattr(_launch, "create_sandbox", lambda *args: created)

    def failing_bootstrap(*args):
        raise CreateFailure("bootstrapping SSH in host web-1 failed (exit code 1)", "no sshd")

    monkeypatch.setattr(_launch, "bootstrap", failing_bootstrap)
    with pytest.raises(CreateFailure, match="bootstrapping SSH"):
        launcher.launch(Launch("web-1", "host-1", {"env": None}, {"fleet": "web"}), image=None)
    assert created.terminated
    record = launcher.directory.store.get("host-1")
    assert record.status == STATUS_FAILED and "bootstrapping SSH" in record.failure
    assert KeyStore(launcher.session.key_dir, "app").find("host-1", "web-1") is None
    assert launcher.reservations.holder("web-1") is None


def test_a_name_held_by_another_host_creates_nothing(launcher, monkeypatch):
    monkeypatch.setattr(_launch, "create_sandbox", lambda *args: pytest.fail("nothing may be created"))
    launcher.reservations.reserve("web-1", "host-other", launcher.evidence)
    with pytest.raises(NameTaken) as info:
        launcher.launch(Launch("web-1", "host-1", {}, {}), image=None)
    assert info.value.holder.host_id == "host-other"
    assert KeyStore(launcher.session.key_dir, "app").find("host-1", "web-1") is None
