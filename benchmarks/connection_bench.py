#!/usr/bin/env python3
"""sandbox_exec versus SSH on the same host, for docs/performance.md, printed side by side from one run.

1. A play of 20 separate command tasks (gather_facts off, pipelining on for both), on one sandbox host, through
   its SSH tunnel (pinned host key) and through mngr.modal.sandbox_exec, each play a whole ansible-playbook run:
   - warm: as a second run finds things by default (SSH's ControlPersist master and the sandbox_exec broker, which
     persists 60 s likewise, are left by the previous run);
   - cold: each run pays its first connection (a fresh ControlPath folder per SSH run; broker_persist=0, so each
     sandbox_exec run starts its broker, which imports the Modal SDK).
   Runs alternate; medians are compared. Targets: ratio <= 1.2 and <= 50 ms/task over SSH.
2. A 20 MiB random file to the host and back: the connection's put_file and fetch_file (through its broker, as a
   task uses them) versus plain `scp` with the host's key. Target: ratio to scp <= 1.5. For reference, a whole
   play with one ansible.builtin.copy of that file, through sandbox_exec and over SSH.

Run as root from the checkout after tools/setup.sh:  .venv/bin/python benchmarks/connection_bench.py
"""

from __future__ import annotations

import argparse
import json
import os
import pathlib
import statistics
import subprocess
import sys
import tempfile
import time

from _emulator import ROOT, running_emulator, sdk_environment

VENV_BIN = pathlib.Path(sys.executable).parent
COLLECTIONS = ROOT / "build" / "collections"
HOST = "bench-conn"
COPY_SIZE = 20 * 1024 * 1024

CREATE_PLAY = """
- name: Create the host
  hosts: localhost
  connection: local
  gather_facts: false
  tasks:
    - name: Create
      mngr.modal.modal_sandbox:
        name: {host}
        app: bench-conn
        state: "{{{{ host_state }}}}"
      register: created

    - name: Keep how to reach it
      ansible.builtin.copy:
        content: "{{{{ created.modal_sandbox | to_json }}}}"
        dest: "{{{{ out_dir }}}}/host.json"
        mode: "0600"
      when: host_state == 'present'
"""



def tasks_play(count: int) -> str:
    """A play of ``count`` separate command tasks (each task is its own worker process, and its own connection)."""
    task = """
    - name: Command {index}
      ansible.builtin.command: "true"
      changed_when: false
"""
    return ("- name: Command tasks\n  hosts: all\n  gather_facts: false\n  tasks:"
            + "".join(task.format(index=index) for index in range(count)))


COPY_PLAY = """
- name: One large copy
  hosts: all
  gather_facts: false
  tasks:
    - name: Copy
      ansible.builtin.copy:
        src: "{{ src }}"
        dest: "/tmp/copied-{{ run_id }}.bin"
        mode: "0600"
"""


def run(command: list[str], env: dict[str, str]) -> float:
    """Run a command; return its wall time in seconds (raise if it fails)."""
    start = time.monotonic()
    result = subprocess.run(command, env=env, capture_output=True, text=True)
    elapsed = time.monotonic() - start
    if result.returncode != 0:
        raise RuntimeError(f"{command[:3]} failed:\n{result.stdout[-3000:]}\n{result.stderr[-2000:]}")
    return elapsed


def playbook(work: pathlib.Path, text: str, inventory: str, env: dict[str, str], *extra: str) -> float:
    path = work / f"play-{abs(hash(text))}.yml"
    path.write_text(text)
    return run([str(VENV_BIN / "ansible-playbook"), "-i", inventory, str(path), *extra], env)


