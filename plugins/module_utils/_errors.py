# Copyright (c) 2026, the mngr.modal authors
# GNU General Public License v3.0+ (see COPYING or https://www.gnu.org/licenses/gpl-3.0.txt)

# This module is private to the mngr.modal collection: its interface may change at any time,
# do not use it from outside the collection.

"""The root of every error the collection raises on purpose, and how it becomes a module failure.

Each error carries a message for the user (what went wrong and what to do), and may carry a Modal error
``code``, ``details`` and extra return values for ``fail_json`` (``ssh_error``, the partial result...).
A module only raises; :mod:`._base` turns any :class:`ModalCollectionError` into ``fail_json`` with
:meth:`ModalCollectionError.fail_kwargs`, without a traceback. Any other exception is a bug, reported
with its traceback.
"""

from __future__ import annotations

from typing import Any


class ModalCollectionError(Exception):
    """A failure to report to the user: ``msg`` says what happened and what to do; the rest rides along."""

    def __init__(self, msg: str, code: str | None = None, details: str | None = None, **extra: Any) -> None:
        super().__init__(msg)
        self.msg = msg
        self.code = code
        self.details = details
        # Extra return values of the failed task (for example the result of the part that was done).
        self.extra = extra

    def fail_kwargs(self) -> dict[str, Any]:
        """Keyword arguments for ``module.fail_json``."""
        kwargs: dict[str, Any] = {"msg": self.msg}
        if self.code is not None:
            kwargs["error_code"] = self.code
        if self.details:
            kwargs["error_details"] = self.details
        kwargs.update(self.extra)
        return kwargs


class HostError(ModalCollectionError, ValueError):
    """Invalid input about a host (name, tags), or a host that cannot be acted on: the message says which and why."""
