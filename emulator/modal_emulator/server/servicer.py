"""The two gRPC services of the emulator, composed from the per-area RPC mixins.

``ModalClient`` (the control plane) and ``TaskCommandRouter`` (execs and stdio, which Modal serves
next to each sandbox) are both served on one port. Each servicer class is the mixins of its areas,
then a class answering every other RPC with UNIMPLEMENTED, then the generated base.
"""

from __future__ import annotations

from modal_proto.api_grpc import ModalClientBase
from modal_proto.task_command_router_grpc import TaskCommandRouterBase

from .apps import AppRpcs
from .blobs import BlobRpcs
from .core import EmulatorState
from .images import ImageRpcs
from .listing import TagsAndListRpcs
from .mounts import MountRpcs
from .router import RouterRpcs
from .sandboxes import SandboxRpcs
from .unimplemented import unimplemented_rpcs
from .volumes import VolumeRpcs


def control_plane_mixins() -> list[type]:
    return [AppRpcs, ImageRpcs, SandboxRpcs, TagsAndListRpcs, VolumeRpcs, MountRpcs, BlobRpcs]


def build_servicers(state: EmulatorState) -> list[object]:
    """Instances of both services, sharing ``state``."""
    modal_client = type(
        "ModalClientServicer",
        (*control_plane_mixins(), unimplemented_rpcs(ModalClientBase), ModalClientBase),
        {"__doc__": "The emulated Modal control plane."},
    )
    router = type(
        "TaskCommandRouterServicer",
        (RouterRpcs, unimplemented_rpcs(TaskCommandRouterBase), TaskCommandRouterBase),
        {"__doc__": "The emulated task command router."},
    )
    servicers = []
    for cls in (modal_client, router):
        servicer = cls()
        servicer.state = state
        servicers.append(servicer)
    return servicers
