"""Base images: real root filesystems for registry references, built once per machine and shared read-only.

Every emulated image sits on a base root filesystem, the bottom layer of its overlay stack, exactly as a
registry image is the bottom of a Modal image. Never the host's own root: a sandbox from
``debian:bookworm-slim`` has no python3 and no sshd, as on Modal.

Where a base comes from, by reference (see :func:`resolve`):

- an imported reference (``modal-emulator image import REF SOURCE``): a ``docker export`` tarball or an OCI
  image layout, applied as is; an import wins over the recipes below;
- Debian references (``debian:bookworm[-slim]``, ``debian:12[-slim]``, ``debian:stable-slim``): built with
  ``mmdebstrap`` from the Debian mirror the host's apt sources name. ``-slim`` is built as Docker's official
  slim images are: the minbase variant, documentation, man pages and locales left out (also for packages
  installed later, through the dpkg path excludes the image keeps);
- Python references (``python:3.N-slim``, ``python:3.N-slim-bookworm``): the bookworm slim root plus Debian's
  python3, pip and venv, ``python`` and ``pip`` linked to them and pip allowed to install system-wide (as in
  Docker's python images). Debian's python3 stands in for every 3.N, and the build log says so;
- anything else: :class:`UnknownReference`, whose message says how to supply it.

The cache (default ``/var/cache/modal-emulator``, ``--base-cache`` or ``MODAL_EMULATOR_BASE_CACHE``)::

    bases/<key>/rootfs/      the root filesystem (never written once published)
    bases/<key>/base.json    what it is: reference, recipe or import source, when and how it was built
    imports/<name>.json      which base an imported reference resolves to now (each import is a new base, so
                             images built on an earlier import keep theirs)
    locks/<key>.lock         flock held while building: two emulators never build the same base at once
    tmp/                     bases being built, renamed into bases/ only once complete
"""

from __future__ import annotations

import fcntl
import hashlib
import json
import os
import re
import shutil
import subprocess
import tempfile
import time
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path
from typing import Callable, Iterator

from modal_emulator.runtime import host_registry, oci
from modal_emulator.runtime._host import find_tool

LogFn = Callable[[str], None]

DEFAULT_CACHE_DIR = Path("/var/cache/modal-emulator")
CACHE_ENV = "MODAL_EMULATOR_BASE_CACHE"
#: Debian's python3 in bookworm: what stands in for every ``python:3.N`` reference.
BOOKWORM_PYTHON = "3.11"
#: Bump when a recipe changes, so that caches build the new base instead of reusing the old one.
RECIPE_VERSION = 1

_DEBIAN_ALIASES = {"bookworm": "bookworm", "12": "bookworm", "stable": "bookworm"}
_DEBIAN_TAG = re.compile(r"^(?P<release>[a-z0-9]+)(?P<slim>-slim)?$")
_PYTHON_TAG = re.compile(r"^(?P<version>3(?:\.\d+){0,2})-slim(?:-bookworm)?$")
#: dpkg path filters of Docker's official slim images: no docs (but copyrights), man pages, info or locales.
_SLIM_DPKG_OPTIONS = (
    "path-exclude=/usr/share/doc/*",
    "path-include=/usr/share/doc/*/copyright",
    "path-exclude=/usr/share/man/*",
    "path-exclude=/usr/share/info/*",
    "path-exclude=/usr/share/locale/*",
    "path-include=/usr/share/locale/locale.alias",
    "path-exclude=/usr/share/lintian/*",
)
_PYTHON_PACKAGES = ("python3", "python3-pip", "python3-venv")


class UnknownReference(Exception):
    """A reference the emulator can neither build nor find among the imported ones."""


class BaseBuildError(Exception):
    """Building or importing a base failed; the message says why."""


@dataclass(frozen=True)
class Recipe:
    """How to build a base the emulator knows: a Debian suite, slim or not, with or without Python."""

    suite: str
    slim: bool
    python: bool

    @property
    def key(self) -> str:
        name = f"debian-{self.suite}{'-slim' if self.slim else ''}{'-python3' if self.python else ''}"
        return f"{name}-r{RECIPE_VERSION}"


@dataclass(frozen=True)
class Base:
    """A published base: its root directory and what it was made from."""

    key: str
    rootfs: Path
    reference: str
    recipe: Recipe | None = None
    python_requested: str | None = None   # the 3.N a python reference asked for


def normalize(reference: str) -> str:
    """``docker.io/library/debian:bookworm-slim`` -> ``debian:bookworm-slim``; a missing tag is ``latest``."""
    ref = reference.strip()
    for prefix in ("docker.io/", "index.docker.io/", "registry-1.docker.io/"):
        if ref.startswith(prefix):
            ref = ref[len(prefix):]
    if ref.startswith("library/"):
        ref = ref[len("library/"):]
    name_part = ref.rsplit("/", 1)[-1]
    if ":" not in name_part and "@" not in name_part:
        ref += ":latest"
    return ref


