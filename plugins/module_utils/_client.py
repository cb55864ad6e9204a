# Copyright (c) 2026, the mngr.modal authors
# GNU General Public License v3.0+ (see COPYING or https://www.gnu.org/licenses/gpl-3.0.txt)

# This module is private to the mngr.modal collection: its interface may change without notice.

"""Everything between a module and the Modal SDK: import guard, credentials, retries and error mapping.

A module builds one :class:`ModalSession` from its parameters and runs every SDK call through
:meth:`ModalSession.call`, which retries transient failures and turns every other failure into a
:class:`ModalError` whose message says what went wrong and what to do about it.
"""

from __future__ import annotations

import os
import random
import socket
import time
import traceback
import typing as t
from urllib.parse import urlsplit

from ansible.module_utils.basic import env_fallback, missing_required_lib

from ansible_collections.mngr.modal.plugins.module_utils._errors import ModalCollectionError

try:
    # Only probe for the SDK here. Importing it reads ~/.modal.toml, which a module given explicit
    # credentials must not do, so the real import waits until the session knows its credentials.
    import importlib.util

    HAS_MODAL = importlib.util.find_spec("modal") is not None
    MODAL_IMPORT_ERROR = None if HAS_MODAL else "No module named 'modal'"
except ImportError:  # pragma: no cover - importlib is part of the standard library
    HAS_MODAL = False
    MODAL_IMPORT_ERROR = traceback.format_exc()

DEFAULT_APP = "mngr-modal"
DEFAULT_SERVER_URL = "https://api.modal.com"
DEFAULT_KEY_DIR = "~/.mngr-modal/keys"

# The SDK keeps retrying a server that refuses connections for about a minute before it gives up.
# A module fails much sooner with a clear message when nothing listens at the server URL.
CONNECT_TIMEOUT_SECONDS = 10.0

# gRPC statuses worth another try: the SDK itself retries exactly these (see RETRYABLE_GRPC_STATUS_CODES
# in modal._utils.grpc_utils); a call that still fails after the SDK's own retries is retried here as a whole.
TRANSIENT_STATUSES = frozenset({"UNAVAILABLE", "DEADLINE_EXCEEDED", "CANCELLED", "INTERNAL", "UNKNOWN"})
# A rate limit or a quota of the workspace: the SDK does not retry these calls, and a later try often succeeds (a
# rate limit clears within seconds; a quota frees up as other sandboxes end), so they are retried here too, with
# longer waits, a bounded number of times.
RATE_LIMIT_STATUSES = frozenset({"RESOURCE_EXHAUSTED"})

AUTH_HELP = (
    "Create a token with `modal token new`, or set the environment variables MODAL_TOKEN_ID and "
    "MODAL_TOKEN_SECRET (or the options token_id and token_secret) to a valid token. "
    "`modal token info` shows which token is in use."
)


def modal_argument_spec() -> dict[str, dict[str, t.Any]]:
    """The shared options of every module, as documented in the ``mngr.modal.modal`` doc fragment."""
    return {
        "token_id": {"type": "str", "fallback": (env_fallback, ["MODAL_TOKEN_ID"])},
        "token_secret": {"type": "str", "no_log": True, "fallback": (env_fallback, ["MODAL_TOKEN_SECRET"])},
        "environment": {"type": "str", "fallback": (env_fallback, ["MODAL_ENVIRONMENT"])},
        "app": {"type": "str", "default": DEFAULT_APP, "fallback": (env_fallback, ["MNGR_MODAL_APP"])},
        "key_dir": {"type": "path", "fallback": (env_fallback, ["MNGR_MODAL_KEY_DIR"])},
    }


class ModalError(ModalCollectionError):
    """A failure of a Modal call (or to reach Modal): ``code`` is the gRPC status when there is one."""


