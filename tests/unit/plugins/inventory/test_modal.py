# Copyright (c) 2026, the mngr.modal authors
# GNU General Public License v3.0+ (see COPYING or https://www.gnu.org/licenses/gpl-3.0.txt)

"""The mngr.modal.modal inventory on fixed raw data: host construction, names, groups, unsafe values, caching.

Options are given as the inventory file would give them: strings from an inventory file are trusted
templates in ansible-core, so the tests mark them the same way.
"""

from __future__ import annotations

import os
import threading
import typing as t

import pytest

from ansible.errors import AnsibleParserError
from ansible.inventory.data import InventoryData
from ansible.parsing.dataloader import DataLoader
from ansible.template import Templar

try:
    from ansible.template import is_trusted_as_template, trust_as_template
except ImportError:  # ansible-core before 2.19: every plain string is a template, AnsibleUnsafe ones are not
    from ansible.utils.unsafe_proxy import AnsibleUnsafe

    def trust_as_template(value: t.Any) -> t.Any:
        return value

    def is_trusted_as_template(value: t.Any) -> bool:
        return not isinstance(value, AnsibleUnsafe)

from ansible_collections.mngr.modal.plugins.inventory import modal as plugin_module
from ansible_collections.mngr.modal.plugins.inventory.modal import (
    RAW_FORMAT,
    InventoryModule,
    ModalReader,
    safe_inventory_name,
)
from ansible_collections.mngr.modal.plugins.module_utils import _hosts, _live, _tags
from ansible_collections.mngr.modal.plugins.module_utils._client import ModalError
from ansible_collections.mngr.modal.plugins.module_utils._keys import KeyFolder
from ansible_collections.mngr.modal.plugins.module_utils._live import needs_tunnel, run_bounded, sandbox_info_to_raw

INJECTION = "{{ lookup('pipe', 'touch /tmp/mngr-modal-inventory-injected') }}"

DEFAULT_OPTIONS: dict[str, t.Any] = {
    "plugin": "mngr.modal.modal",
    "app": ["shop"],
    "environment": None,
    "token_id": None,
    "token_secret": None,
    "key_dir": None,
    "filters": {},
    "hostnames": [],
    "hostvars_prefix": "modal_",
    "include_stopped": False,
    "host_records": True,
    "ssh_user": "root",
    "python_interpreter": "/usr/bin/python3",
    "max_concurrent_calls": 4,
    "compose": {},
    "groups": {},
    "keyed_groups": [],
    "strict": False,
    "leading_separator": True,
    "use_extra_vars": False,
    "cache": False,
    "cache_plugin": "memory",
    "cache_timeout": 3600,
    "cache_connection": None,
    "cache_prefix": "ansible_inventory_",
}


def sandbox(sid: str, host_id: str, name: str, endpoint: str | None = "127.0.0.1:2201", created_at: float = 1790000000.0,
            ssh: list | None = None, gpu: str | None = None, **user_tags: str) -> dict[str, t.Any]:
    tags = {"mngr_host_id": host_id, "mngr_host_name": name}
    if endpoint:
        tags["mngr_ssh"] = endpoint
    tags.update({f"mngr_user_{key}": value for key, value in user_tags.items()})
    return {"id": sid, "created_at": created_at, "tags": tags, "ssh": ssh, "gpu": gpu}


def record(host_id: str, name: str, status: str = "running", sandbox_id: str | None = None, **extra: t.Any) -> dict[str, t.Any]:
    data = {"host_id": host_id, "name": name, "status": status, "sandbox_id": sandbox_id, "user_tags": {},
            "spec": {}, "created_at": "2026-01-01T00:00:00+00:00"}
    data.update(extra)
    return data


def raw_data(*apps: tuple[str, list, list]) -> dict[str, t.Any]:
    return {"format": RAW_FORMAT, "apps": [
        {"app": app, "found": True, "sandboxes": sandboxes, "records": records, "records_read": True}
        for app, sandboxes, records in apps
    ]}


