# Copyright (c) 2026, the mngr.modal authors
# GNU General Public License v3.0+ (see COPYING or https://www.gnu.org/licenses/gpl-3.0.txt)

"""The mngr.modal.modal inventory as ansible-inventory runs it: option sources (environment variables) and
what a failure to reach Modal does to the run. Modal is either unreachable or not needed (a warm cache)."""

from __future__ import annotations

import json
import os
import pathlib
import shutil
import socket
import subprocess
import sys
import typing as t

from ansible_collections.mngr.modal.plugins.inventory import modal as plugin_module
from ansible_collections.mngr.modal.plugins.inventory.modal import RAW_FORMAT
from ansible_collections.mngr.modal.plugins.module_utils._keys import KeyStore

# .../<root>/ansible_collections/mngr/modal/plugins/inventory/modal.py
COLLECTIONS_ROOT = pathlib.Path(plugin_module.__file__).resolve().parents[5]
PLUGIN = "mngr.modal.modal"


def closed_port_url() -> str:
    """The URL of a local port nobody listens on: the Modal API is unreachable there."""
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        port = probe.getsockname()[1]
    return f"http://127.0.0.1:{port}"


def ansible_inventory(tmp_path: pathlib.Path, source: str, **env: str) -> subprocess.CompletedProcess:
    """Run ``ansible-inventory --list`` on ``source`` (the text of a .modal.yml file) with a clean HOME."""
    path = tmp_path / "hosts.modal.yml"
    path.write_text(source, encoding="utf-8")
    home = tmp_path / "home"
    home.mkdir(exist_ok=True)
    config = tmp_path / "ansible.cfg"
    config.write_text("[defaults]\n", encoding="utf-8")
    environment = {key: value for key, value in os.environ.items()
                   if not key.startswith(("ANSIBLE_", "MODAL_", "MNGR_MODAL_"))}
    environment.update(
        HOME=str(home), ANSIBLE_HOME=str(home / ".ansible"), ANSIBLE_CONFIG=str(config),
        ANSIBLE_COLLECTIONS_PATH=str(COLLECTIONS_ROOT), ANSIBLE_INVENTORY_ENABLED="auto",
        MODAL_SERVER_URL=closed_port_url(), MODAL_TOKEN_ID="ak-test", MODAL_TOKEN_SECRET="as-test",
        MODAL_CONFIG_PATH=str(tmp_path / "modal.toml"),
    )
    environment.update(env)
    command = shutil.which("ansible-inventory", path=os.path.dirname(sys.executable)) or "ansible-inventory"
    return subprocess.run([command, "-i", str(path), "--list"],
                          env=environment, cwd=tmp_path, capture_output=True, text=True, timeout=120, check=False)


def plain(value: t.Any) -> t.Any:
    """A value of ansible-inventory's JSON output without its unsafe marker (values built from Modal data have one)."""
    return value["__ansible_unsafe"] if isinstance(value, dict) and "__ansible_unsafe" in value else value


# --- strict: an unreachable API -----------------------------------------------------------------------------


def test_strict_makes_an_unreachable_api_fail_the_run(tmp_path):
    run = ansible_inventory(tmp_path, f"plugin: {PLUGIN}\napp: shop\nstrict: true\n")
    assert run.returncode != 0, run.stdout
    assert "Cannot reach the Modal API" in run.stderr
    assert "Completely failed to parse inventory source" in run.stderr


def test_without_strict_an_unreachable_api_warns_how_to_stop_the_run(tmp_path):
    """ansible-core's default: the source is left out and the run goes on; the warning says how to make it fatal."""
    run = ansible_inventory(tmp_path, f"plugin: {PLUGIN}\napp: shop\n")
    assert run.returncode == 0, run.stderr
    assert json.loads(run.stdout)["all"]["children"] == ["ungrouped"]
    flat = " ".join(run.stderr.split())
    assert "Cannot reach the Modal API" in flat and "set strict: true" in flat


# --- key_dir from MNGR_MODAL_KEY_DIR --------------------------------------------------------------------------


# Stores raw data in a jsonfile inventory cache, as ansible-core itself stores it (its file format is its own).
WRITE_CACHE = """
import json, sys
from ansible.plugins.loader import init_plugin_loader
init_plugin_loader([])
from ansible.plugins.cache import CachePluginAdjudicator
from ansible.plugins.loader import inventory_loader
cache_dir, source, raw = sys.argv[1], sys.argv[2], json.loads(sys.argv[3])
key = inventory_loader.get("%s").get_cache_key(source)  # the key format is ansible-core's own and changes
cache = CachePluginAdjudicator("ansible.builtin.jsonfile", _uri=cache_dir, _prefix="ansible_inventory_", _timeout=3600)
cache[key] = raw
cache.update_cache_if_changed()
"""


def write_jsonfile_cache(cache_dir: pathlib.Path, source: pathlib.Path, raw: dict) -> None:
    """What the jsonfile cache holds for ``source`` after the plugin read ``raw`` from Modal."""
    subprocess.run([sys.executable, "-c", WRITE_CACHE % PLUGIN, str(cache_dir), str(source), json.dumps(raw)], check=True,
                   env=dict(os.environ, ANSIBLE_HOME=str(cache_dir.parent / "home" / ".ansible")), timeout=60)


def test_key_dir_comes_from_mngr_modal_key_dir(tmp_path):
    """The modules honour MNGR_MODAL_KEY_DIR; the inventory must find the keys they wrote there."""
    env_keys = tmp_path / "env-keys"
    folder = KeyStore(str(env_keys), "shop").folder_for("host-1", "web1")
    folder.ensure("host-1")
    raw = {"format": RAW_FORMAT, "apps": [{
        "app": "shop", "found": True, "records_read": True, "records": [],
        "sandboxes": [{"id": "sb-1", "created_at": 1790000000.0, "ssh": None, "gpu": None,
                       "tags": {"mngr_host_id": "host-1", "mngr_host_name": "web1", "mngr_ssh": "127.0.0.1:2201"}}],
    }]}
    write_jsonfile_cache(tmp_path / "cache", tmp_path / "hosts.modal.yml", raw)
    source = (f"plugin: {PLUGIN}\napp: shop\ncache: true\ncache_plugin: ansible.builtin.jsonfile\n"
              f"cache_connection: {tmp_path / 'cache'}\n")
    run = ansible_inventory(tmp_path, source, MNGR_MODAL_KEY_DIR=str(env_keys))
    assert run.returncode == 0, run.stderr
    web1 = json.loads(run.stdout)["_meta"]["hostvars"]["web1"]
    assert plain(web1["ansible_ssh_private_key_file"]) == folder.client_key
    assert str(env_keys) in plain(web1["ansible_ssh_common_args"])
    assert "no SSH keys" not in run.stderr
