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


# A "$" anchor also matches before a final newline, so "web\n" would pass as a second host "web". Every kind of
# name the collection checks must refuse it.
def _trailing_newline_checks():
    from ansible_collections.mngr.modal.plugins.module_utils._build_args import BuildArgError
    from ansible_collections.mngr.modal.plugins.module_utils._errors import HostError
    from ansible_collections.mngr.modal.plugins.module_utils._hosts import validate_host_name
    from ansible_collections.mngr.modal.plugins.module_utils._tags import normalize_user_tags
    from ansible_collections.mngr.modal.plugins.module_utils._snapshots import (
        SnapshotError,
        is_image_id,
        validate_snapshot_name,
    )

    def image_id(ref):
        if not is_image_id(ref):
            raise SnapshotError(ref)

    return {
        "host name": (lambda: validate_host_name("web\n"), HostError),
        "tag key": (lambda: normalize_user_tags({"team\n": "a"}), HostError),
        "snapshot name": (lambda: validate_snapshot_name("first\n"), SnapshotError),
        "image id": (lambda: image_id("im-abc\n"), SnapshotError),
        "env name": (lambda: _spec(env={"HOME\n": "x"}), BuildArgError),
        "docker build arg name": (lambda: _spec(docker_build_args={"VERSION\n": "1"}), BuildArgError),
        "volume name": (lambda: _spec(volumes=["data\n:/mnt/data"]), BuildArgError),
    }


def _spec(**options):
    from ansible_collections.mngr.modal.plugins.module_utils._build_args import resolve_spec

    return resolve_spec({}, options)


@pytest.mark.parametrize("kind", sorted(_trailing_newline_checks()))
def test_a_trailing_newline_is_refused_for_every_kind_of_name(kind):
    check_fn, error = _trailing_newline_checks()[kind]
    with pytest.raises(error):
        check_fn()


def test_a_trailing_newline_is_refused_by_the_shared_rule():
    with pytest.raises(NameError_) as info:
        check("web\n")
    assert "'web\\n'" in str(info.value)
