"""Helpers shared by the runtime tests: ids, specs, a self-terminating container, shell execs."""

from __future__ import annotations

import asyncio
import contextlib
import functools
import uuid
from collections.abc import AsyncIterator
from pathlib import Path

from modal_emulator.runtime.bases import BaseCache
from modal_emulator.runtime.container import Container, ContainerSpec
from modal_emulator.runtime.store import Store

#: The base every runtime test's containers sit on: the machine cache's bookworm slim root, as on Modal.
DEFAULT_REFERENCE = "debian:bookworm-slim"


@functools.cache
def default_base() -> Path:
    """The root filesystem of ``debian:bookworm-slim`` (built into the machine's base cache on first use)."""
    return BaseCache().resolve(DEFAULT_REFERENCE).rootfs


def unique(prefix: str) -> str:
    return f"{prefix}-{uuid.uuid4().hex[:10]}"


def spec(layers: list[str] | None = None, entrypoint: list[str] | None = None, **kwargs) -> ContainerSpec:
    return ContainerSpec(sandbox_id=kwargs.pop("sandbox_id", unique("sb")), base=kwargs.pop("base", default_base()),
                         layers=layers or [],
                         entrypoint=entrypoint or ["sleep", "infinity"], env=kwargs.pop("env", {}), **kwargs)


@contextlib.asynccontextmanager
async def running(store: Store, container_spec: ContainerSpec) -> AsyncIterator[Container]:
    """A started container, terminated on exit whatever happens."""
    container = await Container.start(store, container_spec)
    try:
        yield container
    finally:
        await container.terminate()


async def sh(container: Container, script: str, stdin: bytes | None = None, **kwargs) -> tuple[int, str, str]:
    """Run `sh -c script` in the container: (exit status, stdout, stderr)."""
    process = await container.exec(["sh", "-c", script], **kwargs)
    assert process.stdin is not None and process.stdout is not None and process.stderr is not None
    if stdin:
        process.stdin.write(stdin)
        await process.stdin.drain()
    process.stdin.close()
    # Bounded: a test must fail, not hang, if something keeps the output pipes open.
    out, err = await asyncio.wait_for(asyncio.gather(process.stdout.read(), process.stderr.read()), 60)
    return await asyncio.wait_for(process.wait(), 30), out.decode(), err.decode()