def inventories(work: pathlib.Path, ssh: dict) -> tuple[str, str]:
    """The same host twice: through its SSH tunnel, and through sandbox_exec (by the host's name)."""
    by_ssh = work / "ssh.ini"
    by_ssh.write_text(
        f"{HOST} ansible_host={ssh['host']} ansible_port={ssh['port']} ansible_user={ssh['user']} "
        f"ansible_ssh_private_key_file={ssh['private_key_file']} ansible_ssh_host_key_checking=true "
        f"ansible_python_interpreter=/usr/bin/python3 ansible_ssh_common_args='{ssh['common_args']}'\n"
    )
    by_exec = work / "exec.ini"
    by_exec.write_text(f"{HOST} ansible_connection=mngr.modal.sandbox_exec ansible_modal_app=bench-conn "
                       "ansible_python_interpreter=/usr/bin/python3\n")
    return str(by_ssh), str(by_exec)


def transfer_broker(env: dict[str, str]):
    """The connection's own broker client (what put_file and fetch_file use), started for this process."""
    sys.path.insert(0, str(COLLECTIONS))
    os.environ.update(env)
    from ansible_collections.mngr.modal.plugins.plugin_utils._broker_client import BrokerClient  # noqa: PLC0415

    broker = BrokerClient({"app": "bench-conn"}, persist=0, controller_pid=os.getpid())
    timed(broker, {"op": "exec", "argv": ["true"]})  # start it and open the host's sandbox, not measured
    return broker


