# Copyright (c) 2026, the mngr.modal authors
# GNU General Public License v3.0+ (see COPYING or https://www.gnu.org/licenses/gpl-3.0.txt)

# This module is private to the mngr.modal collection: its interface may change without notice.

"""Build arguments: the three forms users already know, turned into one validated sandbox spec.

The forms (all may be mixed, as a string or a list of strings):

* ``key=value``                       e.g. ``cpu=2``
* ``--key=value`` (and ``--flag``)    e.g. ``--gpu=h100``
* a bulk string split like a shell    e.g. ``"gpu=h100 cpu=2 memory=8"``

:func:`parse_build_args` returns only the keys that were given; :func:`resolve_spec` merges them with
the module's first-class options (a key set in both places is an error), validates, and fills defaults.
"""

from __future__ import annotations

import ipaddress
import os
import re
import shlex
import typing as t

from ansible_collections.mngr.modal.plugins.module_utils._errors import ModalCollectionError

# Modal's GPU types (https://modal.com/docs/guide/gpu), upper-cased as the SDK sends them.
GPU_TYPES = (
    "T4", "L4", "A10", "A10G", "L40S", "A100", "A100-40GB", "A100-80GB", "RTX-PRO-6000",
    "H100", "H100!", "H200", "B200", "B200+",
)
MAX_GPU_COUNT = 8

CPU_RANGE = (0.125, 64.0)        # cores
MEMORY_RANGE = (0.125, 344.0)    # GB
TIMEOUT_RANGE = (1, 86400)       # seconds; Modal's sandbox maximum is 24 hours
IDLE_TIMEOUT_RANGE = (1, 86400)

DEFAULTS: dict[str, t.Any] = {
    "gpu": None,
    "cpu": 1.0,
    "memory": 1.0,
    "image": "debian:bookworm-slim",
    "dockerfile": None,
    "context_dir": None,
    "docker_build_args": {},
    "timeout": 900,
    "idle_timeout": None,
    "region": None,
    "secrets": [],
    "cidr_allowlist": [],
    "offline": False,
    "volumes": [],
    "env": {},
}

# Name patterns are checked with fullmatch: "$" would also accept a value followed by a newline.
ENV_NAME = re.compile(r"[A-Za-z_][A-Za-z0-9_]*")
VOLUME_NAME = re.compile(r"[A-Za-z0-9][A-Za-z0-9._-]{0,63}")
REGION_NAME = re.compile(r"[a-z0-9][a-z0-9-]*")


class BuildArgError(ModalCollectionError, ValueError):
    """A build argument or option that cannot be used; the message names it and says what is accepted."""


# --- value parsers: raw text (or an option's value) -> normalized value -----------------------------

def _number(key: str, raw: t.Any, low: float, high: float, unit: str) -> float:
    try:
        value = float(raw)
    except (TypeError, ValueError):
        raise BuildArgError(f"{key} must be a number of {unit} between {low:g} and {high:g}, got {raw!r}") from None
    if not low <= value <= high:
        raise BuildArgError(f"{key}={raw} is out of range: {key} must be between {low:g} and {high:g} {unit}")
    return value


def _seconds(key: str, raw: t.Any, bounds: tuple[int, int]) -> int:
    low, high = bounds
    text = str(raw).strip()
    if isinstance(raw, bool) or not re.fullmatch(r"\d+", text):
        raise BuildArgError(f"{key} must be a whole number of seconds between {low} and {high}, got {raw!r}")
    value = int(text)
    if not low <= value <= high:
        raise BuildArgError(f"{key}={raw} is out of range: {key} must be between {low} and {high} seconds")
    return value


def parse_gpu(raw: t.Any) -> str:
    """``h100`` -> ``H100``; ``a100-80gb:2`` -> ``A100-80GB:2``."""
    text = str(raw).strip()
    gpu_type, sep, count_text = text.partition(":")
    canonical = gpu_type.upper()
    if canonical not in GPU_TYPES:
        raise BuildArgError(
            f"unknown GPU type {gpu_type!r} in gpu={text}: accepted types (case-insensitive) are "
            f"{', '.join(GPU_TYPES)}, optionally followed by :COUNT"
        )
    if not sep:
        return canonical
    if not re.fullmatch(r"\d+", count_text) or not 1 <= int(count_text) <= MAX_GPU_COUNT:
        raise BuildArgError(f"bad GPU count {count_text!r} in gpu={text}: the count must be 1 to {MAX_GPU_COUNT}")
    return f"{canonical}:{int(count_text)}"


