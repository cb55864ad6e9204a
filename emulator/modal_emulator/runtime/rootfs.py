"""The shell script that assembles a root filesystem inside fresh namespaces, then execs the payload.

Build steps and sandboxes both start as ``unshare ... -- bash -p -c SCRIPT bash ARGS...``. The script,
already inside the new mount (and PID, ...) namespaces, does:

1. mount the overlay (upper over the private layers, the image layers and the image's base root),
2. mount its own /proc, /sys (read-only), /dev (tmpfs with the usual nodes and a private devpts
   instance, so PTYs work), /dev/shm and, for sandboxes, /run,
3. join cgroups, set the hostname, bring loopback up, bind single host files read-only (e.g. a
   sandbox's /etc/resolv.conf),
4. ``pivot_root`` into the overlay, bind the volumes (their targets resolved inside the new root, so an
   image symlink cannot point a mount outside it), detach the old root,
5. report ``READY <host pid>`` on a status pipe, optionally wait for a go-ahead byte on a hold pipe (so
   the launcher can configure the namespace, e.g. its network, before anything of the payload runs),
   and ``exec`` the payload, which becomes the namespace's init (PID 1).

Everything happens inside the namespace, so all these mounts vanish with it: the host mount table
never sees a sandbox's mounts. Setup diagnostics go to the status pipe (not to the payload's stderr),
so a failure is reported by ``start`` as a clear error.

Variables the script needs are baked in with ``shlex.quote``; the payload's environment is the process
environment itself (never on a command line), minus what bash adds to it (PWD, OLDPWD, SHLVL).

Before ``pivot_root`` the host's tools do the work. After it, only what is inside the new root exists, and an
image may have no coreutils at all: the steps after it use the static busybox of the runtime's private tools
layer (:mod:`private_layers`), and bash's builtins.
"""

from __future__ import annotations

import shlex
from dataclasses import dataclass, field
from pathlib import Path

from modal_emulator.runtime._host import tool
from modal_emulator.runtime.private_layers import BUSYBOX_PATH

PIVOT_DIR = ".modal-emulator-oldroot"

# Overlay options that keep an upper dir self-contained, so it can later serve as a lower layer
# (a snapshot or a build step): no redirects to, index of, or metadata-only copies of lower files.
_OVERLAY_OPTIONS = "redirect_dir=off,index=off,metacopy=off"

_BASH_ADDED_VARS = ("PWD", "OLDPWD", "SHLVL")


@dataclass
class RootfsPlan:
    layers_dir: Path                   # lower layer names are relative to it (keeps the mount options short)
    base: Path                         # the image's base root filesystem, the bottom of the stack
    lower_layers: list[str]            # bottom -> top, above the base
    upper: Path
    work: Path
    merged: Path
    status_fd: int
    payload_env_names: set[str]        # variables the payload must keep even if bash added them
    workdir: str | None = None
    create_workdir: bool = False
    hostname: str | None = None
    loopback_up: bool = False
    run_tmpfs: bool = False
    mount_sysfs: bool = True
    cgroup_procs_files: list[Path] = field(default_factory=list)
    volumes: list[tuple[Path, str, bool]] = field(default_factory=list)
    bind_files: list[tuple[Path, str]] = field(default_factory=list)  # (host file, absolute path), read-only
    hold_fd: int = -1                  # >= 0: after READY, wait for one byte on this fd before the payload


def check_layer_name(name: str) -> None:
    # ':' separates overlay lower dirs and ',' separates mount options: neither may appear in a name.
    if any(ch in name for ch in ":,\\\n") or name.startswith("/"):
        raise ValueError(f"layer id not usable in an overlay mount: {name!r}")


def _lowerdir(plan: RootfsPlan) -> str:
    for name in plan.lower_layers:
        check_layer_name(name)
    base = str(plan.base)
    if not plan.base.is_absolute() or any(ch in base for ch in ":,\\\n"):
        raise ValueError(f"base root not usable in an overlay mount: {base!r}")
    return ":".join([*reversed(plan.lower_layers), base])


def _bind_file_lines(plan: RootfsPlan) -> list[str]:
    """Bind each host file read-only over its target in the new root (cwd: the merged root).

    Done before ``pivot_root``, while host paths are still plain paths. A symlink at the target is
    replaced by an empty file first: followed here, it would resolve against the host's root.
    """
    q = shlex.quote
    mount, mkdir, rm, touch = f"{tool('mount')} -n", tool("mkdir"), tool("rm"), tool("touch")
    lines = []
    for host_file, target in plan.bind_files:
        if not target.startswith("/"):
            raise ValueError(f"bind target must be an absolute path, got {target!r}")
        relative = q(target.lstrip("/"))
        parent = q(str(Path(target.lstrip("/")).parent))
        # Tests are shell builtins: only the mount costs a process when the target is already a file.
        lines += [
            f"[ -d {parent} ] || {mkdir} -p -- {parent}",
            f"if [ -L {relative} ]; then {rm} -f -- {relative}; fi",
            f"[ -e {relative} ] || {touch} -- {relative}",
            f"{mount} -o bind,ro -- {q(str(Path(host_file).absolute()))} {relative}",
        ]
    return lines


