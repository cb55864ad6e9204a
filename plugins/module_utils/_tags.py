# Copyright (c) 2026, the mngr.modal authors
# GNU General Public License v3.0+ (see COPYING or https://www.gnu.org/licenses/gpl-3.0.txt)

# This module is private to the mngr.modal collection: its interface may change at any time,
# do not use it from outside the collection.

"""The sandbox tag scheme: how a host's identity, SSH endpoint and user tags travel as sandbox tags.

A running host is found with one list call because its sandbox carries ``mngr_host_id``, ``mngr_host_name``,
``mngr_ssh`` (the tunnel endpoint) and the user tags under ``mngr_user_``. Pure logic, tested without Modal.
"""

from __future__ import annotations

import re
from dataclasses import dataclass
from typing import Any

from ansible_collections.mngr.modal.plugins.module_utils._errors import HostError
from ansible_collections.mngr.modal.plugins.module_utils._names import validate_name

TAG_HOST_ID = "mngr_host_id"
TAG_HOST_NAME = "mngr_host_name"
# "host:port" of the SSH tunnel, so listing running hosts needs no extra call per host.
TAG_SSH_ENDPOINT = "mngr_ssh"
IDENTITY_TAG_KEYS = (TAG_HOST_ID, TAG_HOST_NAME, TAG_SSH_ENDPOINT)
USER_TAG_PREFIX = "mngr_user_"

# Tag limits. Modal's reference documentation (modal.Sandbox.set_tags / Sandbox.list) states no
# numeric limit on sandbox tags; the reference implementation of this provider records that Modal
# allowed 10 tags per sandbox, and that is the bound enforced here. The identity tags above use
# three of them, leaving seven for user tags. Modal does not document key or value lengths either:
# keys are kept to a safe character set and 63 characters (prefix included), values to 255
# characters without control characters, which is portable to every tag store we know of.
MAX_SANDBOX_TAGS = 10
MAX_USER_TAGS = MAX_SANDBOX_TAGS - len(IDENTITY_TAG_KEYS)
MAX_TAG_KEY_LENGTH = 63
MAX_USER_TAG_KEY_LENGTH = MAX_TAG_KEY_LENGTH - len(USER_TAG_PREFIX)
MAX_TAG_VALUE_LENGTH = 255
_CONTROL_CHARS_RE = re.compile(r"[\x00-\x1f\x7f]")


def normalize_user_tags(tags: Any, option: str = "tags") -> dict[str, str]:
    """Validate user tags and return them with string values.

    Scalar values (numbers, booleans) become strings, because Modal tags are strings and a YAML
    ``version: 2`` should mean the same as ``version: "2"``. Lists and dicts are refused.
    """
    if tags is None:
        return {}
    if not isinstance(tags, dict):
        raise HostError(f"{option} must be a dictionary of key: value, got {type(tags).__name__} {tags!r}.")
    if len(tags) > MAX_USER_TAGS:
        raise HostError(
            f"{option} has {len(tags)} entries ({', '.join(sorted(map(str, tags)))}); at most {MAX_USER_TAGS} user "
            f"tags fit, because a Modal sandbox holds at most {MAX_SANDBOX_TAGS} tags and "
            f"{len(IDENTITY_TAG_KEYS)} are used for the host's identity."
        )
    normalized: dict[str, str] = {}
    for key, value in tags.items():
        validate_name(key, f"{option} key", "tag key", MAX_USER_TAG_KEY_LENGTH, HostError)
        if isinstance(value, bool):
            text = "true" if value else "false"
        elif isinstance(value, (str, int, float)):
            text = str(value)
        else:
            raise HostError(
                f"{option} value of {key!r} must be a string or a number, got {type(value).__name__} {value!r}."
            )
        if len(text) > MAX_TAG_VALUE_LENGTH:
            raise HostError(
                f"{option} value of {key!r} is {len(text)} characters long; at most {MAX_TAG_VALUE_LENGTH} are allowed."
            )
        if _CONTROL_CHARS_RE.search(text):
            raise HostError(f"{option} value of {key!r} ({text!r}) contains control characters (newline, tab, ...).")
        normalized[key] = text
    return normalized


def merge_user_tags(current: dict[str, str], requested: dict[str, str] | None, purge: bool) -> dict[str, str]:
    """The user tags a host should end with: ``None`` leaves them alone, ``purge`` drops unlisted ones."""
    if requested is None:
        return dict(current)
    if purge:
        return dict(requested)
    merged = dict(current)
    merged.update(requested)
    return merged


def encode_sandbox_tags(host_id: str, name: str, user_tags: dict[str, str], ssh_endpoint: str | None = None) -> dict[str, str]:
    """The full tag set of a host's sandbox: identity tags plus user tags under their prefix."""
    tags = {TAG_HOST_ID: host_id, TAG_HOST_NAME: name}
    if ssh_endpoint:
        tags[TAG_SSH_ENDPOINT] = ssh_endpoint
    for key, value in user_tags.items():
        tags[USER_TAG_PREFIX + key] = value
    return tags


@dataclass(frozen=True)
class SandboxIdentity:
    """What a sandbox's tags say about the host it belongs to."""

    host_id: str
    name: str
    user_tags: dict[str, str]
    ssh_endpoint: tuple[str, int] | None


def decode_sandbox_tags(tags: dict[str, str]) -> SandboxIdentity | None:
    """Read a host's identity from sandbox tags; None for a sandbox that is not one of our hosts."""
    host_id = tags.get(TAG_HOST_ID)
    if not host_id:
        return None
    user_tags = {key[len(USER_TAG_PREFIX):]: value for key, value in tags.items() if key.startswith(USER_TAG_PREFIX)}
    return SandboxIdentity(
        host_id=host_id,
        name=tags.get(TAG_HOST_NAME, ""),
        user_tags=user_tags,
        ssh_endpoint=parse_endpoint(tags.get(TAG_SSH_ENDPOINT)),
    )


def format_endpoint(host: str, port: int) -> str:
    return f"{host}:{port}"


def parse_endpoint(text: str | None) -> tuple[str, int] | None:
    """``"host:port"`` -> (host, port); None when absent or malformed (callers then ask Modal)."""
    if not text or ":" not in text:
        return None
    host, _sep, port = text.rpartition(":")
    if not host or not port.isdigit():
        return None
    return host, int(port)
