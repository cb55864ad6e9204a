# Copyright (c) 2026, the mngr.modal authors
# GNU General Public License v3.0+ (see COPYING or https://www.gnu.org/licenses/gpl-3.0.txt)

"""Dynamic inventory of Modal sandboxes managed by mngr.modal: one Ansible host per running host.

Reading Modal happens in :meth:`InventoryModule._fetch_raw` and produces plain JSON data (the
sandboxes of each app with their tags and SSH endpoints, and the host records of the state volume).
That raw data is what the inventory cache stores; hosts, variables and groups are built from it on
every run, so changing ``compose``/``keyed_groups``/``filters`` never needs a cache flush.
"""

from __future__ import annotations

DOCUMENTATION = r"""
name: modal
short_description: Modal sandboxes managed by mngr.modal as an inventory source
version_added: 0.1.0
author:
  - The mngr.modal authors (@mngr-modal)
description:
  - Lists the hosts that the M(mngr.modal.modal_sandbox) module manages in one or more Modal apps and makes each
    running host an Ansible host reachable over SSH, with its key and its pinned host key.
  - The inventory source is a YAML file whose name ends in C(modal.yml) or C(modal.yaml)
    (for example C(hosts.modal.yml)) and that contains O(plugin=mngr.modal.modal).
  - With O(connection=ssh) (the default), every host gets C(ansible_host), C(ansible_port), C(ansible_user), C(ansible_python_interpreter)
    (O(python_interpreter)), C(ansible_ssh_private_key_file), C(ansible_ssh_common_args) (strict host key checking
    against the host's pinned C(known_hosts) file) and
    C(ansible_ssh_host_key_checking=true) (so that C(host_key_checking=false) in C(ansible.cfg) cannot turn it off), plus facts
    prefixed with O(hostvars_prefix) - C(host_id), C(name), C(state), C(ended), C(sandbox_id), C(app), C(tags), C(spec),
    C(gpu), C(created_at), C(started_at). C(state) is C(running), C(stopped), or C(ended) for a host whose sandbox
    ended by itself (timeout, idle timeout, crash); C(ended) then holds C(reason), C(ended_at) and C(sandbox_id).
  - With O(connection=sandbox_exec), and for every host created with C(ssh=false) whatever O(connection) says, a
    host gets C(ansible_connection=mngr.modal.sandbox_exec), C(ansible_modal_host) (its name), C(ansible_modal_app),
    C(ansible_modal_environment) (when O(environment) is set) and C(ansible_python_interpreter) instead, and is
    reached through Modal's exec API (see the P(mngr.modal.sandbox_exec#connection) connection). A host without SSH is known
    as such from its record (O(host_records)).
  - Default groups are C(modal) (every running host), C(modal_app_<app>) (per app), C(modal_gpu_<type>) (per GPU
    type, for example C(modal_gpu_h100)) and, with O(include_stopped), C(modal_stopped).
  - A host whose SSH keys are not in O(key_dir) on this machine is still listed, with a warning, but without
    C(ansible_ssh_private_key_file).
  - Values read from Modal (tags, names, spec) are marked unsafe, so a tag that looks like a Jinja2 template is
    never evaluated.
  - A sandbox whose details cannot be read is left out with a warning; it never empties the inventory.
extends_documentation_fragment:
  - constructed
  - inventory_cache
  - mngr.modal.modal
options:
  plugin:
    description: Marks the file as a source for this plugin.
    type: str
    required: true
    choices: [mngr.modal.modal]
  app:
    description:
      - Name of the Modal app, or list of names, whose hosts to list.
      - Each app's state volume (C(<app>-state)) provides the host records (spec, stopped hosts).
    type: list
    elements: str
    default: [mngr-modal]
    env:
      - name: MNGR_MODAL_APP
  token_id:
    description:
      - ID of the Modal API token (the C(ak-...) part). The value is templated, so C({{ vault_modal_token_id }})
        or an extra variable works.
      - When O(token_id) and O(token_secret) are both given, the plugin uses them and does not read C(~/.modal.toml).
        When neither is given, the Modal SDK's own configuration applies
        (E(MODAL_TOKEN_ID)/E(MODAL_TOKEN_SECRET), then the active profile in C(~/.modal.toml)).
    type: str
    env:
      - name: MODAL_TOKEN_ID
  token_secret:
    description:
      - Secret of the Modal API token (the C(as-...) part). Templated like O(token_id). Never logged.
    type: str
    env:
      - name: MODAL_TOKEN_SECRET
  key_dir:
    env:
      - name: MNGR_MODAL_KEY_DIR
  filters:
    description:
      - User tags that a host must carry, with these exact values, to be listed (for example V(role=web)).
      - Tags are the ones given to M(mngr.modal.modal_sandbox) with O(mngr.modal.modal_sandbox#module:tags).
      - Values are compared as the modules compare O(mngr.modal.modal_sandbox_info#module:tags); a number or a
        boolean means the same as its text, so a filter C(version) of V(2) (a YAML number) matches a host tagged
        C(version=2), and a filter C(flag) of V(true) one tagged C(flag=true). A list or a dictionary as a value,
        or an invalid tag key, is an error.
    type: dict
    default: {}
  hostnames:
    description:
      - How to name each host in the inventory. A list of Jinja2 expressions (C(modal_tags.fqdn)) or templates
        (C({{ modal_name }}-{{ modal_app }})), evaluated with the host's facts; the first that gives a non-empty
        string without spaces is used.
      - When the list is empty or no entry gives a usable name, the host's name (as given to
        M(mngr.modal.modal_sandbox)) is used.
    type: list
    elements: str
    default: []
  hostvars_prefix:
    description:
      - Prefix of the facts this plugin sets on each host (C(modal_host_id), C(modal_tags)...).
      - Connection variables (C(ansible_host)...) never get a prefix.
    type: str
    default: modal_
  include_stopped:
    description:
      - Also list hosts that have no running sandbox (stopped with M(mngr.modal.modal_sandbox)), in the group
        C(modal_stopped) only and without connection variables, so a playbook can start them.
      - Needs O(host_records), since stopped hosts exist only as host records.
    type: bool
    default: false
  host_records:
    description:
      - Read the host records of each app's state volume, which give each host's O(hostvars_prefix)C(spec),
        O(hostvars_prefix)C(gpu), its creation time and the stopped hosts.
      - Turn off to list large fleets faster; running hosts are then known from their sandbox's tags alone.
    type: bool
    default: true
  connection:
    description:
      - How Ansible reaches the running hosts. V(ssh) through each host's pinned SSH tunnel; V(sandbox_exec) through
        Modal's exec API with the C(mngr.modal.sandbox_exec) connection (no SSH keys needed on this machine).
      - Hosts created with C(ssh=false) always get V(sandbox_exec).
    type: str
    choices: [ssh, sandbox_exec]
    default: ssh
  ssh_user:
    description: User Ansible logs in as (C(ansible_user)).
    type: str
    default: root
  python_interpreter:
    description:
      - The Python interpreter Ansible runs modules with on each running host (C(ansible_python_interpreter)).
      - The default is the one every host gets from its bootstrap, so Ansible neither searches for one nor warns
        about the one it found. A O(compose) entry, a C(host_vars) file or an extra variable still overrides it.
    type: str
    default: /usr/bin/python3
  strict:
    description:
      - If V(true), an expression of O(compose), O(groups), O(keyed_groups) or O(hostnames) that fails is an error,
        otherwise that entry is skipped (facts used in expressions may not always be available).
      - V(true) also makes a failure to read Modal (the API unreachable, credentials refused, a missing C(modal) package)
        stop the whole Ansible run, instead of leaving this source out with a warning and going on with an
        empty inventory (ansible-core's default for any inventory source that fails). See C(docs/inventory.md).
  max_concurrent_calls:
    description:
      - How many API calls run at once when Modal's list pages lack a sandbox's tags or tunnels and they must be
        read one sandbox at a time, and when host records are read.
    type: int
    default: 16
notes:
  - Listing one app costs one call per page of 100 sandboxes when Modal's list pages carry tags and tunnels, plus
    a few fixed calls and, with O(host_records), the record reads. See the collection's C(docs/performance.md).
  - Cached data (O(cache)) is the raw data read from Modal, not the built inventory. C(--flush-cache) and
    the C(refresh_inventory) meta task read Modal again. Cached data of an unexpected shape (from another
    version, or edited by hand) is not used; Modal is read again, with a warning.
  - When Modal cannot be read, ansible-core leaves this source out with a warning and runs with the other
    sources, or with an empty inventory (exit code 0). For production use, set O(strict=true), or ansible-core's
    C(inventory_any_unparsed_is_failed) (or C(inventory_unparsed_failed)) setting, so that the run stops instead.
"""

