# Copyright (c) 2026, the mngr.modal authors
# GNU General Public License v3.0+ (see COPYING or https://www.gnu.org/licenses/gpl-3.0.txt)

from __future__ import annotations

import socket

import grpclib
import pytest
from modal import exception as modal_exception

from ansible_collections.mngr.modal.plugins.module_utils import _client
from ansible_collections.mngr.modal.plugins.module_utils._client import (
    ModalError,
    ModalSession,
    RetryPolicy,
    check_reachable,
    is_not_found,
    is_rate_limited,
    is_transient,
    map_error,
    missing_credentials_message,
    modal_argument_spec,
    profile_problem,
)

SERVER = "http://127.0.0.1:1"


def sdk_error(cls, status, message="boom"):
    """An exception shaped exactly as the SDK raises it after a failed RPC."""
    exc = cls(message)
    exc._grpc_status = status  # pylint: disable=protected-access
    exc._grpc_message = message  # pylint: disable=protected-access
    exc._grpc_details = None  # pylint: disable=protected-access
    return exc


class Recorder:
    def __init__(self, failures):
        self.failures = list(failures)
        self.calls = 0

    def __call__(self):
        self.calls += 1
        if self.failures:
            raise self.failures.pop(0)
        return "ok"


def no_sleep_policy(**kwargs):
    sleeps = []
    return RetryPolicy(sleep=sleeps.append, rand=lambda: 1.0, **kwargs), sleeps


# --- retry policy -------------------------------------------------------------------------------------

@pytest.mark.parametrize("status", ["UNAVAILABLE", "DEADLINE_EXCEEDED", "CANCELLED", "INTERNAL", "UNKNOWN"])
def test_transient_errors_are_retried_then_succeed(status):
    policy, sleeps = no_sleep_policy(max_attempts=4)
    fn = Recorder([sdk_error(modal_exception.ServiceError, getattr(grpclib.Status, status))] * 2)
    assert policy.run(fn, is_transient) == "ok"
    assert fn.calls == 3
    assert len(sleeps) == 2


def test_transient_errors_are_retried_a_bounded_number_of_times():
    policy, sleeps = no_sleep_policy(max_attempts=4)
    fn = Recorder([sdk_error(modal_exception.ServiceError, grpclib.Status.UNAVAILABLE)] * 10)
    with pytest.raises(modal_exception.ServiceError):
        policy.run(fn, is_transient)
    assert fn.calls == 4
    assert len(sleeps) == 3


@pytest.mark.parametrize(
    "exc",
    [
        sdk_error(modal_exception.NotFoundError, grpclib.Status.NOT_FOUND),
        sdk_error(modal_exception.InvalidError, grpclib.Status.INVALID_ARGUMENT),
        sdk_error(modal_exception.AuthError, grpclib.Status.UNAUTHENTICATED),
        sdk_error(modal_exception.AlreadyExistsError, grpclib.Status.ALREADY_EXISTS),
        modal_exception.InvalidError("client-side validation"),
        ValueError("a bug, not the network"),
    ],
)
def test_permanent_errors_are_not_retried(exc):
    policy, sleeps = no_sleep_policy(max_attempts=4)
    fn = Recorder([exc])
    with pytest.raises(type(exc)):
        policy.run(fn, is_transient)
    assert fn.calls == 1
    assert not sleeps


def test_raw_grpclib_errors_count_too():
    assert is_transient(grpclib.GRPCError(grpclib.Status.UNAVAILABLE, "down"))
    assert not is_transient(grpclib.GRPCError(grpclib.Status.NOT_FOUND, "gone"))


def test_backoff_is_exponential_capped_and_jittered():
    policy = RetryPolicy(base_delay=0.5, max_delay=4.0, rand=lambda: 1.0)
    assert [policy.delay(n) for n in range(5)] == [0.5, 1.0, 2.0, 4.0, 4.0]
    low = RetryPolicy(base_delay=0.5, max_delay=4.0, rand=lambda: 0.25)
    assert low.delay(2) == 0.5
    # The real random source stays within the bound.
    real = RetryPolicy(base_delay=0.5, max_delay=4.0)
    assert all(0 <= real.delay(3) <= 4.0 for attempt in range(100))