class RetryPolicy:
    """Jittered exponential backoff ("full jitter"): attempt n waits a random time up to base * 2**n, capped.

    Rate limits and quotas (``is_rate_limited``) wait longer (``rate_limit_base_delay``, ``rate_limit_max_delay``):
    hammering a rate limit only extends it.
    """

    def __init__(self, max_attempts: int = 4, base_delay: float = 0.5, max_delay: float = 8.0,
                 sleep: t.Callable[[float], None] = time.sleep, rand: t.Callable[[], float] = random.random,
                 rate_limit_base_delay: float = 2.0, rate_limit_max_delay: float = 20.0) -> None:
        self.max_attempts = max_attempts
        self.base_delay = base_delay
        self.max_delay = max_delay
        self.rate_limit_base_delay = rate_limit_base_delay
        self.rate_limit_max_delay = rate_limit_max_delay
        self._sleep = sleep
        self._rand = rand

    def delay(self, attempt: int, rate_limited: bool = False) -> float:
        """Seconds to wait after failed attempt number ``attempt`` (0-based)."""
        if rate_limited:
            return self._rand() * min(self.rate_limit_max_delay, self.rate_limit_base_delay * (2 ** attempt))
        return self._rand() * min(self.max_delay, self.base_delay * (2 ** attempt))

    def longest_wait(self, rate_limited: bool = False) -> float:
        """The most seconds all the waits between ``max_attempts`` attempts can add up to."""
        policy = RetryPolicy(self.max_attempts, self.base_delay, self.max_delay, rand=lambda: 1.0,
                             rate_limit_base_delay=self.rate_limit_base_delay,
                             rate_limit_max_delay=self.rate_limit_max_delay)
        return sum(policy.delay(attempt, rate_limited) for attempt in range(self.max_attempts - 1))

    def run(self, fn: t.Callable[[], t.Any], is_transient: t.Callable[[BaseException], bool],
            is_rate_limited: t.Callable[[BaseException], bool] = lambda exc: False) -> t.Any:
        """Call ``fn`` until it succeeds, fails permanently, or ``max_attempts`` is used up."""
        for attempt in range(self.max_attempts):
            try:
                return fn()
            except Exception as exc:  # pylint: disable=broad-exception-caught
                rate_limited = is_rate_limited(exc)
                if attempt + 1 >= self.max_attempts or not (rate_limited or is_transient(exc)):
                    raise
                self._sleep(self.delay(attempt, rate_limited))
        raise AssertionError("unreachable: the loop returns or raises")  # pragma: no cover


def grpc_status_name(exc: BaseException) -> str | None:
    """The gRPC status name carried by an SDK exception (``UNAVAILABLE``...), or None."""
    # modal's exceptions wrap grpclib.GRPCError and keep the status in a private attribute; reading
    # the public ``status`` property would print a deprecation warning into module output.
    status = getattr(exc, "_grpc_status", None)
    if status is None and type(exc).__name__ == "GRPCError":
        status = getattr(exc, "status", None)
    if status is None:
        return None
    return getattr(status, "name", str(status))


def is_transient(exc: BaseException) -> bool:
    """Whether a failed call is worth repeating: only the gRPC statuses the SDK itself treats as transient."""
    return grpc_status_name(exc) in TRANSIENT_STATUSES


def is_rate_limited(exc: BaseException) -> bool:
    """Whether a failed call hit a rate limit or a quota (RESOURCE_EXHAUSTED): worth repeating after a longer wait."""
    return grpc_status_name(exc) in RATE_LIMIT_STATUSES


def rate_limit_message(text: str, retry: RetryPolicy | None) -> str:
    """What a user can do about a rate limit or quota that the retries did not outlast."""
    tried = ""
    if retry is not None and retry.max_attempts > 1:
        tried = (f" The call was tried {retry.max_attempts} times, with waits of up to "
                 f"{retry.longest_wait(rate_limited=True):g} seconds in all.")
    return (
        f"Modal refused the request because a rate limit or a quota of the workspace was reached "
        f"(RESOURCE_EXHAUSTED): {text}.{tried} For a rate limit, wait a minute and run again with fewer tasks at once "
        "(lower forks, or throttle on the task); for a quota (running sandboxes, GPUs, memory), stop or destroy the "
        "hosts you do not need, or ask Modal for a higher limit (workspace settings)."
    )


def is_not_found(exc: BaseException) -> bool:
    """Whether a failure means "no such object": Modal's NotFoundError, raw or mapped by the session (NOT_FOUND).

    Follows the chain of causes, because the session wraps SDK errors in a ModalError; a missing file on a
    volume (FileNotFoundError) counts too.
    """
    seen = set()
    current: BaseException | None = exc
    while current is not None and id(current) not in seen:
        seen.add(id(current))
        if type(current).__name__ in ("NotFoundError", "FileNotFoundError") or getattr(current, "code", None) == "NOT_FOUND":
            return True
        current = current.__cause__ or current.__context__
    return False


