# Copyright (c) 2026, the mngr.modal authors
# GNU General Public License v3.0+ (see COPYING or https://www.gnu.org/licenses/gpl-3.0.txt)

"""modal_snapshot and modal_snapshot_info logic that needs no Modal: input checks, result shapes, decisions."""

from __future__ import annotations

import types

import pytest

from ansible_collections.mngr.modal.plugins.module_utils._errors import HostError
from ansible_collections.mngr.modal.plugins.module_utils._hosts import Host
from ansible_collections.mngr.modal.plugins.module_utils._live import ListedSandbox
from ansible_collections.mngr.modal.plugins.module_utils._records import HostRecord
from ansible_collections.mngr.modal.plugins.module_utils._snapshots import (
    SnapshotCatalog,
    SnapshotError,
    SnapshotRecord,
    default_snapshot_name,
)
from ansible_collections.mngr.modal.plugins.module_utils._state_volume import MemoryStateFiles
from ansible_collections.mngr.modal.plugins.modules.modal_snapshot import ModalSnapshotModule
from ansible_collections.mngr.modal.plugins.modules.modal_snapshot_info import host_views, snapshot_item


class FakeModule:
    """Just enough of AnsibleModule for validate_inputs."""

    def __init__(self, **params):
        defaults = {key: spec.get("default") for key, spec in ModalSnapshotModule.argument_spec().items()}
        defaults.update(params)
        self.params = defaults
        self.check_mode = False


def validate(**params):
    module = ModalSnapshotModule(FakeModule(**params))
    module.validate_inputs()
    return module


def test_defaults_are_valid():
    validate(host="web")
    validate(host="web", name="before-upgrade", state="absent")
    validate(host="web", ttl=0)


@pytest.mark.parametrize(
    "params, error, fragment",
    [
        ({"host": "web", "name": "../x"}, SnapshotError, "'../x'"),
        ({"host": "web", "name": "a/b"}, SnapshotError, "'a/b'"),
        ({"host": "web", "name": ""}, SnapshotError, "non-empty"),
        ({"host": "web", "name": "x" * 300}, SnapshotError, "300 characters"),
        ({"host": "web", "state": "absent"}, SnapshotError, "name is required"),
        ({"host": "web", "ttl": -1}, SnapshotError, "ttl"),
        ({"host": "web", "wait_timeout": 0}, SnapshotError, "wait_timeout"),
        ({"host": "bad/host"}, HostError, "'bad/host'"),
    ],
)
def test_bad_inputs_fail_before_modal_is_contacted(params, error, fragment):
    with pytest.raises(error) as info:
        validate(**params)
    assert fragment in str(info.value)


def test_image_kept_message_names_the_image_and_expiry():
    record = SnapshotRecord(name="s", image_id="im-1", host_id="h", expires_at="2026-02-01T00:00:00+00:00")
    message = ModalSnapshotModule.image_kept(record)
    assert "Modal keeps the image im-1" in message and "2026-02-01T00:00:00+00:00" in message
    record.expires_at = None
    assert "until it expires" not in ModalSnapshotModule.image_kept(record)


def test_info_items_use_the_current_host_name_and_state():
    records = [HostRecord(host_id="h1", name="renamed", status="stopped"),
               HostRecord(host_id="h2", name="gone", status="destroyed")]
    views = host_views(records)
    snap = SnapshotRecord(name="s", image_id="im-1", host_id="h1", host_name="old-name",
                          created_at="2026-01-01T00:00:00+00:00", expires_at="2000-01-01T00:00:00+00:00")
    item = snapshot_item(snap, views)
    assert item["host"] == "renamed" and item["host_state"] == "stopped" and item["expired"] is True
    orphan = SnapshotRecord(name="s", image_id="im-2", host_id="h3", host_name="unknown-host")
    assert snapshot_item(orphan, views)["host"] == "unknown-host"
    assert snapshot_item(orphan, views)["host_state"] == "unknown"


class SnapshotRunWithoutModal(ModalSnapshotModule):
    """present() with the host, the catalog and the session replaced by in-memory ones."""

    def __init__(self, catalog, key_dir, **params):
        super().__init__(FakeModule(**params))
        self._catalog = catalog
        self.session = types.SimpleNamespace(key_dir=key_dir, call=lambda fn, *args, **kwargs: fn(*args, **kwargs))
        sandbox = types.SimpleNamespace(
            object_id="sb-1", snapshot_filesystem=lambda timeout, ttl: types.SimpleNamespace(object_id="im-new"))
        self.host = Host("host-a", "web", {}, sandbox=ListedSandbox("sb-1", {}, _handle=sandbox))

    def find_host(self, include_destroyed):
        return self.host, None

    def catalog(self, create):
        return self._catalog


def test_a_run_without_a_name_takes_its_own_snapshot_when_another_run_took_the_default_name(tmp_path):
    """Another run recorded snapshot-<this second>: this run must not report that one as its own."""
    taken = SnapshotRecord(name=default_snapshot_name(), image_id="im-other", host_id="host-a", host_name="web")
    catalog = SnapshotCatalog(MemoryStateFiles({taken.path: taken.to_json()}))
    run = SnapshotRunWithoutModal(catalog, str(tmp_path), host="web", wait=False)
    result = run.present()
    assert run.changed is True
    assert result["id"] == "im-new" and result["name"] != taken.name
    assert sorted(r.image_id for r in catalog.list("host-a")) == ["im-new", "im-other"]