def rate_limited():
    return sdk_error(modal_exception.ResourceExhaustedError, grpclib.Status.RESOURCE_EXHAUSTED, "too many requests")


def test_rate_limits_are_retried_with_longer_jittered_waits():
    policy, sleeps = no_sleep_policy(max_attempts=4)
    fn = Recorder([rate_limited()] * 2)
    assert policy.run(fn, is_transient, is_rate_limited) == "ok"
    assert fn.calls == 3
    assert sleeps == [2.0, 4.0]  # the rate-limit schedule, longer than the transient one (0.5, 1.0)
    jittered = RetryPolicy(rand=lambda: 0.25)
    assert jittered.delay(1, rate_limited=True) == 1.0
    assert [policy.delay(n, rate_limited=True) for n in range(6)] == [2.0, 4.0, 8.0, 16.0, 20.0, 20.0]


def test_rate_limits_are_retried_a_bounded_number_of_times():
    policy, sleeps = no_sleep_policy(max_attempts=4)
    fn = Recorder([rate_limited()] * 10)
    with pytest.raises(modal_exception.ResourceExhaustedError):
        policy.run(fn, is_transient, is_rate_limited)
    assert fn.calls == 4
    assert sleeps == [2.0, 4.0, 8.0]
    assert policy.longest_wait(rate_limited=True) == 14.0


def test_rate_limits_are_not_transient_errors():
    # Callers that pass only is_transient (no rate-limit test) do not retry them.
    assert is_rate_limited(rate_limited()) and not is_transient(rate_limited())
    policy, sleeps = no_sleep_policy(max_attempts=4)
    fn = Recorder([rate_limited()])
    with pytest.raises(modal_exception.ResourceExhaustedError):
        policy.run(fn, is_transient)
    assert fn.calls == 1 and not sleeps


def test_session_call_says_a_rate_limit_outlasted_the_retries():
    policy, sleeps = no_sleep_policy(max_attempts=3)
    session = ModalSession.from_module(FakeModule(), retry=policy)
    fn = Recorder([rate_limited()] * 5)
    with pytest.raises(ModalError) as err:
        session.call(fn)
    assert fn.calls == 3 and sleeps == [2.0, 4.0]
    assert err.value.code == "RESOURCE_EXHAUSTED"
    message = err.value.msg
    assert "rate limit or a quota" in message
    assert "too many requests" in message
    assert "tried 3 times, with waits of up to 6 seconds in all" in message
    assert "fewer tasks at once" in message and "stop or destroy the hosts you do not need" in message


# --- error mapping ------------------------------------------------------------------------------------

def test_auth_failure_says_how_to_fix_it():
    err = map_error(sdk_error(modal_exception.AuthError, grpclib.Status.UNAUTHENTICATED, "Invalid token"), SERVER)
    assert err.code == "UNAUTHENTICATED"
    assert "Invalid token" in err.msg
    assert "modal token new" in err.msg
    assert "MODAL_TOKEN_ID" in err.msg and "MODAL_TOKEN_SECRET" in err.msg


def test_token_missing_from_sdk_is_an_auth_failure():
    err = map_error(modal_exception.AuthError("Token missing. Could not authenticate client."), SERVER)
    assert "modal token new" in err.msg


def test_unreachable_server_names_the_url():
    err = map_error(modal_exception.ConnectionError("[Errno 111] Connect call failed"), SERVER)
    assert SERVER in err.msg
    assert err.code == "UNAVAILABLE"
    assert SERVER in map_error(ConnectionRefusedError(111, "refused"), SERVER).msg


def test_other_api_errors_carry_code_and_detail():
    err = map_error(sdk_error(modal_exception.NotFoundError, grpclib.Status.NOT_FOUND, "Sandbox sb-1 not found"), SERVER)
    assert err.code == "NOT_FOUND"
    assert "NOT_FOUND" in err.msg and "Sandbox sb-1 not found" in err.msg
    assert err.fail_kwargs() == {"msg": err.msg, "error_code": "NOT_FOUND", "error_details": "Sandbox sb-1 not found"}