FLEET = raw_data((
    "shop",
    [
        sandbox("sb-1", "host-1", "web1", "127.0.0.1:2201", role="web"),
        sandbox("sb-2", "host-2", "web2", "127.0.0.1:2202", role="web"),
        sandbox("sb-3", "host-3", "gpu1", "127.0.0.1:2203", role="train"),
    ],
    [
        record("host-3", "gpu1", sandbox_id="sb-3", spec={"gpu": "A100-80GB:2", "cpu": 4.0}, user_tags={"role": "train"}),
        record("host-4", "db1", status="stopped", user_tags={"role": "db"}),
        record("host-5", "old", status="destroyed"),
    ],
))


class FakeCache(dict):
    """Stands in for the cache plugin adjudicator: a dict that counts writes."""

    writes = 0

    def __setitem__(self, key: str, value: t.Any) -> None:
        self.writes += 1
        super().__setitem__(key, value)


def make_plugin(tmp_path, fetch: t.Callable[[], dict] | None = None, extra_vars: dict | None = None,
                **options: t.Any) -> InventoryModule:
    plugin = InventoryModule()
    plugin.loader = DataLoader()
    plugin.inventory = InventoryData()
    if not isinstance(getattr(type(plugin), "templar", None), property):
        plugin.templar = Templar(loader=plugin.loader)  # ansible-core before 2.19 sets it in parse()
    plugin._vars = extra_vars or {}
    merged = dict(DEFAULT_OPTIONS, key_dir=str(tmp_path / "keys"))
    merged.update(options)
    plugin._options = _trusted(merged)
    plugin._cache = FakeCache()
    calls = []

    def fake_fetch() -> dict:
        calls.append(1)
        return (fetch or (lambda: FLEET))()

    plugin._fetch_raw = fake_fetch  # type: ignore[method-assign]
    plugin.fetch_calls = calls  # type: ignore[attr-defined]
    return plugin


def _trusted(value: t.Any) -> t.Any:
    """Mark strings as ansible-core marks strings read from an inventory file."""
    if isinstance(value, str):
        return trust_as_template(value)
    if isinstance(value, dict):
        return {key: _trusted(item) for key, item in value.items()}
    if isinstance(value, list):
        return [_trusted(item) for item in value]
    return value


def populate(plugin: InventoryModule, cache: bool = True, path: str = "/inv/hosts.modal.yml") -> InventoryData:
    plugin._populate(plugin._raw_data(path, cache))
    return plugin.inventory


def make_keys(tmp_path, name: str, host_id: str) -> KeyFolder:
    """A key folder of the older layout, <key_dir>/<host name>/, which the inventory still reads."""
    folder = KeyFolder(str(tmp_path / "keys" / name), name)
    folder.ensure(host_id)
    return folder


def hostvars(inventory: InventoryData, name: str) -> dict[str, t.Any]:
    return inventory.get_host(name).get_vars()


def group_hosts(inventory: InventoryData, group: str) -> list[str]:
    return sorted(host.name for host in inventory.groups[group].get_hosts()) if group in inventory.groups else []


# --- verify_file ----------------------------------------------------------------------------------------


@pytest.mark.parametrize("name, accepted", [
    ("hosts.modal.yml", True), ("modal.yaml", True), ("prod.modal.yaml", True),
    ("hosts.yml", False), ("modal.yml.bak", False), ("hosts.aws_ec2.yml", False),
])
def test_verify_file_accepts_modal_yml_names_only(tmp_path, name, accepted):
    path = tmp_path / name
    path.write_text("plugin: mngr.modal.modal\n")
    assert InventoryModule().verify_file(str(path)) is accepted


# --- hosts, variables and default groups ---------------------------------------------------------------


def test_running_hosts_get_connection_variables_and_facts(tmp_path):
    folder = make_keys(tmp_path, "web1", "host-1")
    inventory = populate(make_plugin(tmp_path))
    web1 = hostvars(inventory, "web1")
    assert web1["ansible_host"] == "127.0.0.1"
    assert web1["ansible_port"] == 2201
    assert web1["ansible_user"] == "root"
    assert web1["ansible_ssh_private_key_file"] == folder.client_key
    assert f"UserKnownHostsFile={folder.known_hosts}" in web1["ansible_ssh_common_args"]
    assert "StrictHostKeyChecking=yes" in web1["ansible_ssh_common_args"]
    assert web1["ansible_ssh_host_key_checking"] is True
    assert web1["modal_host_id"] == "host-1"
    assert web1["modal_sandbox_id"] == "sb-1"
    assert web1["modal_app"] == "shop"
    assert web1["modal_tags"] == {"role": "web"}
    assert web1["modal_state"] == "running"
    assert web1["modal_started_at"] == "2026-09-21T14:13:20+00:00"
    # No record for web1: its creation time is its sandbox's.
    assert web1["modal_created_at"] == web1["modal_started_at"]
    gpu1 = hostvars(inventory, "gpu1")
    assert gpu1["modal_spec"] == {"gpu": "A100-80GB:2", "cpu": 4.0}
    assert gpu1["modal_gpu"] == "A100-80GB:2"
    assert gpu1["modal_created_at"] == "2026-01-01T00:00:00+00:00"


