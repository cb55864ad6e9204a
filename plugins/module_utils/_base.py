# Copyright (c) 2026, the mngr.modal authors
# GNU General Public License v3.0+ (see COPYING or https://www.gnu.org/licenses/gpl-3.0.txt)

# This module is private to the mngr.modal collection: its interface may change at any time,
# do not use it from outside the collection.

"""What every module of the collection does around its own logic.

A module is a subclass of :class:`ModalModule` that names its result key (``represent``), declares its own
options (``options``), checks its input in :meth:`ModalModule.validate_inputs` and does its work in
:meth:`ModalModule.execute`. :func:`run_module` does the rest: the ``AnsibleModule`` with the shared options,
the Modal session (always closed), the mapping of the collection's errors to ``fail_json``, the warnings,
and ``exit_json`` with ``changed``, the result and the diff.
"""

from __future__ import annotations

import copy
import os
import traceback
from typing import Any, ClassVar

from ansible.module_utils.basic import AnsibleModule, missing_required_lib

from ansible_collections.mngr.modal.plugins.module_utils._build_args import BuildArgError
from ansible_collections.mngr.modal.plugins.module_utils._client import (
    DEFAULT_APP,
    ModalError,
    ModalSession,
    modal_argument_spec,
)
from ansible_collections.mngr.modal.plugins.module_utils._hosts import HostError
from ansible_collections.mngr.modal.plugins.module_utils._snapshots import SnapshotError
from ansible_collections.mngr.modal.plugins.module_utils._ssh import HAS_CRYPTOGRAPHY

# Failures the collection raises on purpose: each carries a message for the user (no traceback needed).
EXPECTED_ERRORS: tuple[type[Exception], ...] = (ModalError, HostError, BuildArgError, SnapshotError)


def failure_kwargs(exc: Exception) -> dict[str, Any]:
    """Keyword arguments for ``fail_json``: the error's own (``fail_kwargs()``, with code and details) or its text."""
    fail_kwargs = getattr(exc, "fail_kwargs", None)
    if callable(fail_kwargs):
        return fail_kwargs()
    return {"msg": str(exc)}


def check_shared_options(params: dict[str, Any]) -> None:
    """Refuse shared options that would otherwise be replaced by a default or fail deep inside a run."""
    if params.get("app") == "":
        # An empty value would silently mean the default app, which holds other hosts.
        raise ModalError(f"app must be a non-empty app name, got ''; leave it out for the default app ({DEFAULT_APP})")
    key_dir = params.get("key_dir")
    if key_dir:
        wanted = os.path.abspath(os.path.expanduser(key_dir))
        blocker = _non_folder_on_path(wanted)
        if blocker is not None:
            what = "is a file" if blocker == wanted else f"cannot be a folder: {blocker} is a file"
            raise ModalError(f"key_dir {key_dir} {what}, not a folder; give a folder for the hosts' SSH keys "
                             "(it is created if missing)")


def _non_folder_on_path(path: str) -> str | None:
    """``path`` or its nearest existing parent when that is not a folder (a file in the way), else None."""
    while not os.path.lexists(path) and os.path.dirname(path) != path:
        path = os.path.dirname(path)
    return None if os.path.isdir(path) else path


class ModalModule:
    """Base of the collection's modules: input check, one Modal session, a result under one key."""

    # The key the result is returned under (``modal_sandbox``, ``modal_snapshot_info``...).
    represent: ClassVar[str] = ""
    # The module's own options; the shared ones (doc fragment mngr.modal.modal) are added by argument_spec().
    options: ClassVar[dict[str, dict[str, Any]]] = {}
    # Errors reported with their message alone; subclasses add their own.
    expected_errors: ClassVar[tuple[type[Exception], ...]] = EXPECTED_ERRORS
    # Whether the module returns a diff (in diff mode); info modules do not.
    reports_diff: ClassVar[bool] = False
    # Whether the module needs the cryptography library (modules that handle SSH keys).
    needs_cryptography: ClassVar[bool] = False

    def __init__(self, module: AnsibleModule) -> None:
        self.module = module
        self.params = module.params
        self.check_mode = module.check_mode
        self.changed = False
        self.warnings: list[str] = []
        self.diff: dict[str, Any] = {"before": {}, "after": {}}
        # Extra top-level return values besides ``changed`` and the result (``msg``...).
        self.extra_results: dict[str, Any] = {}
        self.session: ModalSession | None = None

    @classmethod
    def argument_spec(cls) -> dict[str, dict[str, Any]]:
        """The shared options plus this module's own."""
        spec = modal_argument_spec()
        spec.update(copy.deepcopy(cls.options))
        return spec

    @classmethod
    def define_module(cls) -> AnsibleModule:
        return AnsibleModule(argument_spec=cls.argument_spec(), supports_check_mode=True)

    def validate_inputs(self) -> None:
        """Everything that can be checked before Modal is contacted; raise one of ``expected_errors``."""

    def execute(self) -> Any:
        """Do the module's work through ``self.session`` and return the result (the value of ``represent``)."""
        raise NotImplementedError

    def run(self) -> None:
        try:
            check_shared_options(self.params)
            self.validate_inputs()
        except self.expected_errors as exc:
            self.module.fail_json(**failure_kwargs(exc))
        self.session = ModalSession.from_module(self.module)
        try:
            result = self.execute()
        except self.expected_errors as exc:
            self.module.fail_json(**failure_kwargs(exc))
        finally:
            self.session.close()
        for warning in self.warnings:
            self.module.warn(warning)
        output: dict[str, Any] = {"changed": self.changed, self.represent: result}
        output.update(self.extra_results)
        if self.reports_diff and self.module._diff:  # pylint: disable=protected-access
            output["diff"] = self.diff
        self.module.exit_json(**output)


def run_module(module_class: type[ModalModule]) -> None:
    """The ``main()`` of every module: build it, run it, and report any bug as an unexpected error with its traceback."""
    module = module_class.define_module()
    if module_class.needs_cryptography and not HAS_CRYPTOGRAPHY:
        module.fail_json(msg=missing_required_lib("cryptography"))
    try:
        module_class(module).run()
    except Exception as exc:  # pylint: disable=broad-exception-caught
        module.fail_json(msg=f"unexpected error: {exc}", exception=traceback.format_exc())
