# Copyright (c) 2026, the mngr.modal authors
# GNU General Public License v3.0+ (see COPYING or https://www.gnu.org/licenses/gpl-3.0.txt)
"""Print, as JSON, what the Modal API server holds for one sandbox: resources, timeout and tags.

Usage: wire_spec.py SANDBOX_ID APP_NAME. Reads the server's own sandbox list (SandboxList), so the test
checks what reached the server, not what the module says it sent.
"""

from __future__ import annotations

import asyncio
import json
import sys

from modal.app import _App
from modal.client import _Client
from modal.sandbox._impl_v1 import SandboxImplV1
from modal_proto import api_pb2


async def main(sandbox_id: str, app_name: str) -> int:
    client = await _Client.from_env()
    app = await _App.lookup(app_name, client=client)
    request = api_pb2.SandboxListRequest(app_id=app.app_id, include_finished=True)
    while True:
        response = await SandboxImplV1.list_page(client, request)
        if not response.sandboxes:
            print(json.dumps({"error": f"sandbox {sandbox_id} not listed"}))
            return 1
        for info in response.sandboxes:
            if info.id == sandbox_id:
                resources = info.resource_info
                print(json.dumps({
                    "milli_cpu": resources.milli_cpu.value,
                    "memory_mb": resources.memory_mb.value,
                    "gpu_type": resources.gpu_type,
                    "timeout_secs": info.timeout_secs,
                    "image_id": info.image_id,
                    "tags": {tag.tag_name: tag.tag_value for tag in info.tags},
                    "finished": info.task_info.result.status != 0,
                }))
                return 0
        request.before_timestamp = response.sandboxes[-1].created_at


if __name__ == "__main__":
    sys.exit(asyncio.run(main(sys.argv[1], sys.argv[2])))
