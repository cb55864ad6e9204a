#!/usr/bin/env bash
# The mngr.modal.sandbox_exec connection against the Modal API at MODAL_SERVER_URL (the emulator under `make test`):
# two debian:bookworm-slim hosts, one with SSH and one created with ssh=false, reached through Modal's exec and
# filesystem APIs. The inventory plugin's connection option; the generic connection checks (exec, odd names, binary
# files, become) with pipelining on and off; facts and the host_setup role; a 20 MiB random file both ways; a
# sandbox terminated mid-play.
set -eux
cd "$(dirname "$0")"

python="${ANSIBLE_TEST_PYTHON_INTERPRETER:-python3}"
work="${OUTPUT_DIR:-$(mktemp -d)}/connection_sandbox_exec"
# shellcheck source=SCRIPTDIR/../setup_modal_env/modal_env.sh
source ../setup_modal_env/modal_env.sh
modal_env connection_sandbox_exec "$work" "$python"
# The broker ends with each ansible run: nothing is left running after the test.
export MNGR_MODAL_BROKER_PERSIST=0
local_tmp="$work/local"
mkdir -p "$local_tmp"

cleanup() {
    ansible-playbook cleanup.yml || true
}
trap cleanup EXIT

ansible-playbook prepare.yml

cat > "$work/hosts.ini" <<INI
[conn]
conn-ssh
conn-exec

[conn:vars]
ansible_connection=mngr.modal.sandbox_exec
ansible_python_interpreter=/usr/bin/python3
INI
inventory=(-i "$work/hosts.ini" -e "local_tmp=$local_tmp" -e target_hosts=conn)

# The inventory plugin: with connection=sandbox_exec every host gets the exec connection; with the default (ssh) the
# host with SSH gets its SSH variables and the host without SSH still gets the exec connection.
printf 'plugin: mngr.modal.modal\napp: %s\nconnection: sandbox_exec\n' "$MNGR_MODAL_APP" > "$work/exec.modal.yml"
printf 'plugin: mngr.modal.modal\napp: %s\n' "$MNGR_MODAL_APP" > "$work/ssh.modal.yml"
ansible-inventory -i "$work/exec.modal.yml" --host conn-ssh | grep -q '"ansible_connection": "mngr.modal.sandbox_exec"'
ansible-inventory -i "$work/ssh.modal.yml" --host conn-exec | grep -q '"ansible_connection": "mngr.modal.sandbox_exec"'
if ansible-inventory -i "$work/ssh.modal.yml" --host conn-ssh | grep -q '"ansible_connection"'; then
    echo "a host with SSH got another connection than ssh" >&2
    exit 1
fi
ansible -i "$work/exec.modal.yml" modal -m ansible.builtin.ping
ansible -i "$work/ssh.modal.yml" modal -m ansible.builtin.ping

# Generic connection checks, with pipelining (the default) and without.
ansible-playbook "${inventory[@]}" test_connection.yml
ANSIBLE_PIPELINING=false ansible-playbook "${inventory[@]}" test_connection.yml

# Ad-hoc setup, then the host_setup role, on both hosts.
ansible "${inventory[@]}" conn -m ansible.builtin.setup > "$work/setup.out"
grep -q '"ansible_distribution": "Debian"' "$work/setup.out"
[ "$(grep -c '| SUCCESS' "$work/setup.out")" = 2 ]
ansible-playbook "${inventory[@]}" configure.yml

# 20 MiB of random bytes, both ways.
head -c $((20 * 1024 * 1024)) /dev/urandom > "$local_tmp/big.bin"
big_sha256=$(sha256sum "$local_tmp/big.bin" | cut -d' ' -f1)
ansible-playbook "${inventory[@]}" -e "big_sha256=$big_sha256" big.yml

# A sandbox terminated mid-play: unreachable (exit code 4), named, with how to start it again.
rc=0
ansible-playbook "${inventory[@]}" terminate.yml > "$work/terminate.out" 2>&1 || rc=$?
cat "$work/terminate.out"
[ "$rc" = 4 ]
grep -q 'UNREACHABLE' "$work/terminate.out"
grep -q 'host conn-exec has no running sandbox' "$work/terminate.out"
grep -q 'state=started' "$work/terminate.out"
grep -Eq 'conn-exec +: ok=3 +changed=1 +unreachable=1' "$work/terminate.out"

# Started again (a host without SSH gets a new sandbox, still without SSH), it is reachable again.
ansible localhost -m mngr.modal.modal_sandbox -a "name=conn-exec state=started" \
    -e "ansible_python_interpreter=$python" > "$work/start.out"
grep -q '"connection": "sandbox_exec"' "$work/start.out"
ansible "${inventory[@]}" conn-exec -m ansible.builtin.ping

# Clean up for real (a failure here fails the test); the trap only covers runs that stopped early.
trap - EXIT
ansible-playbook cleanup.yml
