"""Optional modules of the server (volumes, mounts, blobs) and the functions they offer.

A module that does not exist is simply absent (its RPCs answer UNIMPLEMENTED). A module that exists
but fails to import is an error: it is raised, not hidden.
"""

from __future__ import annotations

import importlib
import importlib.util
from types import ModuleType
from typing import Any

OPTIONAL_MODULES = ("volumes", "mounts", "blobs")


def optional_module(name: str) -> ModuleType | None:
    qualified = f"{__package__}.{name}"
    if importlib.util.find_spec(qualified) is None:
        return None
    return importlib.import_module(qualified)


def optional_function(module_name: str, function_name: str) -> Any | None:
    module = optional_module(module_name)
    return getattr(module, function_name, None) if module is not None else None