def test_default_groups(tmp_path):
    inventory = populate(make_plugin(tmp_path))
    assert group_hosts(inventory, "modal") == ["gpu1", "web1", "web2"]
    assert group_hosts(inventory, "modal_app_shop") == ["gpu1", "web1", "web2"]
    assert group_hosts(inventory, "modal_gpu_a100_80gb") == ["gpu1"]
    # Stopped and destroyed hosts are not listed by default.
    assert "db1" not in inventory.hosts and "old" not in inventory.hosts
    assert "modal_stopped" not in inventory.groups


def test_gpu_from_list_page_when_no_record(tmp_path):
    raw = raw_data(("ml", [sandbox("sb-9", "host-9", "t4box", gpu="T4")], []))
    inventory = populate(make_plugin(tmp_path, fetch=lambda: raw, app=["ml"]))
    assert group_hosts(inventory, "modal_gpu_t4") == ["t4box"]
    assert hostvars(inventory, "t4box")["modal_gpu"] == "T4"


def test_include_stopped_lists_stopped_hosts_without_connection_variables(tmp_path):
    inventory = populate(make_plugin(tmp_path, include_stopped=True))
    assert group_hosts(inventory, "modal_stopped") == ["db1"]
    db1 = hostvars(inventory, "db1")
    assert db1["modal_state"] == "stopped"
    assert db1["modal_tags"] == {"role": "db"}
    assert db1["modal_sandbox_id"] is None
    assert not any(key.startswith("ansible_") for key in db1)
    assert "db1" not in group_hosts(inventory, "modal")
    assert "old" not in inventory.hosts  # destroyed hosts never appear


def test_several_apps_get_one_group_each(tmp_path):
    raw = raw_data(
        ("shop", [sandbox("sb-1", "host-1", "web1")], []),
        ("batch", [sandbox("sb-7", "host-7", "worker1", "127.0.0.1:2207")], []),
    )
    inventory = populate(make_plugin(tmp_path, fetch=lambda: raw, app=["shop", "batch"]))
    assert group_hosts(inventory, "modal_app_shop") == ["web1"]
    assert group_hosts(inventory, "modal_app_batch") == ["worker1"]
    assert group_hosts(inventory, "modal") == ["web1", "worker1"]


def test_endpoint_from_list_page_tunnel_when_tag_missing(tmp_path):
    raw = raw_data(("shop", [sandbox("sb-1", "host-1", "web1", endpoint=None, ssh=["10.0.0.5", 40022])], []))
    web1 = hostvars(populate(make_plugin(tmp_path, fetch=lambda: raw)), "web1")
    assert (web1["ansible_host"], web1["ansible_port"]) == ("10.0.0.5", 40022)


def test_host_without_endpoint_is_listed_without_address(tmp_path, monkeypatch):
    warnings = []
    monkeypatch.setattr(plugin_module.display, "warning", warnings.append)
    raw = raw_data(("shop", [sandbox("sb-1", "host-1", "web1", endpoint=None), sandbox("sb-2", "host-2", "web2")], []))
    inventory = populate(make_plugin(tmp_path, fetch=lambda: raw))
    assert "ansible_host" not in hostvars(inventory, "web1")
    assert hostvars(inventory, "web2")["ansible_host"] == "127.0.0.1"
    assert any("no SSH endpoint known for web1" in warning for warning in warnings)


def test_filters_keep_matching_user_tags_only(tmp_path):
    inventory = populate(make_plugin(tmp_path, filters={"role": "web"}))
    assert sorted(inventory.hosts) == ["web1", "web2"]


