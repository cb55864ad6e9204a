# Copyright (c) 2026, the mngr.modal authors
# GNU General Public License v3.0+ (see COPYING or https://www.gnu.org/licenses/gpl-3.0.txt)

"""The one rule for stored names (hosts, snapshots, tag keys)."""

from __future__ import annotations

import pytest

from ansible_collections.mngr.modal.plugins.module_utils._names import validate_name


class NameError_(ValueError):
    pass


def check(name, max_length=10, why=""):
    return validate_name(name, "opt", "thing name", max_length, NameError_, why=why)


@pytest.mark.parametrize("name", ["a", "A.b-c_d", "9lives", "x" * 10])
def test_safe_names_pass_unchanged(name):
    assert check(name) == name


@pytest.mark.parametrize(
    "name, fragment",
    [
        ("", "opt must be a non-empty string, got ''"),
        (None, "got None"),
        ("x" * 11, "'xxxxxxxxxxx' is 11 characters long; at most 10"),
        (".hidden", "opt '.hidden' is not a valid thing name: use letters"),
        ("a/b", "'a/b'"),
    ],
)
def test_unsafe_names_raise_the_callers_error(name, fragment):
    with pytest.raises(NameError_) as info:
        check(name)
    assert fragment in str(info.value)


def test_long_names_are_quoted_shortened_and_the_reason_comes_first():
    with pytest.raises(NameError_) as info:
        check("y" * 300, max_length=128)
    assert str(info.value).startswith("opt '" + "y" * 40 + "'... is 300 characters long")
    with pytest.raises(NameError_) as info:
        check("../x", why="it becomes a file name")
    assert "not a valid thing name: it becomes a file name, so use letters" in str(info.value)
