# Copyright (c) 2026, the mngr.modal authors
# GNU General Public License v3.0+ (see COPYING or https://www.gnu.org/licenses/gpl-3.0.txt)

# This module is private to the mngr.modal collection: its interface may change at any time,
# do not use it from outside the collection.

"""Identity of hosts: names, the sandbox tag scheme, host records and finding hosts.

A *host* is what Ansible sees; a *sandbox* is one life of it. A host is identified by a
``host_id`` that never changes and has a unique ``name`` that can be renamed. Both travel as
sandbox tags (so a running host is found with one list call) and in a host record kept on the
app's state volume (so a host without a live sandbox is still known, with its tags and spec).

Everything above the ``RecordStore`` classes is pure logic, tested without Modal.
"""

from __future__ import annotations

import concurrent.futures
import datetime
import io
import json
import re
import uuid
from dataclasses import dataclass, field
from typing import Any, Callable, Iterable, Protocol

from ansible_collections.mngr.modal.plugins.module_utils._client import is_not_found
from ansible_collections.mngr.modal.plugins.module_utils._errors import HostError
from ansible_collections.mngr.modal.plugins.module_utils._names import validate_name
from ansible_collections.mngr.modal.plugins.module_utils._ssh import (
    SSH_PORT,
    SSH_USER,
    KeyStore,
    ssh_common_args,
)

# --- names -----------------------------------------------------------------------------------

# Host names end up in tags, file names and folder names: the collection's safe names (see _names).
HOST_NAME_MAX_LENGTH = 63


def validate_host_name(name: Any, option: str = "name") -> str:
    """Return ``name`` if it is a valid host name, else raise HostError naming it."""
    return validate_name(name, option, "host name", HOST_NAME_MAX_LENGTH, HostError)


def new_host_id() -> str:
    """A fresh host id: never reused, stable for the life of the host (across renames and restarts)."""
    return "host-" + uuid.uuid4().hex


# --- the sandbox tag scheme ---------------------------------------------------------------------

TAG_HOST_ID = "mngr_host_id"
TAG_HOST_NAME = "mngr_host_name"
# "host:port" of the SSH tunnel, so listing running hosts needs no extra call per host.
TAG_SSH_ENDPOINT = "mngr_ssh"
IDENTITY_TAG_KEYS = (TAG_HOST_ID, TAG_HOST_NAME, TAG_SSH_ENDPOINT)
USER_TAG_PREFIX = "mngr_user_"

# Tag limits. Modal's reference documentation (modal.Sandbox.set_tags / Sandbox.list) states no
# numeric limit on sandbox tags; the reference implementation of this provider records that Modal
# allowed 10 tags per sandbox, and that is the bound enforced here. The identity tags above use
# three of them, leaving seven for user tags. Modal does not document key or value lengths either:
# keys are kept to a safe character set and 63 characters (prefix included), values to 255
# characters without control characters, which is portable to every tag store we know of.
MAX_SANDBOX_TAGS = 10
MAX_USER_TAGS = MAX_SANDBOX_TAGS - len(IDENTITY_TAG_KEYS)
MAX_TAG_KEY_LENGTH = 63
MAX_USER_TAG_KEY_LENGTH = MAX_TAG_KEY_LENGTH - len(USER_TAG_PREFIX)
MAX_TAG_VALUE_LENGTH = 255
_CONTROL_CHARS_RE = re.compile(r"[\x00-\x1f\x7f]")