EXAMPLES = r"""
# hosts.modal.yml: every running host of the default app
plugin: mngr.modal.modal

---
# prod.modal.yml: two apps, token from the vault, web hosts only, grouped by tag, cached for five minutes
plugin: mngr.modal.modal
app: [shop-prod, shop-batch]
token_id: "{{ vault_modal_token_id }}"
token_secret: "{{ vault_modal_token_secret }}"
filters:
  tier: web
keyed_groups:
  - key: modal_tags.role | default('none')
    prefix: role
groups:
  big: modal_spec.memory | default(0) >= 16
compose:
  ansible_python_interpreter: "'/usr/bin/python3'"
cache: true
cache_plugin: ansible.builtin.jsonfile
cache_connection: ~/.cache/mngr-modal-inventory
cache_timeout: 300

---
# all.modal.yml: stopped hosts too, so a runbook can start them (group modal_stopped)
plugin: mngr.modal.modal
include_stopped: true
hostnames:
  - "{{ modal_name }}.{{ modal_app }}"
"""

import dataclasses
import datetime
import os
import re
import types
import typing as t

from ansible import constants as C
from ansible.errors import AnsibleError, AnsibleParserError
from ansible.module_utils.basic import missing_required_lib
from ansible.module_utils.common.text.converters import to_text
from ansible.plugins.inventory import BaseInventoryPlugin, Cacheable, Constructable
from ansible.utils.display import Display
from ansible.utils.unsafe_proxy import wrap_var

