"""The task command router: execs, their stdio, V2 entrypoint stdio, and filesystem snapshots.

Modal runs this service on the worker next to each sandbox; the emulator serves it on the control
plane's port and finds the sandbox from the request's task id. The JWT the SDK sends is not checked.
Stdio is read by byte offset and streamed until the stream has ended, so a reader that reconnects
resumes where it stopped; stdin writes carry their offset, so a retried write is applied once.
"""

from __future__ import annotations

from typing import Any

from google.protobuf.empty_pb2 import Empty
from grpclib import Status
from modal_proto import task_command_router_pb2 as sr_pb2

from .apps import env_from_sources, secret_env
from .core import EmulatorState
from .images import image_registry
from .live import LiveExec, LiveSandbox, exit_code
from .sandboxes import sandbox_registry

_STDOUT_PIPE = sr_pb2.TaskExecStdoutConfig.TASK_EXEC_STDOUT_CONFIG_PIPE
_STDERR_PIPE = sr_pb2.TaskExecStderrConfig.TASK_EXEC_STDERR_CONFIG_PIPE


class RouterRpcs:
    state: EmulatorState

    # -- lookups ------------------------------------------------------------------------------
    def _router_running(self, task_id: str) -> LiveSandbox:
        live = sandbox_registry(self.state).by_task_id(task_id)
        if not live.running or live.container is None:
            self.state.abort(Status.NOT_FOUND, f"Task {task_id} has finished")
        return live

    def _router_exec(self, task_id: str, exec_id: str) -> LiveExec:
        live = sandbox_registry(self.state).by_task_id(task_id)
        live_exec = live.execs.get(exec_id)
        if live_exec is None:
            self.state.abort(Status.NOT_FOUND, f"Exec {exec_id} not found in task {task_id}")
        return live_exec

    # -- execs --------------------------------------------------------------------------------
    async def TaskExecStart(self, stream: Any) -> None:
        request = await stream.recv_message()
        live = self._router_running(request.task_id)
        if not request.command_args:
            self.state.abort(Status.INVALID_ARGUMENT, "exec needs a command")
        env = secret_env(self.state, list(request.secret_ids))
        env.update(env_from_sources(self.state, request.secret_sources))
        env.update(dict(request.env))
        try:
            await live.start_exec(
                request.exec_id,
                list(request.command_args),
                env=env,
                workdir=request.workdir or None,
                timeout_secs=request.timeout_secs,
                keep_stdout=request.stdout_config == _STDOUT_PIPE,
                keep_stderr=request.stderr_config == _STDERR_PIPE,
                pty=request.HasField("pty_info") and request.pty_info.enabled,
            )
        except RuntimeError as exc:
            self.state.abort(Status.FAILED_PRECONDITION, f"exec failed: {exc}")
        await stream.send_message(sr_pb2.TaskExecStartResponse())

    async def TaskExecStdioRead(self, stream: Any) -> None:
        request = await stream.recv_message()
        live_exec = self._router_exec(request.task_id, request.exec_id)
        stderr = request.file_descriptor == sr_pb2.TASK_EXEC_STDIO_FILE_DESCRIPTOR_STDERR
        buffer = live_exec.stderr if stderr else live_exec.stdout
        async for _, chunk in buffer.read_from(request.offset):
            await stream.send_message(sr_pb2.TaskExecStdioReadResponse(data=chunk))

    async def TaskExecStdinWrite(self, stream: Any) -> None:
        request = await stream.recv_message()
        live_exec = self._router_exec(request.task_id, request.exec_id)
        await live_exec.stdin.write(request.offset, request.data, request.eof)
        await stream.send_message(sr_pb2.TaskExecStdinWriteResponse())

    async def TaskExecStdinWriteStream(self, stream: Any) -> None:
        first = await stream.recv_message()
        if first is None or not first.HasField("start"):
            self.state.abort(Status.INVALID_ARGUMENT, "the stdin stream must begin with a start message")
        live_exec = self._router_exec(first.start.task_id, first.start.exec_id)
        offset = first.start.offset
        async for message in stream:
            if message.HasField("end"):
                await live_exec.stdin.write(offset, b"", eof=True)
                break
            await live_exec.stdin.write(offset, message.data, eof=False)
            offset += len(message.data)
        await stream.send_message(sr_pb2.TaskExecStdinWriteStreamResponse())

    async def TaskExecStdinStatus(self, stream: Any) -> None:
        request = await stream.recv_message()
        live_exec = self._router_exec(request.task_id, request.exec_id)
        await stream.send_message(
            sr_pb2.TaskExecStdinStatusResponse(num_bytes_written=live_exec.stdin.written, closed=live_exec.stdin.closed)
        )

    @staticmethod
    def _router_exit_status(response: Any, returncode: int) -> Any:
        code, signal = exit_code(returncode)
        if signal is not None:
            response.signal = signal
        else:
            response.code = code
        return response

    async def TaskExecWait(self, stream: Any) -> None:
        request = await stream.recv_message()
        live_exec = self._router_exec(request.task_id, request.exec_id)
        await live_exec.done.wait()
        assert live_exec.returncode is not None
        await stream.send_message(self._router_exit_status(sr_pb2.TaskExecWaitResponse(), live_exec.returncode))

    async def TaskExecPoll(self, stream: Any) -> None:
        request = await stream.recv_message()
        live_exec = self._router_exec(request.task_id, request.exec_id)
        response = sr_pb2.TaskExecPollResponse()
        if live_exec.done.is_set() and live_exec.returncode is not None:
            self._router_exit_status(response, live_exec.returncode)
        await stream.send_message(response)

    # -- V2 entrypoint stdio ------------------------------------------------------------------
    async def SandboxStdioReadV2(self, stream: Any) -> None:
        request = await stream.recv_message()
        live = sandbox_registry(self.state).by_task_id(request.task_id)
        stderr = request.file_descriptor == sr_pb2.SANDBOX_STDIO_FILE_DESCRIPTOR_STDERR
        buffer = live.stderr if stderr else live.stdout
        async for offset, chunk in buffer.read_from(request.offset):
            await stream.send_message(sr_pb2.SandboxStdioReadV2Response(data=chunk, starting_offset=offset))

    async def SandboxStdinWriteV2(self, stream: Any) -> None:
        request = await stream.recv_message()
        live = self._router_running(request.task_id)
        await live.stdin.write(request.offset, request.data, request.eof)
        live.touch()
        await stream.send_message(sr_pb2.SandboxStdinWriteV2Response())

    # -- readiness ----------------------------------------------------------------------------
    async def SandboxWaitUntilReady(self, stream: Any) -> None:
        request = await stream.recv_message()
        live = sandbox_registry(self.state).by_task_id(request.task_id)
        if live.probe is None:
            self.state.abort(Status.FAILED_PRECONDITION, f"Sandbox {live.id} has no readiness probe")
        if not await live.wait_ready(request.timeout or 300.0):
            if not live.running:
                self.state.abort(Status.FAILED_PRECONDITION, f"Sandbox {live.id} finished before it was ready")
            self.state.abort(Status.DEADLINE_EXCEEDED, f"Sandbox {live.id} was not ready in time")
        ready_at = live.ready_at or 0.0
        await stream.send_message(sr_pb2.SandboxWaitUntilReadyTcrResponse(ready_at=ready_at))

    # -- snapshots ----------------------------------------------------------------------------
    async def TaskSnapshotFilesystem(self, stream: Any) -> None:
        request = await stream.recv_message()
        live = self._router_running(request.task_id)
        assert live.container is not None
        image_id = self.state.new_id("im")
        layer_id = f"snap-{image_id}"
        try:
            await live.container.snapshot(layer_id)
        except RuntimeError as exc:
            self.state.abort(Status.FAILED_PRECONDITION, f"snapshot failed: {exc}")
        image_registry(self.state).add_snapshot(live.row["image_id"], layer_id, image_id, live.id)
        await stream.send_message(sr_pb2.TaskSnapshotFilesystemResponse(image_id=image_id))

    async def TaskReloadVolumes(self, stream: Any) -> None:
        """Volumes are bind mounts of one host directory: every change is already visible."""
        request = await stream.recv_message()
        self._router_running(request.task_id)
        await stream.send_message(sr_pb2.TaskReloadVolumesResponse())

    async def TaskMountDirectory(self, stream: Any) -> None:
        await stream.recv_message()
        self.state.abort(Status.UNIMPLEMENTED, "mounting images into a running sandbox is not emulated")

    async def TaskUnmountDirectory(self, stream: Any) -> None:
        await stream.recv_message()
        await stream.send_message(Empty())