def normalize_user_tags(tags: Any, option: str = "tags") -> dict[str, str]:
    """Validate user tags and return them with string values.

    Scalar values (numbers, booleans) become strings, because Modal tags are strings and a YAML
    ``version: 2`` should mean the same as ``version: "2"``. Lists and dicts are refused.
    """
    if tags is None:
        return {}
    if not isinstance(tags, dict):
        raise HostError(f"{option} must be a dictionary of key: value, got {type(tags).__name__} {tags!r}.")
    if len(tags) > MAX_USER_TAGS:
        raise HostError(
            f"{option} has {len(tags)} entries ({', '.join(sorted(map(str, tags)))}); at most {MAX_USER_TAGS} user "
            f"tags fit, because a Modal sandbox holds at most {MAX_SANDBOX_TAGS} tags and "
            f"{len(IDENTITY_TAG_KEYS)} are used for the host's identity."
        )
    normalized: dict[str, str] = {}
    for key, value in tags.items():
        validate_name(key, f"{option} key", "tag key", MAX_USER_TAG_KEY_LENGTH, HostError)
        if isinstance(value, bool):
            text = "true" if value else "false"
        elif isinstance(value, (str, int, float)):
            text = str(value)
        else:
            raise HostError(
                f"{option} value of {key!r} must be a string or a number, got {type(value).__name__} {value!r}."
            )
        if len(text) > MAX_TAG_VALUE_LENGTH:
            raise HostError(
                f"{option} value of {key!r} is {len(text)} characters long; at most {MAX_TAG_VALUE_LENGTH} are allowed."
            )
        if _CONTROL_CHARS_RE.search(text):
            raise HostError(f"{option} value of {key!r} ({text!r}) contains control characters (newline, tab, ...).")
        normalized[key] = text
    return normalized


def merge_user_tags(current: dict[str, str], requested: dict[str, str] | None, purge: bool) -> dict[str, str]:
    """The user tags a host should end with: ``None`` leaves them alone, ``purge`` drops unlisted ones."""
    if requested is None:
        return dict(current)
    if purge:
        return dict(requested)
    merged = dict(current)
    merged.update(requested)
    return merged


def encode_sandbox_tags(host_id: str, name: str, user_tags: dict[str, str], ssh_endpoint: str | None = None) -> dict[str, str]:
    """The full tag set of a host's sandbox: identity tags plus user tags under their prefix."""
    tags = {TAG_HOST_ID: host_id, TAG_HOST_NAME: name}
    if ssh_endpoint:
        tags[TAG_SSH_ENDPOINT] = ssh_endpoint
    for key, value in user_tags.items():
        tags[USER_TAG_PREFIX + key] = value
    return tags


@dataclass(frozen=True)
class SandboxIdentity:
    """What a sandbox's tags say about the host it belongs to."""

    host_id: str
    name: str
    user_tags: dict[str, str]
    ssh_endpoint: tuple[str, int] | None


def decode_sandbox_tags(tags: dict[str, str]) -> SandboxIdentity | None:
    """Read a host's identity from sandbox tags; None for a sandbox that is not one of our hosts."""
    host_id = tags.get(TAG_HOST_ID)
    if not host_id:
        return None
    user_tags = {key[len(USER_TAG_PREFIX):]: value for key, value in tags.items() if key.startswith(USER_TAG_PREFIX)}
    return SandboxIdentity(
        host_id=host_id,
        name=tags.get(TAG_HOST_NAME, ""),
        user_tags=user_tags,
        ssh_endpoint=parse_endpoint(tags.get(TAG_SSH_ENDPOINT)),
    )


def format_endpoint(host: str, port: int) -> str:
    return f"{host}:{port}"


def parse_endpoint(text: str | None) -> tuple[str, int] | None:
    """``"host:port"`` -> (host, port); None when absent or malformed (callers then ask Modal)."""
    if not text or ":" not in text:
        return None
    host, _sep, port = text.rpartition(":")
    if not host or not port.isdigit():
        return None
    return host, int(port)


# --- host records ----------------------------------------------------------------------------

RECORD_FORMAT_VERSION = 1
STATUS_RUNNING = "running"
STATUS_STOPPED = "stopped"
STATUS_DESTROYED = "destroyed"
STATUS_FAILED = "failed"


def utc_now() -> str:
    return datetime.datetime.now(datetime.timezone.utc).replace(microsecond=0).isoformat()


