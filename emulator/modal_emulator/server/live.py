"""Running sandboxes and their execs, as the RPC handlers see them.

A :class:`LiveSandbox` wraps one runtime :class:`~modal_emulator.runtime.container.Container` and adds
what Modal's API needs on top: ids (sandbox id, task id), app, name, tags, the final
``GenericResult``, the entrypoint's output kept in memory so it can be read by byte offset (router
``SandboxStdioReadV2``) or by entry id (V1 ``SandboxGetLogs``), timeouts, and its execs.

Every sandbox is also a row of the ``sandboxes`` table, so that after a restart the emulator still
knows it (it is then reported as terminated: its processes died with the old server).
"""

from __future__ import annotations

import asyncio
import logging
import time
from dataclasses import dataclass, field
from typing import Any, AsyncIterator

from modal_proto import api_pb2

from .core import EmulatorState
from .fs_tools import host_argv, is_fs_tool
from .sandbox_net import has_connection_on, is_listening

log = logging.getLogger("modal_emulator.server")

STATUS = api_pb2.GenericResult
#: How long after its timeout a timed-out exec is killed.
EXEC_KILL_GRACE_SECS = 1.0
#: Largest chunk sent in one stdio message.
READ_CHUNK = 64 * 1024


class OutputBuffer:
    """All bytes a process wrote to one stream, readable from any offset while it grows."""

    def __init__(self) -> None:
        self.data = bytearray()
        self.eof = False
        self._changed = asyncio.Condition()

    async def append(self, chunk: bytes) -> None:
        async with self._changed:
            self.data.extend(chunk)
            self._changed.notify_all()

    async def close(self) -> None:
        async with self._changed:
            self.eof = True
            self._changed.notify_all()

    async def wait_beyond(self, offset: int, timeout: float | None = None) -> bool:
        """Wait until there are bytes past ``offset`` or the stream ended; False on timeout."""
        async with self._changed:
            try:
                await asyncio.wait_for(
                    self._changed.wait_for(lambda: len(self.data) > offset or self.eof), timeout
                )
            except asyncio.TimeoutError:
                return False
        return True

    async def read_from(self, offset: int) -> AsyncIterator[tuple[int, bytes]]:
        """Yield (offset, chunk) from ``offset`` until the stream has ended and everything was read."""
        while True:
            await self.wait_beyond(offset)
            if len(self.data) > offset:
                chunk = bytes(self.data[offset : offset + READ_CHUNK])
                yield offset, chunk
                offset += len(chunk)
            elif self.eof:
                return


async def pump(reader: asyncio.StreamReader | None, buffer: OutputBuffer, keep: bool = True) -> None:
    """Copy a process's pipe into a buffer until EOF."""
    try:
        if reader is not None:
            while chunk := await reader.read(READ_CHUNK):
                if keep:
                    await buffer.append(chunk)
    except (ConnectionError, OSError) as exc:
        log.debug("output pipe closed: %s", exc)
    finally:
        await buffer.close()


class StdinSink:
    """A process's stdin written by offset, so that a retried write is applied once."""

    def __init__(self, writer: asyncio.StreamWriter | None) -> None:
        self.writer = writer
        self.written = 0
        self.closed = False

    async def write(self, offset: int, data: bytes, eof: bool) -> None:
        if self.closed:
            return
        skip = max(0, self.written - offset)
        if offset > self.written:
            log.warning("stdin write at offset %d leaves a gap after %d bytes", offset, self.written)
        payload = data[skip:]
        if payload and self.writer is not None:
            try:
                self.writer.write(payload)
                await self.writer.drain()
            except (ConnectionError, OSError):
                self.closed = True
                return
        self.written = max(self.written, offset + len(data))
        if eof:
            self.close()

    def close(self) -> None:
        if self.closed:
            return
        self.closed = True
        if self.writer is not None:
            try:
                self.writer.close()
            except (ConnectionError, OSError, RuntimeError):
                pass


def exit_code(returncode: int) -> tuple[int | None, int | None]:
    """(code, signal) of a process return code; negative codes are signals."""
    if returncode < 0:
        return None, -returncode
    return returncode, None


@dataclass
class LiveExec:
    """One ``exec`` in a sandbox."""

    exec_id: str
    process: Any
    stdout: OutputBuffer = field(default_factory=OutputBuffer)
    stderr: OutputBuffer = field(default_factory=OutputBuffer)
    stdin: StdinSink = field(default_factory=lambda: StdinSink(None))
    returncode: int | None = None
    done: asyncio.Event = field(default_factory=asyncio.Event)