def _image(raw: t.Any) -> str:
    text = str(raw).strip()
    if not text or any(ch.isspace() for ch in text):
        raise BuildArgError(f"image must be a registry image reference such as debian:bookworm-slim, got {raw!r}")
    return text


def _path(key: str, raw: t.Any) -> str:
    text = str(raw).strip()
    if not text:
        raise BuildArgError(f"{key} must be a path, got an empty value")
    # Options of type path are expanded by Ansible; build args are plain text, so expand them here alike.
    return os.path.expanduser(text)


def _region(raw: t.Any) -> str:
    text = str(raw).strip()
    if not REGION_NAME.fullmatch(text):
        raise BuildArgError(f"region must be a Modal region name such as us-east, got {raw!r}")
    return text


def _secret(raw: t.Any) -> str:
    text = str(raw).strip()
    if not ENV_NAME.fullmatch(text):
        raise BuildArgError(
            f"secret must name a local environment variable (letters, digits and _, not starting with a digit), got {raw!r}"
        )
    return text


def _cidr(raw: t.Any) -> str:
    text = str(raw).strip()
    try:
        if "/" not in text:
            raise ValueError("no prefix length")
        return str(ipaddress.ip_network(text, strict=False))
    except ValueError:
        raise BuildArgError(
            f"cidr_allowlist entry {raw!r} is not a CIDR block: expected ADDRESS/PREFIX such as 10.0.0.0/8 or 2001:db8::/32"
        ) from None


def _volume(raw: t.Any) -> dict[str, str]:
    if isinstance(raw, dict) and set(raw) == {"name", "path"}:
        name, path = str(raw["name"]), str(raw["path"])
        text = f"{name}:{path}"
    else:
        text = str(raw).strip()
        name, sep, path = text.partition(":")
        if not sep:
            raise BuildArgError(f"volume {text!r} must be NAME:/absolute/path, e.g. data:/mnt/data")
    if not VOLUME_NAME.fullmatch(name):
        raise BuildArgError(
            f"volume name {name!r} in {text!r} must be 1-64 letters, digits, '.', '_' or '-', starting with a letter or digit"
        )
    if not path.startswith("/") or ".." in path.split("/") or path == "/":
        raise BuildArgError(f"volume path {path!r} in {text!r} must be an absolute path below / without '..'")
    return {"name": name, "path": path.rstrip("/")}


def _key_value(key: str, raw: t.Any, name_pattern: re.Pattern[str], what: str) -> tuple[str, str]:
    text = str(raw)
    name, sep, value = text.partition("=")
    if not sep or not name_pattern.fullmatch(name):
        raise BuildArgError(f"{key} entry {text!r} must be NAME=VALUE with NAME a valid {what}")
    return name, value


def _flag(key: str, raw: t.Any) -> bool:
    if isinstance(raw, bool):
        return raw
    text = str(raw).strip().lower()
    if text in ("1", "true", "yes", "on"):
        return True
    if text in ("0", "false", "no", "off"):
        return False
    raise BuildArgError(f"{key} is a flag: give it bare ({key}) or as {key}=true/false, got {key}={raw}")


class _Key(t.NamedTuple):
    spec_key: str                            # name in the spec and of the module option
    repeatable: bool
    parse: t.Callable[[t.Any], t.Any]        # one raw value -> normalized value
    flag: bool = False