def recipe_for(reference: str) -> tuple[Recipe, str | None] | None:
    """The recipe of a known reference and, for python references, the version asked for."""
    name, _, tag = normalize(reference).partition(":")
    if name == "debian":
        match = _DEBIAN_TAG.match(tag)
        if match and match["release"] in _DEBIAN_ALIASES:
            return Recipe(_DEBIAN_ALIASES[match["release"]], bool(match["slim"]), python=False), None
    if name == "python":
        match = _PYTHON_TAG.match(tag)
        if match:
            return Recipe("bookworm", slim=True, python=True), match["version"]
    return None


def _import_key(reference: str) -> str:
    normalized = normalize(reference)
    readable = re.sub(r"[^A-Za-z0-9._-]+", "_", normalized)[:80]
    digest = hashlib.sha256(normalized.encode()).hexdigest()[:12]
    return f"import-{readable}-{digest}"


def cache_dir(explicit: str | os.PathLike[str] | None = None) -> Path:
    """The base cache: the explicit path, else ``$MODAL_EMULATOR_BASE_CACHE``, else the default."""
    return Path(explicit or os.environ.get(CACHE_ENV) or DEFAULT_CACHE_DIR).absolute()


class BaseCache:
    def __init__(self, root: str | os.PathLike[str] | None = None) -> None:
        self.root = cache_dir(root)

    # -- lookup ----------------------------------------------------------------------------------

    def _published(self, key: str) -> Path:
        return self.root / "bases" / key

    def _import_pointer(self, reference: str) -> Path:
        return self.root / "imports" / f"{_import_key(reference)}.json"

    def find(self, reference: str) -> Base | None:
        """The cached base for `reference` (imported first, then a recipe's), or None if not built yet."""
        try:
            imported_key = json.loads(self._import_pointer(reference).read_text())["key"]
        except (OSError, ValueError, KeyError, TypeError):
            imported_key = None
        if imported_key and (self._published(imported_key) / "rootfs").is_dir():
            return Base(imported_key, self._published(imported_key) / "rootfs", normalize(reference))
        known = recipe_for(reference)
        if known is not None:
            recipe, version = known
            path = self._published(recipe.key)
            if (path / "rootfs").is_dir():
                return Base(recipe.key, path / "rootfs", normalize(reference), recipe, version)
        return None

    def resolve(self, reference: str, log: LogFn = lambda _text: None) -> Base:
        """The base for `reference`, building it first if it is a known one (blocking; may take a minute)."""
        found = self.find(reference)
        if found is not None:
            return found
        known = recipe_for(reference)
        if known is None:
            raise UnknownReference(
                f"image {reference!r} is not available in the emulator: it builds Debian references "
                f"(debian:bookworm, debian:bookworm-slim, debian:12, debian:12-slim, debian:stable-slim) and "
                f"python:3.N-slim[-bookworm] itself; import any other image first with "
                f"`modal-emulator image import {reference} SOURCE`, where SOURCE is a root-filesystem tarball "
                f"(docker export / podman export) or an OCI image layout (directory or archive)"
            )
        recipe, version = known
        with self._lock(recipe.key):
            found = self.find(reference)
            if found is None:
                self._publish(recipe.key, normalize(reference), lambda root: _build_recipe(recipe, root, log),
                              {"recipe": recipe.key, "suite": recipe.suite, "slim": recipe.slim,
                               "python": recipe.python})
                found = self.find(reference)
        assert found is not None
        return found

    # -- import ----------------------------------------------------------------------------------

    def import_image(self, reference: str, source: Path, log: LogFn = lambda _text: None) -> Base:
        """Make `reference` resolve to the root in `source` (a rootfs tarball or an OCI layout).

        Every import is a new base: importing the same reference again changes what new builds get, while
        images built on an earlier import (and sandboxes running on it) keep their root, which stays cached.
        """
        source = Path(source).absolute()
        if not source.exists():
            raise BaseBuildError(f"import source {str(source)!r} does not exist")
        name = _import_key(reference)
        with self._lock(name):
            key = f"{name}-{time.time_ns()}"
            self._publish(key, normalize(reference), lambda root: oci.unpack_source(source, root, log),
                          {"import_source": str(source)})
            pointer = self._import_pointer(reference)
            pointer.parent.mkdir(parents=True, exist_ok=True)
            staged = pointer.with_suffix(".tmp")
            staged.write_text(json.dumps({"key": key, "reference": normalize(reference)}) + "\n")
            staged.replace(pointer)
        found = self.find(reference)
        assert found is not None
        return found

    # -- building blocks ---------------------------------------------------------------------------

    @contextmanager
    def _lock(self, key: str) -> Iterator[None]:
        locks = self.root / "locks"
        locks.mkdir(parents=True, exist_ok=True)
        with open(locks / f"{key}.lock", "w") as handle:
            fcntl.flock(handle, fcntl.LOCK_EX)
            try:
                yield
            finally:
                fcntl.flock(handle, fcntl.LOCK_UN)

    def _publish(self, key: str, reference: str, fill: Callable[[Path], None], how: dict) -> None:
        """Fill a fresh directory with `fill`, then rename it into place (call with the key's lock held)."""
        tmp_root = self.root / "tmp"
        tmp_root.mkdir(parents=True, exist_ok=True)
        building = Path(tempfile.mkdtemp(prefix=f"{key}-", dir=tmp_root))
        os.chmod(building, 0o755)   # apt's unprivileged downloader must reach the root being built
        started = time.monotonic()
        try:
            rootfs = building / "rootfs"
            rootfs.mkdir()
            try:
                fill(rootfs)
            except oci.ImportFailed as exc:
                raise BaseBuildError(str(exc)) from exc
            _prepare_container_files(rootfs)
            meta = {"key": key, "reference": reference, "built_at": time.time(),
                    "build_seconds": round(time.monotonic() - started, 1), **how}
            (building / "base.json").write_text(json.dumps(meta, indent=2, sort_keys=True) + "\n")
            self._published(key).parent.mkdir(parents=True, exist_ok=True)
            building.rename(self._published(key))
        finally:
            if building.exists():
                shutil.rmtree(building, ignore_errors=True)


