"""Image builds: Modal image definitions (Dockerfile commands) turned into overlay layers.

An emulated image is a list of layers over the host's root filesystem, plus ENV, WORKDIR and CMD.
Each ``ImageGetOrCreate`` definition becomes one image whose layers are its base image's layers and
one layer per ``RUN``/``COPY``/``ADD`` step. Layers are cached by their definition (the parent layers,
the step, the environment and the working directory it runs with), so building the same image again,
or another image sharing a prefix of steps, reuses them.

How the emulator maps what Modal does with registry images:

- ``FROM <registry image>`` (``Image.from_registry``, ``Image.debian_slim``, a Dockerfile's first line)
  resolves to a real root filesystem from the machine's base cache (:mod:`modal_emulator.runtime.bases`):
  Debian and python references are built there once per machine, anything else must have been imported,
  or the build fails with a message naming the reference. Never the host's own root.
- ``Image.debian_slim()`` is ``FROM python:X-slim-bookworm`` followed by steps that provision that image
  with compilers and tools (``apt-get install gcc ...``, ``pip install --upgrade pip wheel uv``, a debconf
  setting). Fetching those again would make every fresh state directory download hundreds of megabytes,
  so those steps are skipped and listed in the build log: the image is the python base (bookworm slim,
  Debian's python3, pip and venv). Its ``CMD`` (sleep) is kept. Later layers run for real.
- ``add_python=...`` copies a standalone Python from a Modal-provided mount. Over a Debian bookworm base
  the emulator switches to the python base instead (the same root plus Debian's python3), and the build
  log says which version stands in; over any other base the build fails, naming the base.
- ``RUN`` steps run inside the image's own root with the host's network, DNS and package-registry settings
  (never stored in a layer) and ``DEBIAN_FRONTEND=noninteractive``.
- Images are immutable: a layer, once built, never changes, and neither does a published base.
"""

from __future__ import annotations

import asyncio
import fnmatch
import hashlib
import json
import logging
import pathlib
import re
import shlex
import time
from dataclasses import dataclass, field
from typing import Any, Callable, Iterable

from grpclib import Status
from modal_proto import api_pb2

from .apps import secret_env
from modal_emulator.runtime.bases import BOOKWORM_PYTHON

from .core import EmulatorState
from .mounts import materialize_mount

log = logging.getLogger("modal_emulator.server")

DEFAULT_PATH = "/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin"
_ADD_PYTHON_SOURCE = "/python/."
#: What ``add_python`` adds after its copy for standalone releases that lack a ``python`` binary.
_ADD_PYTHON_LINK_STEP = "ln -s /usr/local/bin/python3 /usr/local/bin/python"
#: A RUN step only ``Image.debian_slim()``'s definition has; it tells that definition from a user's Dockerfile.
_DEBIAN_SLIM_MARKER_STEP = ("RUN", "apt-get install -y gcc gfortran build-essential")


def is_debian_slim_definition(instructions: list[tuple[str, str]]) -> bool:
    return any((keyword, args.strip()) == _DEBIAN_SLIM_MARKER_STEP for keyword, args in instructions)


def sha256_hex(*parts: Any) -> str:
    return hashlib.sha256(json.dumps(parts, sort_keys=True, default=str).encode()).hexdigest()


def image_id_for(definition_key: str) -> str:
    """A stable ``im-`` id (22 letters and digits) for a definition hash."""
    alphabet = "0123456789ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz"
    number = int(definition_key, 16)
    chars = []
    while len(chars) < 22:
        number, rest = divmod(number, 62)
        chars.append(alphabet[rest])
    return "im-" + "".join(chars)


def dockerfile_instructions(lines: Iterable[str]) -> list[tuple[str, str]]:
    """(INSTRUCTION, arguments) pairs from Dockerfile lines: continuations joined, comments dropped."""
    instructions: list[tuple[str, str]] = []
    pending = ""
    for raw in lines:
        for line in raw.split("\n"):
            stripped = line.strip()
            if not pending and (not stripped or stripped.startswith("#")):
                continue
            if pending and stripped.startswith("#"):
                continue
            if stripped.endswith("\\"):
                pending += stripped[:-1] + " "
                continue
            text = (pending + stripped).strip()
            pending = ""
            if text:
                keyword, _, args = text.partition(" ")
                instructions.append((keyword.upper(), args.strip()))
    if pending.strip():
        keyword, _, args = pending.strip().partition(" ")
        instructions.append((keyword.upper(), args.strip()))
    return instructions


