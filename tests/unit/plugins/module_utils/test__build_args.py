# Copyright (c) 2026, the mngr.modal authors
# GNU General Public License v3.0+ (see COPYING or https://www.gnu.org/licenses/gpl-3.0.txt)

from __future__ import annotations

import pytest

from ansible_collections.mngr.modal.plugins.module_utils._build_args import (
    BUILD_ARG_KEYS,
    DEFAULTS,
    BuildArgError,
    check_network,
    gpu_type,
    memory_mib,
    network_kwargs,
    parse_build_args,
    resolve_spec,
)


# --- the seed document's examples, in each of its forms ---------------------------------------------

SEED_EXAMPLES = [
    (["gpu=h100", "cpu=2", "memory=8"], {"gpu": "H100", "cpu": 2.0, "memory": 8.0}),
    (["--gpu=h100", "--cpu=2"], {"gpu": "H100", "cpu": 2.0}),
    ("gpu=h100 cpu=2 memory=8", {"gpu": "H100", "cpu": 2.0, "memory": 8.0}),
    (["gpu=h100"], {"gpu": "H100"}),
    (["cpu=4", "memory=16"], {"cpu": 4.0, "memory": 16.0}),
    (["image=python:3.11-slim", "timeout=3600"], {"image": "python:3.11-slim", "timeout": 3600}),
    ("image=python:3.11-slim timeout=3600", {"image": "python:3.11-slim", "timeout": 3600}),
]


@pytest.mark.parametrize("value, expected", SEED_EXAMPLES)
def test_seed_examples(value, expected):
    assert parse_build_args(value) == expected


def test_seed_example_full_spec():
    spec = resolve_spec(parse_build_args("gpu=h100 cpu=2 memory=8"), {})
    assert spec["gpu"] == "H100"
    assert spec["cpu"] == 2.0
    assert memory_mib(spec) == 8192
    assert spec["image"] == "debian:bookworm-slim"
    assert spec["timeout"] == 900


def test_defaults_when_nothing_given():
    assert resolve_spec(parse_build_args(None), {}) == DEFAULTS
    assert memory_mib(DEFAULTS) == 1024


# --- every key, in every form -------------------------------------------------------------------------

EVERY_KEY = {
    "gpu": ("a100-80gb:2", "A100-80GB:2"),
    "cpu": ("0.5", 0.5),
    "memory": ("2.5", 2.5),
    "image": ("python:3.11-slim", "python:3.11-slim"),
    "dockerfile": ("./Dockerfile", "./Dockerfile"),
    "context_dir": ("./ctx", "./ctx"),
    "docker_build_arg": ("VERSION=1.2", {"VERSION": "1.2"}),
    "timeout": ("3600", 3600),
    "region": ("us-east", "us-east"),
    "secret": ("HF_TOKEN", ["HF_TOKEN"]),
    "cidr_allowlist": ("10.1.2.3/8", ["10.0.0.0/8"]),
    "offline": ("true", True),
    "volume": ("data:/mnt/data", [{"name": "data", "path": "/mnt/data"}]),
}


def test_every_key_is_covered():
    assert set(EVERY_KEY) == set(BUILD_ARG_KEYS)


@pytest.mark.parametrize("key", sorted(EVERY_KEY))
@pytest.mark.parametrize("form", ["key=value", "--key=value", "bulk", "list-of-bulk"])
def test_every_key_every_form(key, form):
    raw, expected = EVERY_KEY[key]
    spec_key = BUILD_ARG_KEYS[key].spec_key
    word = f"{key}={raw}"
    value = {
        "key=value": [word],
        "--key=value": [f"--{word}"],
        "bulk": f"cpu=3 {word}" if key != "cpu" else f"{word} memory=3",
        "list-of-bulk": [f"region=eu-west {word}"] if key != "region" else [f"{word} cpu=3"],
    }[form]
    parsed = parse_build_args(value)
    assert parsed[spec_key] == expected


