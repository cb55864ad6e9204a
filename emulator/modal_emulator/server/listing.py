"""Sandbox tags, listing and lookup by name (V1 and V2 RPCs).

``SandboxList(V2)`` pages newest first and honours ``before_timestamp`` (the SDK pages until it gets
an empty page). Pages carry each sandbox's tags and tunnels unless the server runs with
``--list-omits-details``, which mimics a backend that leaves them out so clients must fall back to
one call per sandbox.
"""

from __future__ import annotations

from typing import Any

from google.protobuf.empty_pb2 import Empty
from grpclib import Status
from modal_proto import api_pb2

from .apps import environment_name, find_app
from .core import EmulatorState
from .live import LiveSandbox
from .sandboxes import sandbox_registry

#: Sandboxes per list page.
LIST_PAGE_SIZE = 100


def tag_protos(tags: dict[str, str]) -> list[api_pb2.SandboxTag]:
    return [api_pb2.SandboxTag(tag_name=k, tag_value=v) for k, v in sorted(tags.items())]


class TagsAndListRpcs:
    state: EmulatorState

    def _listing_live(self, sandbox_id: str) -> LiveSandbox:
        return sandbox_registry(self.state).get(sandbox_id)

    # -- tags ---------------------------------------------------------------------------------
    async def _listing_tags_set(self, stream: Any) -> None:
        request = await stream.recv_message()
        live = self._listing_live(request.sandbox_id)
        live.row["tags"] = {tag.tag_name: tag.tag_value for tag in request.tags}
        live.save()
        await stream.send_message(Empty())

    async def _listing_tags_get(self, stream: Any) -> None:
        request = await stream.recv_message()
        live = self._listing_live(request.sandbox_id)
        await stream.send_message(api_pb2.SandboxTagsGetResponse(tags=tag_protos(live.row.get("tags") or {})))

    SandboxTagsSetV2 = _listing_tags_set
    SandboxTagsSet = _listing_tags_set
    SandboxTagsGetV2 = _listing_tags_get
    SandboxTagsGet = _listing_tags_get

    # -- list ---------------------------------------------------------------------------------
    def _listing_sandbox_info(self, live: LiveSandbox) -> api_pb2.SandboxInfo:
        row = live.row
        info = api_pb2.SandboxInfo(
            id=live.id,
            created_at=row["created_at"],
            app_id=row["app_id"],
            name=row.get("name") or "",
            image_id=row.get("image_id") or "",
            timeout_secs=row.get("timeout_secs") or 0,
            idle_timeout_secs=row.get("idle_timeout_secs") or 0,
            task_info=api_pb2.TaskInfo(
                id=live.task_id, sandbox_id=live.id, started_at=row["created_at"], result=live.result_proto(),
                finished_at=row.get("finished_at") or 0,
                gpu_type=(row.get("resources") or {}).get("gpu_type") or "",
            ),
            resource_info=_listing_resource_info(row.get("resources") or {}),
            metadata=live.metadata(),
        )
        if not self.state.list_omits_details:
            info.tags.extend(tag_protos(row.get("tags") or {}))
            info.tunnels.extend(live.tunnel_protos())
        return info

    async def _listing_list(self, stream: Any) -> None:
        request = await stream.recv_message()
        wanted = {tag.tag_name: tag.tag_value for tag in request.tags}
        app_ids: set[str] | None = None
        if not request.app_id:
            env = environment_name(request.environment_name)
            app_ids = {row["id"] for row in self.state.table("apps").values() if row["environment"] == env}
        matches = []
        for live in sandbox_registry(self.state).by_id.values():
            row = live.row
            if request.app_id and row["app_id"] != request.app_id:
                continue
            if app_ids is not None and row["app_id"] not in app_ids:
                continue
            if not request.include_finished and not live.running:
                continue
            if request.before_timestamp and row["created_at"] >= request.before_timestamp:
                continue
            tags = row.get("tags") or {}
            if any(tags.get(k) != v for k, v in wanted.items()):
                continue
            matches.append(live)
        matches.sort(key=lambda live: live.row["created_at"], reverse=True)
        page = [self._listing_sandbox_info(live) for live in matches[:LIST_PAGE_SIZE]]
        await stream.send_message(api_pb2.SandboxListResponse(sandboxes=page))

    SandboxListV2 = _listing_list
    SandboxList = _listing_list

    # -- from_name ----------------------------------------------------------------------------
    async def _listing_from_name(self, stream: Any) -> None:
        request = await stream.recv_message()
        app = find_app(self.state, request.app_name, environment_name(request.environment_name))
        if app is None:
            self.state.abort(Status.NOT_FOUND, f"App '{request.app_name}' not found")
        registry = sandbox_registry(self.state)
        live = registry.running_with_name(app["id"], request.sandbox_name)
        if live is None and request.include_terminated:
            finished = [
                candidate
                for candidate in registry.by_id.values()
                if candidate.row["app_id"] == app["id"] and candidate.row.get("name") == request.sandbox_name
            ]
            live = max(finished, key=lambda c: c.row["created_at"], default=None)
        if live is None:
            self.state.abort(
                Status.NOT_FOUND, f"Sandbox '{request.sandbox_name}' not found in app '{request.app_name}'"
            )
        await stream.send_message(api_pb2.SandboxGetFromNameResponse(sandbox_id=live.id, metadata=live.metadata()))

    SandboxGetFromNameV2 = _listing_from_name
    SandboxGetFromName = _listing_from_name


def _listing_resource_info(resources: dict[str, Any]) -> api_pb2.ResourceInfo:
    """The resources a sandbox was created with, as list pages report them (unset ones stay unset)."""
    value = api_pb2.ResourceInfo.ResourceValue
    info = api_pb2.ResourceInfo(gpu_type=resources.get("gpu_type") or "")
    if resources.get("milli_cpu"):
        info.milli_cpu.CopyFrom(value(value=resources["milli_cpu"]))
    if resources.get("memory_mb"):
        info.memory_mb.CopyFrom(value(value=resources["memory_mb"]))
    return info
