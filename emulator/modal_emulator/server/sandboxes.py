"""Sandbox life cycle on the control plane, for both API families (V2 ``*V2`` RPCs and V1).

:class:`SandboxRegistry` creates sandboxes (runtime containers) from Modal sandbox definitions and
keeps them by sandbox id and task id; :class:`SandboxRpcs` serves create, task id, wait, terminate,
tunnels, command router access, and the V1 entrypoint stdio (``SandboxGetLogs``, ``SandboxStdinWrite``).
Ids follow the SDK's routing: V1 sandbox ids are ``sb-`` + 22 letters/digits, V2 ones are longer;
V2 task ids end with ``V``.
"""

from __future__ import annotations

import asyncio
import logging
import pathlib
import time
from typing import Any

from grpclib import Status
from modal_proto import api_pb2

from modal_emulator.runtime.network import NetworkPolicy, normalize_cidrs

from .apps import env_from_sources, fresh_token, secret_env
from .core import EmulatorState
from .image_builder import DEFAULT_PATH
from .images import image_registry
from .live import STATUS, LiveSandbox
from .tls_tunnels import TlsTerminator, server_context
from .volumes import volume_bind

log = logging.getLogger("modal_emulator.server")

DEFAULT_ENTRYPOINT = ["sleep", "infinity"]


