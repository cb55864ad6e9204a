"""Answer every RPC the emulator does not serve with gRPC UNIMPLEMENTED, and log it.

The generated service bases declare every RPC as an abstract method. :func:`unimplemented_rpcs`
builds a class that defines all of them, so a servicer composed as
``class Servicer(Mixin1, Mixin2, unimplemented_rpcs(Base), Base)`` is concrete: the mixins' methods
win in the MRO, everything else fails fast (the SDK does not retry UNIMPLEMENTED).
"""

from __future__ import annotations

import logging
from typing import Any, Callable

from grpclib import GRPCError, Status

log = logging.getLogger("modal_emulator.server")


def _make_unimplemented(service: str, name: str) -> Callable[..., Any]:
    async def handler(self: Any, stream: Any) -> None:
        log.warning("unimplemented RPC called: %s/%s", service, name)
        raise GRPCError(Status.UNIMPLEMENTED, f"{name} is not implemented by the Modal emulator")

    handler.__name__ = name
    handler.__qualname__ = f"Unimplemented{service}.{name}"
    return handler


def unimplemented_rpcs(base: type) -> type:
    """A class defining every abstract RPC of ``base`` as an UNIMPLEMENTED answer."""
    names = sorted(getattr(base, "__abstractmethods__", ()))
    namespace = {name: _make_unimplemented(base.__name__, name) for name in names}
    return type(f"Unimplemented{base.__name__}", (), namespace)
