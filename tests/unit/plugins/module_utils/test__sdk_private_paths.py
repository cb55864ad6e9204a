# Copyright (c) 2026, the mngr.modal authors
# GNU General Public License v3.0+ (see COPYING or https://www.gnu.org/licenses/gpl-3.0.txt)
"""The private corners of the modal SDK that the collection reaches into, against the installed SDK.

At run time each of these paths degrades quietly when a new SDK moves it (a build without its log, one call more per
sandbox in a listing, a vaguer reason why a host ended). These tests make the move loud instead: each one imports
the private path directly and runs the collection's code through it, so an SDK release that moves it fails here.
"""

from __future__ import annotations

import asyncio
import collections
import inspect
import types

import modal
import pytest

# The private paths themselves: an ImportError here is the loud failure.
from modal._output.manager import DisabledOutputManager, OutputManager
from modal._utils.async_utils import synchronizer
from modal.sandbox._impl_v1 import SandboxImplV1
from modal.sandbox._impl_v2 import SandboxImplV2
from modal_proto import api_pb2

from ansible_collections.mngr.modal.plugins.module_utils import _live
from ansible_collections.mngr.modal.plugins.module_utils._provision import captured_build_log
from ansible_collections.mngr.modal.plugins.module_utils._tags import TAG_HOST_ID

# --- _provision.captured_build_log: modal._output.manager ------------------------------------------------------


def test_build_log_capture_replaces_and_restores_the_output_manager():
    lines: collections.deque[str] = collections.deque()
    before = OutputManager.get()
    with captured_build_log(lines):
        capture = OutputManager.get()
        assert capture is not before, "captured_build_log did not install its manager: modal._output moved?"
        assert isinstance(capture, DisabledOutputManager)
        asyncio.run(capture.put_streaming_log(api_pb2.TaskLogs(data="Step 1/2\nStep 2/2\n")))
    assert OutputManager.get() is before
    assert list(lines) == ["Step 1/2", "Step 2/2"]


def test_output_manager_hooks_keep_their_shape():
    assert inspect.iscoroutinefunction(DisabledOutputManager.put_streaming_log)
    assert list(inspect.signature(DisabledOutputManager.put_streaming_log).parameters) == ["self", "log", "prefix"]
    assert callable(OutputManager._set)  # pylint: disable=protected-access


# --- _live.list_page_details and ended_details: the list pages of modal.sandbox._impl_v1/_impl_v2 --------------


@pytest.mark.parametrize("impl", [SandboxImplV1, SandboxImplV2])
def test_list_page_is_a_classmethod_coroutine_of_client_and_request(impl):
    method = inspect.getattr_static(impl, "list_page")
    assert isinstance(method, classmethod)
    assert inspect.iscoroutinefunction(impl.list_page)
    assert list(inspect.signature(impl.list_page).parameters) == ["client", "req"]


def test_synchronizer_runs_a_coroutine_function_blocking():
    async def double(value: int) -> int:
        return 2 * value

    assert synchronizer.create_blocking(double)(21) == 42


def test_sandbox_v2_setting_is_a_boolean():
    assert modal.config.config.get("sandbox_v2") in (True, False)


def sandbox_info(sandbox_id: str, created_at: float, **tags: str) -> api_pb2.SandboxInfo:
    info = api_pb2.SandboxInfo(id=sandbox_id, created_at=created_at)
    info.tags.extend(api_pb2.SandboxTag(tag_name=name, tag_value=value) for name, value in tags.items())
    info.tunnels.append(api_pb2.TunnelData(container_port=22, unencrypted_host="r.example", unencrypted_port=2201))
    info.task_info.gpu_config.gpu_type = "H100"
    info.task_info.gpu_config.count = 2
    return info


@pytest.mark.parametrize("sandbox_v2", [True, False])
def test_list_page_details_pages_through_the_sdk_classes(monkeypatch, sandbox_v2):
    """The whole path, with only the RPC replaced: pages until an empty page, newest first, details kept."""
    pages = [
        [sandbox_info("sb-2", 200.0, mngr_host_id="host-2"), sandbox_info("sb-1", 100.0, mngr_host_id="host-1")],
        [],
    ]
    requests: list[api_pb2.SandboxListRequest] = []
    used = SandboxImplV2 if sandbox_v2 else SandboxImplV1
    unused = SandboxImplV1 if sandbox_v2 else SandboxImplV2

    async def list_page(cls, client, req):  # noqa: ANN001, ANN202 - the SDK's own signature
        assert cls is used
        requests.append(req)
        return api_pb2.SandboxListResponse(sandboxes=pages[len(requests) - 1])

    async def wrong_family(cls, client, req):  # noqa: ANN001, ANN202
        raise AssertionError(f"{cls.__name__}.list_page used with sandbox_v2={sandbox_v2}")

    monkeypatch.setattr(used, "list_page", classmethod(list_page))
    monkeypatch.setattr(unused, "list_page", classmethod(wrong_family))
    monkeypatch.setattr(modal.config.config, "get", lambda key: sandbox_v2 if key == "sandbox_v2" else None)

    listed = _live.list_page_details(modal, types.SimpleNamespace(), "ap-1")

    assert listed is not None, "list_page_details fell back to the public listing: a private SDK path moved"
    assert [entry["id"] for entry in listed] == ["sb-2", "sb-1"]
    assert listed[0]["tags"] == {"mngr_host_id": "host-2"}
    assert listed[0]["ssh"] == ["r.example", 2201]
    assert listed[0]["gpu"] == "H100:2"
    assert [(req.app_id, req.before_timestamp, req.include_finished) for req in requests] == [
        ("ap-1", 0.0, False), ("ap-1", 100.0, False)]


def test_finished_sandbox_info_reads_one_page_filtered_by_host_tag(monkeypatch):
    finished = sandbox_info("sb-9", 50.0, mngr_host_id="host-9")
    finished.task_info.result.status = api_pb2.GenericResult.GENERIC_STATUS_TIMEOUT
    finished.task_info.finished_at = 60.0
    requests = []

    async def list_page(cls, client, req):  # noqa: ANN001, ANN202
        requests.append(req)
        return api_pb2.SandboxListResponse(sandboxes=[finished])

    monkeypatch.setattr(SandboxImplV2, "list_page", classmethod(list_page))
    monkeypatch.setattr(SandboxImplV1, "list_page", classmethod(list_page))

    info = _live._finished_sandbox_info(modal, types.SimpleNamespace(), "host-9", "sb-9")  # pylint: disable=protected-access

    assert info.id == "sb-9"
    assert api_pb2.GenericResult.GenericStatus.Name(info.task_info.result.status) == "GENERIC_STATUS_TIMEOUT"
    (request,) = requests
    assert request.include_finished
    assert [(tag.tag_name, tag.tag_value) for tag in request.tags] == [(TAG_HOST_ID, "host-9")]
