# Copyright (c) 2026, the mngr.modal authors
# GNU General Public License v3.0+ (see COPYING or https://www.gnu.org/licenses/gpl-3.0.txt)

"""The module base: result key, warnings, diff, and every expected error mapped to fail_json."""

from __future__ import annotations

import pytest

from ansible_collections.mngr.modal.plugins.module_utils._base import ModalModule
from ansible_collections.mngr.modal.plugins.module_utils._build_args import BuildArgError
from ansible_collections.mngr.modal.plugins.module_utils._client import ModalError
from ansible_collections.mngr.modal.plugins.module_utils._errors import HostError, ModalCollectionError
from ansible_collections.mngr.modal.plugins.module_utils._snapshots import SnapshotError


class Exited(Exception):
    def __init__(self, kind, kwargs):
        super().__init__(kind)
        self.kind = kind
        self.kwargs = kwargs


class FakeAnsibleModule:
    def __init__(self, diff=False):
        self.params = {"token_id": None, "token_secret": None, "environment": None, "app": "mngr-modal",
                       "key_dir": None}
        self.check_mode = False
        self._diff = diff
        self.warnings = []

    def warn(self, message):
        self.warnings.append(message)

    def fail_json(self, **kwargs):
        raise Exited("fail", kwargs)

    def exit_json(self, **kwargs):
        raise Exited("exit", kwargs)


class Example(ModalModule):
    represent = "example"
    options = {"thing": {"type": "str"}}
    reports_diff = True

    def __init__(self, module, validate_error=None, execute_error=None):
        super().__init__(module)
        self.validate_error = validate_error
        self.execute_error = execute_error
        self.closed_session = None

    def validate_inputs(self):
        if self.validate_error is not None:
            raise self.validate_error

    def execute(self):
        self.closed_session = self.session
        if self.execute_error is not None:
            raise self.execute_error
        self.changed = True
        self.warnings.append("careful")
        self.extra_results["msg"] = "done"
        self.diff = {"before": {}, "after": {"thing": 1}}
        return {"thing": 1}


def run(module, **kwargs):
    with pytest.raises(Exited) as info:
        Example(module, **kwargs).run()
    return info.value


def test_argument_spec_adds_the_shared_options():
    spec = Example.argument_spec()
    assert spec["thing"] == {"type": "str"}
    assert spec["token_secret"]["no_log"] is True
    spec["thing"]["type"] = "int"  # callers get a copy
    assert Example.options["thing"]["type"] == "str"


def test_result_goes_under_its_key_with_warnings_and_diff():
    module = FakeAnsibleModule(diff=True)
    exited = run(module)
    assert exited.kind == "exit"
    assert exited.kwargs == {"changed": True, "example": {"thing": 1}, "msg": "done",
                             "diff": {"before": {}, "after": {"thing": 1}}}
    assert module.warnings == ["careful"]
    assert "diff" not in run(FakeAnsibleModule(diff=False)).kwargs


@pytest.mark.parametrize("error", [HostError("bad host"), BuildArgError("bad arg"), SnapshotError("bad snap")])
def test_input_errors_fail_with_their_message(error):
    exited = run(FakeAnsibleModule(), validate_error=error)
    assert exited.kind == "fail" and exited.kwargs == {"msg": str(error)}


def test_modal_errors_carry_code_and_details():
    exited = run(FakeAnsibleModule(), execute_error=ModalError("nope", code="NOT_FOUND", details="d"))
    assert exited.kwargs == {"msg": "nope", "error_code": "NOT_FOUND", "error_details": "d"}


def test_unexpected_errors_are_not_swallowed():
    with pytest.raises(ZeroDivisionError):
        Example(FakeAnsibleModule(), execute_error=ZeroDivisionError("bug")).run()


def test_extra_return_values_ride_along_with_the_failure():
    error = ModalCollectionError("half done", ssh_error="timed out", partial={"name": "x"})
    exited = run(FakeAnsibleModule(), execute_error=error)
    assert exited.kwargs == {"msg": "half done", "ssh_error": "timed out", "partial": {"name": "x"}}


class WarnsThenFails(Example):
    def execute(self):
        self.warnings.append("the spec differs")
        raise HostError("then it failed")


def test_a_warning_raised_before_a_failure_reaches_the_user():
    module = FakeAnsibleModule()
    with pytest.raises(Exited) as info:
        WarnsThenFails(module).run()
    assert info.value.kind == "fail" and info.value.kwargs == {"msg": "then it failed"}
    assert module.warnings == ["the spec differs"]


def test_warnings_reach_the_user_before_an_unexpected_error():
    class WarnsThenBreaks(Example):
        def execute(self):
            self.warnings.append("careful")
            raise ZeroDivisionError("bug")

    module = FakeAnsibleModule()
    with pytest.raises(ZeroDivisionError):
        WarnsThenBreaks(module).run()
    assert module.warnings == ["careful"]


def test_every_expected_error_shares_one_root():
    for error_class in (ModalError, HostError, BuildArgError, SnapshotError):
        assert issubclass(error_class, ModalCollectionError)


def test_empty_app_is_refused_before_modal_is_contacted():
    module = FakeAnsibleModule()
    module.params["app"] = ""
    exited = run(module)
    assert exited.kind == "fail"
    assert "app must be a non-empty app name, got ''" in exited.kwargs["msg"]


@pytest.mark.parametrize("below", ["", "sub/keys"])
def test_key_dir_that_is_a_file_is_named_without_a_traceback(tmp_path, below):
    a_file = tmp_path / "keys.txt"
    a_file.write_text("not a folder")
    module = FakeAnsibleModule()
    module.params["key_dir"] = str(a_file / below) if below else str(a_file)
    exited = run(module)
    assert exited.kind == "fail" and "exception" not in exited.kwargs
    assert module.params["key_dir"] in exited.kwargs["msg"] and "not a folder" in exited.kwargs["msg"]
    assert str(a_file) in exited.kwargs["msg"]
