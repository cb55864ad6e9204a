# Copyright (c) 2026, the mngr.modal authors
# GNU General Public License v3.0+ (see COPYING or https://www.gnu.org/licenses/gpl-3.0.txt)

# This module is private to the mngr.modal collection: its interface may change at any time,
# do not use it from outside the collection.

"""What every module of the collection does around its own logic.

A module is a subclass of :class:`ModalModule` that names its result key (``represent``), declares its own
options (``options``), checks its input in :meth:`ModalModule.validate_inputs` and does its work in
:meth:`ModalModule.execute`. :func:`run_module` does the rest: the ``AnsibleModule`` with the shared options,
the Modal session (always closed), the mapping of the collection's errors (:mod:`._errors`) to ``fail_json``,
the warnings (passed on whether the module succeeds or fails), and ``exit_json`` with ``changed``, the result
and the diff.
"""

from __future__ import annotations

import copy
import os
import traceback
from typing import Any, ClassVar

from ansible.module_utils.basic import AnsibleModule, missing_required_lib

from ansible_collections.mngr.modal.plugins.module_utils._client import (
    DEFAULT_APP,
    ModalError,
    ModalSession,
    modal_argument_spec,
)
from ansible_collections.mngr.modal.plugins.module_utils._errors import ModalCollectionError


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
    # Whether the module returns a diff (in diff mode); info modules do not.
    reports_diff: ClassVar[bool] = False
    # Python libraries the module needs besides modal, each with whether it is installed (``{"cryptography": ...}``).
    required_libraries: ClassVar[dict[str, bool]] = {}

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
        """Everything that can be checked before Modal is contacted; raise a ModalCollectionError."""

    def execute(self) -> Any:
        """Do the module's work through ``self.session`` and return the result (the value of ``represent``)."""
        raise NotImplementedError

    def run(self) -> None:
        """Check, execute, and report: a ModalCollectionError fails the task with its message, never a traceback.

        The warnings gathered so far reach the user in every case, failures included (``finally``).
        """
        try:
            try:
                result = self._checked_execute()
            finally:
                self.flush_warnings()
        except ModalCollectionError as exc:
            self.module.fail_json(**exc.fail_kwargs())
        output: dict[str, Any] = {"changed": self.changed, self.represent: result}
        output.update(self.extra_results)
        if self.reports_diff and self.module._diff:  # pylint: disable=protected-access
            output["diff"] = self.diff
        self.module.exit_json(**output)

    def _checked_execute(self) -> Any:
        check_shared_options(self.params)
        self.validate_inputs()
        self.session = ModalSession.from_module(self.module)
        try:
            return self.execute()
        finally:
            self.session.close()

    def flush_warnings(self) -> None:
        """Hand the gathered warnings to Ansible (once each)."""
        for warning in self.warnings:
            self.module.warn(warning)
        self.warnings.clear()


def run_module(module_class: type[ModalModule]) -> None:
    """The ``main()`` of every module: build it, run it, and report any bug as an unexpected error with its traceback."""
    module = module_class.define_module()
    for library, installed in module_class.required_libraries.items():
        if not installed:
            module.fail_json(msg=missing_required_lib(library))
    try:
        module_class(module).run()
    except Exception as exc:  # pylint: disable=broad-exception-caught
        module.fail_json(msg=f"unexpected error: {exc}", exception=traceback.format_exc())