def timed(broker, header: dict) -> float:
    start = time.monotonic()
    reply, _ = broker.request({**header, "target": {"host": HOST}})
    elapsed = time.monotonic() - start
    if not reply.get("ok"):
        raise RuntimeError(f"{header['op']} failed: {reply.get('msg')}")
    return elapsed


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--tasks", type=int, default=20)
    parser.add_argument("--repeat", type=int, default=5, help="runs of each play, alternating")
    args = parser.parse_args()
    with tempfile.TemporaryDirectory(prefix="bench-conn-") as tmp:
        work = pathlib.Path(tmp)
        with running_emulator(state_dir=work / "state") as emulator:
            env = dict(os.environ, **sdk_environment(emulator.url, work), ANSIBLE_COLLECTIONS_PATH=str(COLLECTIONS),
                       MNGR_MODAL_KEY_DIR=str(work / "keys"), ANSIBLE_HOST_KEY_CHECKING="True",
                       ANSIBLE_PIPELINING="True", ANSIBLE_SSH_CONTROL_PATH_DIR=str(work / "cp"))
            create = CREATE_PLAY.format(host=HOST)
            local = ("-e", f"ansible_python_interpreter={sys.executable}", "-e", f"out_dir={work}")
            playbook(work, create, "localhost,", env, *local, "-e", "host_state=present")
            ssh = json.loads((work / "host.json").read_text())["ssh"]
            by_ssh, by_exec = inventories(work, ssh)
            # Warm-up of both paths (the host's page cache, Python's bytecode caches), not measured.
            playbook(work, tasks_play(1), by_ssh, env)
            playbook(work, tasks_play(1), by_exec, env)
            ssh_runs, exec_runs, ssh_cold, exec_cold = [], [], [], []
            play = tasks_play(args.tasks)
            for index in range(args.repeat):
                ssh_runs.append(playbook(work, play, by_ssh, env))
                exec_runs.append(playbook(work, play, by_exec, env))
                ssh_cold.append(playbook(work, play, by_ssh, dict(env, ANSIBLE_SSH_CONTROL_PATH_DIR=str(work / f"cp{index}"))))
                exec_cold.append(playbook(work, play, by_exec, dict(env, MNGR_MODAL_BROKER_PERSIST="0")))

            source = work / "random.bin"
            source.write_bytes(os.urandom(COPY_SIZE))
            scp = ["scp", "-q", "-P", str(ssh["port"]), "-i", ssh["private_key_file"],
                   "-o", f"UserKnownHostsFile={ssh['known_hosts_file']}", "-o", "StrictHostKeyChecking=yes",
                   str(source), f"root@{ssh['host']}:/tmp/scp.bin"]
            scp_back = [*scp[:-2], f"root@{ssh['host']}:/tmp/scp.bin", str(work / "scp-back.bin")]
            runs: dict[str, list[float]] = {name: [] for name in (
                "scp", "scp_back", "put", "fetch", "exec", "ssh")}
            broker = transfer_broker(env)
            for index in range(args.repeat):
                runs["scp"].append(run(scp, env))
                runs["scp_back"].append(run(scp_back, env))
                runs["put"].append(timed(broker, {"op": "put", "local": str(source), "remote": "/tmp/put.bin"}))
                runs["fetch"].append(timed(broker, {"op": "fetch", "remote": "/tmp/put.bin",
                                                    "local": str(work / "fetched.bin")}))
                for name, inventory in (("exec", by_exec), ("ssh", by_ssh)):
                    runs[name].append(playbook(work, COPY_PLAY, inventory, env, "-e", f"src={source}",
                                               "-e", f"run_id={name}{index}"))
            playbook(work, create, "localhost,", env, *local, "-e", "host_state=absent")

    ssh_s, exec_s = statistics.median(ssh_runs), statistics.median(exec_runs)
    copy = {name: statistics.median(values) for name, values in runs.items()}
    ssh_cold_s, exec_cold_s = statistics.median(ssh_cold), statistics.median(exec_cold)
    per_task_ms = (exec_s - ssh_s) / args.tasks * 1000
    print(f"medians of {args.repeat} runs each (alternating), emulator on loopback")
    print(f"{'measure':<60} {'value':>10}")
    cold_ms = (exec_cold_s - ssh_cold_s) / args.tasks * 1000
    print(f"{f'warm: {args.tasks}-task play over SSH':<60} {ssh_s:>9.2f}s")
    print(f"{f'warm: {args.tasks}-task play through sandbox_exec':<60} {exec_s:>9.2f}s")
    print(f"{'  ratio sandbox_exec / SSH (target <= 1.2)':<60} {exec_s / ssh_s:>9.2f}x")
    print(f"{'  per task over SSH (target <= 50 ms)':<60} {per_task_ms:>8.0f}ms")
    print(f"{f'cold: {args.tasks}-task play over SSH':<60} {ssh_cold_s:>9.2f}s")
    print(f"{f'cold: {args.tasks}-task play through sandbox_exec':<60} {exec_cold_s:>9.2f}s")
    print(f"{'  ratio sandbox_exec / SSH (target <= 1.2)':<60} {exec_cold_s / ssh_cold_s:>9.2f}x")
    print(f"{'  per task over SSH (target <= 50 ms)':<60} {cold_ms:>8.0f}ms")
    print(f"{'20 MiB to the host: scp (whole command)':<60} {copy['scp']:>9.2f}s")
    print(f"{'20 MiB to the host: sandbox_exec put_file (broker warm)':<60} {copy['put']:>9.2f}s")
    print(f"{'  ratio put_file / scp (target <= 1.5)':<60} {copy['put'] / copy['scp']:>9.2f}x")
    print(f"{'20 MiB from the host: scp (whole command)':<60} {copy['scp_back']:>9.2f}s")
    print(f"{'20 MiB from the host: sandbox_exec fetch_file (broker warm)':<60} {copy['fetch']:>9.2f}s")
    print(f"{'  ratio fetch_file / scp':<60} {copy['fetch'] / copy['scp_back']:>9.2f}x")
    print(f"{'warm: play copying 20 MiB, sandbox_exec':<60} {copy['exec']:>9.2f}s")
    print(f"{'warm: play copying 20 MiB, SSH':<60} {copy['ssh']:>9.2f}s")
    print(f"{'  ratio sandbox_exec copy play / scp (whole play)':<60} {copy['exec'] / copy['scp']:>9.2f}x")
    print(f"{'  ratio sandbox_exec copy play / SSH copy play':<60} {copy['exec'] / copy['ssh']:>9.2f}x")


if __name__ == "__main__":
    main()
