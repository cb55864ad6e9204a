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
from typing import Any, Iterator

from ansible_collections.mngr.modal.plugins.module_utils._build_args import memory_mib, network_kwargs
from ansible_collections.mngr.modal.plugins.module_utils._client import ModalError
from ansible_collections.mngr.modal.plugins.module_utils._dockerfile import DockerfilePlan, dockerfile_image
from ansible_collections.mngr.modal.plugins.module_utils._errors import ModalCollectionError
from ansible_collections.mngr.modal.plugins.module_utils._keys import CLIENT_KEY, HOST_KEY, KeyFolder
from ansible_collections.mngr.modal.plugins.module_utils._live import ssh_tunnel_endpoint
from ansible_collections.mngr.modal.plugins.module_utils._snapshots import SnapshotRecord
from ansible_collections.mngr.modal.plugins.module_utils._ssh import (
    INSTALL_HOST_PACKAGES_COMMAND,
    SSH_PORT,
    SshNotReady,
    bootstrap_env,
    bootstrap_script,
    sandbox_liveness,
    sshd_command,
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
    else:
        image = modal.Image.from_registry(spec["image"])
        description = f"the image {spec['image']}"
    image = image.run_commands(INSTALL_HOST_PACKAGES_COMMAND)
    log: collections.deque[str] = collections.deque(maxlen=200)
    try:
        with captured_build_log(log):
            session.call(image.build, app)
    except ModalError as exc:
        raise CreateFailure(f"building {description} failed: {exc.msg}", tail(log), exc.code) from exc
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
        "unencrypted_ports": [SSH_PORT],
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
    return session.call(modal.Sandbox.create, "sleep", "infinity", **kwargs)


def tunnel_endpoint(session: Any, sandbox: Any, timeout: int) -> tuple[str, int]:
    endpoint = ssh_tunnel_endpoint(session.call, sandbox, timeout)
    if endpoint is None:
        raise CreateFailure(f"the sandbox has no tunnel for port {SSH_PORT}")
    return endpoint


def bootstrap(session: Any, sandbox: Any, folder: KeyFolder, spec: dict[str, Any], authorized_keys: list[str],
              wait: bool, wait_timeout: int) -> tuple[str, int]:
    """Keys in with one exec, sshd started with another, tunnel read and pinned, then a real login."""
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
    return endpoint