@pytest.mark.parametrize("filters", [{"version": 2}, {"version": "2"}, {"flag": True}, {"flag": "true"},
                                     {"ratio": 0.5}, {"version": 2, "flag": True}])
def test_filters_compare_values_as_the_modules_compare_tags(tmp_path, filters):
    """``filters: {version: 2}`` matches what ``modal_sandbox_info tags: {version: 2}`` matches."""
    raw = raw_data(("shop", [sandbox("sb-1", "host-1", "tagged", version="2", flag="true", ratio="0.5"),
                             sandbox("sb-2", "host-2", "other", version="3", flag="false", ratio="1")], []))
    plugin = make_plugin(tmp_path, fetch=lambda: raw, filters=filters)
    assert sorted(populate(plugin).hosts) == ["tagged"]
    module_view = _hosts.filter_hosts(
        [_hosts.Host("host-1", "tagged", {"version": "2", "flag": "true", "ratio": "0.5"})],
        tags=_tags.normalize_user_tags(filters, "tags"))
    assert [host.name for host in module_view] == ["tagged"]


@pytest.mark.parametrize("filters, fragment", [
    ({"role": ["web", "db"]}, "filters value of 'role' must be a string or a number, got list"),
    ({"role": {"a": 1}}, "filters value of 'role' must be a string or a number, got dict"),
    ({"bad key": "x"}, "'bad key'"),
])
def test_bad_filters_are_an_error_naming_the_value(tmp_path, filters, fragment):
    plugin = make_plugin(tmp_path, filters=filters)
    with pytest.raises(AnsibleParserError) as info:
        populate(plugin)
    assert fragment in str(info.value)


def test_foreign_sandboxes_without_identity_tags_are_ignored(tmp_path):
    raw = raw_data(("shop", [sandbox("sb-1", "host-1", "web1"), {"id": "sb-x", "created_at": 1.0, "tags": {"team": "x"},
                                                                 "ssh": None, "gpu": None}], []))
    assert sorted(populate(make_plugin(tmp_path, fetch=lambda: raw)).hosts) == ["web1"]


# --- keys ------------------------------------------------------------------------------------------------


def test_missing_keys_keep_the_host_and_warn_once(tmp_path, monkeypatch):
    warnings = []
    monkeypatch.setattr(plugin_module.display, "warning", warnings.append)
    make_keys(tmp_path, "web1", "host-1")
    inventory = populate(make_plugin(tmp_path))
    assert "ansible_ssh_private_key_file" in hostvars(inventory, "web1")
    for name in ("web2", "gpu1"):
        variables = hostvars(inventory, name)
        assert "ansible_ssh_private_key_file" not in variables
        assert "StrictHostKeyChecking=yes" in variables["ansible_ssh_common_args"]
        assert variables["ansible_host"] == "127.0.0.1"
    key_warnings = [warning for warning in warnings if "no SSH keys" in warning]
    assert len(key_warnings) == 1
    assert "web2" in key_warnings[0] and "gpu1" in key_warnings[0] and "web1," not in key_warnings[0]


def test_key_folder_found_by_host_id_after_a_rename(tmp_path):
    folder = make_keys(tmp_path, "old-name", "host-1")
    web1 = hostvars(populate(make_plugin(tmp_path)), "web1")
    assert web1["ansible_ssh_private_key_file"] == folder.client_key


def test_ssh_user_option(tmp_path):
    assert hostvars(populate(make_plugin(tmp_path, ssh_user="admin")), "web1")["ansible_user"] == "admin"


# --- names and prefixes -----------------------------------------------------------------------------------


def test_hostvars_prefix(tmp_path):
    web1 = hostvars(populate(make_plugin(tmp_path, hostvars_prefix="sb_")), "web1")
    assert web1["sb_host_id"] == "host-1"
    assert "modal_host_id" not in web1
    assert "ansible_host" in web1  # connection variables are never prefixed


def test_hostnames_expression_and_template(tmp_path):
    inventory = populate(make_plugin(tmp_path, hostnames=["modal_tags.fqdn", "{{ modal_name }}.{{ modal_app }}"]))
    assert sorted(inventory.hosts) == ["gpu1.shop", "web1.shop", "web2.shop"]


