# Copyright (c) 2026, the mngr.modal authors
# GNU General Public License v3.0+ (see COPYING or https://www.gnu.org/licenses/gpl-3.0.txt)

# This module is private to the mngr.modal collection: its interface may change at any time,
# do not use it from outside the collection.

"""Giving a host a sandbox: the image (built, or a snapshot's), the sandbox, the SSH bootstrap, the tunnel.

These are the raw Modal steps of a create or start, each with explicit arguments; ``modal_sandbox`` decides
when to take them and keeps the crash-safe order around them (reservation, key folder, record, tags).
Every failure is a :class:`CreateFailure` whose message ends with the tail of the relevant log.
"""

from __future__ import annotations

import collections
import contextlib
import os
import re
import time
from typing import Any, Iterator

from ansible_collections.mngr.modal.plugins.module_utils._build_args import (
    GPU_TYPES,
    BuildArgError,
    check_network,
    memory_mib,
    network_kwargs,
)
from ansible_collections.mngr.modal.plugins.module_utils._client import ModalError
from ansible_collections.mngr.modal.plugins.module_utils._dockerfile import DockerfilePlan, dockerfile_image, load_dockerfile
from ansible_collections.mngr.modal.plugins.module_utils._errors import ModalCollectionError
from ansible_collections.mngr.modal.plugins.module_utils._keys import CLIENT_KEY, HOST_KEY, KeyFolder
from ansible_collections.mngr.modal.plugins.module_utils._live import ssh_tunnel_endpoint
from ansible_collections.mngr.modal.plugins.module_utils._snapshots import SnapshotRecord
from ansible_collections.mngr.modal.plugins.module_utils._ssh import (
    INSTALL_EXEC_HOST_PACKAGES_COMMAND,
    INSTALL_HOST_PACKAGES_COMMAND,
    SSH_PORT,
    SshNotReady,
    bootstrap_env,
    bootstrap_script,
    sandbox_liveness,
    sshd_command,
    ssh_enabled,
    wait_for_ssh,
)
from ansible_collections.mngr.modal.plugins.module_utils._tags import encode_sandbox_tags

LOG_TAIL_LINES = 30


# --- build log capture -----------------------------------------------------------------------------


@contextlib.contextmanager
def captured_build_log(lines: "collections.deque[str]") -> Iterator[None]:
    """Collect image build output into ``lines`` while the SDK builds.

    The SDK sends build logs to its output manager, which is silent unless output is enabled. The
    public API offers no other way to read a build's log from Python, so this installs a silent manager
    that keeps the text (``modal._output``, a private module: if it moves, builds simply carry no log).
    """
    try:
        from modal._output.manager import DisabledOutputManager, OutputManager  # pylint: disable=import-outside-toplevel
    except ImportError:
        yield
        return

    class _Capture(DisabledOutputManager):  # type: ignore[misc, valid-type]
        async def put_streaming_log(self, log: Any, prefix: str = "") -> None:
            data = getattr(log, "data", "")
            if data:
                lines.extend(str(data).splitlines())

    previous = OutputManager.get()
    OutputManager._set(_Capture())  # pylint: disable=protected-access
    try:
        yield
    finally:
        OutputManager._set(previous)  # pylint: disable=protected-access


def tail(lines: Any, count: int = LOG_TAIL_LINES) -> str:
    text_lines = [line for line in (lines or []) if line is not None]
    return "\n".join(list(text_lines)[-count:])


class CreateFailure(ModalCollectionError):
    """Creating or bootstrapping failed; ``log`` is the tail of the relevant log, shown after the message."""

    def __init__(self, message: str, log: str = "", code: str | None = None) -> None:
        super().__init__(message, code=code or None)
        self.message = message
        self.log = log

    def fail_kwargs(self) -> dict[str, Any]:
        kwargs = super().fail_kwargs()
        if self.log:
            kwargs["msg"] += f"\n--- last lines of the log ---\n{self.log}"
        return kwargs


# --- failure messages for what users meet on Modal ---------------------------------------------------------

# What the host packages layer prints when the image lacks a package and has no package manager (see _ssh).
_LACKS_RE = re.compile(r"mngr\.modal: the image lacks (?P<missing>[^\n]+?) and has no apt-get, apk or dnf")
# How registries, Modal's builder and the emulator say that an image reference does not exist or cannot be pulled.
_IMAGE_NOT_FOUND_RE = re.compile(
    r"manifest unknown|manifest for \S+ not found|not found: manifest|pull access denied|repository does not exist|"
    r"name unknown|failed to resolve (?:source metadata|reference)|no such image|is not available in the emulator",
    re.IGNORECASE,
)
# How a failed build step reports its exit status (the emulator: "RUN ... exited with code 3"; Modal: "exit status: 3").
_STEP_EXIT_RE = re.compile(r"exited with code (\d+)|exit (?:status|code):? (\d+)", re.IGNORECASE)
# The SDK's wrapper around the builder's own message.
_SDK_BUILD_PREFIX_RE = re.compile(
    r"^(?:Modal SDK error \(\w+\):\s*)?Image build for \S+ failed(?: with the exception)?:?\s*", re.IGNORECASE
)


