#!/usr/bin/env python3
"""modal_sandbox figures for docs/performance.md, printed side by side from one run.

1. Creating 10 hosts in one play (forks 10) versus creating one host: wall time and their ratio.
   (Ideal parallelism gives 1.0; fully serial gives 10.)
2. SSH task overhead: the time of one `ansible.builtin.command` task on a sandbox host (through its tunnel,
   pinned host key) versus on localhost over SSH (a throwaway sshd on 127.0.0.1), same play shape.

Run as root from the checkout after tools/setup.sh:  .venv/bin/python benchmarks/sandbox_bench.py
"""

from __future__ import annotations

import argparse
import contextlib
import json
import os
import pathlib
import shutil
import socket
import subprocess
import sys
import tempfile
import time

from _emulator import ROOT, running_emulator, sdk_environment

VENV_BIN = pathlib.Path(sys.executable).parent
COLLECTIONS = ROOT / "build" / "collections"
# The same interpreter on both SSH targets (a sandbox sees the host's /usr/bin through its bottom layer).
TARGET_PYTHON = "/usr/bin/python3"

CREATE_PLAY = """
- name: Create hosts, one per inventory host, in parallel across forks
  hosts: all
  connection: local
  gather_facts: false
  tasks:
    - name: Create
      mngr.modal.modal_sandbox:
        name: "{{ inventory_hostname }}"
        app: bench-sandbox
      register: created

    - name: Remember how to reach it
      ansible.builtin.copy:
        content: "{{ created.modal_sandbox | to_json }}"
        dest: "{{ out_dir }}/{{ inventory_hostname }}.json"
        mode: "0600"
"""

DESTROY_PLAY = """
- name: Destroy hosts
  hosts: all
  connection: local
  gather_facts: false
  tasks:
    - name: Destroy
      mngr.modal.modal_sandbox:
        name: "{{ inventory_hostname }}"
        app: bench-sandbox
        state: absent
"""

COMMAND_PLAY = """
- name: Many small tasks over SSH
  hosts: all
  gather_facts: false
  tasks:
    - name: A trivial command
      ansible.builtin.command: "true"
      changed_when: false
      loop: "{{ range(task_count | int) | list }}"
"""


def playbook(work: pathlib.Path, text: str, inventory: str, env: dict[str, str], *extra: str) -> float:
    """Run a playbook; return its wall time in seconds (raise if it fails)."""
    path = work / f"play-{abs(hash(text))}.yml"
    path.write_text(text)
    start = time.monotonic()
    result = subprocess.run(
        [str(VENV_BIN / "ansible-playbook"), "-i", inventory, str(path), *extra],
        env=env, capture_output=True, text=True,
    )
    elapsed = time.monotonic() - start
    if result.returncode != 0:
        raise RuntimeError(f"{path.name} failed:\n{result.stdout[-3000:]}\n{result.stderr[-2000:]}")
    return elapsed


def inventory_of(work: pathlib.Path, names: list[str]) -> str:
    path = work / f"inv-{len(names)}-{names[0]}.ini"
    # Modules run on the controller, in the Python that has the modal SDK.
    path.write_text("".join(f"{name} ansible_python_interpreter={sys.executable}\n" for name in names))
    return str(path)


def sandbox_inventory(work: pathlib.Path, name: str, out_dir: pathlib.Path) -> str:
    info = json.loads((out_dir / f"{name}.json").read_text())
    ssh = info["ssh"]
    path = work / f"ssh-{name}.ini"
    path.write_text(
        f"{name} ansible_host={ssh['host']} ansible_port={ssh['port']} ansible_user={ssh['user']} "
        f"ansible_ssh_private_key_file={ssh['private_key_file']} ansible_ssh_host_key_checking=true "
        f"ansible_python_interpreter={TARGET_PYTHON} "
        f"ansible_ssh_common_args='{ssh['common_args']}'\n"
    )
    return str(path)


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


@contextlib.contextmanager
def throwaway_user(home: pathlib.Path):
    """A temporary login user with an empty home and /bin/sh, removed afterwards.

    Root's own shell on a development machine often sources heavy profiles (pyenv, nvm) on every SSH
    command; sandboxes have an empty /root. Logging in as a clean user keeps the comparison fair.
    """
    name = f"bench{os.getpid()}"
    # "*" (no password) rather than the default "!" (locked): sshd refuses even key logins to locked accounts.
    subprocess.run(["useradd", "-M", "-p", "*", "-d", str(home), "-s", "/bin/sh", name], check=True)
    try:
        home.mkdir(mode=0o755)
        shutil.chown(home, name)
        yield name
    finally:
        # Ansible's ControlPersist master keeps a session of the user open: end it first.
        subprocess.run(["pkill", "-u", name], check=False)
        for _ in range(50):
            if subprocess.run(["userdel", name], check=False, capture_output=True).returncode == 0:
                break
            time.sleep(0.1)