def test_hostnames_first_usable_entry_wins(tmp_path):
    raw = raw_data(("shop", [sandbox("sb-1", "host-1", "web1", fqdn="web1.example.org"), sandbox("sb-2", "host-2", "web2")], []))
    inventory = populate(make_plugin(tmp_path, fetch=lambda: raw, hostnames=["modal_tags.fqdn", "modal_host_id"]))
    assert sorted(inventory.hosts) == ["host-2", "web1.example.org"]


def test_hostnames_error_is_fatal_only_when_strict(tmp_path):
    inventory = populate(make_plugin(tmp_path, hostnames=["undefined_variable.attr"]))
    assert sorted(inventory.hosts) == ["gpu1", "web1", "web2"]
    with pytest.raises(Exception, match="hostnames"):
        populate(make_plugin(tmp_path, hostnames=["undefined_variable.attr"], strict=True))


def test_duplicate_names_do_not_collapse_hosts(tmp_path, monkeypatch):
    warnings = []
    monkeypatch.setattr(plugin_module.display, "warning", warnings.append)
    raw = raw_data(("shop", [sandbox("sb-1", "host-1", "web1"), sandbox("sb-2", "host-2", "web1", "127.0.0.1:2202")], []))
    inventory = populate(make_plugin(tmp_path, fetch=lambda: raw))
    assert sorted(inventory.hosts) == ["host-2", "web1"]
    assert any("share a name" in warning for warning in warnings)


@pytest.mark.parametrize("name, expected", [
    ("web1", "web1"), ("a.b-c_d", "a.b-c_d"), ("", None), ("two words", None), ("{{ x }}", None), ("{% if %}", None), (3, None),
])
def test_safe_inventory_name(name, expected):
    assert safe_inventory_name(name) == expected


# --- constructed: compose, groups, keyed_groups --------------------------------------------------------


def test_keyed_groups_composed_groups_and_compose(tmp_path):
    plugin = make_plugin(
        tmp_path,
        keyed_groups=[{"key": "modal_tags.role", "prefix": "role"}],
        groups={"accelerated": "modal_gpu is not none"},
        compose={"ansible_python_interpreter": "'/usr/bin/python3'", "tier": "modal_tags.role | upper"},
    )
    inventory = populate(plugin)
    assert group_hosts(inventory, "role_web") == ["web1", "web2"]
    assert group_hosts(inventory, "role_train") == ["gpu1"]
    assert group_hosts(inventory, "accelerated") == ["gpu1"]
    assert hostvars(inventory, "web1")["ansible_python_interpreter"] == "/usr/bin/python3"
    assert hostvars(inventory, "web1")["tier"] == "WEB"


def test_strict_makes_a_broken_expression_fatal(tmp_path):
    populate(make_plugin(tmp_path, compose={"x": "modal_tags.missing.deeper"}))
    with pytest.raises(Exception):
        populate(make_plugin(tmp_path, compose={"x": "modal_tags.missing.deeper"}, strict=True))


# --- remote data stays data -----------------------------------------------------------------------------


def test_remote_strings_are_unsafe_and_never_evaluated(tmp_path):
    marker = "/tmp/mngr-modal-inventory-injected"
    if os.path.exists(marker):
        os.remove(marker)
    # Even raw data that arrives marked as trusted (say, from a cache plugin that trusts its files) is untrusted
    # once it becomes host variables.
    raw = _trusted(raw_data(("shop", [sandbox("sb-1", "host-1", "web1", role=INJECTION)], [])))
    plugin = make_plugin(
        tmp_path, fetch=lambda: raw,
        keyed_groups=[{"key": "modal_tags.role", "prefix": "role"}],
        compose={"role_copy": "modal_tags.role"},
        hostnames=["modal_tags.role", "modal_name"],
    )
    inventory = populate(plugin)
    web1 = hostvars(inventory, "web1")  # the template-looking tag is refused as a host name
    assert web1["modal_tags"]["role"] == INJECTION
    for value in (web1["modal_tags"]["role"], web1["modal_name"], web1["ansible_host"], web1["role_copy"]):
        assert not is_trusted_as_template(value)
    assert web1["role_copy"] == INJECTION
    # Templating a play's use of the variable gives the text back, it does not run the lookup.
    templar = Templar(loader=DataLoader(), variables=web1)
    assert templar.template(trust_as_template("{{ modal_tags.role }}")) == INJECTION
    assert any(group.startswith("role_") for group in inventory.groups)
    assert not os.path.exists(marker)


