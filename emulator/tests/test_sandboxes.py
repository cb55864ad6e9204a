"""Sandboxes through the real SDK, in both API families: the sandbox guide's examples, run unchanged."""

from __future__ import annotations

import time

import modal
import pytest
from modal.exception import AlreadyExistsError, NotFoundError, SandboxTimeoutError

from sdk_harness import is_v1_id


def create(sandboxes: list, *args: str, **kwargs) -> modal.Sandbox:
    sb = modal.Sandbox.create(*args, **kwargs)
    sandboxes.append(sb)
    return sb


def test_app_lookup_is_stable(emulator) -> None:
    first = modal.App.lookup("emulator-apps", create_if_missing=True)
    again = modal.App.lookup("emulator-apps")
    assert first.app_id == again.app_id and first.app_id.startswith("ap-")
    with pytest.raises(NotFoundError):
        modal.App.lookup("emulator-no-such-app")


def test_id_shape_follows_family(app, sandbox_api, sandboxes) -> None:
    sb = create(sandboxes, app=app)
    assert is_v1_id(sb.object_id) == (sandbox_api == "v1")


def test_exec_output_and_exit_codes(app, sandbox_api, sandboxes) -> None:
    sb = create(sandboxes, app=app)
    p = sb.exec("python", "-c", "import sys; print('hello'); print('oops', file=sys.stderr); sys.exit(3)")
    assert p.stdout.read() == "hello\n"
    assert p.stderr.read() == "oops\n"
    assert p.wait() == 3
    assert p.returncode == 3
    p = sb.exec("bash", "-c", "for i in 1 2 3; do echo line $i; done", bufsize=1)
    assert [line for line in p.stdout] == ["line 1\n", "line 2\n", "line 3\n"]
    assert p.wait() == 0


def test_exec_stdin(app, sandbox_api, sandboxes) -> None:
    sb = create(sandboxes, app=app)
    p = sb.exec("bash", "-c", "while read line; do echo \"got $line\"; done")
    p.stdin.write(b"foo bar\n")
    p.stdin.write(b"baz\n")
    p.stdin.write_eof()
    p.stdin.drain()
    p.wait()
    assert p.stdout.read() == "got foo bar\ngot baz\n"


def test_env_and_secrets(app, sandbox_api, sandboxes) -> None:
    secret = modal.Secret.from_dict({"FROM_SECRET": "s3cr3t"})
    sb = create(sandboxes, app=app, secrets=[secret], env={"FROM_ENV": "e1"}, workdir="/tmp")
    p = sb.exec("bash", "-c", "echo $FROM_SECRET $FROM_ENV $EXEC_ONLY $(pwd)", env={"EXEC_ONLY": "x1"})
    assert p.stdout.read().split() == ["s3cr3t", "e1", "x1", "/tmp"]
    p = sb.exec("bash", "-c", "echo $EXEC_SECRET", secrets=[modal.Secret.from_dict({"EXEC_SECRET": "y2"})])
    assert p.stdout.read() == "y2\n"


def test_entrypoint_output_and_exit(app, sandbox_api, sandboxes) -> None:
    sb = create(sandboxes, "bash", "-c", "echo out; echo err >&2; exit 7", app=app)
    sb.wait(raise_on_termination=False)
    assert sb.returncode == 7
    assert sb.stdout.read() == "out\n"
    assert sb.stderr.read() == "err\n"


def test_entrypoint_hello_world(app, sandbox_api, sandboxes) -> None:
    sandbox = create(sandboxes, "echo", "hello world", app=app)
    print(sandbox.stdout.read())
    sandbox.wait()
    assert sandbox.returncode == 0


def test_isolation(app, sandbox_api, sandboxes) -> None:
    a = create(sandboxes, app=app)
    b = create(sandboxes, app=app)
    a.exec("bash", "-c", "echo secret > /tmp/only-in-a && mkdir -p /root/x").wait()
    assert b.exec("test", "-e", "/tmp/only-in-a").wait() != 0
    # Each sandbox has its own PID namespace and hostname, and the emulator's state dir is hidden.
    assert a.exec("bash", "-c", "test $$ -lt 1000").wait() == 0
    host_a = a.exec("hostname").stdout.read()
    host_b = b.exec("hostname").stdout.read()
    assert host_a != host_b