def test_hyphenated_keys_and_bare_flags():
    parsed = parse_build_args(["--context-dir=ctx", "--dockerfile=Dockerfile", "--docker-build-arg=A=1", "offline"])
    assert parsed == {"context_dir": "ctx", "dockerfile": "Dockerfile", "docker_build_args": {"A": "1"}, "offline": True}
    assert parse_build_args("--offline") == {"offline": True}
    assert parse_build_args("offline=no") == {"offline": False}


def test_repeatable_keys_collect():
    parsed = parse_build_args(
        "secret=A secret=B volume=v1:/a volume=v2:/b cidr_allowlist=10.0.0.0/8 cidr_allowlist=::1/128 "
        "docker_build_arg=X=1 docker_build_arg=Y=2"
    )
    assert parsed["secrets"] == ["A", "B"]
    assert [v["name"] for v in parsed["volumes"]] == ["v1", "v2"]
    assert parsed["cidr_allowlist"] == ["10.0.0.0/8", "::1/128"]
    assert parsed["docker_build_args"] == {"X": "1", "Y": "2"}


def test_shell_quoting_in_bulk_string():
    assert parse_build_args("image='python:3.11-slim' docker_build_arg=\"MSG=hello world\"") == {
        "image": "python:3.11-slim",
        "docker_build_args": {"MSG": "hello world"},
    }


def test_gpu_helpers():
    spec = resolve_spec(parse_build_args("gpu=t4:4"), {})
    assert spec["gpu"] == "T4:4"
    assert gpu_type(spec) == "T4"
    assert gpu_type(DEFAULTS) is None


# --- options beside build args ------------------------------------------------------------------------

def test_options_fill_the_spec():
    spec = resolve_spec(
        parse_build_args("gpu=h100"),
        {"cpu": 2, "memory": None, "secrets": ["TOKEN"], "volumes": ["d:/data"], "env": {"A": "1"}, "idle_timeout": 60},
    )
    assert (spec["gpu"], spec["cpu"], spec["memory"]) == ("H100", 2.0, 1.0)
    assert spec["secrets"] == ["TOKEN"]
    assert spec["volumes"] == [{"name": "d", "path": "/data"}]
    assert spec["env"] == {"A": "1"}
    assert spec["idle_timeout"] == 60


def test_key_in_both_places_names_both():
    with pytest.raises(BuildArgError) as err:
        resolve_spec(parse_build_args("cpu=2"), {"cpu": 4})
    assert "build_args (cpu=2.0)" in str(err.value)
    assert "option cpu (cpu=4)" in str(err.value)


# --- bad inputs: each message names the offending text -----------------------------------------------

BAD_BUILD_ARGS = [
    ("colour=blue", "'colour'"),
    ("--colour=blue", "'colour'"),
    ("=5", "'=5'"),
    ("cpu", "'cpu'"),
    ("cpu=", "'cpu='"),
    ("--memory", "'--memory'"),
    ("cpu=2 cpu=4", "'cpu=4'"),
    ("gpu=t4 --gpu=h100", "'--gpu=h100'"),
    ("cpu=two", "'two'"),
    ("cpu=0", "cpu=0"),
    ("cpu=1000", "cpu=1000"),
    ("memory=-1", "memory=-1"),
    ("memory=lots", "'lots'"),
    ("timeout=0", "timeout=0"),
    ("timeout=86401", "timeout=86401"),
    ("timeout=1.5", "'1.5'"),
    ("timeout=1h", "'1h'"),
    ("gpu=h101", "'h101'"),
    ("gpu=tpu", "'tpu'"),
    ("gpu=h100:0", "'0'"),
    ("gpu=h100:9", "'9'"),
    ("gpu=h100:x", "'x'"),
    ("volume=data", "'data'"),
    ("volume=data:relative/path", "'relative/path'"),
    ("volume=data:/a/../etc", "'/a/../etc'"),
    ("volume=bad/name:/data", "'bad/name'"),
    ("cidr_allowlist=10.0.0.0/33", "'10.0.0.0/33'"),
    ("cidr_allowlist=10.0.0.0", "'10.0.0.0'"),
    ("cidr_allowlist=example.com/8", "'example.com/8'"),
    ("secret=1BAD", "'1BAD'"),
    ("secret=A-B", "'A-B'"),
    ("docker_build_arg=NOVALUE", "'NOVALUE'"),
    ("offline=maybe", "offline=maybe"),
    ("region=US_EAST", "'US_EAST'"),
    ("image='a b'", "'a b'"),
    ("image=\"unterminated", "unterminated"),
]