def _hold_lines(plan: RootfsPlan) -> list[str]:
    """Wait, after READY, for the launcher's go-ahead byte; no byte (the pipe closed) means never run."""
    if plan.hold_fd < 0:
        return []
    fd = plan.hold_fd
    return [f"read -r -N 1 emu_go <&{fd} || exit 1", f"exec {fd}<&-"]


def setup_script(plan: RootfsPlan, payload_argv: str) -> str:
    """The bash script; it finally execs `payload_argv` (shell words, e.g. ``"$@"``) through ``env``."""
    q = shlex.quote
    # -n: never record these mounts in a utab (which would land in the host's /run before pivot_root).
    mount, umount = f"{tool('mount')} -n", f"{tool('umount')} -n"
    mkdir, mknod, ln = tool("mkdir"), tool("mknod"), tool("ln")
    rmdir, pivot_root = tool("rmdir"), tool("pivot_root")
    merged = q(str(plan.merged))
    fd = plan.status_fd
    options = f"lowerdir={_lowerdir(plan)},upperdir={plan.upper},workdir={plan.work},{_OVERLAY_OPTIONS}"
    lines = [
        "set -e",
        f"exec {{emu_stderr}}>&2 2>&{fd}",
        f"cd {q(str(plan.layers_dir))}",
        f"{mount} -t overlay overlay -o {q(options)} {merged}",
        f"cd {merged}",
        f"{mount} -t proc -o nosuid,nodev,noexec proc proc",
    ]
    if plan.mount_sysfs:
        lines.append(f"{mount} -t sysfs -o ro,nosuid,nodev,noexec sysfs sys")
    lines += [
        f"{mount} -t tmpfs -o mode=755,nosuid,size=65536k tmpfs dev",
        f"{mknod} -m 666 dev/null c 1 3",
        f"{mknod} -m 666 dev/zero c 1 5",
        f"{mknod} -m 666 dev/full c 1 7",
        f"{mknod} -m 666 dev/random c 1 8",
        f"{mknod} -m 666 dev/urandom c 1 9",
        f"{mknod} -m 666 dev/tty c 5 0",
        f"{mkdir} -m 755 dev/pts",
        f"{mkdir} -m 1777 dev/shm",
        f"{mount} -t devpts -o newinstance,ptmxmode=0666,mode=0620,gid=5 devpts dev/pts",
        f"{ln} -s pts/ptmx dev/ptmx",
        f"{ln} -s /proc/self/fd dev/fd",
        f"{ln} -s /proc/self/fd/0 dev/stdin",
        f"{ln} -s /proc/self/fd/1 dev/stdout",
        f"{ln} -s /proc/self/fd/2 dev/stderr",
        f"{mount} -t tmpfs -o mode=1777,nosuid,nodev tmpfs dev/shm",
    ]
    if plan.run_tmpfs:
        lines.append(f"{mount} -t tmpfs -o mode=755,nosuid,nodev tmpfs run")
    for procs in plan.cgroup_procs_files:
        lines.append(f"echo 0 > {q(str(procs))}")
    if plan.hostname:
        lines.append(f"printf %s {q(plan.hostname)} > /proc/sys/kernel/hostname")
    if plan.loopback_up:
        lines.append(f"{tool('ip')} link set lo up")
    lines += _bind_file_lines(plan)
    lines += [
        # The host /proc is still mounted here, so /proc/self names this shell by its host pid.
        "read -r emu_stat < /proc/self/stat",
        f"{mkdir} -p {PIVOT_DIR}",
        f"{pivot_root} . {PIVOT_DIR}",
        "cd /",
    ]
    box = BUSYBOX_PATH
    for host_dir, target, read_only in plan.volumes:
        host_path = q(f"/{PIVOT_DIR}{Path(host_dir).absolute()}")
        lines += [f"{box} mkdir -p -- {q(target)}", f"{box} mount -o bind {host_path} {q(target)}"]
        if read_only:
            lines.append(f"{box} mount -o remount,bind,ro {q(target)}")
    lines += [f"{box} umount -l /{PIVOT_DIR}", f"{box} rmdir /{PIVOT_DIR}"]
    if plan.workdir:
        if plan.create_workdir:
            lines.append(f"{box} mkdir -p -- {q(plan.workdir)}")
        lines.append(f"cd -- {q(plan.workdir)}")
    lines += [
        f"printf 'READY %s\\n' \"${{emu_stat%% *}}\" >&{fd}",
        *_hold_lines(plan),
        f"exec 2>&$emu_stderr {{emu_stderr}}>&- {fd}>&-",
    ]
    # bash's own exec would export SHLVL: `env -u` drops what bash added and the payload did not ask for.
    dropped = [name for name in _BASH_ADDED_VARS if name not in plan.payload_env_names]
    unsets = " ".join(f"-u {name}" for name in dropped)
    lines.append(f"exec {box} env {unsets} -- {payload_argv}")
    return "\n".join(lines) + "\n"