@dataclass
class HostRecord:
    """One host as kept on the state volume at ``hosts/<host_id>.json``.

    ``previous_name`` is set while a rename is in progress and cleared once every place that records
    the name (tags, key folder) follows; a host is findable under its new name from the moment the
    record is written.
    """

    host_id: str
    name: str
    user_tags: dict[str, str] = field(default_factory=dict)
    spec: dict[str, Any] = field(default_factory=dict)
    ssh_host_public_key: str = ""
    authorized_keys: list[str] = field(default_factory=list)  # extra keys given with ssh_public_key
    status: str = STATUS_RUNNING
    sandbox_id: str | None = None
    ssh_host: str | None = None
    ssh_port: int | None = None
    stop_reason: str | None = None
    failure: str | None = None
    previous_name: str | None = None
    created_at: str = field(default_factory=utc_now)
    updated_at: str = field(default_factory=utc_now)

    def to_json(self) -> bytes:
        data = {"format": RECORD_FORMAT_VERSION}
        data.update(self.__dict__)
        return (json.dumps(data, indent=2, sort_keys=True) + "\n").encode("utf-8")

    @classmethod
    def from_json(cls, raw: bytes | str) -> "HostRecord":
        data = json.loads(raw)
        if not isinstance(data, dict) or not data.get("host_id") or not isinstance(data.get("name"), str):
            raise ValueError("host record lacks host_id or name")
        known = {key: value for key, value in data.items() if key in cls.__dataclass_fields__}
        return cls(**known)


def record_path(host_id: str) -> str:
    return f"hosts/{host_id}.json"


def state_volume_name(app_name: str) -> str:
    return f"{app_name}-state"


def open_state_volume(call: Callable[..., Any], from_name: Callable[..., Any], volume_name: str,
                      environment: str | None, client: Any, create: bool) -> Any:
    """The app's state volume, hydrated through ``call``; None when it does not exist and ``create`` is False.

    Reading must never create anything (info modules, check mode), so a missing volume is "no data" then.
    """
    volume = from_name(volume_name, environment_name=environment, create_if_missing=create, client=client)
    try:
        call(volume.hydrate)
    except Exception as exc:  # pylint: disable=broad-exception-caught
        if not create and is_not_found(exc):
            return None
        raise
    return volume


# --- hosts: records and live sandboxes merged --------------------------------------------------


@dataclass
class LiveSandbox:
    """A running sandbox of the app, with its tags (read once).

    ``handle`` is the SDK's ``Sandbox`` object. A sandbox read from list pages has none until it is needed:
    ``open_handle`` (``modal.Sandbox.from_id``) then makes one, so a listing never costs a call per sandbox.
    ``ssh_endpoint`` is the SSH tunnel as the list page showed it, if it did.
    """

    sandbox_id: str
    tags: dict[str, str]
    _handle: Any = None
    ssh_endpoint: tuple[str, int] | None = None
    open_handle: Callable[[str], Any] | None = field(default=None, repr=False, compare=False)

    @property
    def handle(self) -> Any:
        if self._handle is None and self.open_handle is not None:
            self._handle = self.open_handle(self.sandbox_id)
        return self._handle


@dataclass
class Host:
    """A host as the modules see it: its record (if any) and its live sandbox (if any).

    The record is the authority for the name and user tags when both exist: a rename writes the
    record first, so a crash before the tags follow still finds the host under its new name, and
    the next run repairs the tags.
    """

    host_id: str
    name: str
    user_tags: dict[str, str]
    record: HostRecord | None = None
    sandbox: LiveSandbox | None = None
    ssh_endpoint: tuple[str, int] | None = None

    @property
    def state(self) -> str:
        """running; ended (its record says running but its sandbox is gone: timeout, idle timeout, crash); stopped."""
        if self.sandbox is not None:
            return "running"
        if self.record is not None and self.record.status == STATUS_RUNNING:
            return "ended"
        return "stopped"

    @property
    def tags_out_of_date(self) -> bool:
        """True when the live sandbox's tags disagree with the record (an interrupted rename or tag update)."""
        if self.sandbox is None or self.record is None:
            return False
        identity = decode_sandbox_tags(self.sandbox.tags)
        return identity is None or identity.name != self.record.name or identity.user_tags != self.record.user_tags