def _first_line(text: str, limit: int = 600) -> str:
    """The builder's own message, without the SDK's wrapper, on one line of at most ``limit`` characters."""
    text = _SDK_BUILD_PREFIX_RE.sub("", text.strip())
    line = next((line.strip() for line in text.splitlines() if line.strip()), "")
    return line if len(line) <= limit else line[:limit - 3] + "..."


def build_failure_message(description: str, reference: str, error: str, log_lines: Any) -> str:
    """Why building the image of a host failed, in words that say what to change.

    ``description`` says which image (``the image REF`` or ``the image from PATH``); ``reference`` is the registry
    reference it starts from; ``error`` is Modal's message; ``log_lines`` the build log.
    """
    text = "\n".join([error, *[line for line in (log_lines or []) if line]])
    lacks = _LACKS_RE.search(text)
    if lacks:
        missing = ", ".join(lacks.group("missing").split())
        return (f"{description} cannot be made ready for Ansible: it lacks {missing}, and has no apt-get, apk or dnf "
                f"to install them. Start from an image that has {missing}, or a package manager to install them (for "
                "example debian:bookworm-slim or python:3.11-slim)")
    if _IMAGE_NOT_FOUND_RE.search(text):
        return (f"the image reference {reference} could not be found (building {description} failed: "
                f"{_first_line(error)}). Check the name and the tag for typos, that the image exists for linux/amd64, "
                "and that its registry is public (Modal pulls images anonymously unless the image is given a secret)")
    step = _STEP_EXIT_RE.search(error)
    if step:
        code = step.group(1) or step.group(2)
        return (f"building {description} failed: a build step exited with code {code} ({_first_line(error)}). Its "
                "output is at the end of the build log below")
    return f"building {description} failed: {_first_line(error) or error}"


def gpu_refused(exc: ModalError) -> bool:
    """Whether Modal refused a create because of its GPU (a type it does not offer, or not in that region)."""
    return exc.code in ("INVALID_ARGUMENT", "FAILED_PRECONDITION", "NOT_FOUND") and "gpu" in exc.msg.lower()


def gpu_unavailable_message(gpu: str, region: str | None, exc: ModalError) -> str:
    """The GPU that was refused, and the types to try instead."""
    gpu_type = gpu.split(":", 1)[0]
    others = [other for other in GPU_TYPES if other.rstrip("!+") != gpu_type.rstrip("!+")]
    where = f" in region {region}" if region else ""
    return (f"Modal cannot give the sandbox GPU {gpu}{where} ({exc.msg}). Choose another GPU type: "
            f"{', '.join(others)} (see https://modal.com/docs/guide/gpu for what your workspace can use)"
            + (", or another region, or none" if region else ", or no GPU")
            + ". No sandbox was started")


def seconds_since(started: float, minus: float = 0.0) -> float:
    """Seconds since ``started`` (a time.monotonic() reading), less ``minus``, rounded; never negative."""
    return round(max(time.monotonic() - started - minus, 0.0), 2)


def check_spec_on_controller(spec: dict[str, Any], building: bool) -> DockerfilePlan | None:
    """The checks of a spec (requested, or read from a record) that depend on this controller.

    Returns the Dockerfile's plan when the image is built from one (``building``); a snapshot's image needs none.
    The secrets' values are read from the controller's environment whenever a sandbox is created.
    """
    check_network(spec)
    plan = None
    if building and spec.get("dockerfile"):
        # Paths from options arrive expanded (type=path); paths from build_args are expanded by _build_args.
        plan = load_dockerfile(spec["dockerfile"], spec["context_dir"], spec["docker_build_args"])
    for name in spec.get("secrets") or []:
        if name not in os.environ:
            raise BuildArgError(f"secret {name} names an environment variable that is not set on the controller")
    return plan


# --- the steps ------------------------------------------------------------------------------------------


def snapshot_image(session: Any, app: Any, record: SnapshotRecord) -> Any:
    """The snapshot's image, looked up now so that a vanished image fails before anything is created."""
    modal = session.modal
    image = modal.Image.from_id(record.image_id, client=session.client)
    try:
        # The SDK refuses to hydrate an image on demand; build() loads it (ImageFromId) without building.
        session.call(image.build, app)
    except ModalError as exc:
        raise CreateFailure(f"the image {record.image_id} of snapshot {record.name} cannot be used: {exc.msg}",
                            code=exc.code) from exc
    return image