class SandboxRegistry:
    """Every sandbox this state dir knows, live ones with their containers."""

    def __init__(self, state: EmulatorState) -> None:
        self.state = state
        self.by_id: dict[str, LiveSandbox] = {}
        self.by_task: dict[str, LiveSandbox] = {}
        self._reserved_names: set[tuple[str, str]] = set()
        self._last_created_at = 0.0
        table = state.table("sandboxes")
        for sandbox_id, row in table.items():
            if row.get("result") is None:
                row["result"] = {
                    "status": STATUS.GENERIC_STATUS_TERMINATED,
                    "exitcode": 137,
                    "exception": "the emulator that ran this sandbox stopped",
                }
                row["finished_at"] = time.time()
                table.put(sandbox_id, row)
            self._register(LiveSandbox(state, row))

    def _register(self, live: LiveSandbox) -> None:
        self.by_id[live.id] = live
        self.by_task[live.task_id] = live

    def get(self, sandbox_id: str) -> LiveSandbox:
        live = self.by_id.get(sandbox_id)
        if live is None:
            self.state.abort(Status.NOT_FOUND, f"Sandbox {sandbox_id} not found")
        return live

    def by_task_id(self, task_id: str) -> LiveSandbox:
        live = self.by_task.get(task_id)
        if live is None:
            self.state.abort(Status.NOT_FOUND, f"Task {task_id} not found")
        return live

    def running_with_name(self, app_id: str, name: str) -> LiveSandbox | None:
        for live in self.by_id.values():
            if live.running and live.row["app_id"] == app_id and live.row.get("name") == name:
                return live
        return None

    def _new_ids(self, v2: bool) -> tuple[str, str]:
        if v2:
            return self.state.new_id("sb", 26), self.state.new_id("ta", 21) + "V"
        task_id = self.state.new_id("ta", 22)
        while task_id.endswith("V"):
            task_id = self.state.new_id("ta", 22)
        return self.state.new_id("sb", 22), task_id

    def _created_at(self) -> float:
        # Strictly increasing, so that list pages split by before_timestamp never skip or repeat one.
        self._last_created_at = max(time.time(), self._last_created_at + 1e-3)
        return self._last_created_at

    async def create(
        self, app_id: str, definition: api_pb2.Sandbox, tags: Any, request_env: dict[str, str], v2: bool
    ) -> LiveSandbox:
        if not app_id or app_id not in self.state.table("apps"):
            self.state.abort(Status.NOT_FOUND, f"App {app_id or '(none)'} not found")
        self._refuse_unavailable_gpu(definition)
        name = definition.name
        key = (app_id, name)
        if name and (key in self._reserved_names or self.running_with_name(app_id, name)):
            self.state.abort(Status.ALREADY_EXISTS, f"Sandbox with name '{name}' already exists in this app")
        if name:
            self._reserved_names.add(key)
        try:
            return await self._create(app_id, definition, tags, request_env, v2)
        finally:
            self._reserved_names.discard(key)

    def _refuse_unavailable_gpu(self, definition: api_pb2.Sandbox) -> None:
        """Fail a create that asks for a GPU type made unavailable (``--unavailable-gpu``), as Modal refuses a type
        it does not offer: INVALID_ARGUMENT (the SDK raises InvalidError) with Modal's wording, before anything starts.
        """
        gpu_type = definition.resources.gpu_config.gpu_type
        if gpu_type and gpu_type.upper() in self.state.unavailable_gpus:
            self.state.abort(Status.INVALID_ARGUMENT, f"{gpu_type} is not a valid GPU type")

    async def _create(
        self, app_id: str, definition: api_pb2.Sandbox, tags: Any, request_env: dict[str, str], v2: bool
    ) -> LiveSandbox:
        from modal_emulator.runtime.container import Container, ContainerSpec

        network = self._network_policy(definition)
        images = image_registry(self.state)
        image = images.get_built(definition.image_id)
        layers = list(image["layers"])
        for mount_id in definition.mount_ids:
            layers.append(await images.ensure_mount_layer(mount_id, image))
        env = {
            "PATH": DEFAULT_PATH,
            **(image.get("env") or {}),
            **secret_env(self.state, list(definition.secret_ids)),
            **request_env,
            **dict(definition.environment_variables.contents),
        }
        sandbox_id, task_id = self._new_ids(v2)
        env.setdefault("MODAL_SANDBOX_ID", sandbox_id)
        env.setdefault("MODAL_TASK_ID", task_id)
        resources = definition.resources
        spec = ContainerSpec(
            sandbox_id=sandbox_id,
            base=images.base_root(image),
            layers=layers,
            entrypoint=list(definition.entrypoint_args) or image.get("cmd") or DEFAULT_ENTRYPOINT,
            env=env,
            workdir=definition.workdir or image.get("workdir") or None,
            cpu=(resources.milli_cpu / 1000.0) if resources.milli_cpu else None,
            memory_mb=resources.memory_mb or None,
            ports=[port.port for port in definition.open_ports.ports],
            volumes=self._volumes(definition),
            network=network,
        )
        try:
            container = await Container.start(self.state.require_store(), spec)
        except RuntimeError as exc:
            self.state.abort(Status.FAILED_PRECONDITION, f"could not start the sandbox: {exc}")
        try:
            tunnels, terminators = await self._tls_tunnels(definition, container.tunnels)
        except BaseException:
            await container.terminate()
            raise
        row = {
            "id": sandbox_id,
            "task_id": task_id,
            "app_id": app_id,
            "name": definition.name or None,
            "tags": {tag.tag_name: tag.tag_value for tag in tags},
            "image_id": definition.image_id,
            "created_at": self._created_at(),
            "timeout_secs": definition.timeout_secs,
            "idle_timeout_secs": definition.idle_timeout_secs,
            # What was asked for, reported back in list pages (SandboxInfo.resource_info) as Modal does.
            "resources": {
                "milli_cpu": resources.milli_cpu,
                "memory_mb": resources.memory_mb,
                "gpu_type": resources.gpu_config.gpu_type,
                "gpu_count": resources.gpu_config.count,
            },
            "tunnels": tunnels,
            # The outbound network policy the server received and how it is enforced (see runtime.network).
            "network": network.record(),
            "result": None,
            "v2": v2,
        }
        live = LiveSandbox(self.state, row, container)
        live.tls_terminators = terminators
        live.save()
        self._register(live)
        live.start_watchers(
            definition.timeout_secs,
            definition.idle_timeout_secs,
            definition.readiness_probe if definition.HasField("readiness_probe") else None,
        )
        log.info("sandbox %s started (task %s, image %s)", sandbox_id, task_id, definition.image_id)
        return live

    async def _tls_tunnels(
        self, definition: api_pb2.Sandbox, forwarded: dict[int, tuple[str, int]]
    ) -> tuple[dict[str, dict[str, Any]], list[TlsTerminator]]:
        """A TLS endpoint in front of every forwarded port; the raw one is reported for unencrypted ports."""
        unencrypted = {port.port for port in definition.open_ports.ports if port.unencrypted}
        tunnels: dict[str, dict[str, Any]] = {}
        terminators: list[TlsTerminator] = []
        try:
            for container_port, (host, host_port) in forwarded.items():
                terminator = TlsTerminator(target=(host, host_port))
                terminators.append(terminator)
                tls_port = await terminator.start(server_context(self.state))
                tunnel: dict[str, Any] = {"host": host, "port": tls_port}
                if container_port in unencrypted:
                    tunnel.update(unencrypted_host=host, unencrypted_port=host_port)
                tunnels[str(container_port)] = tunnel
        except BaseException:
            for terminator in terminators:
                await terminator.close()
            raise
        return tunnels, terminators

    def _network_policy(self, definition: api_pb2.Sandbox) -> NetworkPolicy:
        """The outbound policy of ``definition.network_access`` (or the older ``block_network`` flag)."""
        kinds = api_pb2.NetworkAccess.NetworkAccessType
        access = definition.network_access
        if definition.block_network or access.network_access_type == kinds.BLOCKED:
            return NetworkPolicy(block_network=True)
        if access.network_access_type != kinds.ALLOWLIST:
            return NetworkPolicy()
        if access.allowed_domains:
            self.state.abort(Status.UNIMPLEMENTED,
                             f"outbound_domain_allowlist {list(access.allowed_domains)} is not emulated: "
                             "use outbound_cidr_allowlist (CIDR blocks) instead")
        try:
            return NetworkPolicy(cidr_allowlist=normalize_cidrs(list(access.allowed_cidrs)))
        except ValueError as exc:
            self.state.abort(Status.INVALID_ARGUMENT, str(exc))

    def _volumes(self, definition: api_pb2.Sandbox) -> list[tuple[pathlib.Path, str, bool]]:
        if not definition.volume_mounts:
            return []
        mounts = []
        for mount in definition.volume_mounts:
            try:
                mounts.append(volume_bind(self.state, mount))
            except KeyError:
                self.state.abort(Status.NOT_FOUND, f"Volume {mount.volume_id} not found")
            except ValueError as exc:
                self.state.abort(Status.INVALID_ARGUMENT, f"volume mount at {mount.mount_path}: {exc}")
        return mounts

    async def shutdown(self) -> None:
        running = [live for live in self.by_id.values() if live.running]
        await asyncio.gather(
            *(live.finish(STATUS.GENERIC_STATUS_TERMINATED, 137, "the emulator stopped") for live in running),
            return_exceptions=True,
        )