# --- caching -----------------------------------------------------------------------------------------------


def test_cache_stores_raw_data_and_is_reused(tmp_path):
    plugin = make_plugin(tmp_path, cache=True)
    populate(plugin)
    populate(plugin)
    assert len(plugin.fetch_calls) == 1
    assert plugin._cache.writes == 1
    (cached,) = plugin._cache.values()
    assert cached == FLEET  # raw Modal data, not built groups


def test_cache_false_from_flush_or_refresh_reads_modal_again(tmp_path):
    plugin = make_plugin(tmp_path, cache=True)
    populate(plugin)
    populate(plugin, cache=False)  # what --flush-cache and refresh_inventory pass
    assert len(plugin.fetch_calls) == 2
    assert plugin._cache.writes == 2


def test_cache_option_off_never_touches_the_cache(tmp_path):
    plugin = make_plugin(tmp_path, cache=False)
    populate(plugin)
    populate(plugin)
    assert len(plugin.fetch_calls) == 2
    assert plugin._cache.writes == 0


def test_cached_data_for_other_apps_is_not_used(tmp_path):
    plugin = make_plugin(tmp_path, cache=True)
    populate(plugin)
    plugin._options["app"] = [trust_as_template("other")]
    plugin.inventory = InventoryData()
    populate(plugin)
    assert len(plugin.fetch_calls) == 2


def _shop(**changes: t.Any) -> dict[str, t.Any]:
    """One app of raw data with ``changes`` applied to it: for caches of the wrong shape."""
    app = {"app": "shop", "found": True, "records_read": True,
           "sandboxes": [sandbox("sb-1", "host-1", "web1")], "records": [record("host-1", "web1", sandbox_id="sb-1")]}
    app.update(changes)
    return {"format": RAW_FORMAT, "apps": [app]}


@pytest.mark.parametrize("cached, fragment", [
    ("not even a mapping", "it is a str, not a mapping"),
    ({"format": RAW_FORMAT + 1, "apps": []}, f"its format is {RAW_FORMAT + 1}"),
    ({"format": RAW_FORMAT, "apps": "shop"}, "'apps' is not a list"),
    ({"format": RAW_FORMAT, "apps": ["shop"]}, "apps[0] is a str, not a mapping"),
    (_shop(sandboxes="sb-1"), "apps[0] has no 'sandboxes' of type list"),
    (_shop(sandboxes=["sb-1"]), "apps[0] sandboxes[0] is a str, not a mapping"),
    (_shop(sandboxes=[{"id": "sb-1", "tags": ["mngr_host_id"]}]), "sandboxes[0] has 'tags' ['mngr_host_id']"),
    (_shop(sandboxes=[dict(sandbox("sb-1", "host-1", "web1"), ssh="127.0.0.1:22")]), "has 'ssh' '127.0.0.1:22'"),
    (_shop(records=[{"host_id": "host-1"}]), "apps[0] records[0] has no 'name'"),
    (_shop(records=[record("host-1", "web1", user_tags="role=web")]), "records[0] has 'user_tags' 'role=web'"),
    (_shop(records=[record("host-1", "web1", ssh_port="22")]), "records[0] has 'ssh_port' '22'"),
])
def test_a_cache_of_the_wrong_shape_is_read_again_with_a_warning(tmp_path, monkeypatch, cached, fragment):
    warnings = []
    monkeypatch.setattr(plugin_module.display, "warning", warnings.append)
    plugin = make_plugin(tmp_path, cache=True)
    plugin._cache[plugin.get_cache_key("/inv/hosts.modal.yml")] = cached
    inventory = populate(plugin)
    assert len(plugin.fetch_calls) == 1
    assert sorted(inventory.hosts) == ["gpu1", "web1", "web2"]
    assert list(plugin._cache.values()) == [FLEET]
    cache_warnings = [warning for warning in warnings if "cached data" in warning]
    assert len(cache_warnings) == 1 and fragment in cache_warnings[0], warnings
    assert "reading Modal again" in cache_warnings[0]