# Build-argument keys, as users type them (``context-dir`` and ``context_dir`` are the same key).
BUILD_ARG_KEYS: dict[str, _Key] = {
    "gpu": _Key("gpu", False, parse_gpu),
    "cpu": _Key("cpu", False, lambda v: _number("cpu", v, *CPU_RANGE, "cores")),
    "memory": _Key("memory", False, lambda v: _number("memory", v, *MEMORY_RANGE, "GB")),
    "image": _Key("image", False, _image),
    "dockerfile": _Key("dockerfile", False, lambda v: _path("dockerfile", v)),
    "context_dir": _Key("context_dir", False, lambda v: _path("context_dir", v)),
    "docker_build_arg": _Key("docker_build_args", True,
                             lambda v: _key_value("docker_build_arg", v, ENV_NAME, "Dockerfile ARG name")),
    "timeout": _Key("timeout", False, lambda v: _seconds("timeout", v, TIMEOUT_RANGE)),
    "region": _Key("region", False, _region),
    "secret": _Key("secrets", True, _secret),
    "cidr_allowlist": _Key("cidr_allowlist", True, _cidr),
    "offline": _Key("offline", False, lambda v: _flag("offline", v), flag=True),
    "volume": _Key("volumes", True, _volume),
}
ACCEPTED_KEYS = ", ".join(sorted(BUILD_ARG_KEYS))


def _words(value: str | list[str] | tuple[str, ...] | None) -> list[tuple[str, str]]:
    """Every word of every item, split the way a shell splits words, each with the item it comes from."""
    if value is None:
        return []
    items = [value] if isinstance(value, str) else list(value)
    words: list[tuple[str, str]] = []
    for item in items:
        if not isinstance(item, str):
            raise BuildArgError(f"build_args items must be strings such as cpu=2, got {item!r}")
        try:
            words.extend((word, item) for word in shlex.split(item))
        except ValueError as exc:
            raise BuildArgError(f"cannot split build_args {item!r}: {exc}") from None
    return words


def _split_item_hint(item: str) -> str:
    """Why a word of ``item`` is not the whole value the user meant, and how to quote it; '' if it is one word."""
    words = shlex.split(item)
    if len(words) < 2:
        return ""
    name, sep, value = words[0].partition("=")
    example = f'{name}="{value} {" ".join(words[1:])}"' if sep else f'NAME="{" ".join(words)}"'
    return (
        f" (build_args item {item!r} is split into words like a shell command line: {words!r}; to pass a value "
        f"with spaces, quote it inside the item: {example!r})"
    )


def parse_build_args(value: str | list[str] | tuple[str, ...] | None) -> dict[str, t.Any]:
    """Parse build arguments in any of the three forms into ``{spec_key: value}`` for the keys given.

    Repeatable keys collect into a list (``docker_build_arg`` into a dict). Raises BuildArgError.
    """
    parsed: dict[str, t.Any] = {}
    seen: dict[str, str] = {}
    for word, item in _words(value):
        try:
            _parse_word(word, parsed, seen)
        except BuildArgError as exc:
            hint = _split_item_hint(item)
            if not hint:
                raise
            raise BuildArgError(f"{exc}{hint}") from None
    return parsed


def _parse_word(word: str, parsed: dict[str, t.Any], seen: dict[str, str]) -> None:
    """Add one build argument word (``key=value``) to ``parsed``; ``seen`` remembers the keys already given."""
    text = word[2:] if word.startswith("--") else word
    name, sep, raw = text.partition("=")
    key_name = name.strip().replace("-", "_").lower()
    key = BUILD_ARG_KEYS.get(key_name)
    if not name or key is None:
        raise BuildArgError(f"unknown build argument {name!r} in {word!r}: accepted keys are {ACCEPTED_KEYS}")
    if not sep:
        if not key.flag:
            raise BuildArgError(f"build argument {word!r} has no value: write {key_name}=VALUE")
        raw = "true"
    elif raw == "":
        raise BuildArgError(f"build argument {word!r} has an empty value: write {key_name}=VALUE")
    if not key.repeatable and key_name in seen:
        raise BuildArgError(
            f"build argument {key_name} is given twice ({seen[key_name]!r} and {word!r}): it takes one value"
        )
    seen[key_name] = word
    normalized = key.parse(raw)
    if key.spec_key == "docker_build_args":
        arg_name, arg_value = normalized
        parsed.setdefault("docker_build_args", {})[arg_name] = arg_value
    elif key.repeatable:
        parsed.setdefault(key.spec_key, []).append(normalized)
    else:
        parsed[key.spec_key] = normalized