def merge_hosts(live: Iterable[LiveSandbox], records: Iterable[HostRecord]) -> list[Host]:
    """Join live sandboxes and host records by host_id.

    Destroyed records are dropped unless a sandbox of that host is somehow still alive. A record
    without a live sandbox is a stopped host; a sandbox without a record is a running host known
    from its tags only. When several live sandboxes carry one host_id (which only a crash between
    create and terminate can cause), the first listed (the newest) is used.
    """
    by_id: dict[str, Host] = {}
    for record in records:
        by_id[record.host_id] = Host(record.host_id, record.name, dict(record.user_tags), record=record)
    for sandbox in live:
        identity = decode_sandbox_tags(sandbox.tags)
        if identity is None:
            continue
        host = by_id.get(identity.host_id)
        if host is None:
            host = Host(identity.host_id, identity.name, dict(identity.user_tags))
            by_id[identity.host_id] = host
        if host.sandbox is None:
            host.sandbox = sandbox
            host.ssh_endpoint = identity.ssh_endpoint or sandbox.ssh_endpoint
    hosts = []
    for host in by_id.values():
        if host.sandbox is None and host.record is not None and host.record.status in (STATUS_DESTROYED, STATUS_FAILED):
            continue
        if host.ssh_endpoint is None and host.sandbox is not None and host.record is not None:
            if host.record.ssh_host and host.record.ssh_port and host.record.sandbox_id == host.sandbox.sandbox_id:
                host.ssh_endpoint = (host.record.ssh_host, int(host.record.ssh_port))
        hosts.append(host)
    hosts.sort(key=lambda h: (h.name, h.host_id))
    return hosts


def find_host(hosts: Iterable[Host], name: str) -> Host | None:
    """The host called ``name``; a running one wins over a stopped one if both claim the name."""
    matches = [host for host in hosts if host.name == name]
    matches.sort(key=lambda h: h.sandbox is None)
    return matches[0] if matches else None


def filter_hosts(hosts: Iterable[Host], name: str | None = None, tags: dict[str, str] | None = None) -> list[Host]:
    """Hosts whose name is ``name`` (if given) and whose user tags include every ``tags`` item."""
    selected = []
    for host in hosts:
        if name is not None and host.name != name:
            continue
        if tags and any(host.user_tags.get(key) != value for key, value in tags.items()):
            continue
        selected.append(host)
    return selected


# --- where records live --------------------------------------------------------------------


class RecordStore(Protocol):
    """Where host records are kept. The modules depend on this interface only."""

    def list(self) -> list[HostRecord]: ...

    def get(self, host_id: str) -> HostRecord | None: ...

    def put(self, record: HostRecord) -> None: ...


class MemoryRecordStore:
    """Records in a dict: for tests, and for the check-mode view of an app that does not exist yet."""

    def __init__(self, records: Iterable[HostRecord] = ()) -> None:
        self.records = {record.host_id: record for record in records}

    def list(self) -> list[HostRecord]:
        return list(self.records.values())

    def get(self, host_id: str) -> HostRecord | None:
        return self.records.get(host_id)

    def put(self, record: HostRecord) -> None:
        self.records[record.host_id] = record


class VolumeRecordStore:
    """Host records on the Modal volume ``<app>-state`` as ``hosts/<host_id>.json``.

    ``call`` runs one SDK call with the collection's retries and error mapping (ModalSession.call).
    With ``create=False`` a missing volume reads as "no records" and nothing is created, which is
    what the info module and check mode need.
    """

    def __init__(self, call: Callable[..., Any], volume_name: str, environment: str | None, client: Any,
                 create: bool, from_name: Callable[..., Any] | None = None) -> None:
        self._from_name = from_name  # modal.Volume.from_name unless given (tests pass a fake)
        self._call = call
        self._volume_name = volume_name
        self._environment = environment
        self._client = client
        self._create = create
        self._volume: Any = None
        self._missing = False

    def _get_volume(self) -> Any:
        if self._volume is None and not self._missing:
            from_name = self._from_name
            if from_name is None:
                import modal  # pylint: disable=import-outside-toplevel

                from_name = modal.Volume.from_name
            self._volume = open_state_volume(self._call, from_name, self._volume_name, self._environment,
                                             self._client, self._create)
            self._missing = self._volume is None
        return self._volume

    def list(self) -> list[HostRecord]:
        volume = self._get_volume()
        if volume is None:
            return []
        try:
            entries = self._call(volume.listdir, "hosts")
        except Exception as exc:
            if is_not_found(exc):
                return []
            raise
        records = []
        for entry in entries:
            path = getattr(entry, "path", "")
            if not path.endswith(".json"):
                continue
            record = self._read(volume, path)
            if record is not None:
                records.append(record)
        return records

    def get(self, host_id: str) -> HostRecord | None:
        volume = self._get_volume()
        if volume is None:
            return None
        return self._read(volume, record_path(host_id))

    def _read(self, volume: Any, path: str) -> HostRecord | None:
        try:
            raw = self._call(lambda: b"".join(volume.read_file(path)))
        except Exception as exc:
            if is_not_found(exc):
                return None
            raise
        try:
            return HostRecord.from_json(raw)
        except ValueError:
            # A record another tool half-wrote or a future format we cannot read: skip, never crash a listing.
            return None

    def put(self, record: HostRecord) -> None:
        volume = self._get_volume()
        if volume is None:
            raise RuntimeError(f"state volume {self._volume_name} does not exist")
        record.updated_at = utc_now()
        data = record.to_json()

        def upload() -> None:
            with volume.batch_upload(force=True) as batch:
                batch.put_file(io.BytesIO(data), "/" + record_path(record.host_id))

        self._call(upload)