def test_a_cache_of_the_right_shape_gives_no_warning(tmp_path, monkeypatch):
    warnings = []
    monkeypatch.setattr(plugin_module.display, "warning", warnings.append)
    plugin = make_plugin(tmp_path, cache=True)
    plugin._cache[plugin.get_cache_key("/inv/hosts.modal.yml")] = _shop()
    assert sorted(populate(plugin).hosts) == ["web1"]
    assert plugin.fetch_calls == [] and not [warning for warning in warnings if "cached data" in warning]


def test_cache_key_depends_on_the_source_path(tmp_path):
    plugin = make_plugin(tmp_path, cache=True)
    populate(plugin, path="/inv/a.modal.yml")
    populate(plugin, path="/inv/b.modal.yml")
    assert len(plugin.fetch_calls) == 2


# --- reading Modal: list pages and the per-sandbox fallback --------------------------------------------


def test_sandbox_info_to_raw_reads_tags_tunnels_and_gpu():
    api_pb2 = pytest.importorskip("modal_proto.api_pb2")
    info = api_pb2.SandboxInfo(
        id="sb-1", created_at=1790000000.5,
        tags=[api_pb2.SandboxTag(tag_name="mngr_host_id", tag_value="host-1")],
        tunnels=[api_pb2.TunnelData(host="h.example", port=443, unencrypted_host="r.example", unencrypted_port=31022,
                                    container_port=22)],
        task_info=api_pb2.TaskInfo(gpu_config=api_pb2.GPUConfig(gpu_type="H100", count=2)),
    )
    assert sandbox_info_to_raw(info) == {"id": "sb-1", "created_at": 1790000000.5, "tags": {"mngr_host_id": "host-1"},
                                         "ssh": ["r.example", 31022], "gpu": "H100:2"}
    bare = sandbox_info_to_raw(api_pb2.SandboxInfo(id="sb-2", created_at=1.0))
    assert bare["tags"] is None and bare["ssh"] is None and bare["gpu"] is None


class FakeTunnel:
    def __init__(self, port: int) -> None:
        self.tcp_socket = ("127.0.0.1", port)


class FakeHandle:
    def __init__(self, object_id: str, tags: dict | None = None, error: Exception | None = None, port: int = 2200) -> None:
        self.object_id = object_id
        self._tags = tags or {}
        self._error = error
        self._port = port
        self.calls: list[str] = []

    def get_tags(self) -> dict:
        self.calls.append("get_tags")
        if self._error is not None:
            raise self._error
        return dict(self._tags)

    def tunnels(self, timeout: int = 50) -> dict:
        self.calls.append("tunnels")
        return {22: FakeTunnel(self._port)}


class FakeSession:
    """The parts of ModalSession the reader uses; ``call`` maps failures like the real session."""

    environment = None
    client = object()

    def __init__(self, handles: list[FakeHandle]) -> None:
        self.handles = handles

    @property
    def modal(self) -> t.Any:
        handles = self.handles

        class Sandbox:
            @staticmethod
            def list(app_id: str, client: t.Any) -> t.Iterator[FakeHandle]:
                return iter(handles)

        class Modal:
            pass

        Modal.Sandbox = Sandbox  # type: ignore[attr-defined]
        return Modal

    def call(self, fn: t.Callable, *args: t.Any, **kwargs: t.Any) -> t.Any:
        try:
            return fn(*args, **kwargs)
        except ModalError:
            raise
        except Exception as exc:  # pylint: disable=broad-exception-caught
            raise ModalError(str(exc), code=getattr(exc, "code", None)) from exc


class NotFound(Exception):
    code = "NOT_FOUND"


def test_fallback_reads_missing_details_and_skips_what_cannot_be_read(monkeypatch):
    listed = [
        {"id": "sb-full", "created_at": 3.0, "tags": {"mngr_host_id": "host-a", "mngr_host_name": "a", "mngr_ssh": "h:1"},
         "ssh": None, "gpu": None},
        {"id": "sb-notags", "created_at": 2.0, "tags": None, "ssh": None, "gpu": None},
        {"id": "sb-gone", "created_at": 1.5, "tags": None, "ssh": None, "gpu": None},
        {"id": "sb-broken", "created_at": 1.0, "tags": None, "ssh": None, "gpu": None},
    ]
    handles = [
        FakeHandle("sb-full"),
        FakeHandle("sb-notags", {"mngr_host_id": "host-b", "mngr_host_name": "b"}, port=2299),
        FakeHandle("sb-gone", error=NotFound("gone")),
        FakeHandle("sb-broken", error=RuntimeError("internal error")),
    ]
    monkeypatch.setattr(_live, "list_page_details", lambda modal, client, app_id: [dict(s) for s in listed])
    warnings: list[str] = []
    reader = ModalReader(FakeSession(handles), concurrency=3, warn=warnings.append)
    result = reader.sandboxes("ap-1")
    assert [s["id"] for s in result] == ["sb-full", "sb-notags"]
    assert result[1]["tags"]["mngr_host_name"] == "b"
    assert result[1]["ssh"] == ["127.0.0.1", 2299]  # no mngr_ssh tag: read from the tunnels
    assert handles[0].calls == []  # complete in the list page: no extra call
    assert len(warnings) == 1 and "sb-broken" in warnings[0]  # NOT_FOUND is silent: it simply ended


