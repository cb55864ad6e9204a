# Copyright (c) 2026, the mngr.modal authors
# GNU General Public License v3.0+ (see COPYING or https://www.gnu.org/licenses/gpl-3.0.txt)

# This module is private to the mngr.modal collection: its interface may change at any time,
# do not use it from outside the collection.

"""The one rule for names the collection stores: host names, snapshot names and user tag keys.

Each of them ends up in a tag, a file name or a folder name, so they share a safe character set
(letters, digits, ``-``, ``_``, ``.``) and a bounded length. The first character is a letter or a
digit, so that ``.``, ``..`` and hidden files are impossible.
"""

from __future__ import annotations

import re
from typing import Any

# Checked with fullmatch: "$" would also accept the name followed by a newline.
SAFE_NAME_RE = re.compile(r"[A-Za-z0-9][A-Za-z0-9._-]*")
SAFE_NAME_RULE = "use letters, digits, '-', '_' and '.', starting with a letter or a digit"
# Longer names are quoted only this far in messages, so one bad value cannot flood a failure message.
QUOTED_NAME_LENGTH = 40


def validate_name(name: Any, option: str, kind: str, max_length: int, error: type[Exception], why: str = "") -> str:
    """Return ``name`` if it is a safe name of at most ``max_length`` characters, else raise ``error``.

    ``option`` names the option (or tag key) in the message, ``kind`` what the name is ("host name"...),
    and ``why`` (optional) why the rule exists, said before the rule itself.
    """
    if not isinstance(name, str) or not name:
        raise error(f"{option} must be a non-empty string, got {name!r}.")
    if len(name) > max_length:
        shown = f"{name[:QUOTED_NAME_LENGTH]!r}..." if len(name) > QUOTED_NAME_LENGTH else repr(name)
        raise error(f"{option} {shown} is {len(name)} characters long; at most {max_length} are allowed.")
    if not SAFE_NAME_RE.fullmatch(name):
        reason = f"{why}, so " if why else ""
        raise error(f"{option} {name!r} is not a valid {kind}: {reason}{SAFE_NAME_RULE}.")
    return name
