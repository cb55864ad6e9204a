"""Sandboxes as Linux containers: overlay root, namespaces, entrypoint, execs, tunnels, snapshots.

A sandbox is:

- an overlay root: ``<store>/sandboxes/<id>/upper`` over the runtime's private layers (tools, registry
  settings; see :mod:`private_layers`), the image layers and the image's base root filesystem;
- mount, PID, UTS, IPC and network namespaces, with its own /proc, /sys, /dev (+ a private devpts for
  PTYs), /dev/shm and /run (see :mod:`rootfs`);
- outbound network as its policy says (open, blocked or a CIDR allowlist, see :mod:`network`),
  configured while the entrypoint is held back, so the entrypoint never sees another network; its
  /etc/resolv.conf is a read-only bind of ``<store>/sandboxes/<id>/resolv.conf`` naming slirp's DNS;
- its entrypoint under ``tini`` (a tiny static C init from the host's Debian package ``tini``, placed in the
  private tools layer) as the namespace's PID 1, with stdin/stdout/stderr pipes to the server. A PID 1 must
  reap the orphans re-parented to it (an sshd session's children, ``cmd &`` in an exec that has returned);
  an entrypoint such as ``sleep infinity`` never does, so they would stay zombies. tini reaps them,
  forwards signals to the entrypoint and exits with its status (128 + N if it died of signal N);
- three processes on the host per idle sandbox: the small ``unshare`` parent, tini and the entrypoint,
  plus ``slirp4netns`` unless its network is blocked;
- execs entered with ``nsenter`` into the same namespaces and root, after joining the sandbox's cgroups;
- one loopback TCP listener per port, relayed into the namespace (see :mod:`tunnels`);
- a pid file so another process can kill it (see :mod:`pidfiles`).

When the init dies, the kernel kills everything else in its PID namespace and the namespace's mounts
go with it; ``terminate`` then only has host-side state to clean: slirp4netns, tunnels, pid file,
cgroups, upper dir.

This is a test double, not a security boundary: processes run as root on the host kernel.
"""

from __future__ import annotations

import asyncio
import contextlib
import fcntl
import logging
import os
import pathlib
import shlex
import shutil
import struct
from dataclasses import dataclass, field

from modal_emulator.runtime import cgroups, pidfiles
from modal_emulator.runtime._host import is_same_process, process_start_time, require_root, sigkill, tool
from modal_emulator.runtime.build import step_env
from modal_emulator.runtime.launch import launch
from modal_emulator.runtime.network import RESOLV_CONF, NetworkPolicy, SandboxNetwork
from modal_emulator.runtime.private_layers import TINI_PATH, ensure_private_layers
from modal_emulator.runtime.pidfiles import cleanup_stale, kill_sandbox
from modal_emulator.runtime.process import Process, pty_streams
from modal_emulator.runtime.rootfs import PIVOT_DIR, RootfsPlan
from modal_emulator.runtime.store import Store
from modal_emulator.runtime.tunnels import Tunnel

__all__ = ["Container", "ContainerSpec", "Process", "cleanup_stale", "kill_sandbox"]

_TIOCSPTLCK = 0x40045431   # unlock a pty pair
_TIOCGPTPEER = 0x5441      # open the pty's slave side through its master (no path lookup needed)
_HOSTNAME_MAX = 63
_NAMESPACES = ["--mount", "--uts", "--ipc", "--net", "--pid"]
_STOP_TIMEOUT_S = 10.0

log = logging.getLogger("modal_emulator.runtime")


#: Shell words that exec the entrypoint (``"$@"``) under tini, the namespace's PID 1.
ENTRYPOINT_PAYLOAD = f'{TINI_PATH} -- "$@"'


@dataclass
class ContainerSpec:
    sandbox_id: str
    base: pathlib.Path                   # the image's base root filesystem (bottom of the stack)
    layers: list[str]                    # image layers bottom->top, above the base
    entrypoint: list[str]                # argv
    env: dict[str, str]
    workdir: str | None = None
    hostname: str | None = None          # default: sandbox_id
    cpu: float | None = None             # cores; enforced with cgroups where possible, else recorded only
    memory_mb: int | None = None
    ports: list[int] = field(default_factory=list)      # container ports to forward from host loopback
    volumes: list[tuple[pathlib.Path, str, bool]] = field(default_factory=list)  # (host dir, path, read_only)
    network: NetworkPolicy = field(default_factory=NetworkPolicy)   # default: open outbound network


