"""Image build steps: RUN commands captured as a new layer, and COPY/ADD-style file layers.

A RUN step executes ``/bin/sh -c COMMAND`` in its own mount and PID namespaces, inside the image's own root
(its base root filesystem and layers, with the runtime's private layers on top), with a fresh overlay
upper dir that becomes the new layer. It keeps the host's network and sees the host's DNS settings and
package-registry settings, so package managers work during builds; none of those reach the layer. The layer is built in the store's tmp/ and
renamed to ``layers/<layer_id>`` only when the command succeeded: no half-built layer is ever visible.
"""

from __future__ import annotations

import asyncio
import codecs
import contextlib
import os
import shutil
import signal
from pathlib import Path
from typing import Callable, Iterable

from modal_emulator.runtime._host import DEFAULT_CONTAINER_PATH, require_root
from modal_emulator.runtime.launch import launch
from modal_emulator.runtime.private_layers import ensure_private_layers
from modal_emulator.runtime.rootfs import RootfsPlan, check_layer_name
from modal_emulator.runtime.store import Store

LogFn = Callable[[str], None]


def step_env(env: dict[str, str]) -> dict[str, str]:
    """The environment of a build step or sandbox: the image's env over the usual defaults."""
    return {"PATH": DEFAULT_CONTAINER_PATH, "HOME": "/root", **env}


#: The host's resolver configuration: build steps share the host's network, so they share its DNS too.
HOST_RESOLV_CONF = Path("/etc/resolv.conf")


async def run_build_step(store: Store, base: Path, lower_layers: list[str], layer_id: str, command: str,
                         env: dict[str, str], workdir: str | None, log: LogFn) -> int:
    """Run `command` over `base` and `lower_layers` (bottom -> top); keep its writes as layer `layer_id`.

    Returns the command's exit status; the layer exists afterwards only if that status is 0.
    Output (stdout and stderr together) is passed to `log` as it arrives.
    """
    require_root()
    check_layer_name(layer_id)
    for layer in lower_layers:
        if not store.has_layer(layer):
            raise RuntimeError(f"build step over a missing layer: {layer}")
    private = await asyncio.to_thread(ensure_private_layers, store)
    scratch = await asyncio.to_thread(store.new_tmp_dir, "build")
    upper, work, merged = scratch / "upper", scratch / "work", scratch / "merged"
    for directory in (upper, work, merged):
        directory.mkdir()
    full_env = step_env(env)
    plan = RootfsPlan(
        layers_dir=store.root / "layers", base=base, lower_layers=[*lower_layers, *private],
        upper=upper, work=work, merged=merged, status_fd=-1, payload_env_names=set(full_env),
        workdir=workdir, create_workdir=True,
        bind_files=[(HOST_RESOLV_CONF.resolve(), "/etc/resolv.conf")] if HOST_RESOLV_CONF.exists() else [],
    )
    try:
        try:
            launched = await launch(plan, '/bin/sh -c "$1"', [command], ["--mount", "--pid"], full_env,
                                    stdin=asyncio.subprocess.DEVNULL, stdout=asyncio.subprocess.PIPE,
                                    stderr=asyncio.subprocess.STDOUT)
        except RuntimeError as exc:
            log(f"{exc}\n")
            raise
        process = launched.process
        try:
            await _stream(process.stdout, log)
            code = await process.wait()
        except BaseException:
            with contextlib.suppress(ProcessLookupError):
                os.killpg(process.pid, signal.SIGKILL)
            await process.wait()
            raise
        code = 128 - code if code < 0 else code
        if code == 0:
            # A concurrent identical step may have published the same id first: keep theirs.
            await asyncio.to_thread(store.publish, upper, layer_id)
        return code
    finally:
        await asyncio.to_thread(shutil.rmtree, scratch, True)


async def _stream(reader: asyncio.StreamReader | None, log: LogFn) -> None:
    if reader is None:
        return
    decoder = codecs.getincrementaldecoder("utf-8")(errors="replace")
    while chunk := await reader.read(65536):
        text = decoder.decode(chunk)
        if text:
            log(text)
    tail = decoder.decode(b"", final=True)
    if tail:
        log(tail)


def write_files_layer(store: Store, layer_id: str,
                      files: Iterable[tuple[str, bytes | Path, int | None]], below: Iterable[Path] = ()) -> None:
    """Create layer `layer_id` holding `files` at their absolute container paths (COPY / ADD).

    A source Path may be a file or a directory (copied recursively, symlinks kept). `mode` None keeps
    the source's mode (0644 for bytes). `below` are the root directories of what the layer will cover (top
    first: the image's layers, then its base): a directory the layer creates on the way to a file takes
    the mode and owner of the same directory there, so that ``COPY x /tmp/x`` keeps /tmp at 1777.
    Blocking: call it through ``asyncio.to_thread``.
    """
    below = list(below)
    check_layer_name(layer_id)
    tmp = store.new_tmp_dir("files")
    try:
        for container_path, source, mode in files:
            if not container_path.startswith("/"):
                raise ValueError(f"container path must be absolute: {container_path!r}")
            relative = Path(os.path.normpath(container_path)).relative_to("/")
            if str(relative) == ".":
                raise ValueError("cannot write a file at /")
            target = tmp / relative
            _make_parents(tmp, relative, below)
            if isinstance(source, (bytes, bytearray)):
                target.write_bytes(source)
                os.chmod(target, 0o644 if mode is None else mode)
            else:
                source = Path(source)
                if source.is_dir() and not source.is_symlink():
                    shutil.copytree(source, target, symlinks=True, dirs_exist_ok=True)
                else:
                    shutil.copy2(source, target, follow_symlinks=False)
                if mode is not None:
                    os.chmod(target, mode)
        if not store.publish(tmp, layer_id):
            raise FileExistsError(f"layer already exists: {layer_id}")
    finally:
        if tmp.exists():
            shutil.rmtree(tmp)


def _make_parents(layer_root: Path, relative: Path, below: list[Path]) -> None:
    """Create the parents of `relative` in the layer with the metadata of the directories they cover."""
    for depth in range(1, len(relative.parts)):
        layer_dir = layer_root.joinpath(*relative.parts[:depth])
        if not layer_dir.exists():
            layer_dir.mkdir()
            covered = [root.joinpath(*relative.parts[:depth]) for root in below]
            _copy_dir_metadata(next((d for d in covered if d.is_dir() and not d.is_symlink()), None), layer_dir)


def _copy_dir_metadata(source: Path | None, layer_dir: Path) -> None:
    """Give `layer_dir` the mode and owner of the directory it covers (0755 root if none)."""
    mode, uid, gid = 0o755, 0, 0
    if source is not None:
        st = os.stat(source)
        mode, uid, gid = st.st_mode & 0o7777, st.st_uid, st.st_gid
    os.chown(layer_dir, uid, gid)
    os.chmod(layer_dir, mode)