# --- reading the app's running sandboxes ---------------------------------------------------------

# How many per-sandbox calls run at once when list pages lack details (the inventory's max_concurrent_calls).
LIST_CONCURRENCY = 16
# How long to wait for a sandbox's tunnels when they must be read one sandbox at a time.
TUNNEL_TIMEOUT_SECONDS = 10


def list_page_details(modal: Any, client: Any, app_id: str) -> list[dict[str, Any]] | None:
    """Every running sandbox of the app as Modal's list pages describe it, or None if this SDK cannot say.

    Why a private SDK path: the public ``modal.Sandbox.list`` reads the same pages but yields bare handles
    (id and status) and drops what the pages carry, tags and tunnels included, so each sandbox would then cost
    one or two more calls. This function pages exactly as ``Sandbox.list`` does (newest first, ``before_timestamp``
    set to the last sandbox's creation time, until an empty page), through the same SDK classes, and keeps the
    details. If a future SDK moves these classes, it returns None and the public path is used instead.
    """
    try:
        from modal._utils.async_utils import synchronizer  # pylint: disable=import-outside-toplevel
        from modal.sandbox._impl_v1 import SandboxImplV1  # pylint: disable=import-outside-toplevel
        from modal.sandbox._impl_v2 import SandboxImplV2  # pylint: disable=import-outside-toplevel
        from modal_proto import api_pb2  # pylint: disable=import-outside-toplevel
    except ImportError:
        return None
    impl = SandboxImplV2 if modal.config.config.get("sandbox_v2") is True else SandboxImplV1

    async def all_pages(client_impl: Any) -> list[dict[str, Any]]:
        sandboxes: list[dict[str, Any]] = []
        before_timestamp = None
        while True:
            request = api_pb2.SandboxListRequest(app_id=app_id, before_timestamp=before_timestamp, include_finished=False)
            response = await impl.list_page(client_impl, request)
            if not response.sandboxes:
                return sandboxes
            sandboxes.extend(sandbox_info_to_raw(info) for info in response.sandboxes)
            before_timestamp = response.sandboxes[-1].created_at

    return synchronizer.create_blocking(all_pages)(client)


def sandbox_info_to_raw(info: Any) -> dict[str, Any]:
    """A ``SandboxInfo`` of a list page as plain data; ``tags``/``ssh`` are None when the page lacks them."""
    tags = {tag.tag_name: tag.tag_value for tag in info.tags}
    ssh = None
    for tunnel in info.tunnels:
        if tunnel.container_port == SSH_PORT and tunnel.unencrypted_host and tunnel.unencrypted_port:
            ssh = [tunnel.unencrypted_host, int(tunnel.unencrypted_port)]
    gpu_config = info.task_info.gpu_config
    gpu = gpu_config.gpu_type or info.task_info.gpu_type or None
    if gpu and gpu_config.count > 1:
        gpu = f"{gpu}:{gpu_config.count}"
    return {
        "id": info.id,
        "created_at": info.created_at or None,
        "tags": tags or None,
        "ssh": ssh,
        "gpu": gpu,
    }


def needs_tags(sandbox: dict[str, Any]) -> bool:
    return sandbox.get("tags") is None


def needs_tunnel(sandbox: dict[str, Any]) -> bool:
    """A host's sandbox whose SSH endpoint is neither in its tags nor in the list page."""
    tags = sandbox.get("tags") or {}
    return bool(tags.get(TAG_HOST_ID)) and not sandbox.get("ssh") and parse_endpoint(tags.get(TAG_SSH_ENDPOINT)) is None


