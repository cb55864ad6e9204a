"""The emulator process itself: fault flags, clean shutdown, the kill command, refusing non-root."""

from __future__ import annotations

import json
import os
import pathlib
import random
import subprocess
import sys
import time

import modal
import pytest
from modal.exception import InvalidError, NotFoundError

from sdk_harness import EMULATOR, EmulatorProcess, serving_emulator


def sandbox_pids(state_dir: pathlib.Path) -> list[int]:
    pids = []
    for pid_file in (state_dir / "run").glob("*.pid"):
        record = json.loads(pid_file.read_text())
        pids += [record["init_pid"], record["launcher_pid"]]
    return pids


def alive(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    return pathlib.Path(f"/proc/{pid}/stat").read_text().split()[2] != "Z"


def mounts_under(path: pathlib.Path) -> list[str]:
    prefix = str(path.resolve())
    lines = pathlib.Path("/proc/self/mountinfo").read_text().splitlines()
    return [line.split()[4] for line in lines if line.split()[4].startswith(prefix)]


@pytest.fixture
def own_server(tmp_path: pathlib.Path, request: pytest.FixtureRequest):
    """A server for one test, with extra command line flags given by the test's ``server_args`` mark."""
    mark = request.node.get_closest_marker("server_args")
    with serving_emulator(tmp_path, tuple(mark.args if mark else ())) as server:
        yield server


def test_clean_shutdown_leaves_nothing(own_server: EmulatorProcess) -> None:
    app = modal.App.lookup("lifecycle", create_if_missing=True)
    first = modal.Sandbox.create("sleep", "1000", app=app, unencrypted_ports=[22])
    modal.Sandbox.create(app=app).exec("bash", "-c", "sleep 1000 &")
    assert first.poll() is None
    pids = sandbox_pids(own_server.state_dir)
    assert pids and all(alive(pid) for pid in pids)
    assert mounts_under(own_server.state_dir)
    assert own_server.stop() == 0  # it exits once every sandbox has stopped
    assert [pid for pid in pids if alive(pid)] == []
    assert mounts_under(own_server.state_dir) == []


def test_kill_command(own_server: EmulatorProcess, sandbox_api) -> None:
    app = modal.App.lookup("lifecycle", create_if_missing=True)
    sb = modal.Sandbox.create("sleep", "1000", app=app)
    result = subprocess.run(
        [EMULATOR, "kill", sb.object_id, "--state-dir", str(own_server.state_dir)], capture_output=True, text=True
    )
    assert result.returncode == 0, result.stderr
    sb.wait(raise_on_termination=False)
    assert sb.returncode not in (None, 0)
    missing = subprocess.run(
        [EMULATOR, "kill", sb.object_id, "--state-dir", str(own_server.state_dir)], capture_output=True, text=True
    )
    assert missing.returncode != 0


@pytest.mark.server_args("--fail", "AppGetOrCreate=1.0:NOT_FOUND", "--latency-ms", "50")
def test_fault_flag_fails_the_named_rpc(own_server: EmulatorProcess) -> None:
    with pytest.raises(NotFoundError, match="injected"):
        modal.App.lookup("faulty", create_if_missing=True)
    # Other RPCs are untouched (only delayed).
    assert modal.Secret.from_dict({"A": "1"}).hydrate().object_id.startswith("st-")


@pytest.mark.server_args("--unavailable-gpu", "h100", "--unavailable-gpu", "B200")
def test_unavailable_gpu_is_refused_as_modal_refuses_it(own_server: EmulatorProcess) -> None:
    app = modal.App.lookup("gpus", create_if_missing=True)
    with pytest.raises(InvalidError, match="^H100 is not a valid GPU type$"):
        modal.Sandbox.create("sleep", "100", app=app, gpu="H100:2")
    with pytest.raises(InvalidError, match="B200 is not a valid GPU type"):
        modal.Sandbox.create("sleep", "100", app=app, gpu="b200")
    # Nothing was started for the refused creates; other types still work.
    assert list(modal.Sandbox.list(app_id=app.app_id)) == []
    sb = modal.Sandbox.create("sleep", "100", app=app, gpu="A10G")
    sb.terminate()


FAULT_RATE = 0.1
FAULT_SEED = 1
LOOKUPS = 20


def faults_the_seed_injects(calls: int) -> int:
    """How many AppGetOrCreate attempts the seeded server fails during ``calls`` SDK calls.

    The server draws one number per attempt, the SDK makes up to 1 + DEFAULT_MAX_RETRIES attempts per call.
    """
    from modal._utils.grpc_utils import DEFAULT_MAX_RETRIES

    rng = random.Random(FAULT_SEED)
    faults = 0
    for _ in range(calls):
        for _attempt in range(1 + DEFAULT_MAX_RETRIES):
            if rng.random() >= FAULT_RATE:
                break
            faults += 1
        else:
            raise AssertionError(f"seed {FAULT_SEED} fails every attempt of a call: choose another")
    return faults


@pytest.mark.server_args("--fail", f"AppGetOrCreate={FAULT_RATE}", "--fault-seed", str(FAULT_SEED))
def test_retryable_faults_are_absorbed_by_sdk_retries(own_server: EmulatorProcess) -> None:
    expected = faults_the_seed_injects(1 + LOOKUPS)
    assert expected >= 2  # the seed exercises retries, including a retry that fails again
    app = modal.App.lookup("flaky", create_if_missing=True)
    for _ in range(LOOKUPS):
        assert modal.App.lookup("flaky").app_id == app.app_id
    assert own_server.log_tail(1_000_000).count("fault injected: AppGetOrCreate") == expected


@pytest.mark.server_args("--list-omits-details")
def test_list_omits_details(own_server: EmulatorProcess) -> None:
    import asyncio
    import urllib.parse

    from grpclib.client import Channel
    from modal_proto import api_pb2
    from modal_proto.api_grpc import ModalClientStub

    app = modal.App.lookup("details", create_if_missing=True)
    sb = modal.Sandbox.create(app=app, tags={"k": "v"}, unencrypted_ports=[22])

    async def list_page() -> api_pb2.SandboxListResponse:
        url = urllib.parse.urlparse(own_server.url)
        channel = Channel(url.hostname, url.port)
        try:
            return await ModalClientStub(channel).SandboxList(api_pb2.SandboxListRequest(app_id=app.app_id))
        finally:
            channel.close()

    page = asyncio.run(list_page())
    assert [info.id for info in page.sandboxes] == [sb.object_id]
    assert not page.sandboxes[0].tags and not page.sandboxes[0].tunnels
    assert sb.get_tags() == {"k": "v"}


def test_refuses_without_root(tmp_path: pathlib.Path) -> None:
    if os.geteuid() != 0:
        pytest.skip("needs root to drop privileges")
    result = subprocess.run(
        ["setpriv", "--reuid=65534", "--regid=65534", "--clear-groups", sys.executable, "-m", "modal_emulator.cli",
         "serve", "--state-dir", str(tmp_path / "s")],
        capture_output=True, text=True, timeout=60,
    )
    assert result.returncode != 0
    assert "root" in result.stderr


def test_serve_prints_modal_server_url_before_any_other_url(tmp_path: pathlib.Path) -> None:
    """With stdout and stderr in one log (as tools/emulator.sh does), the first URL a user sees is the one to use."""
    log_path, ready_file = tmp_path / "serve.log", tmp_path / "ready"
    with log_path.open("wb") as log:
        process = subprocess.Popen(
            [EMULATOR, "serve", "--state-dir", str(tmp_path / "state"), "--ready-file", str(ready_file)],
            stdout=log, stderr=subprocess.STDOUT, start_new_session=True,
        )
    try:
        deadline = time.monotonic() + 90
        while not ready_file.exists() and process.poll() is None and time.monotonic() < deadline:
            time.sleep(0.05)
        time.sleep(0.2)  # anything logged right after the announcement is in the log too
    finally:
        process.terminate()
        process.wait(60)
    lines_with_urls = [line for line in log_path.read_text().splitlines() if "http://" in line]
    assert lines_with_urls, log_path.read_text()
    assert lines_with_urls[0].startswith("MODAL_SERVER_URL=http://"), lines_with_urls
    assert any("HTTP side server" in line for line in lines_with_urls[1:]), lines_with_urls