from ansible_collections.mngr.modal.plugins.module_utils._client import (
    DEFAULT_KEY_DIR,
    HAS_MODAL,
    MODAL_IMPORT_ERROR,
    ModalError,
    ModalSession,
    is_not_found,
)
from ansible_collections.mngr.modal.plugins.module_utils._errors import HostError
from ansible_collections.mngr.modal.plugins.module_utils._hosts import (
    Host,
    filter_hosts,
    merge_hosts,
    validate_host_name,
)
from ansible_collections.mngr.modal.plugins.module_utils._keys import KeyStore
from ansible_collections.mngr.modal.plugins.module_utils._live import (
    ListedSandbox,
    SandboxLister,
    ended_details,
    error_message,
    run_bounded,
)
from ansible_collections.mngr.modal.plugins.module_utils._records import HostRecord, HostRecords
from ansible_collections.mngr.modal.plugins.module_utils._ssh import ansible_connection_vars, connection_vars, ssh_enabled
from ansible_collections.mngr.modal.plugins.module_utils._state_volume import state_files
from ansible_collections.mngr.modal.plugins.module_utils._tags import normalize_user_tags

display = Display()

# Bump when the shape of the cached raw data changes, so an old cache is read again from Modal.
RAW_FORMAT = 1
GROUP_ALL = "modal"
GROUP_STOPPED = "modal_stopped"
# At most this many host names are quoted in one warning; the rest are counted.
WARNING_NAME_LIMIT = 10


# --- raw data from Modal (what the cache holds) ------------------------------------------------------