# Overlay bookkeeping that refers to the stack the upper dir was mounted in; meaningless in a new stack.
# Opaque markers (and whiteout device nodes) are the layer's content and stay.
_STACK_PRIVATE_XATTRS = ("trusted.overlay.origin", "trusted.overlay.impure", "trusted.overlay.nlink",
                         "trusted.overlay.upper")


def _make_portable(layer: pathlib.Path) -> None:
    """Turn a copied upper dir into a layer usable in any stack."""
    # Only exists for an instant during setup; never part of an image.
    shutil.rmtree(layer / PIVOT_DIR, ignore_errors=True)
    for directory, dirs, files in os.walk(layer):
        for name in [directory, *(os.path.join(directory, n) for n in dirs + files)]:
            for attribute in os.listxattr(name, follow_symlinks=False):
                if attribute in _STACK_PRIVATE_XATTRS:
                    os.removexattr(name, attribute, follow_symlinks=False)


class Container:
    def __init__(self, store: Store, spec: ContainerSpec) -> None:
        self.store = store
        self.spec = spec
        self.entrypoint: Process | None = None   # set once started (always set on a Container from start())
        self.tunnels: dict[int, tuple[str, int]] = {}
        self.init_pid = 0                         # host pid of PID 1 inside (tini, or the entrypoint)
        self.limits: dict[str, str] = {}          # how cpu/memory limits were applied, or why not
        self._init_start: int | None = None
        self._env = step_env(spec.env)
        self._dir = store.sandbox_dir(spec.sandbox_id)
        self._cgroups = cgroups.SandboxCgroups()
        self._netns_fd = -1
        self._network = SandboxNetwork(spec.network, self._dir / "slirp4netns.log")
        self._tunnels: list[Tunnel] = []
        self._execs: set[Process] = set()
        self._terminated = False

    # -- start -----------------------------------------------------------------------------------

    @classmethod
    async def start(cls, store: Store, spec: ContainerSpec) -> "Container":
        """Start a sandbox; RuntimeError with the reason (and nothing left behind) if it cannot."""
        require_root()
        if not spec.entrypoint:
            raise ValueError("a sandbox needs an entrypoint argv")
        container = cls(store, spec)
        created = False
        try:
            for layer in spec.layers:
                if not store.has_layer(layer):
                    raise RuntimeError(f"sandbox {spec.sandbox_id}: image layer {layer} does not exist")
            if container._dir.exists():
                raise RuntimeError(f"sandbox {spec.sandbox_id} already exists in the store")
            created = True
            await container._start()
        except BaseException as exc:
            if created:
                await container.terminate()
            if isinstance(exc, (RuntimeError, ValueError, asyncio.CancelledError)):
                raise
            raise RuntimeError(f"sandbox {spec.sandbox_id} could not start: {exc}") from exc
        return container

    async def _start(self) -> None:
        spec = self.spec
        upper, work, merged = self._dir / "upper", self._dir / "work", self._dir / "merged"
        for directory in (upper, work, merged):
            directory.mkdir(parents=True)
        private = await asyncio.to_thread(ensure_private_layers, self.store)
        self._cgroups = await asyncio.to_thread(
            cgroups.create, self.store.state_dir, spec.sandbox_id, spec.cpu, spec.memory_mb)
        self.limits = dict(self._cgroups.limits)
        resolv_conf = self._dir / "resolv.conf"
        resolv_conf.write_text(RESOLV_CONF)
        plan = RootfsPlan(
            layers_dir=self.store.root / "layers", base=spec.base, lower_layers=[*spec.layers, *private],
            upper=upper, work=work, merged=merged, status_fd=-1, payload_env_names=set(self._env),
            workdir=spec.workdir, create_workdir=True,
            hostname=(spec.hostname or spec.sandbox_id)[:_HOSTNAME_MAX], loopback_up=True, run_tmpfs=True,
            cgroup_procs_files=self._cgroups.procs_files, volumes=list(spec.volumes),
            bind_files=[(resolv_conf, "/etc/resolv.conf")],
        )
        launched = await launch(plan, ENTRYPOINT_PAYLOAD, list(spec.entrypoint), _NAMESPACES, self._env,
                                hold=True, stdin=asyncio.subprocess.PIPE, stdout=asyncio.subprocess.PIPE,
                                stderr=asyncio.subprocess.PIPE)
        self.entrypoint = Process(launched.process)
        self.init_pid = launched.init_pid
        self._init_start = process_start_time(self.init_pid)
        try:
            # The entrypoint waits (held by the setup script) until its network is what the policy says.
            await self._network.start(self.init_pid)
            launched.release()
        finally:
            launched.close_hold()
        try:
            self._netns_fd = os.open(f"/proc/{self.init_pid}/ns/net", os.O_RDONLY | os.O_CLOEXEC)
        except (FileNotFoundError, ProcessLookupError):
            # The entrypoint already ran to its end (e.g. `echo hello`): the sandbox is finished before it
            # could be reached, which is a valid life, not a failure to start. Nothing to tunnel into.
            self._netns_fd = -1
        pidfiles.write(self.store.state_dir, spec.sandbox_id, self.init_pid, launched.process.pid,
                       self._cgroups.dirs, self._network.helper_pids)
        if self._netns_fd < 0:
            return
        for port in spec.ports:
            tunnel = Tunnel(self._netns_fd, port)
            self._tunnels.append(tunnel)
            self.tunnels[port] = await tunnel.start()

    # -- state -----------------------------------------------------------------------------------

    @property
    def returncode(self) -> int | None:
        """The entrypoint's exit status once it has finished (a SIGKILL is 137)."""
        return None if self.entrypoint is None else self.entrypoint.returncode

    @property
    def finished(self) -> bool:
        return self._terminated or self.returncode is not None

    async def wait(self) -> int:
        assert self.entrypoint is not None
        return await self.entrypoint.wait()

    def info(self) -> dict:
        return {
            "sandbox_id": self.spec.sandbox_id,
            "init_pid": self.init_pid,
            "launcher_pid": self.entrypoint.pid if self.entrypoint else None,
            "upper_dir": str(self._dir / "upper"),
            "layers": list(self.spec.layers),
            "tunnels": dict(self.tunnels),
            "limits": dict(self.limits),
            "network": self.spec.network.record(),
            "network_helpers": self._network.helper_pids,
            "cgroups": [str(d) for d in self._cgroups.dirs],
            "execs": sorted(p.pid for p in self._execs),
            "returncode": self.returncode,
            "terminated": self._terminated,
        }

    # -- exec ------------------------------------------------------------------------------------

    async def exec(self, argv: list[str], env: dict[str, str] | None = None, workdir: str | None = None,
                   stdin: bool = True, stdout: bool = True, stderr: bool = True, pty: bool = False) -> Process:
        """Run `argv` in the sandbox's namespaces, root and cgroups; `env` is added to the sandbox's env.

        With `pty`, the process gets a terminal from the sandbox's own devpts as controlling tty and
        stdin/stdout of the returned Process are the terminal's (stderr is merged into it).
        """
        if self.finished:
            raise RuntimeError(f"sandbox {self.spec.sandbox_id} has finished")
        if not argv:
            raise ValueError("exec needs an argv")
        full_env = {**self._env, **(env or {})}
        command = [tool("nsenter"), "-t", str(self.init_pid), "-m", "-u", "-i", "-n", "-p", "-r",
                   f"--wdns={workdir or self.spec.workdir or '/'}", "--"]
        command += [tool("setsid"), "-c", "--", *argv] if pty else list(argv)
        if self._cgroups.dirs:
            joins = " && ".join(f"echo 0 > {shlex.quote(str(p))}" for p in self._cgroups.procs_files)
            command = [tool("sh"), "-c", f'{joins} && exec "$@"', "sh", *command]
        if pty:
            return await self._exec_with_pty(command, full_env)
        pipe, devnull = asyncio.subprocess.PIPE, asyncio.subprocess.DEVNULL
        process = await asyncio.create_subprocess_exec(
            *command, env=full_env, start_new_session=True,
            stdin=pipe if stdin else devnull, stdout=pipe if stdout else devnull,
            stderr=pipe if stderr else devnull)
        return self._track(Process(process, on_exit=self._execs.discard))

    async def exec_on_host(self, argv: list[str], env: dict[str, str]) -> Process:
        """Run a host program (`argv`) for this sandbox, with pipes like `exec` but from the host's root.

        For tools the emulator provides rather than the image (the SDK's file tool): `argv` itself enters what
        it needs of the sandbox (its PID namespace, ``/proc/<init>/root``), so it works whatever the image has.
        """
        if self.finished:
            raise RuntimeError(f"sandbox {self.spec.sandbox_id} has finished")
        pipe = asyncio.subprocess.PIPE
        process = await asyncio.create_subprocess_exec(*argv, env=env, start_new_session=True,
                                                       stdin=pipe, stdout=pipe, stderr=pipe)
        return self._track(Process(process, on_exit=self._execs.discard))

    async def _exec_with_pty(self, command: list[str], env: dict[str, str]) -> Process:
        master = os.open(f"/proc/{self.init_pid}/root/dev/pts/ptmx", os.O_RDWR | os.O_NOCTTY | os.O_CLOEXEC)
        try:
            fcntl.ioctl(master, _TIOCSPTLCK, struct.pack("i", 0))
            slave = fcntl.ioctl(master, _TIOCGPTPEER, os.O_RDWR | os.O_NOCTTY)
            try:
                process = await asyncio.create_subprocess_exec(
                    *command, env=env, start_new_session=True, stdin=slave, stdout=slave, stderr=slave)
            finally:
                os.close(slave)
        except BaseException:
            os.close(master)
            raise
        writer, reader, transports = await pty_streams(master)
        return self._track(Process(process, stdin=writer, stdout=reader, on_exit=self._execs.discard,
                                   close_on_exit=transports))

    def _track(self, process: Process) -> Process:
        self._execs.add(process)
        return process

    # -- snapshot --------------------------------------------------------------------------------

    async def snapshot(self, layer_id: str) -> None:
        """Copy the writable layer, as it is now, into a new layer; the sandbox keeps running."""
        if self._terminated:
            raise RuntimeError(f"sandbox {self.spec.sandbox_id} was terminated: nothing to snapshot")
        if self.store.has_layer(layer_id):
            raise FileExistsError(f"layer already exists: {layer_id}")
        scratch = await asyncio.to_thread(self.store.new_tmp_dir, "snap")
        copy = scratch / "layer"
        try:
            # cp -a keeps owners, modes, times, xattrs (opaque dirs), device nodes (whiteouts) and links.
            process = await asyncio.create_subprocess_exec(
                tool("cp"), "-a", "--", str(self._dir / "upper"), str(copy),
                stdout=asyncio.subprocess.DEVNULL, stderr=asyncio.subprocess.PIPE)
            _, err = await process.communicate()
            if process.returncode != 0:
                raise RuntimeError(f"snapshot of {self.spec.sandbox_id} failed: {err.decode(errors='replace')}")
            await asyncio.to_thread(_make_portable, copy)
            if not await asyncio.to_thread(self.store.publish, copy, layer_id):
                raise FileExistsError(f"layer already exists: {layer_id}")
        finally:
            await asyncio.to_thread(shutil.rmtree, scratch, True)

    # -- terminate -------------------------------------------------------------------------------

    async def terminate(self) -> None:
        """Kill everything in the sandbox, close its tunnels, free its cgroups and upper dir; idempotent."""
        if self._terminated:
            return
        self._terminated = True
        for tunnel in self._tunnels:
            await tunnel.close()
        self._kill_all()
        await self._network.close()
        waits = [p.wait() for p in ([self.entrypoint] if self.entrypoint else []) + list(self._execs)]
        if waits:
            with contextlib.suppress(asyncio.TimeoutError):
                await asyncio.wait_for(asyncio.gather(*waits, return_exceptions=True), _STOP_TIMEOUT_S)
        # unshare exits at once on SIGKILL, while PID 1 lingers until the kernel has killed the rest of its
        # namespace: wait for it too, so that nothing of the sandbox runs once terminate returns.
        with contextlib.suppress(asyncio.TimeoutError):
            await asyncio.wait_for(self._init_gone(), _STOP_TIMEOUT_S)
        if self._netns_fd >= 0:
            os.close(self._netns_fd)
            self._netns_fd = -1
        pidfiles.remove(self.store.state_dir, self.spec.sandbox_id)
        await asyncio.to_thread(cgroups.remove, self._cgroups.dirs)
        await asyncio.to_thread(shutil.rmtree, self._dir, True)

    async def _init_gone(self) -> None:
        while is_same_process(self.init_pid, self._init_start):  # a zombie no longer counts
            await asyncio.sleep(0.01)

    def _kill_all(self) -> None:
        # The launcher's group (unshare and the init) first: unshare reports a SIGKILLed child as a
        # plain exit 1, so it must die together with the init. SIGKILL to a PID namespace's init kills
        # every process in the namespace.
        if self.entrypoint is not None:
            self.entrypoint.kill()
        if is_same_process(self.init_pid, self._init_start):
            sigkill(self.init_pid)
        for process in list(self._execs):
            process.kill()