def exec_form(args: str) -> list[str] | None:
    """The argv of a JSON exec form (``["a", "b"]``), or None for the shell form."""
    if args.startswith("["):
        try:
            value = json.loads(args)
        except json.JSONDecodeError:
            return None
        if isinstance(value, list) and all(isinstance(v, str) for v in value):
            return value
    return None


def parse_env(args: str) -> dict[str, str]:
    """``ENV a=1 b="x y"`` or the legacy ``ENV a 1``."""
    words = shlex.split(args)
    if words and "=" not in words[0]:
        return {words[0]: " ".join(words[1:])}
    env: dict[str, str] = {}
    for word in words:
        key, _, value = word.partition("=")
        env[key] = value
    return env


def strip_flags(args: str) -> list[str]:
    """The words of a COPY/ADD line without ``--chown=...``-style flags."""
    return [w for w in shlex.split(args) if not w.startswith("--")]


@dataclass
class BuildLog:
    """Build output of one image, for ``ImageJoinStreaming`` (entry ids are list indexes + 1)."""

    entries: list[str] = field(default_factory=list)
    done: bool = False
    changed: asyncio.Condition = field(default_factory=asyncio.Condition)

    def write(self, text: str) -> None:
        if text:
            self.entries.append(text)
            asyncio.get_running_loop().create_task(self._notify())

    async def finish(self) -> None:
        self.done = True
        await self._notify()

    async def _notify(self) -> None:
        async with self.changed:
            self.changed.notify_all()

    async def wait_beyond(self, index: int, timeout: float) -> None:
        async with self.changed:
            try:
                await asyncio.wait_for(self.changed.wait_for(lambda: len(self.entries) > index or self.done), timeout)
            except asyncio.TimeoutError:
                pass


class BuildFailed(Exception):
    pass