def sandbox_registry(state: EmulatorState) -> SandboxRegistry:
    if "sandboxes" not in state.services:
        state.services["sandboxes"] = SandboxRegistry(state)
    registry: SandboxRegistry = state.services["sandboxes"]
    return registry


def router_access(state: EmulatorState, live: LiveSandbox) -> api_pb2.CommandRouterAccess:
    """The task command router is served on the control plane's own port."""
    return api_pb2.CommandRouterAccess(url=state.server_url, jwt=fresh_token(live.task_id))


def utf8_prefix_end(data: bytes | bytearray, start: int, end: int) -> int:
    """The largest cut <= ``end`` such that data[start:cut] does not end inside a UTF-8 character."""
    lead_at = end - 1
    while lead_at >= start and lead_at > end - 4 and (data[lead_at] & 0xC0) == 0x80:
        lead_at -= 1
    if lead_at < start or data[lead_at] < 0x80:
        return end
    lead = data[lead_at]
    needed = 2 if lead < 0xE0 else 3 if lead < 0xF0 else 4
    return end if end - lead_at >= needed else lead_at


class SandboxRpcs:
    state: EmulatorState

    @property
    def sandboxes(self) -> SandboxRegistry:
        return sandbox_registry(self.state)

    # -- create -------------------------------------------------------------------------------
    async def SandboxCreateV2(self, stream: Any) -> None:
        request = await stream.recv_message()
        env = env_from_sources(self.state, request.secret_sources)
        env.update(dict(request.ephemeral_secrets.contents))
        live = await self.sandboxes.create(request.app_id, request.definition, request.tags, env, v2=True)
        await stream.send_message(
            api_pb2.SandboxCreateV2Response(
                sandbox_id=live.id,
                task_id=live.task_id,
                tunnels=live.tunnel_protos(),
                metadata=live.metadata(),
                command_router_access=router_access(self.state, live),
            )
        )

    async def SandboxCreate(self, stream: Any) -> None:
        request = await stream.recv_message()
        live = await self.sandboxes.create(request.app_id, request.definition, request.tags, {}, v2=False)
        await stream.send_message(api_pb2.SandboxCreateResponse(sandbox_id=live.id, metadata=live.metadata()))

    # -- task id, router access ---------------------------------------------------------------
    async def _sandbox_get_task_id(self, stream: Any) -> None:
        request = await stream.recv_message()
        live = self.sandboxes.get(request.sandbox_id)
        response = api_pb2.SandboxGetTaskIdResponse(task_id=live.task_id)
        if not live.running:
            response.task_result.CopyFrom(live.result_proto())
        await stream.send_message(response)

    SandboxGetTaskIdV2 = _sandbox_get_task_id
    SandboxGetTaskId = _sandbox_get_task_id

    async def SandboxGetCommandRouterAccess(self, stream: Any) -> None:
        request = await stream.recv_message()
        if request.sandbox_id:
            live = self.sandboxes.get(request.sandbox_id)
        else:
            live = self.sandboxes.by_task_id(request.task_id)
        if not live.running:
            self.state.abort(Status.NOT_FOUND, f"Sandbox {live.id} has finished")
        access = router_access(self.state, live)
        await stream.send_message(
            api_pb2.SandboxGetCommandRouterAccessResponse(url=access.url, jwt=access.jwt, worker_ipv4_address="127.0.0.1")
        )

    async def TaskGetCommandRouterAccess(self, stream: Any) -> None:
        request = await stream.recv_message()
        live = self.sandboxes.by_task_id(request.task_id)
        if not live.running:
            self.state.abort(Status.NOT_FOUND, f"Task {request.task_id} has finished")
        access = router_access(self.state, live)
        await stream.send_message(api_pb2.TaskGetCommandRouterAccessResponse(url=access.url, jwt=access.jwt))

    # -- wait, terminate ----------------------------------------------------------------------
    async def _sandbox_wait(self, stream: Any) -> None:
        request = await stream.recv_message()
        live = self.sandboxes.get(request.sandbox_id)
        if request.timeout > 0:
            await live.wait(min(request.timeout, 50.0))
        await stream.send_message(api_pb2.SandboxWaitResponse(result=live.result_proto(), metadata=live.metadata()))

    SandboxWaitV2 = _sandbox_wait
    SandboxWait = _sandbox_wait

    async def _sandbox_terminate(self, stream: Any) -> None:
        request = await stream.recv_message()
        live = self.sandboxes.get(request.sandbox_id)
        response = api_pb2.SandboxTerminateResponse()
        if not live.running:
            response.existing_result.CopyFrom(live.result_proto())
        await live.finish(STATUS.GENERIC_STATUS_TERMINATED, 137, "terminated")
        await stream.send_message(response)

    SandboxTerminateV2 = _sandbox_terminate
    SandboxTerminate = _sandbox_terminate

    # -- tunnels ------------------------------------------------------------------------------
    async def _sandbox_get_tunnels(self, stream: Any) -> None:
        request = await stream.recv_message()
        live = self.sandboxes.get(request.sandbox_id)
        await stream.send_message(
            api_pb2.SandboxGetTunnelsResponse(
                result=api_pb2.GenericResult(status=STATUS.GENERIC_STATUS_SUCCESS), tunnels=live.tunnel_protos()
            )
        )

    SandboxGetTunnelsV2 = _sandbox_get_tunnels
    SandboxGetTunnels = _sandbox_get_tunnels

    # -- V1 entrypoint stdio ------------------------------------------------------------------
    async def SandboxGetLogs(self, stream: Any) -> None:
        request = await stream.recv_message()
        live = self.sandboxes.get(request.sandbox_id)
        buffer = live.stderr if request.file_descriptor == api_pb2.FILE_DESCRIPTOR_STDERR else live.stdout
        offset = int(request.last_entry_id or 0)
        deadline = time.monotonic() + (request.timeout or 55.0)
        while True:
            remaining = deadline - time.monotonic()
            if remaining <= 0 or not await buffer.wait_beyond(offset, remaining):
                return  # long poll over; the client asks again from its last entry id
            end = utf8_prefix_end(buffer.data, offset, len(buffer.data))
            if end > offset:
                text = bytes(buffer.data[offset:end]).decode("utf-8", errors="replace")
                offset = end
                await stream.send_message(
                    api_pb2.TaskLogsBatch(
                        sandbox_id=live.id,
                        task_id=live.task_id,
                        entry_id=str(offset),
                        items=[api_pb2.TaskLogs(data=text, file_descriptor=request.file_descriptor)],
                    )
                )
            elif buffer.eof:
                tail = bytes(buffer.data[offset:])
                if tail:
                    offset += len(tail)
                    await stream.send_message(
                        api_pb2.TaskLogsBatch(
                            entry_id=str(offset),
                            items=[api_pb2.TaskLogs(data=tail.decode("utf-8", errors="replace"))],
                        )
                    )
                await stream.send_message(api_pb2.TaskLogsBatch(entry_id=str(offset), eof=True))
                return
            else:
                await asyncio.sleep(0.05)  # only a partial character so far

    async def SandboxStdinWrite(self, stream: Any) -> None:
        request = await stream.recv_message()
        live = self.sandboxes.get(request.sandbox_id)
        if not live.running:
            self.state.abort(Status.FAILED_PRECONDITION, f"Sandbox {live.id} has finished")
        if request.index > live.v1_stdin_index:
            live.v1_stdin_index = request.index
            await live.stdin.write(live.stdin.written, request.input, request.eof)
            live.touch()
        await stream.send_message(api_pb2.SandboxStdinWriteResponse())