def ssh_tunnel_endpoint(call: Callable[..., Any], handle: Any, timeout: int) -> tuple[str, int] | None:
    """(host, port) of a sandbox's SSH tunnel, read from Modal; None when it has no tunnel for the SSH port."""
    tunnel = call(handle.tunnels, timeout=timeout).get(SSH_PORT)
    if tunnel is None:
        return None
    host, port = tunnel.tcp_socket
    return host, int(port)


def run_bounded(fn: Callable[[Any], Any], items: list[Any], limit: int) -> list[tuple[Any, Any, BaseException | None]]:
    """``fn(item)`` for every item, at most ``limit`` at a time; (item, result, error) per item, in order."""
    if not items:
        return []
    with concurrent.futures.ThreadPoolExecutor(max_workers=max(1, min(limit, len(items)))) as pool:
        futures = [pool.submit(fn, item) for item in items]
        results = []
        for item, future in zip(items, futures):
            try:
                results.append((item, future.result(), None))
            except Exception as exc:  # pylint: disable=broad-exception-caught
                results.append((item, None, exc))
        return results


class SandboxLister:
    """The running sandboxes of an app as plain data: ``{id, created_at, tags, ssh, gpu}`` each.

    One call per list page when the pages carry tags and tunnels. Otherwise (an SDK whose private list path
    moved, or a server that leaves the details out) the missing details are read one sandbox at a time, at
    most ``concurrency`` calls at once; ``with_tunnels`` also reads the tunnel of each host whose SSH endpoint
    neither its tags nor the page gives. A sandbox that ended meanwhile is left out. Any other failure to read
    a sandbox is passed to ``warn`` and the sandbox left out, or raised when ``warn`` is None (a module that
    changes hosts must not act on a partial list).
    """

    def __init__(self, session: Any, concurrency: int = LIST_CONCURRENCY, with_tunnels: bool = False,
                 warn: Callable[[str], None] | None = None) -> None:
        self.session = session
        self.concurrency = max(1, concurrency)
        self.with_tunnels = with_tunnels
        self.warn = warn
        # SDK handles by sandbox id, when the public listing had to be used (they come with it for free).
        self.handles: dict[str, Any] = {}

    def list(self, app_id: str) -> list[dict[str, Any]]:
        session = self.session
        listed = session.call(list_page_details, session.modal, session.client, app_id)
        if listed is None:
            listed = [{"id": sid, "created_at": None, "tags": None, "ssh": None, "gpu": None}
                      for sid in self._public_handles(app_id)]
        incomplete = [sandbox for sandbox in listed
                      if needs_tags(sandbox) or (self.with_tunnels and needs_tunnel(sandbox))]
        if incomplete:
            self._complete(app_id, incomplete)
        return [sandbox for sandbox in listed if sandbox.get("tags") is not None]

    def _public_handles(self, app_id: str) -> dict[str, Any]:
        if not self.handles:
            modal = self.session.modal
            client = self.session.client
            handles = self.session.call(lambda: list(modal.Sandbox.list(app_id=app_id, client=client)))
            self.handles = {handle.object_id: handle for handle in handles}
        return self.handles

    def _complete(self, app_id: str, incomplete: list[dict[str, Any]]) -> None:
        """Fill in tags (and SSH endpoints) one sandbox at a time, concurrently, for pages that lack them."""
        handles = self._public_handles(app_id)
        call = self.session.call

        def fill(sandbox: dict[str, Any]) -> None:
            handle = handles.get(sandbox["id"])
            if handle is None:
                return  # ended between the two listings
            if needs_tags(sandbox):
                sandbox["tags"] = dict(call(handle.get_tags) or {})
            if self.with_tunnels and needs_tunnel(sandbox):
                endpoint = ssh_tunnel_endpoint(call, handle, TUNNEL_TIMEOUT_SECONDS)
                if endpoint is not None:
                    sandbox["ssh"] = list(endpoint)

        for sandbox, _result, error in run_bounded(fill, incomplete, self.concurrency):
            if error is None:
                continue
            if not is_not_found(error):
                if self.warn is None:
                    raise error
                self.warn(f"Sandbox {sandbox['id']} is left out: its details could not be read ({error_message(error)}).")
            sandbox["tags"] = None


