"""Snapshots: the writable layer, copied to a new layer, restores files, deletions and metadata."""

from __future__ import annotations

import asyncio
import os

from runtime_helpers import running, sh, spec, unique

from modal_emulator.runtime.build import write_files_layer
from modal_emulator.runtime.store import Store


def test_snapshot_restores_written_files_and_keeps_deletions(store: Store) -> None:
    base, snap = unique("base"), unique("snap")
    write_files_layer(store, base, [("/opt/emu-snap/doomed", b"doomed\n", None),
                                    ("/opt/emu-snap/kept", b"kept\n", None),
                                    ("/opt/emu-snap/dir/inner", b"inner\n", None)])

    async def body() -> None:
        async with running(store, spec([base])) as container:
            script = ("echo new > /opt/emu-snap/new && chmod 640 /opt/emu-snap/new && chown 1234:5678 /opt/emu-snap/new"
                      " && rm /opt/emu-snap/doomed && rm -r /opt/emu-snap/dir && mkdir /opt/emu-snap/dir"
                      " && echo fresh > /opt/emu-snap/dir/fresh && echo home > /root/in-home")
            assert (await sh(container, script))[0] == 0
            await container.snapshot(snap)
            # The sandbox keeps running, undisturbed.
            assert await sh(container, "cat /opt/emu-snap/new") == (0, "new\n", "")
        assert store.has_layer(snap)
        assert os.getxattr(store.layer_path(snap) / "opt/emu-snap/dir", "trusted.overlay.opaque") == b"y"

        async with running(store, spec([base, snap])) as restored:
            assert await sh(restored, "cat /opt/emu-snap/new /opt/emu-snap/kept /root/in-home") == (
                0, "new\nkept\nhome\n", "")
            assert (await sh(restored, "stat -c '%a %u %g' /opt/emu-snap/new"))[1] == "640 1234 5678\n"
            assert (await sh(restored, "test -e /opt/emu-snap/doomed"))[0] == 1, "the deletion must persist"
            assert (await sh(restored, "ls -A /opt/emu-snap/dir"))[1] == "fresh\n", "the opaque dir must persist"
        # The base layer itself is untouched.
        assert (store.layer_path(base) / "opt/emu-snap/doomed").exists()

    asyncio.run(body())