def map_error(exc: BaseException, server_url: str, retry: RetryPolicy | None = None) -> ModalError:
    """Turn any exception raised by the SDK into a ModalError with an actionable message.

    ``retry`` is the policy the call was made with, so that a message can say how long it was retried.
    """
    if isinstance(exc, ModalError):
        return exc
    kind = type(exc).__name__
    details = str(exc) or kind
    # The SDK's own messages often end with a period; the sentences below add theirs.
    text = details.rstrip().rstrip(".") or kind
    status = grpc_status_name(exc)
    if kind == "AuthError" or status == "UNAUTHENTICATED":
        return ModalError(f"Modal did not accept the credentials: {text}. {AUTH_HELP}", code=status or "UNAUTHENTICATED")
    if status == "PERMISSION_DENIED":
        return ModalError(
            f"Modal refused the request: {text}. The token is valid but lacks access to this workspace or "
            "environment; check the environment option and the token's workspace (`modal token info`).",
            code=status,
        )
    if status in RATE_LIMIT_STATUSES:
        return ModalError(rate_limit_message(text, retry), code=status, details=details)
    # Only network failures mean "unreachable": other OSErrors (a missing file, a full disk) are not the server's fault.
    if kind in ("ConnectionError", "RetryTimeoutError") or isinstance(exc, (ConnectionError, TimeoutError, socket.gaierror)):
        return ModalError(
            f"Cannot reach the Modal API at {server_url}: {text}. Check the network, or MODAL_SERVER_URL if it "
            "points at another server.",
            code=status or "UNAVAILABLE",
        )
    if status is not None:
        return ModalError(f"Modal API error {status}: {text}", code=status, details=details)
    return ModalError(f"Modal SDK error ({kind}): {text}", details=details)


def server_url_from_env() -> str:
    """The API URL the SDK will use: MODAL_SERVER_URL when set, else Modal's own."""
    return os.environ.get("MODAL_SERVER_URL") or DEFAULT_SERVER_URL


def check_reachable(server_url: str, timeout: float = CONNECT_TIMEOUT_SECONDS) -> None:
    """Fail fast with a ModalError when no server accepts TCP connections at ``server_url``.

    The URL may be a comma-separated list, as the SDK accepts; one reachable entry is enough.
    """
    problems = []
    for url in (part.strip() for part in server_url.split(",") if part.strip()):
        parts = urlsplit(url)
        if parts.scheme == "unix":
            if os.path.exists(parts.path):
                return
            problems.append(f"{url}: no such socket")
            continue
        host = parts.hostname
        if not host:
            problems.append(f"{url}: not a URL with a host name")
            continue
        port = parts.port or (443 if parts.scheme.endswith("s") else 80)
        try:
            with socket.create_connection((host, port), timeout=timeout):
                return
        except OSError as exc:
            problems.append(f"{url}: {exc.strerror or exc}")
    raise ModalError(
        f"Cannot reach the Modal API at {server_url} ({'; '.join(problems)}). Check the network, or "
        "MODAL_SERVER_URL if it points at another server.",
        code="UNAVAILABLE",
    )


def profile_problem(profiles: dict[str, t.Any], requested: str | None, config_path: str) -> str | None:
    """Why no profile of the Modal config file applies, or None when that is not the reason for missing credentials.

    ``profiles`` maps each profile name of the file to its settings, ``requested`` is MODAL_PROFILE (or None).
    """
    names = ", ".join(sorted(profiles)) or "none"
    if requested:
        if requested not in profiles:
            return (
                f"MODAL_PROFILE is set to {requested!r}, but {config_path} has no profile of that name (its profiles: "
                f"{names}). Set MODAL_PROFILE to one of them, or unset it to use the active profile."
            )
        return None
    active = [name for name, settings in profiles.items() if isinstance(settings, dict) and settings.get("active") is True]
    if len(profiles) > 1 and not active:
        return (
            f"{config_path} has several profiles ({names}) and none is active. Activate one with "
            "`modal profile activate NAME`, or choose one for this run with the environment variable MODAL_PROFILE=NAME."
        )
    return None


def missing_credentials_message(config_module: t.Any) -> str:
    """The message for "no token anywhere": a profile mix-up when that is the cause, else how to create a token."""
    # modal.config keeps the parsed file in a private attribute; without it, the generic advice still applies.
    profiles = getattr(config_module, "_user_config", None)
    config_path = getattr(config_module, "user_config_path", "~/.modal.toml")
    problem = profile_problem(profiles, os.environ.get("MODAL_PROFILE") or None, config_path) if isinstance(profiles, dict) else None
    if problem:
        return f"No Modal credentials found: {problem}"
    return f"No Modal credentials found. {AUTH_HELP}"