@contextlib.contextmanager
def localhost_sshd(work: pathlib.Path):
    """A throwaway sshd on 127.0.0.1 accepting one generated key for a clean user; yields an inventory file."""
    keys = work / "local-ssh"
    keys.mkdir()
    work.chmod(0o755)
    for name in ("client", "host"):
        subprocess.run(["ssh-keygen", "-q", "-t", "ed25519", "-N", "", "-f", str(keys / name)], check=True)
    port = free_port()
    (keys / "known_hosts").write_text(f"[127.0.0.1]:{port} {(keys / 'host.pub').read_text().strip()}\n")
    config = keys / "sshd_config"
    config.write_text(
        f"Port {port}\nListenAddress 127.0.0.1\nHostKey {keys / 'host'}\nPidFile none\nUsePAM no\n"
        f"AuthorizedKeysFile {keys / 'client.pub'}\nStrictModes no\n"
    )
    pathlib.Path("/run/sshd").mkdir(exist_ok=True)
    stack = contextlib.ExitStack()
    user = stack.enter_context(throwaway_user(work / "home"))
    proc = subprocess.Popen(["/usr/sbin/sshd", "-D", "-e", "-f", str(config)], stderr=subprocess.DEVNULL)
    try:
        deadline = time.monotonic() + 10
        while True:
            with contextlib.suppress(OSError), socket.create_connection(("127.0.0.1", port), timeout=1):
                break
            if time.monotonic() > deadline:
                raise RuntimeError("the local sshd did not start")
            time.sleep(0.05)
        inventory = work / "ssh-localhost.ini"
        inventory.write_text(
            f"localhost-ssh ansible_host=127.0.0.1 ansible_port={port} ansible_user={user} "
            f"ansible_ssh_private_key_file={keys / 'client'} ansible_ssh_host_key_checking=true "
            f"ansible_python_interpreter={TARGET_PYTHON} "
            f"ansible_ssh_common_args='-o UserKnownHostsFile={keys / 'known_hosts'} -o StrictHostKeyChecking=yes'\n"
        )
        yield str(inventory)
    finally:
        proc.terminate()
        proc.wait()
        stack.close()


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--hosts", type=int, default=10)
    parser.add_argument("--tasks", type=int, default=20, help="command tasks per SSH run")
    args = parser.parse_args()
    if shutil.which("sshd") is None and not pathlib.Path("/usr/sbin/sshd").exists():
        sys.exit("sshd is needed (openssh-server)")
    with tempfile.TemporaryDirectory(prefix="bench-sandbox-") as tmp:
        work = pathlib.Path(tmp)
        out_dir = work / "out"
        out_dir.mkdir()
        with running_emulator(state_dir=work / "state") as emulator:
            env = dict(os.environ, **sdk_environment(emulator.url, work), ANSIBLE_COLLECTIONS_PATH=str(COLLECTIONS),
                       MNGR_MODAL_KEY_DIR=str(work / "keys"), ANSIBLE_HOST_KEY_CHECKING="True",
                       ANSIBLE_PIPELINING="True")
            extra = ("-e", f"out_dir={out_dir}")
            many = [f"bench-{i}" for i in range(args.hosts)]
            # Warm-up: the image build and SDK imports are paid once, outside both measures.
            playbook(work, CREATE_PLAY, inventory_of(work, ["warmup"]), env, *extra)
            one_s = playbook(work, CREATE_PLAY, inventory_of(work, ["single"]), env, *extra)
            many_s = playbook(work, CREATE_PLAY, inventory_of(work, many), env, "-f", str(args.hosts), *extra)

            task_extra = ("-e", f"task_count={args.tasks}")
            sandbox_s = playbook(work, COMMAND_PLAY, sandbox_inventory(work, "single", out_dir), env, *task_extra)
            with localhost_sshd(work) as local_inventory:
                local_s = playbook(work, COMMAND_PLAY, local_inventory, env, *task_extra)
            playbook(work, DESTROY_PLAY, inventory_of(work, ["warmup", "single", *many]), env, "-f", "10")

    print(f"{'measure':<58} {'value':>10}")
    print(f"{'create 1 host (one play)':<58} {one_s:>9.2f}s")
    print(f"{f'create {args.hosts} hosts (one play, forks {args.hosts})':<58} {many_s:>9.2f}s")
    print(f"{f'  ratio {args.hosts} hosts / 1 host':<58} {many_s / one_s:>9.2f}x")
    print(f"{f'{args.tasks} command tasks on a sandbox host (play wall time)':<58} {sandbox_s:>9.2f}s")
    print(f"{f'{args.tasks} command tasks on localhost over SSH':<58} {local_s:>9.2f}s")
    print(f"{'  per-task overhead, sandbox minus localhost':<58} {(sandbox_s - local_s) / args.tasks * 1000:>8.0f}ms")
    print(f"{'  ratio sandbox / localhost':<58} {sandbox_s / local_s:>9.2f}x")


if __name__ == "__main__":
    main()