def test_complete_list_pages_need_no_extra_calls(monkeypatch):
    listed = [{"id": f"sb-{i}", "created_at": float(i), "tags": {"mngr_host_id": f"host-{i}", "mngr_ssh": f"h:{i + 1}"},
               "ssh": None, "gpu": None} for i in range(5)]
    monkeypatch.setattr(_live, "list_page_details", lambda modal, client, app_id: listed)
    session = FakeSession([])
    session.modal.Sandbox.list = None  # listing handles would fail: it must not happen
    assert len(ModalReader(session, 4, lambda message: None).sandboxes("ap-1")) == 5


def test_needs_tunnel_only_for_hosts_without_endpoint():
    assert needs_tunnel({"tags": {"mngr_host_id": "h"}, "ssh": None})
    assert not needs_tunnel({"tags": {"mngr_host_id": "h", "mngr_ssh": "x:22"}, "ssh": None})
    assert not needs_tunnel({"tags": {"mngr_host_id": "h"}, "ssh": ["x", 22]})
    assert not needs_tunnel({"tags": {"other": "1"}, "ssh": None})


def test_run_bounded_respects_the_limit_and_reports_errors_per_item():
    active, peak, lock = [0], [0], threading.Lock()
    release = threading.Event()

    def work(item: int) -> int:
        with lock:
            active[0] += 1
            peak[0] = max(peak[0], active[0])
            if active[0] == 3:
                release.set()
        release.wait(5)
        with lock:
            active[0] -= 1
        if item == 7:
            raise ValueError("seven")
        return item * 2

    results = run_bounded(work, list(range(10)), 3)
    assert peak[0] == 3
    assert [result for item, result, error in results if error is None] == [i * 2 for i in range(10) if i != 7]
    assert [(item, str(error)) for item, result, error in results if error is not None] == [(7, "seven")]


# --- tokens ------------------------------------------------------------------------------------------------


def test_tokens_are_templated_from_extra_vars(tmp_path):
    plugin = make_plugin(tmp_path, extra_vars={"vault_id": "ak-from-vault", "vault_secret": "as-from-vault"},
                         token_id="{{ vault_id }}", token_secret="{{ vault_secret }}")
    assert plugin._template_option("token_id") == "ak-from-vault"
    assert plugin._template_option("token_secret") == "as-from-vault"
    assert make_plugin(tmp_path)._template_option("token_id") is None


# --- python interpreter ----------------------------------------------------------------------------------


def test_running_hosts_get_the_bootstrap_python_interpreter(tmp_path):
    inventory = populate(make_plugin(tmp_path, include_stopped=True))
    assert hostvars(inventory, "web1")["ansible_python_interpreter"] == "/usr/bin/python3"
    # A stopped host cannot be reached, so it gets no connection variables at all.
    assert "ansible_python_interpreter" not in hostvars(inventory, "db1")


def test_python_interpreter_option(tmp_path):
    web1 = hostvars(populate(make_plugin(tmp_path, python_interpreter="/opt/py/bin/python3")), "web1")
    assert web1["ansible_python_interpreter"] == "/opt/py/bin/python3"


def test_compose_overrides_the_python_interpreter(tmp_path):
    web1 = hostvars(populate(make_plugin(tmp_path, compose={"ansible_python_interpreter": "'/usr/local/bin/python3'"})),
                    "web1")
    assert web1["ansible_python_interpreter"] == "/usr/local/bin/python3"