# --- first-class options: same validators, option-shaped input ------------------------------------

def _check_mapping_names(option: str, mapping: dict[t.Any, t.Any], what: str) -> None:
    """Each key of a NAME: VALUE option must be a name by itself (``{"A=B": x}`` is not ``A="B=x"``)."""
    for name in mapping:
        if not isinstance(name, str) or "=" in name or not ENV_NAME.match(name):
            raise BuildArgError(
                f"{option} key {name!r} is not a valid {what}: use letters, digits and _, not starting with a digit "
                f"(and no '='; the value goes after the colon, as in {option}: {{NAME: value}})"
            )


def _option_values(spec_key: str, value: t.Any) -> t.Any:
    """Validate one module option the same way as the build argument of the same meaning."""
    if spec_key == "docker_build_args":
        if not isinstance(value, dict):
            raise BuildArgError(f"docker_build_args must be a dictionary of ARG names to values, got {value!r}")
        _check_mapping_names("docker_build_args", value, "Dockerfile ARG name")
        return dict(_key_value("docker_build_args", f"{k}={v}", ENV_NAME, "Dockerfile ARG name") for k, v in value.items())
    if spec_key == "env":
        if not isinstance(value, dict):
            raise BuildArgError(f"env must be a dictionary of variable names to values, got {value!r}")
        _check_mapping_names("env", value, "environment variable name")
        env = dict(_key_value("env", f"{k}={v}", ENV_NAME, "environment variable name") for k, v in value.items())
        for name, text in env.items():
            if re.search(r"[\r\n\x00]", text):
                # Each variable becomes one NAME=VALUE line of the files SSH logins read their environment from.
                raise BuildArgError(f"env value of {name} ({text[:40]!r}) contains a line break: SSH sessions read env "
                                    "one variable per line, so a value must fit on one line")
        return env
    if spec_key == "idle_timeout":
        return _seconds("idle_timeout", value, IDLE_TIMEOUT_RANGE)
    by_spec_key = {key.spec_key: key for key in BUILD_ARG_KEYS.values()}
    key = by_spec_key[spec_key]
    if key.repeatable:
        values = value if isinstance(value, (list, tuple)) else [value]
        return [key.parse(item) for item in values]
    return key.parse(value)


def _describe(spec_key: str, value: t.Any) -> str:
    if isinstance(value, list):
        return ", ".join(str(item) if not isinstance(item, dict) else f"{item['name']}:{item['path']}" for item in value)
    if isinstance(value, dict):
        return ", ".join(f"{k}={v}" for k, v in value.items())
    return f"{spec_key}={value}"


def resolve_spec(from_build_args: dict[str, t.Any], from_options: dict[str, t.Any]) -> dict[str, t.Any]:
    """Merge parsed build arguments with module options (None = not given) into a complete spec.

    A key given in both places is an error naming both values; the result has every key of DEFAULTS.
    """
    unknown = set(from_options) - set(DEFAULTS)
    if unknown:
        raise BuildArgError(f"not a spec option: {', '.join(sorted(unknown))}")
    spec = {key: (list(v) if isinstance(v, list) else dict(v) if isinstance(v, dict) else v) for key, v in DEFAULTS.items()}
    spec.update(from_build_args)
    for key, value in from_options.items():
        if value is None:
            continue
        if key in from_build_args:
            raise BuildArgError(
                f"{key} is set both in build_args ({_describe(key, from_build_args[key])}) and as the option "
                f"{key} ({_describe(key, value)}): set it in one place only"
            )
        spec[key] = _option_values(key, value)
    _check_combinations(spec, from_build_args, from_options)
    return spec