def error_message(exc: BaseException) -> str:
    return getattr(exc, "msg", None) or str(exc) or type(exc).__name__


# --- the app's hosts, as the modules read them -------------------------------------------------


class HostDirectory:
    """The hosts of one app: live sandboxes (one list call per page, see SandboxLister) merged with records.

    ``session`` is a ModalSession; ``app`` the app handle or None when the app does not exist (then
    there are no hosts, and nothing is created).
    """

    def __init__(self, session: Any, app: Any, store: RecordStore) -> None:
        self.session = session
        self.app = app
        self.store = store
        self._live: list[LiveSandbox] | None = None

    def live_sandboxes(self) -> list[LiveSandbox]:
        if self._live is None:
            self._live = [] if self.app is None else self._list_live()
        return self._live

    def _list_live(self) -> list[LiveSandbox]:
        lister = SandboxLister(self.session)
        listed = lister.list(self.app.app_id)
        return [
            LiveSandbox(sandbox["id"], dict(sandbox["tags"]), lister.handles.get(sandbox["id"]),
                        ssh_endpoint=tuple(sandbox["ssh"]) if sandbox.get("ssh") else None,
                        open_handle=self._open_handle)
            for sandbox in listed
        ]

    def _open_handle(self, sandbox_id: str) -> Any:
        session = self.session
        return session.call(session.modal.Sandbox.from_id, sandbox_id, client=session.client)

    def hosts(self) -> list[Host]:
        return merge_hosts(self.live_sandboxes(), self.store.list())

    def sandboxes_of(self, host_id: str) -> list[LiveSandbox]:
        """Every live sandbox tagged with ``host_id`` (normally one; more only after a crash mid-create)."""
        return [sb for sb in self.live_sandboxes() if sb.tags.get(TAG_HOST_ID) == host_id]

    def tagged_sandbox_ids(self, host_id: str) -> list[str]:
        """Ids of live sandboxes the server lists under the tag ``mngr_host_id=host_id`` (one list call).

        Cheaper than a full listing; used for the after-create sweep, where missing one costs nothing.
        """
        if self.app is None:
            return []
        modal = self.session.modal
        client = self.session.client
        app_id = self.app.app_id
        handles = self.session.call(
            lambda: list(modal.Sandbox.list(app_id=app_id, tags={TAG_HOST_ID: host_id}, client=client))
        )
        return [handle.object_id for handle in handles]

    def forget(self) -> None:
        """Drop the cached list, so the next read sees sandboxes created or terminated since."""
        self._live = None


def host_result(host_id: str | None, name: str, state: str, user_tags: dict[str, str], spec: dict[str, Any],
                sandbox_id: str | None, endpoint: tuple[str, int] | None, key_dir: str, app: str,
                environment: str | None = None) -> dict[str, Any]:
    """The shape both modules return for one host (``modal_sandbox`` and each ``modal_sandbox_info`` item).

    The key paths are those of the host's key folder when this controller has it, else where it would be.
    """
    folder = None
    if host_id:
        keys = KeyStore(key_dir, app, environment)
        folder = keys.find(host_id, name) or keys.folder_for(host_id, name)
    ssh = {
        "host": endpoint[0] if endpoint else None,
        "port": endpoint[1] if endpoint else None,
        "user": SSH_USER,
        # A host not created yet (check mode) has no id, so no key folder either.
        "private_key_file": folder.client_key if folder else None,
        "known_hosts_file": folder.known_hosts if folder else None,
        "common_args": ssh_common_args(folder.known_hosts) if folder else None,
        # For ansible_ssh_host_key_checking: with host key checking off in Ansible's configuration, Ansible puts
        # StrictHostKeyChecking=no before ansible_ssh_common_args, and ssh keeps the first value of an option.
        "host_key_checking": True,
    }
    return {
        "name": name,
        "host_id": host_id,
        "app": app,
        "state": state,
        "sandbox_id": sandbox_id,
        "tags": dict(user_tags),
        "spec": spec,
        "ssh": ssh,
    }


# --- hosts whose sandbox ended by itself ----------------------------------------------------------