class ModalSession:
    """One run's connection to Modal: credentials, app, key folder and a retrying call wrapper.

    Built from plain options (what a module's or the inventory's options say); :meth:`from_module` builds it
    from a module's parameters.
    """

    def __init__(self, token_id: str | None = None, token_secret: str | None = None, environment: str | None = None,
                 app: str | None = None, key_dir: str | None = None, retry: RetryPolicy | None = None) -> None:
        if not HAS_MODAL:
            raise ModalError(f"{missing_required_lib('modal')} ({MODAL_IMPORT_ERROR})")
        self.token_id: str | None = token_id or None
        self.token_secret: str | None = token_secret or None
        self.environment: str | None = environment or None
        self.app_name: str = app or DEFAULT_APP
        self.key_dir: str = os.path.expanduser(key_dir or DEFAULT_KEY_DIR)
        self.server_url = server_url_from_env()
        self.retry = retry or RetryPolicy()
        self._modal: t.Any = None
        self._client: t.Any = None
        self._apps: dict[bool, t.Any] = {}

    @classmethod
    def from_module(cls, module: t.Any, retry: RetryPolicy | None = None) -> "ModalSession":
        """The session of a module run, from the shared options; fails the module when the SDK is missing."""
        if not HAS_MODAL:
            module.fail_json(msg=missing_required_lib("modal"), exception=MODAL_IMPORT_ERROR)
        params = module.params
        return cls(token_id=params.get("token_id"), token_secret=params.get("token_secret"),
                   environment=params.get("environment"), app=params.get("app"), key_dir=params.get("key_dir"),
                   retry=retry)

    @property
    def modal(self) -> t.Any:
        """The imported ``modal`` package (imported on first use, see the note at the top of this file)."""
        if self._modal is None:
            if bool(self.token_id) != bool(self.token_secret):
                given, missing = ("token_id", "token_secret") if self.token_id else ("token_secret", "token_id")
                raise ModalError(f"{given} is set but {missing} is not: give both, or neither. {AUTH_HELP}")
            if self.token_id and self.token_secret and "MODAL_CONFIG_PATH" not in os.environ:
                # Explicit credentials: keep the SDK away from the user's ~/.modal.toml.
                os.environ["MODAL_CONFIG_PATH"] = os.devnull
            import modal  # pylint: disable=import-outside-toplevel

            self._modal = modal
        return self._modal

    @property
    def client(self) -> t.Any:
        """A connected ``modal.Client`` built from the options, else from the SDK's own configuration."""
        if self._client is None:
            modal = self.modal
            if not (self.token_id and self.token_secret) and not self._env_or_profile_has_token(modal):
                raise ModalError(missing_credentials_message(modal.config), code="UNAUTHENTICATED")
            check_reachable(self.server_url)
            if self.token_id and self.token_secret:
                self._client = self.call(modal.Client.from_credentials, self.token_id, self.token_secret)
            else:
                self._client = self.call(modal.Client.from_env)
        return self._client

    @staticmethod
    def _env_or_profile_has_token(modal: t.Any) -> bool:
        config = modal.config.config
        return bool(config.get("token_id") and config.get("token_secret"))

    def call(self, fn: t.Callable[..., t.Any], *args: t.Any, **kwargs: t.Any) -> t.Any:
        """Run one SDK call with retries on transient errors and rate limits; every failure becomes a ModalError."""
        try:
            return self.retry.run(lambda: fn(*args, **kwargs), is_transient, is_rate_limited)
        except Exception as exc:  # pylint: disable=broad-exception-caught
            raise map_error(exc, self.server_url, self.retry) from exc

    def app(self, create_if_missing: bool) -> t.Any:
        """The Modal app of this installation, or None when it does not exist and may not be created."""
        if create_if_missing not in self._apps:
            modal = self.modal
            try:
                self._apps[create_if_missing] = self.call(
                    modal.App.lookup, self.app_name, create_if_missing=create_if_missing,
                    client=self.client, environment_name=self.environment,
                )
            except ModalError as exc:
                if exc.code != "NOT_FOUND" or create_if_missing:
                    raise
                self._apps[create_if_missing] = None
        return self._apps[create_if_missing]

    def close(self) -> None:
        """Release the client's connections (best effort: the process ends soon after anyway)."""
        if self._client is not None:
            try:
                self._client.close()
            except Exception:  # pylint: disable=broad-exception-caught
                pass
            self._client = None
