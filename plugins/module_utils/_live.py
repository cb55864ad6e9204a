# Copyright (c) 2026, the mngr.modal authors
# GNU General Public License v3.0+ (see COPYING or https://www.gnu.org/licenses/gpl-3.0.txt)

# This module is private to the mngr.modal collection: its interface may change at any time,
# do not use it from outside the collection.

"""What Modal says about an app's sandboxes right now: listing them, their tunnels, why one ended.

This is the one place that reads the sandbox list pages through a private SDK path (see
:func:`list_page_details`), with the public ``modal.Sandbox.list`` as the fallback.
"""

from __future__ import annotations

import concurrent.futures
import datetime
from dataclasses import dataclass, field
from typing import Any, Callable

from ansible_collections.mngr.modal.plugins.module_utils._client import is_not_found
from ansible_collections.mngr.modal.plugins.module_utils._ssh import SSH_PORT
from ansible_collections.mngr.modal.plugins.module_utils._tags import TAG_HOST_ID, TAG_HOST_NAME, TAG_SSH_ENDPOINT, parse_endpoint


@dataclass
class ListedSandbox:
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
    # When the sandbox was created (seconds since the epoch), or None when the listing did not say.
    created_at: float | None = None

    @property
    def handle(self) -> Any:
        if self._handle is None and self.open_handle is not None:
            self._handle = self.open_handle(self.sandbox_id)
        return self._handle


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


def running_sandbox_of(session: Any, app_id: str, host_name: str) -> Any:
    """The handle of the running sandbox of the host called ``host_name``, or None (one list call, by its name tag).

    Newest first, as Modal lists them: after a crash between create and terminate left two, the newest is the one
    the modules keep.
    """
    modal = session.modal
    client = session.client
    handles = session.call(lambda: list(modal.Sandbox.list(app_id=app_id, tags={TAG_HOST_NAME: host_name},
                                                           client=client)))
    return handles[0] if handles else None


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


def ended_details(session: Any, host: Any) -> dict[str, Any]:
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