def test_permission_denied_points_at_workspace():
    err = map_error(sdk_error(modal_exception.PermissionDeniedError, grpclib.Status.PERMISSION_DENIED, "no"), SERVER)
    assert "modal token info" in err.msg


def test_unknown_exception_keeps_its_type():
    err = map_error(RuntimeError("weird"), SERVER)
    assert "RuntimeError" in err.msg and "weird" in err.msg


# --- connect timeout --------------------------------------------------------------------------------

def free_port():
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


def test_check_reachable_fails_fast_with_the_url():
    url = f"http://127.0.0.1:{free_port()}"
    with pytest.raises(ModalError) as err:
        check_reachable(url, timeout=2)
    assert url in err.value.msg
    assert err.value.code == "UNAVAILABLE"


def test_check_reachable_accepts_a_listening_server():
    with socket.socket() as server:
        server.bind(("127.0.0.1", 0))
        server.listen()
        check_reachable(f"http://127.0.0.1:{server.getsockname()[1]}", timeout=2)


def test_check_reachable_one_of_several_is_enough():
    with socket.socket() as server:
        server.bind(("127.0.0.1", 0))
        server.listen()
        check_reachable(f"http://127.0.0.1:{free_port()},http://127.0.0.1:{server.getsockname()[1]}", timeout=2)


def test_messages_never_end_in_a_doubled_period():
    # The SDK's own message ends with a period; the collection's sentence adds its own.
    err = map_error(modal_exception.ConnectionError("Could not connect to the Modal server."), "https://api.example")
    assert "Modal server. Check the network" in err.msg
    assert ".." not in err.msg
    auth = map_error(modal_exception.AuthError("Token missing. Could not authenticate client."), SERVER)
    assert ".." not in auth.msg and "Could not authenticate client. Create a token" in auth.msg
    other = map_error(sdk_error(modal_exception.InvalidError, grpclib.Status.INVALID_ARGUMENT, "Bad value."), SERVER)
    assert other.details == "Bad value."


def test_not_found_follows_the_chain_of_causes():
    try:
        try:
            raise modal_exception.NotFoundError("no such volume")
        except modal_exception.NotFoundError as inner:
            raise ModalError("mapped") from inner
    except ModalError as outer:
        assert is_not_found(outer)
    assert is_not_found(ModalError("x", code="NOT_FOUND"))
    assert not is_not_found(ModalError("x", code="UNAVAILABLE"))


# --- credentials: profiles ------------------------------------------------------------------------------

TWO_PROFILES = {"alpha": {"token_id": "ak-a"}, "beta": {"token_id": "ak-b"}}


def test_several_profiles_none_active_says_how_to_choose():
    problem = profile_problem(TWO_PROFILES, None, "/home/me/.modal.toml")
    assert "several profiles (alpha, beta) and none is active" in problem
    assert "modal profile activate NAME" in problem and "MODAL_PROFILE" in problem
    assert profile_problem({"alpha": {}, "beta": {"active": True}}, None, "f") is None
    assert profile_problem({"alpha": {}}, None, "f") is None  # one profile: the SDK's default, nothing to choose


def test_modal_profile_naming_a_missing_profile_lists_the_existing_ones():
    problem = profile_problem(TWO_PROFILES, "gamma", "/home/me/.modal.toml")
    assert "MODAL_PROFILE is set to 'gamma'" in problem and "alpha, beta" in problem
    assert profile_problem(TWO_PROFILES, "beta", "f") is None