class ModalReader:
    """Reads one app's raw data from Modal through a :class:`ModalSession` (retries and error mapping included)."""

    def __init__(self, session: ModalSession, concurrency: int, warn: t.Callable[[str], None]) -> None:
        self.session = session
        self.concurrency = concurrency
        self.warn = warn

    def app_data(self, app_name: str, read_records: bool) -> dict[str, t.Any]:
        app = self.app(app_name)
        if app is None:
            self.warn(f"Modal app {app_name!r} does not exist (yet): it has no hosts.")
            return {"app": app_name, "found": False, "sandboxes": [], "records": [], "records_read": read_records}
        sandboxes = self.sandboxes(app.app_id)
        records = self.records(app_name) if read_records else []
        data = {"app": app_name, "found": True, "sandboxes": sandboxes, "records": records, "records_read": read_records}
        # Why and when each host whose sandbox ended by itself ended (one Modal call per such host).
        data["ended"] = {host.host_id: ended_details(self.session, host)
                         for host, _sandbox in hosts_of_app(data) if host.state == "ended"}
        return data

    def app(self, app_name: str) -> t.Any:
        """The app's handle, or None when no app has this name in the environment."""
        session = self.session
        try:
            return session.call(
                session.modal.App.lookup, app_name, create_if_missing=False, client=session.client,
                environment_name=session.environment,
            )
        except ModalError as exc:
            if is_not_found(exc):
                return None
            raise

    def sandboxes(self, app_id: str) -> list[dict[str, t.Any]]:
        lister = SandboxLister(self.session, self.concurrency, with_tunnels=True, warn=self.warn)
        return lister.list(app_id)

    def records(self, app_name: str) -> list[dict[str, t.Any]]:
        """The host records of the app's state volume (none when the volume does not exist)."""
        store = HostRecords(state_files(self.session, create=False, app_name=app_name))
        records = []
        for path, raw, error in run_bounded(store.files.read, store.paths(), self.concurrency):
            if error is not None:
                self.warn(f"Host record {path} of app {app_name!r} could not be read ({error_message(error)}).")
                continue
            if raw is None:
                continue  # removed since the listing
            try:
                records.append(dataclasses.asdict(HostRecord.from_json(raw)))
            except ValueError:
                self.warn(f"Host record {path} of app {app_name!r} is not a host record this version can read.")
        return records


# --- checking cached raw data (pure) -----------------------------------------------------------------


def raw_shape_problem(raw: t.Any) -> str | None:
    """What makes raw data unusable to build hosts from (a cache of another version, or edited by hand), or None.

    Cached data is checked before it is used, so that a cache of the wrong shape is read again from Modal
    rather than failing deep inside the host building with a bare Python error.
    """
    if not isinstance(raw, dict):
        return f"it is a {type(raw).__name__}, not a mapping"
    if raw.get("format") != RAW_FORMAT:
        return f"its format is {raw.get('format')!r}, this version reads format {RAW_FORMAT}"
    if not isinstance(raw.get("apps"), list):
        return "its 'apps' is not a list"
    for index, app_data in enumerate(raw["apps"]):
        problem = _app_shape_problem(app_data)
        if problem:
            return f"apps[{index}] {problem}"
    return None


_APP_KEYS = (("app", str), ("found", bool), ("records_read", bool), ("sandboxes", list), ("records", list))
_SANDBOX_KEYS: dict[str, t.Any] = {
    "id": str, "tags": t.Optional[dict[str, str]], "created_at": t.Optional[float], "ssh": t.Optional[list],
    "gpu": t.Optional[str],
}


def _app_shape_problem(app_data: t.Any) -> str | None:
    if not isinstance(app_data, dict):
        return f"is a {type(app_data).__name__}, not a mapping"
    for key, kind in _APP_KEYS:
        if not isinstance(app_data.get(key), kind):
            return f"has no {key!r} of type {kind.__name__}"
    for index, sandbox in enumerate(app_data["sandboxes"]):
        problem = _fields_problem(sandbox, _SANDBOX_KEYS, required=("id",))
        if problem is None and sandbox.get("ssh") is not None and not _is_endpoint(sandbox["ssh"]):
            problem = f"has 'ssh' {sandbox['ssh']!r}, not [host, port]"
        if problem:
            return f"sandboxes[{index}] {problem}"
    record_types = t.get_type_hints(HostRecord)
    required = [name for name, spec in HostRecord.__dataclass_fields__.items()
                if spec.default is dataclasses.MISSING and spec.default_factory is dataclasses.MISSING]
    for index, record in enumerate(app_data["records"]):
        problem = _fields_problem(record, record_types, required)
        if problem:
            return f"records[{index}] {problem}"
    return None