def _prepare_container_files(rootfs: Path) -> None:
    """What a container image has and a debootstrapped root lacks: /etc/hosts, an empty resolv.conf and
    hostname (a container runtime provides their content), and no host-specific machine id."""
    etc = rootfs / "etc"
    if not etc.is_dir():
        return
    for name in ("resolv.conf", "hostname"):
        path = etc / name
        if path.is_symlink() or path.is_file():
            path.unlink()
        if not path.exists():
            path.write_text("")
    hosts = etc / "hosts"
    if not hosts.exists() and not hosts.is_symlink():
        hosts.write_text("127.0.0.1\tlocalhost\n::1\tlocalhost ip6-localhost ip6-loopback\n")
    machine_id = etc / "machine-id"
    if machine_id.is_file():
        machine_id.write_text("")


def _build_recipe(recipe: Recipe, rootfs: Path, log: LogFn) -> None:
    mmdebstrap = find_tool("mmdebstrap")
    if mmdebstrap is None:
        raise BaseBuildError("building Debian bases needs mmdebstrap on this host (Debian package mmdebstrap)")
    sources = host_registry.debian_sources(recipe.suite)
    if not sources:
        raise BaseBuildError(
            f"the host's apt sources name no Debian mirror for {recipe.suite} (looked in /etc/apt/sources.list "
            f"and /etc/apt/sources.list.d/): cannot build a {recipe.suite} base")
    argv = [mmdebstrap, "--variant=minbase", "--mode=root", "--format=directory"]
    if recipe.slim:
        argv += [f"--dpkgopt={option}" for option in _SLIM_DPKG_OPTIONS]
    # The host's mirror options are needed to build, never kept in the image: the hook removes them.
    argv += [f"--aptopt={option}" for option in host_registry.apt_options()]
    argv.append('--customize-hook=rm -f "$1/etc/apt/apt.conf.d/99mmdebstrap"')
    if recipe.slim:
        # Keep the dpkg path excludes, as Docker's slim images do, under a name of their own.
        argv.append('--customize-hook=mv "$1/etc/dpkg/dpkg.cfg.d/99mmdebstrap" "$1/etc/dpkg/dpkg.cfg.d/docker-slim"')
    if recipe.python:
        argv.append("--include=" + ",".join(_PYTHON_PACKAGES))
        argv.append(
            '--customize-hook=ln -sf /usr/bin/python3 "$1/usr/local/bin/python"; '
            'ln -sf /usr/bin/python3 "$1/usr/local/bin/python3"; '
            'ln -sf /usr/bin/pip3 "$1/usr/local/bin/pip"; ln -sf /usr/bin/pip3 "$1/usr/local/bin/pip3"; '
            'rm -f "$1"/usr/lib/python3*/EXTERNALLY-MANAGED')
    argv.append('--customize-hook=rm -rf "$1"/var/lib/apt/lists/* "$1"/var/cache/apt/*.bin "$1"/var/log/apt/*')
    argv += [recipe.suite, str(rootfs), *(source.line() for source in sources)]
    log(f"building base {recipe.key} with mmdebstrap from the host's Debian mirror (once per machine)\n")
    # mmdebstrap wants an empty target directory, or none.
    rootfs.rmdir()
    _run_logged(argv, log)


def _run_logged(argv: list[str], log: LogFn) -> None:
    """Run `argv`, passing each output line to `log`; BaseBuildError with the output's tail on failure."""
    tail: list[str] = []
    with subprocess.Popen(argv, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, stdin=subprocess.DEVNULL,
                          text=True, errors="replace") as process:
        assert process.stdout is not None
        for line in process.stdout:
            log(line)
            tail = (tail + [line])[-30:]
        code = process.wait()
    if code != 0:
        raise BaseBuildError(f"{Path(argv[0]).name} exited with code {code}:\n{''.join(tail)}")