def build_image(session: Any, app: Any, spec: dict[str, Any], dockerfile_plan: DockerfilePlan | None) -> Any:
    """Build the image before any sandbox exists, so a failed build can leave nothing behind."""
    modal = session.modal
    if spec["dockerfile"]:
        context_dir = spec["context_dir"] or os.path.dirname(os.path.abspath(spec["dockerfile"]))
        image = dockerfile_image(modal, dockerfile_plan, context_dir)
        description = f"the image from {spec['dockerfile']}"
        reference = dockerfile_plan.base
    else:
        image = modal.Image.from_registry(spec["image"])
        description = f"the image {spec['image']}"
        reference = spec["image"]
    # The same layer definition for every host, so Modal's image cache builds it once per image: the second
    # host from an image builds nothing.
    image = image.run_commands(INSTALL_HOST_PACKAGES_COMMAND if ssh_enabled(spec) else INSTALL_EXEC_HOST_PACKAGES_COMMAND)
    log: collections.deque[str] = collections.deque(maxlen=200)
    try:
        with captured_build_log(log):
            session.call(image.build, app)
    except ModalError as exc:
        raise CreateFailure(build_failure_message(description, reference, exc.msg, log), tail(log),
                            exc.code) from exc
    return image


def create_sandbox(session: Any, app: Any, image: Any, spec: dict[str, Any], host_id: str, name: str,
                   user_tags: dict[str, str]) -> Any:
    modal = session.modal
    kwargs: dict[str, Any] = {
        "app": app,
        "image": image,
        "timeout": spec["timeout"],
        "cpu": spec["cpu"],
        "memory": memory_mib(spec),
        # A host without SSH has no open port at all: only Modal's exec API reaches it.
        "unencrypted_ports": [SSH_PORT] if ssh_enabled(spec) else [],
        "tags": encode_sandbox_tags(host_id, name, user_tags),
        "client": session.client,
    }
    if spec["gpu"]:
        kwargs["gpu"] = spec["gpu"]
    if spec["region"]:
        kwargs["region"] = spec["region"]
    if spec["idle_timeout"]:
        kwargs["idle_timeout"] = spec["idle_timeout"]
    kwargs.update(network_kwargs(spec))
    if spec["env"]:
        kwargs["env"] = dict(spec["env"])
    if spec["secrets"]:
        kwargs["secrets"] = [modal.Secret.from_dict({key: os.environ[key] for key in spec["secrets"]})]
    if spec["volumes"]:
        kwargs["volumes"] = {
            volume["path"]: modal.Volume.from_name(volume["name"], create_if_missing=True,
                                                   environment_name=session.environment)
            for volume in spec["volumes"]
        }
    # The entrypoint only keeps the sandbox alive; sshd is started by an exec once the keys are in place.
    try:
        return session.call(modal.Sandbox.create, "sleep", "infinity", **kwargs)
    except ModalError as exc:
        if spec["gpu"] and gpu_refused(exc):
            raise CreateFailure(gpu_unavailable_message(spec["gpu"], spec["region"], exc), code=exc.code) from exc
        raise


def tunnel_endpoint(session: Any, sandbox: Any, timeout: int) -> tuple[str, int]:
    endpoint = ssh_tunnel_endpoint(session.call, sandbox, timeout)
    if endpoint is None:
        raise CreateFailure(f"the sandbox has no tunnel for port {SSH_PORT}")
    return endpoint


def bootstrap(session: Any, sandbox: Any, folder: KeyFolder, spec: dict[str, Any], authorized_keys: list[str],
              wait: bool, wait_timeout: int, timings: dict[str, float]) -> tuple[str, int]:
    """Keys in with one exec, sshd started with another, tunnel read and pinned, then a real login.

    ``timings["ssh_wait"]`` is set to the seconds the login took to succeed (0.0 without ``wait``).
    """
    name = folder.name
    env = bootstrap_env(folder.read_public(CLIENT_KEY), folder.read_private(HOST_KEY), folder.read_public(HOST_KEY),
                        authorized_keys, login_env=spec.get("env"))
    setup = session.call(sandbox.exec, "sh", "-c", bootstrap_script(), env=env)
    code = session.call(setup.wait)
    output = session.call(setup.stdout.read) + session.call(setup.stderr.read)
    if code != 0:
        raise CreateFailure(f"bootstrapping SSH in host {name} failed (exit code {code})", tail(output.splitlines()))
    sshd = session.call(sandbox.exec, *sshd_command())
    endpoint = tunnel_endpoint(session, sandbox, wait_timeout)
    folder.pin(*endpoint)
    wait_started = time.monotonic()
    timings["ssh_wait"] = 0.0
    if wait:
        try:
            wait_for_ssh(endpoint[0], endpoint[1], folder.client_key, folder.known_hosts,
                         wait_timeout, sandbox_liveness(sandbox, sshd))
        except SshNotReady as exc:
            log = exc.last_error
            try:
                if sshd.poll() is not None:
                    log = (log + "\n" + sshd.stderr.read()).strip()
            except Exception:  # pylint: disable=broad-exception-caught
                pass
            raise CreateFailure(f"host {name}: {exc}", tail(log.splitlines())) from exc
        timings["ssh_wait"] = seconds_since(wait_started)
    return endpoint
