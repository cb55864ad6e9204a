"""The servicer classes are many mixins composed into one: no mixin may shadow another's attribute.

Python resolves a name to the first class of the MRO that defines it, so a private helper named like
another mixin's helper silently replaces it for every RPC of the other mixin. These checks need no
running server: they build the servicers and read their MROs.
"""

from __future__ import annotations

import pathlib
from collections import defaultdict

import pytest

from modal_emulator.server.core import EmulatorState
from modal_emulator.server.servicer import build_servicers


def emulator_mixins(cls: type) -> list[type]:
    """The classes of the emulator's own areas, without the generated base and the UNIMPLEMENTED fallback."""
    return [
        klass
        for klass in cls.__mro__[1:]
        if klass.__module__.startswith("modal_emulator.server.") and not klass.__module__.endswith(".unimplemented")
    ]


def defined_names(klass: type) -> set[str]:
    return {name for name in vars(klass) if not (name.startswith("__") and name.endswith("__"))}


def generated_base(cls: type) -> type:
    return next(klass for klass in cls.__mro__ if klass.__module__.startswith("modal_proto."))


@pytest.fixture(scope="module")
def servicer_classes(tmp_path_factory: pytest.TempPathFactory) -> list[type]:
    state = EmulatorState(pathlib.Path(tmp_path_factory.mktemp("composition")))
    return [type(servicer) for servicer in build_servicers(state)]


def test_both_services_are_composed_of_several_areas(servicer_classes: list[type]) -> None:
    # Guards the checks below against a change that would leave them looking at nothing.
    assert [len(emulator_mixins(cls)) >= 1 for cls in servicer_classes] == [True, True]
    assert len(emulator_mixins(servicer_classes[0])) >= 7


def test_no_two_mixins_define_the_same_attribute(servicer_classes: list[type]) -> None:
    for cls in servicer_classes:
        owners: dict[str, list[str]] = defaultdict(list)
        for mixin in emulator_mixins(cls):
            for name in defined_names(mixin):
                owners[name].append(f"{mixin.__module__}.{mixin.__qualname__}")
        clashes = {name: where for name, where in owners.items() if len(where) > 1}
        assert clashes == {}, f"{cls.__name__}: attributes defined by more than one mixin"


def test_helpers_do_not_shadow_the_generated_base(servicer_classes: list[type]) -> None:
    """Only RPC handlers may override the generated base; a helper must not replace one of its attributes."""
    for cls in servicer_classes:
        base = generated_base(cls)
        rpcs = set(base.__abstractmethods__)  # the generated base declares every RPC abstract
        for mixin in emulator_mixins(cls):
            shadowing = {name for name in defined_names(mixin) - rpcs if hasattr(base, name)}
            assert shadowing == set(), f"{mixin.__qualname__} shadows {base.__name__}"


def test_mixin_handlers_are_the_ones_served(servicer_classes: list[type]) -> None:
    """Every RPC a mixin implements resolves to that mixin's function in the composed class."""
    for cls in servicer_classes:
        for mixin in emulator_mixins(cls):
            for name in defined_names(mixin):
                assert getattr(cls, name) is getattr(mixin, name) or isinstance(vars(mixin)[name], property), (
                    f"{cls.__name__}.{name} does not resolve to {mixin.__qualname__}.{name}"
                )