def _is_endpoint(value: t.Any) -> bool:
    return (isinstance(value, list) and len(value) == 2 and isinstance(value[0], str)
            and isinstance(value[1], int) and not isinstance(value[1], bool))


def _fields_problem(data: t.Any, types_by_key: dict[str, t.Any], required: t.Iterable[str]) -> str | None:
    """Whether ``data`` is a mapping with every ``required`` key, and a value of the declared type for each key."""
    if not isinstance(data, dict):
        return f"is a {type(data).__name__}, not a mapping"
    for key in required:
        if key not in data:
            return f"has no {key!r}"
    for key, expected in types_by_key.items():
        if key in data and not value_fits(data[key], expected):
            return f"has {key!r} {data[key]!r}, not of type {expected}"
    return None


def value_fits(value: t.Any, expected: t.Any) -> bool:
    """Whether a JSON value fits a type annotation (``str``, ``int | None``, ``dict[str, str]``...).

    Annotations this does not know (``Literal``...) are accepted: the check is there to catch data of another
    shape, not to re-validate what this version wrote.
    """
    if expected is t.Any:
        return True
    if expected is type(None):
        return value is None
    origin = t.get_origin(expected)
    if origin in (t.Union, types.UnionType):
        return any(value_fits(value, option) for option in t.get_args(expected))
    if origin in (dict, list):
        if not isinstance(value, origin):
            return False
        args = t.get_args(expected)
        if origin is dict and len(args) == 2:
            return all(value_fits(key, args[0]) and value_fits(item, args[1]) for key, item in value.items())
        if origin is list and len(args) == 1:
            return all(value_fits(item, args[0]) for item in value)
        return True
    if isinstance(value, bool) and expected in (int, float):
        return False
    if expected is float:
        return isinstance(value, (int, float))
    if isinstance(expected, type):
        return isinstance(value, expected)
    return True


def make_inventory_failures_fatal() -> None:
    """Have ansible-core stop the run because an inventory source failed (what ``strict: true`` asks for).

    ansible-core catches every error an inventory plugin raises, shows it as a warning and goes on without
    that source, possibly with an empty inventory and exit code 0. Only its ``inventory_any_unparsed_is_failed``
    setting turns a failed source into a fatal error, and it reads that setting right after the plugin gave
    up on the source. Setting it for this Ansible process is therefore the way for the plugin to make its
    own failure fatal; any other source that fails later in the same run is then fatal too, which is what
    a user asking for a strict inventory wants.
    """
    C.INVENTORY_ANY_UNPARSED_IS_FAILED = True


# --- from raw data to hosts (pure) -------------------------------------------------------------------


@dataclasses.dataclass
class InventoryHost:
    """One host to add: its default name, groups, connection variables and (unprefixed) facts."""

    name: str
    running: bool
    app: str
    facts: dict[str, t.Any]
    connection: dict[str, t.Any]
    endpoint_known: bool
    key_found: bool


def iso_time(epoch: float | None) -> str | None:
    if not epoch:
        return None
    return datetime.datetime.fromtimestamp(float(epoch), tz=datetime.timezone.utc).replace(microsecond=0).isoformat()


def record_from_raw(raw: dict[str, t.Any]) -> HostRecord:
    known = {key: value for key, value in raw.items() if key in HostRecord.__dataclass_fields__}
    return HostRecord(**known)


def hosts_of_app(app_data: dict[str, t.Any]) -> list[tuple[Host, dict[str, t.Any] | None]]:
    """The app's hosts (records merged with live sandboxes), each with its sandbox's raw data (None if stopped)."""
    raw_by_id = {sandbox["id"]: sandbox for sandbox in app_data["sandboxes"]}
    live = [ListedSandbox(sandbox["id"], dict(sandbox["tags"] or {})) for sandbox in app_data["sandboxes"]]
    records = [record_from_raw(raw) for raw in app_data["records"]]
    return [(host, raw_by_id.get(host.sandbox.sandbox_id) if host.sandbox else None) for host in merge_hosts(live, records)]


def gpu_type(gpu: str | None) -> str | None:
    """``A100-80GB:2`` -> ``A100-80GB``."""
    if not gpu:
        return None
    return str(gpu).split(":", 1)[0] or None