class LiveSandbox:
    """A sandbox known to this server process, running or finished."""

    def __init__(self, state: EmulatorState, row: dict[str, Any], container: Any | None = None) -> None:
        self.state = state
        self.row = row
        self.container = container
        self.stdout = OutputBuffer()
        self.stderr = OutputBuffer()
        self.stdin = StdinSink(container.entrypoint.stdin if container is not None else None)
        self.v1_stdin_index = 0
        self.execs: dict[str, LiveExec] = {}
        self.finished = asyncio.Event()
        self.last_activity = time.monotonic()
        self._tasks: list[asyncio.Task[Any]] = []
        self._terminating = False
        self.ready = asyncio.Event()
        self.ready_at: float | None = None
        self.probe: api_pb2.Probe | None = None
        self.tls_terminators: list[Any] = []
        if container is None:
            # Known from an earlier server process, or failed: nothing to read, nothing will change.
            self.finished.set()
            for buffer in (self.stdout, self.stderr):
                buffer.eof = True

    # -- identity -----------------------------------------------------------------------------
    @property
    def id(self) -> str:
        return self.row["id"]

    @property
    def task_id(self) -> str:
        return self.row["task_id"]

    @property
    def running(self) -> bool:
        return self.row.get("result") is None

    def result_proto(self) -> api_pb2.GenericResult:
        result = self.row.get("result")
        if result is None:
            return api_pb2.GenericResult()
        return api_pb2.GenericResult(
            status=result["status"], exitcode=result.get("exitcode", 0), exception=result.get("exception", "")
        )

    def metadata(self) -> api_pb2.SandboxHandleMetadata:
        metadata = api_pb2.SandboxHandleMetadata(app_id=self.row["app_id"])
        if not self.running:
            metadata.result.CopyFrom(self.result_proto())
        return metadata

    def tunnel_protos(self) -> list[api_pb2.TunnelData]:
        protos = []
        for container_port, tunnel in sorted(self.row.get("tunnels", {}).items(), key=lambda kv: int(kv[0])):
            if isinstance(tunnel, list):  # rows written by earlier versions: one raw endpoint
                host, port = tunnel
                tunnel = {"host": host, "port": port, "unencrypted_host": host, "unencrypted_port": port}
            protos.append(api_pb2.TunnelData(container_port=int(container_port), **tunnel))
        return protos

    def save(self) -> None:
        self.state.table("sandboxes").put(self.id, self.row)

    def touch(self) -> None:
        self.last_activity = time.monotonic()

    # -- life cycle ---------------------------------------------------------------------------
    def start_watchers(self, timeout_secs: int, idle_timeout_secs: int, probe: api_pb2.Probe | None = None) -> None:
        container = self.container
        assert container is not None
        if probe is not None:
            self.probe = probe
            self._tasks.append(asyncio.create_task(self._probe_readiness(probe)))
        self._tasks.append(asyncio.create_task(pump(container.entrypoint.stdout, self.stdout)))
        self._tasks.append(asyncio.create_task(pump(container.entrypoint.stderr, self.stderr)))
        self._tasks.append(asyncio.create_task(self._watch_entrypoint()))
        if timeout_secs:
            self._tasks.append(asyncio.create_task(self._expire_after(timeout_secs)))
        if idle_timeout_secs:
            self._tasks.append(asyncio.create_task(self._expire_when_idle(idle_timeout_secs)))

    async def _watch_entrypoint(self) -> None:
        assert self.container is not None
        returncode = await self.container.entrypoint.wait()
        if self.running:
            code, signal = exit_code(returncode)
            if signal is not None:
                await self.finish(STATUS.GENERIC_STATUS_FAILURE, 128 + signal, f"killed by signal {signal}")
            elif code == 0:
                await self.finish(STATUS.GENERIC_STATUS_SUCCESS, 0)
            else:
                await self.finish(STATUS.GENERIC_STATUS_FAILURE, code or 0, f"exited with code {code}")

    async def _expire_after(self, seconds: int) -> None:
        await asyncio.sleep(seconds)
        if self.running:
            log.info("sandbox %s reached its timeout of %ss", self.id, seconds)
            await self.finish(STATUS.GENERIC_STATUS_TIMEOUT, 124, f"timed out after {seconds}s")

    def _init_pid(self) -> int | None:
        return getattr(self.container, "init_pid", None)

    def _tunnel_in_use(self) -> bool:
        pid = self._init_pid()
        ports = [int(port) for port in self.row.get("tunnels", {})]
        return bool(pid and ports) and has_connection_on(pid, ports)

    async def _expire_when_idle(self, seconds: int) -> None:
        # Activity, as Modal counts it: a running exec, stdin written, an open connection through a tunnel.
        while self.running:
            busy = any(e.returncode is None for e in self.execs.values()) or self._tunnel_in_use()
            idle_for = time.monotonic() - self.last_activity
            if busy:
                self.touch()
            elif idle_for >= seconds:
                log.info("sandbox %s idle for %ss", self.id, seconds)
                await self.finish(STATUS.GENERIC_STATUS_IDLE_TIMEOUT, 0, f"idle for {seconds}s")
                return
            await asyncio.sleep(min(1.0, max(0.1, seconds - idle_for)))

    async def _probe_readiness(self, probe: api_pb2.Probe) -> None:
        """Run the readiness probe every ``interval_ms`` until it passes once (then the sandbox is ready)."""
        interval = max(probe.interval_ms, 10) / 1000.0
        while self.running and self.container is not None:
            if await self._probe_passes(probe):
                self.ready_at = time.time()
                self.ready.set()
                log.info("sandbox %s is ready", self.id)
                return
            await asyncio.sleep(interval)

    async def _probe_passes(self, probe: api_pb2.Probe) -> bool:
        assert self.container is not None
        if probe.HasField("tcp_port"):
            pid = self._init_pid()
            return pid is not None and is_listening(pid, probe.tcp_port)
        try:
            process = await self.container.exec(
                list(probe.exec_command.argv), stdin=False, stdout=False, stderr=False
            )
            return await process.wait() == 0
        except (RuntimeError, OSError) as exc:
            log.debug("readiness probe of %s could not run: %s", self.id, exc)
            return False

    async def wait_ready(self, timeout: float) -> bool:
        """Wait until the readiness probe passed (True), the sandbox finished or ``timeout`` passed (False)."""
        ready = asyncio.ensure_future(self.ready.wait())
        finished = asyncio.ensure_future(self.finished.wait())
        try:
            await asyncio.wait({ready, finished}, timeout=timeout, return_when=asyncio.FIRST_COMPLETED)
        finally:
            ready.cancel()
            finished.cancel()
        return self.ready.is_set()

    async def finish(self, status: int, exitcode: int = 0, exception: str = "") -> None:
        """Record the final result (first one wins) and stop the container."""
        if self.running:
            self.row["result"] = {"status": status, "exitcode": exitcode, "exception": exception}
            self.row["finished_at"] = time.time()
            self.save()
        await self._stop_container()
        self.finished.set()

    async def _stop_container(self) -> None:
        if self._terminating or self.container is None:
            return
        self._terminating = True
        self.stdin.close()
        for terminator in self.tls_terminators:
            await terminator.close()
        try:
            await self.container.terminate()
        except Exception:  # noqa: BLE001 - a failed teardown must not hide the result
            log.exception("terminating sandbox %s failed", self.id)
        for live_exec in self.execs.values():
            live_exec.stdin.close()
        current = asyncio.current_task()
        for task in self._tasks:
            if task is not current and task.get_coro().__name__.startswith(("_expire", "_probe")):
                task.cancel()

    async def wait(self, timeout: float | None) -> bool:
        try:
            await asyncio.wait_for(self.finished.wait(), timeout)
        except asyncio.TimeoutError:
            return False
        return True

    # -- execs --------------------------------------------------------------------------------
    async def start_exec(
        self, exec_id: str, argv: list[str], env: dict[str, str], workdir: str | None, timeout_secs: int,
        keep_stdout: bool, keep_stderr: bool, pty: bool,
    ) -> LiveExec:
        if exec_id in self.execs:
            return self.execs[exec_id]  # an idempotent retry of the same start
        assert self.container is not None
        if is_fs_tool(argv) and not pty:
            process = await self.container.exec_on_host(host_argv(self.container.init_pid, argv),
                                                        env={"LC_ALL": "C.UTF-8"})
        else:
            process = await self.container.exec(argv, env=env, workdir=workdir, pty=pty)
        live_exec = LiveExec(exec_id=exec_id, process=process, stdin=StdinSink(process.stdin))
        self.execs[exec_id] = live_exec
        self.touch()
        self._tasks.append(asyncio.create_task(pump(process.stdout, live_exec.stdout, keep_stdout)))
        self._tasks.append(asyncio.create_task(pump(process.stderr, live_exec.stderr, keep_stderr)))
        self._tasks.append(asyncio.create_task(self._watch_exec(live_exec, timeout_secs)))
        return live_exec

    async def _watch_exec(self, live_exec: LiveExec, timeout_secs: int) -> None:
        try:
            # The SDK gives up on the exec at its own deadline and reports -1; the kill comes just after,
            # so that a client waiting at the deadline sees that -1 rather than the kill's 137.
            limit = timeout_secs + EXEC_KILL_GRACE_SECS if timeout_secs else None
            live_exec.returncode = await asyncio.wait_for(live_exec.process.wait(), limit)
        except asyncio.TimeoutError:
            log.info("exec %s in %s timed out after %ss", live_exec.exec_id, self.id, timeout_secs)
            live_exec.process.kill()
            live_exec.returncode = await live_exec.process.wait()
        self.touch()
        live_exec.done.set()
