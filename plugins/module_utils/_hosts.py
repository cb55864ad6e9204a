# Copyright (c) 2026, the mngr.modal authors
# GNU General Public License v3.0+ (see COPYING or https://www.gnu.org/licenses/gpl-3.0.txt)

# This module is private to the mngr.modal collection: its interface may change at any time,
# do not use it from outside the collection.

"""Hosts as the modules and the inventory see them: names, records and live sandboxes merged, and results.

A *host* is what Ansible sees; a *sandbox* is one life of it. A host is identified by a ``host_id`` that
never changes and has a unique ``name`` that can be renamed. Both travel as sandbox tags (:mod:`._tags`), so
a running host is found with one list call (:mod:`._live`), and in a host record on the app's state volume
(:mod:`._records`), so a host without a live sandbox is still known, with its tags and spec.
:class:`HostDirectory` joins the two; :func:`host_result` is the shape the modules return for a host.
"""

from __future__ import annotations

import uuid
from dataclasses import dataclass
from typing import Any, Iterable

from ansible_collections.mngr.modal.plugins.module_utils._errors import HostError
from ansible_collections.mngr.modal.plugins.module_utils._keys import KeyStore
from ansible_collections.mngr.modal.plugins.module_utils._live import ListedSandbox, SandboxLister
from ansible_collections.mngr.modal.plugins.module_utils._names import validate_name
from ansible_collections.mngr.modal.plugins.module_utils._records import (
    STATUS_DESTROYED,
    STATUS_FAILED,
    STATUS_RUNNING,
    HostRecord,
    HostRecords,
)
from ansible_collections.mngr.modal.plugins.module_utils._ssh import connection_vars, ssh_enabled
from ansible_collections.mngr.modal.plugins.module_utils._tags import TAG_HOST_ID, decode_sandbox_tags

# --- names -----------------------------------------------------------------------------------

# Host names end up in tags, file names and folder names: the collection's safe names (see _names).
HOST_NAME_MAX_LENGTH = 63


def validate_host_name(name: Any, option: str = "name") -> str:
    """Return ``name`` if it is a valid host name, else raise HostError naming it."""
    return validate_name(name, option, "host name", HOST_NAME_MAX_LENGTH, HostError)


def new_host_id() -> str:
    """A fresh host id: never reused, stable for the life of the host (across renames and restarts)."""
    return "host-" + uuid.uuid4().hex


# --- hosts: records and live sandboxes merged --------------------------------------------------


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
    sandbox: ListedSandbox | None = None
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


def merge_hosts(live: Iterable[ListedSandbox], records: Iterable[HostRecord]) -> list[Host]:
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


# --- the app's hosts, as the modules read them -------------------------------------------------


class HostDirectory:
    """The hosts of one app: live sandboxes (one list call per page, see SandboxLister) merged with records.

    ``session`` is a ModalSession; ``app`` the app handle or None when the app does not exist (then
    there are no hosts, and nothing is created).
    """

    def __init__(self, session: Any, app: Any, store: HostRecords) -> None:
        self.session = session
        self.app = app
        self.store = store
        self._live: list[ListedSandbox] | None = None

    def live_sandboxes(self) -> list[ListedSandbox]:
        if self._live is None:
            self._live = [] if self.app is None else self._list_live()
        return self._live

    def _list_live(self) -> list[ListedSandbox]:
        lister = SandboxLister(self.session)
        listed = lister.list(self.app.app_id)
        return [
            ListedSandbox(sandbox["id"], dict(sandbox["tags"]), lister.handles.get(sandbox["id"]),
                          ssh_endpoint=tuple(sandbox["ssh"]) if sandbox.get("ssh") else None,
                          open_handle=self._open_handle, created_at=sandbox.get("created_at"))
            for sandbox in listed
        ]

    def _open_handle(self, sandbox_id: str) -> Any:
        session = self.session
        return session.call(session.modal.Sandbox.from_id, sandbox_id, client=session.client)

    def hosts(self) -> list[Host]:
        return merge_hosts(self.live_sandboxes(), self.store.list())

    def sandboxes_of(self, host_id: str) -> list[ListedSandbox]:
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

    The key paths are those of the host's key folder when this controller has it, else where it would be (none for a
    host without SSH).
    """
    # A host created with ssh=false has no keys, tunnel or sshd: Ansible reaches it through Modal's exec API.
    with_ssh = ssh_enabled(spec)
    folder = None
    if host_id and with_ssh:
        keys = KeyStore(key_dir, app, environment)
        folder = keys.find(host_id, name) or keys.folder_for(host_id, name)
    ssh = connection_vars(folder, endpoint)
    return {
        "name": name,
        "host_id": host_id,
        "app": app,
        "state": state,
        "sandbox_id": sandbox_id,
        "tags": dict(user_tags),
        "spec": spec,
        "connection": "ssh" if with_ssh else "sandbox_exec",
        "ssh": ssh,
    }


def found_host_result(host: Host, session: Any, state: str | None = None,
                      endpoint: tuple[str, int] | None = None) -> dict[str, Any]:
    """``host_result`` for a host found in the app: its record's spec, its sandbox, ``endpoint`` or the recorded one."""
    return host_result(host.host_id, host.name, state or host.state, host.user_tags,
                       host.record.spec if host.record else {}, host.sandbox.sandbox_id if host.sandbox else None,
                       endpoint or host.ssh_endpoint, session.key_dir, session.app_name, session.environment)