def test_missing_credentials_message_names_the_profile_problem(monkeypatch):
    monkeypatch.delenv("MODAL_PROFILE", raising=False)
    config = type("Config", (), {"_user_config": TWO_PROFILES, "user_config_path": "/cfg/modal.toml"})
    message = missing_credentials_message(config)
    assert message.startswith("No Modal credentials found: /cfg/modal.toml has several profiles")
    monkeypatch.setenv("MODAL_PROFILE", "gamma")
    assert "MODAL_PROFILE is set to 'gamma'" in missing_credentials_message(config)
    # Without the SDK's parsed file (a future SDK), the generic advice.
    assert "modal token new" in missing_credentials_message(type("Bare", (), {}))


def test_session_from_plain_options(monkeypatch, tmp_path):
    monkeypatch.setenv("HOME", str(tmp_path))
    session = ModalSession(token_id="ak-1", token_secret="as-1", environment="main", key_dir="~/keys")
    assert (session.token_id, session.environment, session.app_name) == ("ak-1", "main", "mngr-modal")
    assert session.key_dir == str(tmp_path / "keys")
    monkeypatch.setattr(_client, "HAS_MODAL", False)
    with pytest.raises(ModalError) as err:
        ModalSession()
    assert "modal" in err.value.msg


# --- session ------------------------------------------------------------------------------------------

class FakeModule:
    def __init__(self, **params):
        self.params = {"token_id": None, "token_secret": None, "environment": None, "app": "mngr-modal", "key_dir": None}
        self.params.update(params)

    def fail_json(self, **kwargs):
        raise AssertionError(kwargs)


def test_argument_spec_hides_the_secret():
    spec = modal_argument_spec()
    assert spec["token_secret"]["no_log"] is True
    assert spec["app"]["default"] == "mngr-modal"
    assert spec["token_id"]["fallback"][1] == ["MODAL_TOKEN_ID"]


def test_session_call_maps_and_retries(monkeypatch):
    policy = no_sleep_policy(max_attempts=3)[0]
    session = ModalSession.from_module(FakeModule(), retry=policy)
    fn = Recorder([sdk_error(modal_exception.ServiceError, grpclib.Status.UNAVAILABLE)])
    assert session.call(fn) == "ok"
    with pytest.raises(ModalError) as err:
        session.call(Recorder([sdk_error(modal_exception.NotFoundError, grpclib.Status.NOT_FOUND, "no app")]))
    assert err.value.code == "NOT_FOUND"


def test_half_given_credentials_are_an_error():
    session = ModalSession.from_module(FakeModule(token_id="ak-123"))
    with pytest.raises(ModalError, match="token_id is set but token_secret is not"):
        session.client  # pylint: disable=pointless-statement


def test_no_credentials_anywhere(monkeypatch, tmp_path):
    monkeypatch.delenv("MODAL_TOKEN_ID", raising=False)
    monkeypatch.delenv("MODAL_TOKEN_SECRET", raising=False)
    session = ModalSession.from_module(FakeModule())
    monkeypatch.setattr(session.modal.config, "config", {"token_id": None, "token_secret": None})
    with pytest.raises(ModalError) as err:
        session.client  # pylint: disable=pointless-statement
    assert "modal token new" in err.value.msg


def test_unreachable_server_is_reported_quickly(monkeypatch):
    url = f"http://127.0.0.1:{free_port()}"
    monkeypatch.setenv("MODAL_SERVER_URL", url)
    session = ModalSession.from_module(FakeModule(token_id="ak-1", token_secret="as-1"))
    with pytest.raises(ModalError) as err:
        session.client  # pylint: disable=pointless-statement
    assert url in err.value.msg


def test_key_dir_default_is_expanded(monkeypatch, tmp_path):
    monkeypatch.setenv("HOME", str(tmp_path))
    assert ModalSession.from_module(FakeModule()).key_dir == str(tmp_path / ".mngr-modal" / "keys")


def test_missing_sdk_fails_with_missing_required_lib(monkeypatch):
    monkeypatch.setattr(_client, "HAS_MODAL", False)
    failures = []

    class Module(FakeModule):
        def fail_json(self, **kwargs):
            failures.append(kwargs)
            raise SystemExit(1)

    with pytest.raises(SystemExit):
        ModalSession.from_module(Module())
    assert "modal" in failures[0]["msg"]