class ImageRegistry:
    """Image records (table ``images``), running builds and their logs."""

    def __init__(self, state: EmulatorState) -> None:
        self.state = state
        self.table = state.table("images")
        self.logs: dict[str, BuildLog] = {}
        self._tasks: set[asyncio.Task[Any]] = set()
        for image_id, row in self.table.items():
            if row["status"] == "building":
                row.update(status="failure", exception="the emulator stopped during the build")
                self.table.put(image_id, row)

    # -- queries ------------------------------------------------------------------------------
    def get(self, image_id: str) -> dict[str, Any]:
        row = self.table.get(image_id)
        if row is None:
            self.state.abort(Status.NOT_FOUND, f"Image {image_id} not found")
        return row

    def get_built(self, image_id: str) -> dict[str, Any]:
        row = self.get(image_id)
        if row["status"] != "success":
            self.state.abort(Status.FAILED_PRECONDITION, f"Image {image_id} is not built ({row['status']})")
        return row

    def result_proto(self, row: dict[str, Any]) -> api_pb2.GenericResult:
        if row["status"] == "success":
            return api_pb2.GenericResult(status=api_pb2.GenericResult.GENERIC_STATUS_SUCCESS)
        if row["status"] == "failure":
            return api_pb2.GenericResult(
                status=api_pb2.GenericResult.GENERIC_STATUS_FAILURE, exception=row.get("exception", "")
            )
        return api_pb2.GenericResult()

    @staticmethod
    def metadata_proto(row: dict[str, Any]) -> api_pb2.ImageMetadata:
        return api_pb2.ImageMetadata(
            workdir=row.get("workdir") or "", image_builder_version=row.get("builder_version", "")
        )

    # -- creation -----------------------------------------------------------------------------
    def get_or_create(self, request: api_pb2.ImageGetOrCreateRequest) -> dict[str, Any]:
        definition = request.image
        key = sha256_hex(definition.SerializeToString(deterministic=True).hex(), request.builder_version)
        salt = ""
        if request.force_build or request.ignore_cache:
            salt = self.state.new_id("force")
            key = sha256_hex(key, salt)
        image_id = image_id_for(key)
        row = self.table.get(image_id)
        if row is not None and row["status"] in ("success", "building"):
            return row
        row = {
            "id": image_id,
            "status": "building",
            "layers": [],
            "env": {},
            "workdir": None,
            "cmd": None,
            "builder_version": request.builder_version,
            "created_at": time.time(),
            "base": None,
        }
        self.table.put(image_id, row)
        build_log = self.logs[image_id] = BuildLog()
        task = asyncio.create_task(self._build(row, definition, salt, build_log))
        self._tasks.add(task)
        task.add_done_callback(self._tasks.discard)
        return row

    def add_snapshot(self, source_image_id: str, layer_id: str, image_id: str, sandbox_id: str) -> dict[str, Any]:
        source = self.get(source_image_id)
        row = {
            **source,
            "id": image_id,
            "status": "success",
            "layers": [*source["layers"], layer_id],
            "created_at": time.time(),
            "snapshot_of": sandbox_id,
        }
        self.table.put(image_id, row)
        return row

    async def _build(self, row: dict[str, Any], definition: api_pb2.Image, salt: str, build_log: BuildLog) -> None:
        image_id = row["id"]
        try:
            await ImageBuild(self.state, self, row, definition, salt, build_log.write).run()
            row["status"] = "success"
            build_log.write(f"Image {image_id} built.\n")
        except BuildFailed as exc:
            row.update(status="failure", exception=str(exc))
            build_log.write(f"Image build failed: {exc}\n")
        except Exception as exc:  # noqa: BLE001 - any failure must end the build, and be reported
            log.exception("image build %s crashed", image_id)
            row.update(status="failure", exception=f"internal error: {exc}")
            build_log.write(f"Image build failed: internal error: {exc}\n")
        self.table.put(image_id, row)
        await build_log.finish()

    def base_root(self, row: dict[str, Any]) -> pathlib.Path:
        """The base root filesystem of a built image; FAILED_PRECONDITION if it is gone from the cache."""
        base = row.get("base") or {}
        path = pathlib.Path(base.get("rootfs") or "/nonexistent")
        if not path.is_dir():
            self.state.abort(
                Status.FAILED_PRECONDITION,
                f"the base of image {row['id']} ({base.get('reference') or 'unknown'}) is not in the base cache "
                f"{self.state.bases.root} any more: build the image again")
        return path

    async def ensure_mount_layer(self, mount_id: str, image: dict[str, Any]) -> str:
        """A layer holding a mount's files (``Image.add_local_*`` without copy), built once per image.

        Per image, because the directories the layer creates on the way to its files take the mode and owner of
        the image's own (see ``write_files_layer``).
        """
        store = self.state.require_store()
        layer_id = f"mount-{mount_id}-{image['id']}"
        if not store.has_layer(layer_id):
            files = materialize_mount(self.state, mount_id)
            from modal_emulator.runtime.build import write_files_layer

            await asyncio.to_thread(write_files_layer, store, layer_id, files,
                                    store.image_dirs(image["layers"], self.base_root(image)))
        return layer_id

    async def wait_all(self) -> None:
        for task in list(self._tasks):
            task.cancel()


