"""Image RPCs: ImageGetOrCreate, ImageJoinStreaming, ImageFromId (builds live in :mod:`.image_builder`)."""

from __future__ import annotations

from typing import Any

from modal_proto import api_pb2

from .core import EmulatorState
from .image_builder import BuildLog, ImageRegistry


def image_registry(state: EmulatorState) -> ImageRegistry:
    if "images" not in state.services:
        state.services["images"] = ImageRegistry(state)
    registry: ImageRegistry = state.services["images"]
    return registry


class ImageRpcs:
    state: EmulatorState

    async def ImageGetOrCreate(self, stream: Any) -> None:
        request = await stream.recv_message()
        registry = image_registry(self.state)
        row = registry.get_or_create(request)
        response = api_pb2.ImageGetOrCreateResponse(image_id=row["id"])
        if row["status"] != "building":
            response.result.CopyFrom(registry.result_proto(row))
            response.metadata.CopyFrom(registry.metadata_proto(row))
        await stream.send_message(response)

    async def ImageJoinStreaming(self, stream: Any) -> None:
        request = await stream.recv_message()
        registry = image_registry(self.state)
        row = registry.get(request.image_id)
        build_log = registry.logs.get(request.image_id) or BuildLog(done=True)
        index = int(request.last_entry_id or 0)
        timeout = request.timeout or 55.0
        await build_log.wait_beyond(index, timeout)
        while True:
            entries = build_log.entries[index:]
            if entries:
                index += len(entries)
                await stream.send_message(
                    api_pb2.ImageJoinStreamingResponse(
                        task_logs=[
                            api_pb2.TaskLogs(data=text, file_descriptor=api_pb2.FILE_DESCRIPTOR_STDOUT)
                            for text in entries
                        ],
                        entry_id=str(index),
                    )
                )
            if build_log.done:
                break
            await build_log.wait_beyond(index, timeout)
            if len(build_log.entries) <= index and not build_log.done:
                return  # the client re-joins after its long-poll timeout
        row = registry.get(request.image_id)
        await stream.send_message(
            api_pb2.ImageJoinStreamingResponse(
                result=registry.result_proto(row), metadata=registry.metadata_proto(row), eof=True, entry_id=str(index)
            )
        )

    async def ImageFromId(self, stream: Any) -> None:
        request = await stream.recv_message()
        registry = image_registry(self.state)
        row = registry.get_built(request.image_id)
        await stream.send_message(
            api_pb2.ImageFromIdResponse(image_id=row["id"], metadata=registry.metadata_proto(row))
        )