def _check_combinations(spec: dict[str, t.Any], from_build_args: dict[str, t.Any], from_options: dict[str, t.Any]) -> None:
    given = set(from_build_args) | {k for k, v in from_options.items() if v is not None}
    if spec["dockerfile"] and "image" in given:
        raise BuildArgError(
            f"image={spec['image']} and dockerfile={spec['dockerfile']} are both set: the Dockerfile's FROM line is the "
            "base image, so give one of them"
        )
    if not spec["dockerfile"]:
        for key in ("context_dir", "docker_build_args"):
            if spec[key]:
                raise BuildArgError(f"{key} ({_describe(key, spec[key])}) only applies with a dockerfile: set dockerfile too")
    check_network(spec)
    paths = [volume["path"] for volume in spec["volumes"]]
    duplicates = sorted({path for path in paths if paths.count(path) > 1})
    if duplicates:
        raise BuildArgError(f"two volumes are mounted at {duplicates[0]}: each volume needs its own path")


def check_network(spec: dict[str, t.Any]) -> None:
    """offline (no outbound traffic at all) and a cidr_allowlist (some outbound traffic) contradict each other."""
    if spec.get("offline") and spec.get("cidr_allowlist"):
        raise BuildArgError(
            f"offline and cidr_allowlist ({_describe('cidr_allowlist', spec['cidr_allowlist'])}) are both set: offline "
            "blocks all outbound traffic, cidr_allowlist allows traffic to these blocks. Give one of them."
        )


def network_kwargs(spec: dict[str, t.Any]) -> dict[str, t.Any]:
    """The outbound-network arguments of ``modal.Sandbox.create`` for a spec (none: open network).

    offline is an empty outbound allowlist rather than ``block_network=True``: the SDK refuses open ports with
    block_network, and a host needs its SSH port. An empty allowlist blocks every outbound connection while
    inbound tunnels keep working (the SDK itself suggests ``outbound_cidr_allowlist=[]`` for this).
    """
    check_network(spec)
    if spec.get("offline"):
        return {"outbound_cidr_allowlist": []}
    if spec.get("cidr_allowlist"):
        return {"outbound_cidr_allowlist": list(spec["cidr_allowlist"])}
    return {}


def memory_mib(spec: dict[str, t.Any]) -> int:
    """The spec's memory (GB, as users give it) in MiB, as the SDK's ``memory=`` wants it."""
    return int(round(float(spec["memory"]) * 1024))


def gpu_type(spec: dict[str, t.Any]) -> str | None:
    """The GPU type without its count (``H100:2`` -> ``H100``), or None."""
    return spec["gpu"].split(":", 1)[0] if spec.get("gpu") else None


# --- the build options of the modules that create hosts ----------------------------------------------

# The argument spec of the build options, shared by every module that creates hosts (modal_sandbox, modal_fleet).
BUILD_OPTIONS: dict[str, dict[str, t.Any]] = {
    "build_args": {"type": "raw"},
    "gpu": {"type": "str"},
    "cpu": {"type": "float"},
    "memory": {"type": "float"},
    "image": {"type": "str"},
    "dockerfile": {"type": "path"},
    "context_dir": {"type": "path"},
    "docker_build_args": {"type": "dict"},
    "timeout": {"type": "int"},
    "idle_timeout": {"type": "int"},
    "region": {"type": "str"},
    "secrets": {"type": "list", "elements": "str", "no_log": False},
    "cidr_allowlist": {"type": "list", "elements": "str"},
    "offline": {"type": "bool"},
    "volumes": {"type": "list", "elements": "raw"},
    "env": {"type": "dict"},
}
# The build options that are spec keys (all but build_args, which carries any of them).
SPEC_OPTIONS = tuple(key for key in BUILD_OPTIONS if key != "build_args")


def _build_args_value(value: t.Any) -> t.Any:
    if value is None or isinstance(value, (str, list)):
        return value
    raise BuildArgError(f"build_args must be a string or a list of strings, got {type(value).__name__} {value!r}")


def requested_spec(params: dict[str, t.Any]) -> tuple[dict[str, t.Any], list[str]]:
    """The spec a module's parameters ask for (build_args and the build options), and the keys they give."""
    from_build_args = parse_build_args(_build_args_value(params.get("build_args")))
    from_options = {key: params.get(key) for key in SPEC_OPTIONS}
    spec = resolve_spec(from_build_args, from_options)
    given = sorted(set(from_build_args) | {key for key, value in from_options.items() if value is not None})
    return spec, given