def exec_connection_vars(app: str, name: str, environment: str | None) -> dict[str, t.Any]:
    """The variables of a host reached through the mngr.modal.sandbox_exec connection (by name, within its app)."""
    variables = {"ansible_connection": "mngr.modal.sandbox_exec", "ansible_modal_host": name, "ansible_modal_app": app}
    if environment:
        variables["ansible_modal_environment"] = environment
    return variables


def build_host(app: str, host: Host, sandbox: dict[str, t.Any] | None, key_dir: str, ssh_user: str,
               ended: dict[str, t.Any] | None = None, connection_kind: str = "ssh",
               environment: str | None = None) -> InventoryHost:
    """Facts and connection variables of one host, from its merged record and sandbox data."""
    record = host.record
    spec = dict(record.spec) if record is not None and isinstance(record.spec, dict) else {}
    gpu = spec.get("gpu") or (sandbox or {}).get("gpu") or None
    started_at = iso_time((sandbox or {}).get("created_at"))
    facts: dict[str, t.Any] = {
        "host_id": host.host_id,
        "name": host.name,
        "state": host.state,
        "ended": ended if host.state == "ended" else None,
        "sandbox_id": host.sandbox.sandbox_id if host.sandbox else None,
        "app": app,
        "tags": dict(host.user_tags),
        "spec": spec,
        "gpu": gpu,
        "created_at": record.created_at if record is not None else started_at,
        "started_at": started_at,
    }
    connection: dict[str, t.Any] = {}
    endpoint = host.ssh_endpoint or (tuple(sandbox["ssh"]) if sandbox and sandbox.get("ssh") else None)
    key_found = True
    # Through Modal's exec API, nothing of SSH (endpoint, keys) is needed.
    by_exec = host.sandbox is not None and (connection_kind == "sandbox_exec" or not ssh_enabled(spec))
    if by_exec:
        connection = exec_connection_vars(app, host.name, environment)
    elif host.sandbox is not None:
        keys = KeyStore(key_dir, app)
        folder = keys.find(host.host_id, host.name)
        key_found = folder is not None
        folder = folder or keys.folder_for(host.host_id, host.name)
        connection = ansible_connection_vars(connection_vars(folder, endpoint, ssh_user, with_key=key_found))
    return InventoryHost(
        name=host.name, running=host.sandbox is not None, app=app, facts=facts, connection=connection,
        endpoint_known=bool(endpoint) or host.sandbox is None or by_exec, key_found=key_found,
    )


def select_hosts(raw: dict[str, t.Any], filters: dict[str, str], include_stopped: bool, key_dir: str,
                 ssh_user: str, connection_kind: str = "ssh", environment: str | None = None) -> list[InventoryHost]:
    """Every host to list, app by app, in a stable order (name, then host id)."""
    selected = []
    for app_data in raw["apps"]:
        for host, sandbox in hosts_of_app(app_data):
            if host.sandbox is None and not include_stopped:
                continue
            if filters and not filter_hosts([host], tags=filters):
                continue
            ended = (app_data.get("ended") or {}).get(host.host_id)
            selected.append(build_host(app_data["app"], host, sandbox, key_dir, ssh_user, ended, connection_kind,
                                       environment))
    return selected


def safe_inventory_name(name: t.Any) -> str | None:
    """``name`` if it is usable as an inventory host name (no spaces, no template markers), else None."""
    if not isinstance(name, str):
        return None
    text = name.strip()
    if not text or re.search(r"\s|\{\{|\{%|\{#", text):
        return None
    return text


def summarize(names: list[str]) -> str:
    shown = ", ".join(names[:WARNING_NAME_LIMIT])
    more = len(names) - WARNING_NAME_LIMIT
    return f"{shown} and {more} more" if more > 0 else shown


# --- the plugin ----------------------------------------------------------------------------------------


def parser_error(message: str, hint: str | None) -> AnsibleParserError:
    """The error with ``hint`` as its help text; ansible-core before 2.19 has no help text, so the hint ends the message."""
    try:
        return AnsibleParserError(message, help_text=hint)
    except TypeError:
        return AnsibleParserError(f"{message} {hint}" if hint else message)