def test_poll_terminate_wait(app, sandbox_api, sandboxes) -> None:
    sb = create(sandboxes, "sleep", "300", app=app)
    assert sb.poll() is None
    sb.terminate()
    sb.wait(raise_on_termination=False)
    assert sb.returncode == 137
    assert sb.poll() == 137
    again = modal.Sandbox.from_id(sb.object_id)
    assert again.returncode == 137


def test_terminate_with_wait(app, sandbox_api, sandboxes) -> None:
    sb = create(sandboxes, app=app)
    assert sb.terminate(wait=True) == 137


def test_timeout_terminates(app, sandbox_api, sandboxes) -> None:
    sb = create(sandboxes, "sleep", "300", app=app, timeout=2)
    with pytest.raises(SandboxTimeoutError):
        sb.wait()
    assert sb.returncode == 124


def test_tags_list_and_filters(app, sandbox_api, sandboxes) -> None:
    run = f"run-{time.time_ns()}"
    tagged = create(sandboxes, app=app, tags={"run": run, "role": "web"})
    other = create(sandboxes, app=app, tags={"run": run, "role": "db"})
    assert tagged.get_tags() == {"run": run, "role": "web"}
    other.set_tags({"run": run, "role": "cache"})
    assert other.get_tags() == {"run": run, "role": "cache"}
    listed = {sb.object_id for sb in modal.Sandbox.list(app_id=app.app_id, tags={"run": run})}
    assert listed == {tagged.object_id, other.object_id}
    web = [sb.object_id for sb in modal.Sandbox.list(app_id=app.app_id, tags={"run": run, "role": "web"})]
    assert web == [tagged.object_id]
    other.terminate()
    other.wait(raise_on_termination=False)
    listed = {sb.object_id for sb in modal.Sandbox.list(app_id=app.app_id, tags={"run": run})}
    assert listed == {tagged.object_id}


def test_named_sandbox_from_name_and_uniqueness(app, sandbox_api, sandboxes) -> None:
    name = f"named-{sandbox_api}-{time.time_ns()}"
    sb = create(sandboxes, app=app, name=name)
    found = modal.Sandbox.from_name("emulator-tests", name)
    assert found.object_id == sb.object_id
    with pytest.raises(AlreadyExistsError):
        create(sandboxes, app=app, name=name)
    sb.terminate()
    sb.wait(raise_on_termination=False)
    with pytest.raises(NotFoundError):
        modal.Sandbox.from_name("emulator-tests", name)
    reused = create(sandboxes, app=app, name=name)
    assert reused.object_id != sb.object_id


def test_from_id_exec(app, sandbox_api, sandboxes) -> None:
    sb = create(sandboxes, app=app)
    handle = modal.Sandbox.from_id(sb.object_id)
    p = handle.exec("echo", "via from_id")
    assert p.stdout.read() == "via from_id\n"
    assert handle.poll() is None


def test_exec_timeout(app, sandbox_api, sandboxes) -> None:
    sb = create(sandboxes, app=app)
    p = sb.exec("sleep", "100", timeout=1)
    assert p.wait() == -1  # the SDK reports an exec that outlived its timeout as -1


def test_resources_are_accepted(app, sandbox_api, sandboxes) -> None:
    sb = create(sandboxes, app=app, cpu=0.5, memory=256)
    assert sb.exec("true").wait() == 0


def test_list_pages_report_requested_resources(app, sandboxes) -> None:
    """SandboxInfo.resource_info carries what Sandbox.create asked for (cpu in milli-cores, memory in MiB, GPU)."""
    from modal._utils.async_utils import synchronizer
    from modal.sandbox._impl_v1 import SandboxImplV1
    from modal_proto import api_pb2

    plain = create(sandboxes, app=app, cpu=2.0, memory=3072)
    gpu = create(sandboxes, app=app, gpu="h100:2")

    async def first_page(client) -> dict[str, api_pb2.SandboxInfo]:
        # The SDK's client lives on its own event loop: run the page read there (synchronicity also
        # hands the coroutine the client's async object).
        request = api_pb2.SandboxListRequest(app_id=app.app_id)
        response = await SandboxImplV1.list_page(client, request)
        return {info.id: info for info in response.sandboxes}

    infos = synchronizer.create_blocking(first_page)(modal.Client.from_env())
    assert infos[plain.object_id].resource_info.milli_cpu.value == 2000
    assert infos[plain.object_id].resource_info.memory_mb.value == 3072
    assert infos[plain.object_id].resource_info.gpu_type == ""
    assert infos[gpu.object_id].resource_info.gpu_type == "H100"
    assert infos[gpu.object_id].task_info.gpu_type == "H100"