# How Modal's result status of a finished sandbox reads for a user (GenericResult.status names).
_END_REASONS = {
    "GENERIC_STATUS_TIMEOUT": "it reached its timeout",
    "GENERIC_STATUS_IDLE_TIMEOUT": "it reached its idle_timeout",
    "GENERIC_STATUS_FAILURE": "it crashed",
    "GENERIC_STATUS_TERMINATED": "it was terminated outside mngr.modal",
    "GENERIC_STATUS_SUCCESS": "its main process exited",
    "GENERIC_STATUS_KERNEL_OOM_KILL": "it ran out of memory",
}


def ended_details(session: Any, host: Host) -> dict[str, Any]:
    """``{reason, ended_at, sandbox_id}`` of a host whose sandbox ended by itself, as Modal reports that sandbox.

    One list call, filtered by the host's id tag and including finished sandboxes (newest first). When Modal
    no longer lists the sandbox, the reason says so and ``ended_at`` is None.
    """
    sandbox_id = host.record.sandbox_id if host.record else None
    details: dict[str, Any] = {"sandbox_id": sandbox_id, "reason": "its sandbox is gone (Modal no longer lists it)",
                               "ended_at": None}
    try:
        info = session.call(_finished_sandbox_info, session.modal, session.client, host.host_id, sandbox_id)
    except Exception as exc:  # pylint: disable=broad-exception-caught
        details["reason"] = f"its sandbox is gone (why could not be read: {error_message(exc)})"
        return details
    if info is None:
        return details
    from modal_proto import api_pb2  # pylint: disable=import-outside-toplevel

    result = info.task_info.result
    status = api_pb2.GenericResult.GenericStatus.Name(result.status) if result.status else ""
    reason = _END_REASONS.get(status, "it ended")
    if result.exception:
        reason = f"{reason} ({result.exception})"
    details.update(sandbox_id=info.id, reason=reason)
    if info.task_info.finished_at:
        details["ended_at"] = datetime.datetime.fromtimestamp(
            info.task_info.finished_at, datetime.timezone.utc).replace(microsecond=0).isoformat()
    return details


def _finished_sandbox_info(modal: Any, client: Any, host_id: str, sandbox_id: str | None) -> Any:
    """The ``SandboxInfo`` of the host's sandbox ``sandbox_id`` (else its newest one), finished ones included."""
    from modal._utils.async_utils import synchronizer  # pylint: disable=import-outside-toplevel
    from modal.sandbox._impl_v1 import SandboxImplV1  # pylint: disable=import-outside-toplevel
    from modal.sandbox._impl_v2 import SandboxImplV2  # pylint: disable=import-outside-toplevel
    from modal_proto import api_pb2  # pylint: disable=import-outside-toplevel

    impl = SandboxImplV2 if modal.config.config.get("sandbox_v2") is True else SandboxImplV1

    async def newest_page(client_impl: Any) -> Any:
        request = api_pb2.SandboxListRequest(include_finished=True,
                                             tags=[api_pb2.SandboxTag(tag_name=TAG_HOST_ID, tag_value=host_id)])
        return await impl.list_page(client_impl, request)

    page = synchronizer.create_blocking(newest_page)(client)
    matching = [info for info in page.sandboxes if info.id == sandbox_id] or list(page.sandboxes[:1])
    return matching[0] if matching else None


def snapshot_age(created_at: str, now: datetime.datetime | None = None) -> str:
    """`` (taken 2h 5m ago, at <created_at>)`` for an ISO time, or `` (taken at <created_at>)`` if it cannot be read."""
    try:
        taken = datetime.datetime.fromisoformat(created_at)
    except (TypeError, ValueError):
        return f" (taken at {created_at})" if created_at else ""
    if taken.tzinfo is None:
        taken = taken.replace(tzinfo=datetime.timezone.utc)
    seconds = max(0, int(((now or datetime.datetime.now(datetime.timezone.utc)) - taken).total_seconds()))
    days, rest = divmod(seconds, 86400)
    hours, rest = divmod(rest, 3600)
    minutes = rest // 60
    parts = [f"{days}d" if days else "", f"{hours}h" if hours else "", f"{minutes}m" if minutes or not (days or hours) else ""]
    return f" (taken {' '.join(part for part in parts if part)} ago, at {created_at})"