class InventoryModule(BaseInventoryPlugin, Constructable, Cacheable):
    """The ``mngr.modal.modal`` inventory plugin."""

    NAME = "mngr.modal.modal"

    def verify_file(self, path: str) -> bool:
        if not super().verify_file(path):
            return False
        return path.endswith(("modal.yml", "modal.yaml"))

    def parse(self, inventory: t.Any, loader: t.Any, path: str, cache: bool = True) -> None:
        super().parse(inventory, loader, path, cache)
        self._read_config_data(path)
        try:
            self._filters()  # bad filters fail before Modal is contacted
            raw = self._raw_data(path, cache)
            self._populate(raw)
        except AnsibleError:
            if self.get_option("strict"):
                make_inventory_failures_fatal()
            raise

    # -- raw data, from the cache or from Modal ---------------------------------------------------------

    def _wanted_apps(self) -> list[str]:
        apps = [to_text(app) for app in (self.get_option("app") or []) if app]
        if not apps:
            raise AnsibleParserError("The option app is empty: name at least one Modal app.")
        return list(dict.fromkeys(apps))

    def _raw_data(self, path: str, cache: bool) -> dict[str, t.Any]:
        use_cache = bool(self.get_option("cache"))
        cache_key = self.get_cache_key(path)
        if use_cache and cache:
            try:
                raw = self._cache[cache_key]
            except KeyError:
                raw = None
            problem = raw_shape_problem(raw) if raw is not None else None
            if problem:
                self._warn(f"the cached data of {path} cannot be used ({problem}); reading Modal again.")
            elif raw is not None and self._raw_fits(raw):
                return raw
        raw = self._fetch_raw()
        if use_cache:
            self._cache[cache_key] = raw
        return raw

    def _raw_fits(self, raw: dict[str, t.Any]) -> bool:
        """Whether cached raw data (of the right shape) answers the current options (same apps, records if needed)."""
        apps = [app_data["app"] for app_data in raw["apps"]]
        if apps != self._wanted_apps():
            return False
        return all(app_data.get("records_read") for app_data in raw["apps"]) or not self._read_records()

    def _read_records(self) -> bool:
        return bool(self.get_option("host_records"))

    def _template_option(self, name: str) -> str | None:
        value = self.get_option(name)
        if value is None or value == "":
            return None
        self.templar.available_variables = self._vars or {}
        rendered = self.templar.template(value)
        return to_text(rendered) or None

    def _fetch_raw(self) -> dict[str, t.Any]:
        """Read every configured app from Modal; raise AnsibleParserError when Modal cannot be read at all."""
        if not HAS_MODAL:
            raise AnsibleParserError(f"{missing_required_lib('modal')} ({MODAL_IMPORT_ERROR})")
        if self.get_option("include_stopped") and not self._read_records():
            display.warning("mngr.modal.modal: include_stopped needs host_records; stopped hosts are not listed.")
        session = ModalSession(
            token_id=self._template_option("token_id"),
            token_secret=self._template_option("token_secret"),
            environment=self.get_option("environment") or None,
            key_dir=self.get_option("key_dir"),
        )
        reader = ModalReader(session, int(self.get_option("max_concurrent_calls") or 1), self._warn)
        try:
            apps = [reader.app_data(app, self._read_records()) for app in self._wanted_apps()]
        except ModalError as exc:
            hint = None if self.get_option("strict") else (
                "Ansible goes on without this inventory source; set strict: true in it (or ansible-core's "
                "inventory_any_unparsed_is_failed) to stop the run instead."
            )
            raise parser_error(f"mngr.modal.modal: {exc.msg}", hint) from exc
        finally:
            session.close()
        return {"format": RAW_FORMAT, "apps": apps}

    @staticmethod
    def _warn(message: str) -> None:
        display.warning(f"mngr.modal.modal: {message}")

    # -- hosts, variables and groups -------------------------------------------------------------------

    def _filters(self) -> dict[str, str]:
        """The ``filters`` option as tag values, normalised exactly as the modules normalise ``tags``."""
        try:
            return normalize_user_tags(self.get_option("filters") or {}, "filters")
        except HostError as exc:
            raise AnsibleParserError(f"mngr.modal.modal: {exc}") from exc

    def _key_dir(self) -> str:
        return os.path.abspath(os.path.expanduser(self.get_option("key_dir") or DEFAULT_KEY_DIR))

    def _populate(self, raw: dict[str, t.Any]) -> None:
        prefix = self.get_option("hostvars_prefix") or ""
        strict = self.get_option("strict")
        hosts = select_hosts(
            raw, self._filters(), bool(self.get_option("include_stopped")) and self._read_records(),
            self._key_dir(), self.get_option("ssh_user"), self.get_option("connection"),
            self.get_option("environment") or None,
        )
        no_key, no_endpoint, renamed = [], [], []
        taken: set[str] = set()
        for host in hosts:
            facts = {prefix + key: wrap_var(value) for key, value in host.facts.items()}
            connection = {key: wrap_var(value) if isinstance(value, str) and key in ("ansible_host", "ansible_modal_host")
                          else value
                          for key, value in host.connection.items()}
            if host.running:
                connection["ansible_python_interpreter"] = self.get_option("python_interpreter")
            variables = dict(facts)
            variables.update(connection)
            name = self._inventory_name(host, variables, strict)
            if name in taken:
                renamed.append(f"{name} ({host.facts['host_id']})")
                name = to_text(host.facts["host_id"])
            taken.add(name)
            self._add(name, host, variables, strict)
            if host.running and not host.key_found:
                no_key.append(name)
            if not host.endpoint_known:
                no_endpoint.append(name)
        if no_key:
            self._warn(
                f"no SSH keys under {self._key_dir()} for {summarize(no_key)}: listed without "
                "ansible_ssh_private_key_file. Copy the key folders from the machine that created them, or set key_dir."
            )
        if no_endpoint:
            self._warn(f"no SSH endpoint known for {summarize(no_endpoint)}: listed without ansible_host and ansible_port.")
        if renamed:
            self._warn(f"several hosts share a name; these are listed under their host id instead: {summarize(renamed)}.")

    def _add(self, name: str, host: InventoryHost, variables: dict[str, t.Any], strict: bool) -> None:
        inventory = self.inventory
        if host.running:
            inventory.add_group(GROUP_ALL)
            inventory.add_host(name, group=GROUP_ALL)
            self._add_to(self._sanitize_group_name(f"modal_app_{host.app}"), name)
            gpu = gpu_type(host.facts.get("gpu"))
            if gpu:
                self._add_to(self._sanitize_group_name(f"modal_gpu_{gpu.lower()}"), name)
        else:
            inventory.add_group(GROUP_STOPPED)
            inventory.add_host(name, group=GROUP_STOPPED)
        for key, value in variables.items():
            inventory.set_variable(name, key, value)
        self._set_composite_vars(self.get_option("compose"), variables, name, strict=strict)
        self._add_host_to_composed_groups(self.get_option("groups"), variables, name, strict=strict)
        self._add_host_to_keyed_groups(self.get_option("keyed_groups"), variables, name, strict=strict)

    def _add_to(self, group: str, host_name: str) -> None:
        group = self.inventory.add_group(group)
        self.inventory.add_child(group, host_name)

    def _inventory_name(self, host: InventoryHost, variables: dict[str, t.Any], strict: bool) -> str:
        """The first usable result of the ``hostnames`` entries, else the host's own name (else its id)."""
        for entry in self.get_option("hostnames") or []:
            try:
                if "{{" in entry or "{%" in entry:
                    self.templar.available_variables = variables
                    value = self.templar.template(entry)
                else:
                    value = self._compose(entry, variables)
            except Exception as exc:  # pylint: disable=broad-exception-caught
                if strict:
                    raise AnsibleParserError(f"Could not evaluate hostnames entry {entry!r} for {host.name}: {exc}") from exc
                continue
            name = safe_inventory_name(to_text(value) if value is not None else None)
            if name:
                return name
        try:
            return validate_host_name(host.name)
        except HostError:
            return to_text(host.facts["host_id"])
