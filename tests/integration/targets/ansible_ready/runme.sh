#!/usr/bin/env bash
# Hosts are ready for Ansible on stock images: one host from the default image (debian:bookworm-slim), one from
# python:3.11-slim and one from a Dockerfile FROM debian:bookworm-slim, created in parallel by the sandbox role,
# then configured over SSH with strict host key checking: setup, apt (a package from the mirrors, through the
# sandbox's network), copy, template, user. A second run of the same playbook must change nothing (changed=0).
set -eux
cd "$(dirname "$0")"

python="${ANSIBLE_TEST_PYTHON_INTERPRETER:-python3}"
work="${OUTPUT_DIR:-$(mktemp -d)}/ansible_ready"
# shellcheck source=SCRIPTDIR/../setup_modal_env/modal_env.sh
source ../setup_modal_env/modal_env.sh
modal_env ansible_ready "$work" "$python"
# Three hosts are created side by side.
export ANSIBLE_FORKS=3

cleanup() {
    ansible-playbook cleanup.yml || true
}
trap cleanup EXIT

cat > "$work/hosts.ini" <<INI
[ready]
ready-debian
ready-python sandbox_build_args=image=python:3.11-slim
ready-dockerfile sandbox_build_args=dockerfile=$PWD/files/Dockerfile
INI

ansible-playbook -i "$work/hosts.ini" ready.yml | tee "$work/first.out"
ansible-playbook -i "$work/hosts.ini" ready.yml | tee "$work/second.out"

# Every host of both plays (the three in the inventory, and the same three reached over SSH) took part in the
# second run, and none of them changed anything.
"$python" - "$work/second.out" <<'PY'
import re, sys
recap = {}
for line in open(sys.argv[1], encoding="utf-8"):
    match = re.match(r"^(\S+)\s+:\s+ok=(\d+)\s+changed=(\d+)\s+unreachable=(\d+)\s+failed=(\d+)", line)
    if match:
        recap[match.group(1)] = tuple(int(value) for value in match.groups()[1:])
expected = {"ready-debian", "ready-python", "ready-dockerfile"}
if set(recap) != expected:
    sys.exit(f"the second run's recap lists {sorted(recap)}, expected {sorted(expected)}")
changed = {host: counts[1] for host, counts in recap.items() if counts[1] or counts[2] or counts[3]}
if changed:
    sys.exit(f"the second run changed, failed or could not reach hosts: {recap}")
print("second run: changed=0 on", ", ".join(sorted(recap)))
PY

# Clean up for real (a failure here fails the test); the trap only covers runs that stopped early.
trap - EXIT
ansible-playbook cleanup.yml
