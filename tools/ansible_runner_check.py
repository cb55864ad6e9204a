#!/usr/bin/env python3
"""Run the collection through ansible-runner as AWX does, against the Modal API at MODAL_SERVER_URL.

Usage: ansible_runner_check.py BUILD_DIR  (the `runner` step of tools/test.sh; MODAL_SERVER_URL is set)

Copies tools/ansible_runner/ (project/, inventory/, env/settings) to BUILD_DIR/pdd, writes env/extravars, and runs:
  1. the demo playbook with the `ansible-runner run` command line, the credentials in its environment;
  2. fleet.yml, the inventory update (`ansible-inventory --list` over the plugin source, as an AWX inventory source
     runs it), ping.yml over that source and cleanup.yml, through ansible_runner.run()/run_command() with the
     credentials as `envvars` and `suppress_env_files=True`, as AWX passes a credential.
Each job must succeed with every host ok in its job events. The token is random for this run; its secret must appear
in no job event, no stdout and nowhere in the private data dir except ansible-runner's `command` artifact, which
records the job's environment (mode 0600; see docs/awx.md), and no private key may appear anywhere there.
"""

from __future__ import annotations

import json
import os
import pathlib
import secrets
import shutil
import stat
import subprocess
import sys

import ansible_runner

ROOT = pathlib.Path(__file__).resolve().parent.parent
TEMPLATE = ROOT / "tools" / "ansible_runner"
FLEET = {"web1", "web2"}


class CheckFailed(Exception):
    pass


def check(condition: bool, message: str) -> None:
    if not condition:
        raise CheckFailed(message)


def job_events(pdd: pathlib.Path, ident: str) -> list[dict]:
    folder = pdd / "artifacts" / ident / "job_events"
    return [json.loads(path.read_text()) for path in sorted(folder.glob("*.json"))]


def check_every_host_ok(pdd: pathlib.Path, ident: str, expected_hosts: set[str] | None = None) -> set[str]:
    """The job's stats: each host has ok tasks and no failure, no unreachable; returns the hosts."""
    events = job_events(pdd, ident)
    check(bool(events), f"{ident}: no job events")
    stats = [event for event in events if event.get("event") == "playbook_on_stats"]
    check(len(stats) == 1, f"{ident}: expected one playbook_on_stats event, found {len(stats)}")
    data = stats[0]["event_data"]
    hosts = set(data.get("processed") or {})
    check(bool(hosts), f"{ident}: the stats name no host")
    for host in sorted(hosts):
        failures, dark = data.get("failures", {}).get(host, 0), data.get("dark", {}).get(host, 0)
        ok = data.get("ok", {}).get(host, 0)
        check(failures == 0 and dark == 0 and ok > 0,
              f"{ident}: host {host} has ok={ok} failures={failures} unreachable={dark}")
    failed = [event["event"] for event in events if event.get("event") in ("runner_on_failed", "runner_on_unreachable")
              and not event.get("event_data", {}).get("ignore_errors")]
    check(not failed, f"{ident}: failed task events: {failed}")
    if expected_hosts is not None:
        check(hosts == expected_hosts, f"{ident}: hosts {sorted(hosts)}, expected {sorted(expected_hosts)}")
    print(f"  {ident}: {len(events)} job events, every host ok: {', '.join(sorted(hosts))}")
    return hosts


def check_no_secret(pdd: pathlib.Path, secret_values: list[str], outputs: dict[str, str]) -> None:
    """No secret value in the captured outputs nor in any file of the private data dir but the `command` artifacts."""
    for name, text in outputs.items():
        for value in secret_values:
            check(value not in text, f"a credential appears in {name}")
    command_files = 0
    for path in sorted(pdd.rglob("*")):
        if not path.is_file():
            continue
        text = path.read_text(errors="replace")
        relative = path.relative_to(pdd)
        if relative.parts[0] == "artifacts" and relative.name == "command":
            # ansible-runner records the job's environment here, credentials included; it is private to the owner.
            check(stat.S_IMODE(path.stat().st_mode) == 0o600, f"{relative} is not mode 0600")
            command_files += 1
            continue
        for value in secret_values:
            check(value not in text, f"a credential appears in {relative}")
        check("PRIVATE KEY-----" not in text, f"a private key appears in {relative}")
    check(not (pdd / "env" / "envvars").exists(), "env/envvars was written")
    print(f"  no credential in job events, stdout or the private data dir ({command_files} command artifacts hold "
          "the environment, mode 0600)")


