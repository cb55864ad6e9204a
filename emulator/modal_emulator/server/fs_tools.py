"""Put the SDK's file tool inside every sandbox, as one small image layer on top of its image.

``Sandbox.filesystem.*`` in the SDK execs ``/__modal/.bin/modal-sandbox-fs-tools`` inside the
sandbox; Modal provides that binary on its workers. The emulator provides
:mod:`.sandbox_fs_tool` (a stdlib-only Python script run by the sandbox's ``python3``) at that path,
in a layer whose id is derived from the script's content, so an updated script gets a new layer and
old sandboxes keep theirs. The layer is the topmost lower layer of each sandbox: it is not part of
the image, so filesystem snapshots do not copy it (they copy the writable layer only).
"""

from __future__ import annotations

import asyncio
import hashlib
import pathlib

from .core import EmulatorState

#: Where the SDK expects the tool (``modal/sandbox/_filesystem.py``).
FS_TOOLS_PATH = "/__modal/.bin/modal-sandbox-fs-tools"
_SCRIPT = pathlib.Path(__file__).with_name("sandbox_fs_tool.py")


def fs_tools_layer_id(script: bytes) -> str:
    return "fs-tools-" + hashlib.sha256(script).hexdigest()[:24]


async def ensure_fs_tools_layer(state: EmulatorState) -> str:
    """The id of the layer holding the file tool, created in the store on first use."""
    from modal_emulator.runtime.build import write_files_layer

    store = state.require_store()
    script = _SCRIPT.read_bytes()
    layer_id = fs_tools_layer_id(script)
    lock: asyncio.Lock = state.services.setdefault("fs_tools_lock", asyncio.Lock())
    async with lock:
        if not store.has_layer(layer_id):
            await asyncio.to_thread(write_files_layer, store, layer_id, [(FS_TOOLS_PATH, script, 0o755)])
    return layer_id