class ImageBuild:
    """One build: walks the Dockerfile commands of a definition and creates its layers."""

    def __init__(
        self, state: EmulatorState, registry: ImageRegistry, row: dict[str, Any], definition: api_pb2.Image,
        salt: str, write: Callable[[str], None],
    ) -> None:
        self.state = state
        self.registry = registry
        self.row = row
        self.definition = definition
        self.salt = salt
        self.write = write
        self.layers: list[str] = []
        self.env: dict[str, str] = {}
        self.workdir: str | None = None
        self.cmd: list[str] | None = None
        self.base: dict[str, Any] | None = None   # {"key", "reference", "rootfs", "python"} once FROM ran
        self.skip_provisioning = False
        self.build_args = dict(definition.build_args)

    async def run(self) -> None:
        instructions = dockerfile_instructions(self.definition.dockerfile_commands)
        if not instructions or instructions[0][0] != "FROM":
            raise BuildFailed("the image definition does not start with FROM")
        step_count = len(instructions)
        build_env = secret_env(self.state, list(self.definition.secret_ids))
        for number, (keyword, args) in enumerate(instructions, start=1):
            args = self._substitute_args(args)
            self.write(f"Step {number}/{step_count} : {keyword} {args}\n")
            if keyword == "FROM":
                await self._from(args)
            elif keyword == "RUN":
                await self._run(args, build_env)
            elif keyword == "ENV":
                self.env.update(parse_env(args))
            elif keyword == "WORKDIR":
                path = args.strip()
                self.workdir = path if path.startswith("/") else str(pathlib.PurePosixPath(self.workdir or "/", path))
                await self._run(f"mkdir -p {shlex.quote(self.workdir)}", {}, quiet=True)
            elif keyword in ("COPY", "ADD"):
                await self._copy(args)
            elif keyword in ("CMD", "ENTRYPOINT"):
                self.cmd = exec_form(args) or ["/bin/sh", "-c", args]
            elif keyword == "ARG":
                name, _, default = args.partition("=")
                self.build_args.setdefault(name.strip(), default.strip())
            else:
                self.write(f" ---> {keyword} has no effect in the emulator, ignored\n")
        self.row.update(layers=self.layers, env=self.env, workdir=self.workdir, cmd=self.cmd, base=self.base)

    def _substitute_args(self, args: str) -> str:
        for name, value in self.build_args.items():
            args = args.replace("${" + name + "}", value).replace("$" + name, value)
        return args

    async def _from(self, args: str) -> None:
        tag = strip_flags(args)[0] if strip_flags(args) else args
        base_ids = {b.docker_tag: b.image_id for b in self.definition.base_images}
        if tag in base_ids:
            base = self.registry.get_built(base_ids[tag])
            self.layers = list(base["layers"])
            self.env = dict(base.get("env") or {})
            self.workdir = base.get("workdir")
            self.cmd = base.get("cmd")
            self.base = base.get("base")
            self.write(f" ---> based on {base['id']}\n")
            return
        await self._use_base(tag)
        # Only the SDK's own debian_slim() definition is skipped: a user's Dockerfile FROM the same tag
        # has RUN steps that must run.
        self.skip_provisioning = bool(self.base and self.base.get("python")) and is_debian_slim_definition(
            dockerfile_instructions(self.definition.dockerfile_commands)
        )

    async def _use_base(self, reference: str) -> None:
        """Make the base root of `reference` the bottom of this image (building it first if needed)."""
        from modal_emulator.runtime.bases import BaseBuildError, UnknownReference

        loop = asyncio.get_running_loop()

        def log_from_thread(text: str) -> None:
            loop.call_soon_threadsafe(self.write, text)
            log.info("base build: %s", text.rstrip())

        try:
            base = await asyncio.to_thread(self.state.bases.resolve, reference, log_from_thread)
        except (UnknownReference, BaseBuildError) as exc:
            raise BuildFailed(str(exc)) from exc
        self.base = {"key": base.key, "reference": base.reference, "rootfs": str(base.rootfs),
                     "python": bool(base.recipe and base.recipe.python)}
        self.write(f" ---> base {base.reference}: {base.key}\n")
        if base.python_requested and base.python_requested.split(".")[:2] != BOOKWORM_PYTHON.split("."):
            self.write(f" ---> python {base.python_requested} was asked for; Debian's python3 "
                       f"{BOOKWORM_PYTHON} stands in for it\n")

    def _layer_id(self, *step: Any) -> str:
        # The base root is not one of self.layers, yet a step's result depends on it: it is part of the key.
        base_key = (self.base or {}).get("key")
        return "l-" + sha256_hex(base_key, self.layers, self.env, self.workdir, step, self.salt)[:40]

    async def _run(self, args: str, build_env: dict[str, str], quiet: bool = False) -> None:
        argv = exec_form(args)
        command = shlex.join(argv) if argv else args
        if self.skip_provisioning and not quiet:
            self.write(" ---> skipped: debian_slim's compilers and tools (the python base has python3 and pip)\n")
            return
        if command.strip() == _ADD_PYTHON_LINK_STEP and self.base and self.base.get("python"):
            self.write(" ---> skipped: /usr/local/bin/python already links to the python base's python3\n")
            return
        layer_id = self._layer_id("RUN", command, sorted(build_env))
        store = self.state.require_store()
        if store.has_layer(layer_id):
            if not quiet:
                self.write(" ---> Using cache\n")
            self.layers.append(layer_id)
            return
        from modal_emulator.runtime.build import run_build_step

        env = {"PATH": DEFAULT_PATH, "DEBIAN_FRONTEND": "noninteractive", "HOME": "/root", **self.env, **build_env}
        output: list[str] = []

        def on_output(text: str) -> None:
            output.append(text)
            self.write(text)

        code = await run_build_step(store, self._base_root(), list(self.layers), layer_id, command, env,
                                    self.workdir, on_output)
        if code != 0:
            tail = "".join(output)[-4000:]
            raise BuildFailed(f"RUN {command} exited with code {code}\n{tail}")
        self.layers.append(layer_id)

    async def _copy(self, args: str) -> None:
        words = strip_flags(args)
        if len(words) < 2:
            raise BuildFailed(f"COPY needs a source and a destination: {args}")
        sources, dest = words[:-1], words[-1]
        if sources == [_ADD_PYTHON_SOURCE]:
            await self._add_python()
            return
        context = self._context_files()
        if not dest.startswith("/"):
            dest = str(pathlib.PurePosixPath(self.workdir or "/", dest))
        files: list[tuple[str, bytes | pathlib.Path, int | None]] = []
        for source in sources:
            matched = self._match(context, source, dest, multiple=len(sources) > 1 or dest.endswith("/"))
            if not matched:
                raise BuildFailed(f"COPY failed: no source files were specified or found for {source!r}")
            files.extend(matched)
        digest = hashlib.sha256()
        for path, content, mode in sorted(files, key=lambda f: f[0]):
            digest.update(path.encode())
            digest.update(content if isinstance(content, bytes) else pathlib.Path(content).read_bytes())
            digest.update(str(mode).encode())
        layer_id = self._layer_id("COPY", digest.hexdigest())
        store = self.state.require_store()
        if not store.has_layer(layer_id):
            from modal_emulator.runtime.build import write_files_layer

            below = store.image_dirs(self.layers, self._base_root())
            await asyncio.to_thread(write_files_layer, store, layer_id, files, below)
        else:
            self.write(" ---> Using cache\n")
        self.layers.append(layer_id)

    def _base_root(self) -> pathlib.Path:
        if self.base is None:
            raise BuildFailed("a build step came before any FROM")
        return pathlib.Path(self.base["rootfs"])

    async def _add_python(self) -> None:
        """``add_python``: no standalone Python here; Debian's python3 through the python base stands in."""
        assert self.base is not None
        if self.base.get("python"):
            self.write(f" ---> add_python: the base already has Debian's python3 {BOOKWORM_PYTHON}\n")
            return
        if not self.base["key"].startswith("debian-bookworm") or self.layers:
            raise BuildFailed(
                f"add_python is emulated only right over a Debian bookworm base, not over "
                f"{self.base['reference']!r}: install python in a RUN step instead")
        self.write(f" ---> add_python: standalone Python is not provided; the python base (Debian's python3 "
                   f"{BOOKWORM_PYTHON}) stands in\n")
        await self._use_base("python:3.11-slim-bookworm")

    def _context_files(self) -> dict[str, tuple[bytes | pathlib.Path, int | None]]:
        """Context files by path relative to the context root (no leading slash)."""
        context: dict[str, tuple[bytes | pathlib.Path, int | None]] = {}
        if self.definition.context_mount_id:
            for path, content, mode in materialize_mount(self.state, self.definition.context_mount_id):
                context[path.lstrip("/")] = (content, mode)
        for context_file in self.definition.context_files:
            context[context_file.filename.lstrip("/")] = (context_file.data, None)
        return context

    @staticmethod
    def _match(
        context: dict[str, tuple[bytes | pathlib.Path, int | None]], source: str, dest: str, multiple: bool
    ) -> list[tuple[str, bytes | pathlib.Path, int | None]]:
        pattern = source.lstrip("/").removeprefix("./").rstrip("/")
        if pattern.endswith("/."):
            pattern = pattern[:-2]
        pattern = "" if pattern == "." else pattern
        found: list[tuple[str, bytes | pathlib.Path, int | None]] = []
        for rel, (content, mode) in context.items():
            if pattern and (rel == pattern or fnmatch.fnmatchcase(rel, pattern)):
                # A file named by the source: into dest (a directory if it ends with / or several sources).
                target = f"{dest.rstrip('/')}/{pathlib.PurePosixPath(rel).name}" if multiple else dest
                found.append((target, content, mode))
                continue
            prefix = f"{pattern}/" if pattern else ""
            top = rel.split("/", 1)[0]
            if (prefix and rel.startswith(prefix)) or (not prefix) or (
                pattern and fnmatch.fnmatchcase(top, pattern) and "/" in rel
            ):
                inner = rel[len(prefix) :] if prefix and rel.startswith(prefix) else (rel.split("/", 1)[1] if pattern else rel)
                found.append((f"{dest.rstrip('/')}/{inner}", content, mode))
        return found