def main() -> int:
    build = pathlib.Path(sys.argv[1]).resolve()
    server_url = os.environ["MODAL_SERVER_URL"]
    pdd = build / "pdd"
    shutil.rmtree(build, ignore_errors=True)
    shutil.copytree(TEMPLATE, pdd, ignore=shutil.ignore_patterns("README.md"))
    (pdd / "env" / "extravars").write_text(json.dumps({"demo_app": "mngr-modal-runner-demo",
                                                      "fleet_app": "mngr-modal-runner"}))
    # What an AWX credential of the Modal type injects: fresh values for this run, so that a leak is found.
    credentials = {"MODAL_TOKEN_ID": f"ak-{secrets.token_hex(8)}", "MODAL_TOKEN_SECRET": f"as-{secrets.token_hex(16)}"}
    # The job's other settings: where the API is, and folders of this run for the SSH keys and the Modal config.
    settings = {
        "MODAL_SERVER_URL": server_url,
        "MODAL_CONFIG_PATH": str(build / "modal.toml"),
        "MNGR_MODAL_KEY_DIR": str(build / "keys"),
        "ANSIBLE_HOST_KEY_CHECKING": "True",
    }
    (build / "modal.toml").write_text("")
    base_env = {key: value for key, value in os.environ.items() if not key.startswith("MODAL_TOKEN")}
    base_env.update(settings)
    outputs: dict[str, str] = {}

    print("ansible-runner run (command line): demo.yml")
    run = subprocess.run(["ansible-runner", "run", str(pdd), "--playbook", "demo.yml", "--ident", "demo"],
                         env=dict(base_env, **credentials), capture_output=True, text=True, timeout=1500, check=False)
    outputs["the demo's stdout"] = run.stdout + run.stderr
    check(run.returncode == 0, f"demo failed (rc {run.returncode}):\n{run.stdout[-4000:]}\n{run.stderr[-2000:]}")
    check_every_host_ok(pdd, "demo")

    def api_run(ident: str, playbook: str, inventory: str | None = None) -> None:
        print(f"ansible_runner.run (as AWX calls it): {playbook}")
        kwargs = {"inventory": str(pdd / "inventory" / inventory)} if inventory else {}
        result = ansible_runner.run(private_data_dir=str(pdd), playbook=playbook, ident=ident, quiet=True,
                                    envvars=credentials, suppress_env_files=True, **kwargs)
        stdout = result.stdout.read()
        outputs[f"{ident}'s stdout"] = stdout
        check(result.status == "successful" and result.rc == 0, f"{ident}: {result.status} (rc {result.rc})\n{stdout[-4000:]}")

    # ansible-runner starts the jobs with os.environ plus envvars: the settings, not the credentials.
    os.environ.clear()
    os.environ.update(base_env)
    api_run("fleet", "fleet.yml")
    check_every_host_ok(pdd, "fleet", {"localhost"})

    print("ansible_runner.run_command (an inventory update): ansible-inventory --list")
    out, err, rc = ansible_runner.run_command(
        executable_cmd="ansible-inventory", cmdline_args=["-i", str(pdd / "inventory" / "hosts.modal.yml"), "--list"],
        private_data_dir=str(pdd), envvars=credentials, suppress_env_files=True, quiet=True)
    outputs["the inventory update"] = out + err
    check(rc == 0, f"ansible-inventory failed (rc {rc}):\n{err[-4000:]}")
    listed = json.loads(out)
    check(set(listed.get("role_web", {}).get("hosts", [])) == FLEET, f"group role_web: {listed.get('role_web')}")
    print(f"  the inventory source lists {', '.join(sorted(FLEET))} in group role_web")

    api_run("ping", "ping.yml", inventory="hosts.modal.yml")
    check_every_host_ok(pdd, "ping", FLEET)
    api_run("cleanup", "cleanup.yml")
    check_every_host_ok(pdd, "cleanup", {"localhost"})

    # The token id is not secret (a module's invocation shows it, as an AWS access key id); the secret must not show.
    check_no_secret(pdd, [credentials["MODAL_TOKEN_SECRET"]], outputs)
    return 0


if __name__ == "__main__":
    try:
        sys.exit(main())
    except CheckFailed as failure:
        print(f"FAILED: {failure}", file=sys.stderr)
        sys.exit(1)