@pytest.mark.parametrize("value, named", BAD_BUILD_ARGS)
def test_bad_build_args_name_the_bad_value(value, named):
    with pytest.raises(BuildArgError) as err:
        parse_build_args(value)
    assert named in str(err.value)


def test_unknown_key_lists_accepted_keys():
    with pytest.raises(BuildArgError, match="accepted keys are .*cidr_allowlist.*volume"):
        parse_build_args("colour=blue")


def test_non_string_list_item():
    with pytest.raises(BuildArgError, match="42"):
        parse_build_args(["cpu=2", 42])


BAD_COMBINATIONS = [
    ("image=python:3.11 dockerfile=Dockerfile", {}, "image=python:3.11"),
    ("context_dir=ctx", {}, "context_dir"),
    ("", {"docker_build_args": {"A": "1"}}, "docker_build_args"),
    ("volume=a:/data volume=b:/data", {}, "/data"),
    ("", {"env": {"1X": "y"}}, "env key '1X'"),
    ("", {"cpu": "many"}, "'many'"),
    ("", {"idle_timeout": 0}, "idle_timeout=0"),
]


@pytest.mark.parametrize("build_args, options, named", BAD_COMBINATIONS)
def test_bad_combinations(build_args, options, named):
    with pytest.raises(BuildArgError) as err:
        resolve_spec(parse_build_args(build_args), options)
    assert named in str(err.value)


def test_paths_expand_the_home_folder(monkeypatch):
    monkeypatch.setenv("HOME", "/home/someone")
    assert parse_build_args("dockerfile=~/app/Dockerfile context_dir=~/app") == {
        "dockerfile": "/home/someone/app/Dockerfile",
        "context_dir": "/home/someone/app",
    }


# --- network: offline and cidr_allowlist ------------------------------------------------------------


def test_offline_is_an_empty_outbound_allowlist_so_ssh_keeps_its_port():
    spec = resolve_spec(parse_build_args("--offline"), {})
    assert network_kwargs(spec) == {"outbound_cidr_allowlist": []}
    assert "block_network" not in network_kwargs(spec)
    spec = resolve_spec({}, {"cidr_allowlist": ["10.0.0.0/8"]})
    assert network_kwargs(spec) == {"outbound_cidr_allowlist": ["10.0.0.0/8"]}
    assert network_kwargs(resolve_spec({}, {})) == {}


@pytest.mark.parametrize(
    "build_args, options",
    [
        ("--offline cidr_allowlist=10.0.0.0/8", {}),
        ("cidr_allowlist=10.0.0.0/8", {"offline": True}),
        (None, {"offline": True, "cidr_allowlist": ["10.0.0.0/8"]}),
    ],
)
def test_offline_with_an_allowlist_is_a_conflict_naming_both(build_args, options):
    with pytest.raises(BuildArgError) as info:
        resolve_spec(parse_build_args(build_args), options)
    assert "offline and cidr_allowlist (10.0.0.0/8) are both set" in str(info.value)


def test_offline_false_with_an_allowlist_is_fine():
    spec = resolve_spec({}, {"offline": False, "cidr_allowlist": ["10.0.0.0/8"]})
    assert network_kwargs(spec) == {"outbound_cidr_allowlist": ["10.0.0.0/8"]}


def test_recorded_spec_conflict_is_caught_before_create():
    with pytest.raises(BuildArgError):
        check_network({"offline": True, "cidr_allowlist": ["10.0.0.0/8"]})


def test_env_values_must_fit_on_one_line():
    assert resolve_spec({}, {"env": {"A": "x y=z"}})["env"] == {"A": "x y=z"}
    with pytest.raises(BuildArgError) as info:
        resolve_spec({}, {"env": {"MULTI": "one\ntwo"}})
    assert "MULTI" in str(info.value) and "line break" in str(info.value)
