#!/usr/bin/env bash
# The role mngr.modal.host_setup on a fresh host of the default image: it installs the default packages over the
# sandbox's network, sets up the host, never restarts the sshd its connection goes through, refuses bad values
# before doing anything, and a second run changes nothing.
set -eux
cd "$(dirname "$0")"

python="${ANSIBLE_TEST_PYTHON_INTERPRETER:-python3}"
work="${OUTPUT_DIR:-$(mktemp -d)}/role_host_setup"
# shellcheck source=SCRIPTDIR/../setup_modal_env/modal_env.sh
source ../setup_modal_env/modal_env.sh
modal_env role_host_setup "$work" "$python"

cleanup() {
    ansible-playbook cleanup.yml || true
}
trap cleanup EXIT

ansible-playbook provision.yml
printf "plugin: mngr.modal.modal\napp: %s\nkey_dir: %s\n" "$MNGR_MODAL_APP" "$MNGR_MODAL_KEY_DIR" > "$work/hosts.modal.yml"
inventory=(-i "$work/hosts.modal.yml")

# The sshd that runs before the role: its pid and start time (in clock ticks since boot).
# shellcheck disable=SC2016 # the command is expanded on the host
sshd_before=$(ansible hs-one "${inventory[@]}" -m ansible.builtin.shell -a 'p=$(cat /run/sshd.pid); echo "$p $(cut -d" " -f22 /proc/$p/stat)"' \
    | tail -n 1)
[[ "$sshd_before" =~ ^[0-9]+\ [0-9]+$ ]]

# Bad values are refused before anything is done, with a message naming them.
if ansible-playbook "${inventory[@]}" setup.yml -e '{"host_setup_authorized_keys": {"not": "a list"}}' > "$work/bad.out" 2>&1; then
    echo "a dict for host_setup_authorized_keys was accepted" >&2; exit 1
fi
grep -q "host_setup_authorized_keys" "$work/bad.out"
if ansible-playbook "${inventory[@]}" setup.yml -e host_setup_timezone=Mars/Olympus > "$work/bad.out" 2>&1; then
    echo "an unknown time zone was accepted" >&2; exit 1
fi
grep -q "host_setup_timezone=Mars/Olympus is not a time zone" "$work/bad.out"

ansible-playbook "${inventory[@]}" setup.yml | tee "$work/first.out"
grep -q "installing .*tmux" "$work/first.out"
grep -qE '^hs-one +: ok=[0-9]+ +changed=[1-9]' "$work/first.out"

# A second run changes nothing.
ansible-playbook "${inventory[@]}" setup.yml | tee "$work/second.out"
grep -qE '^hs-one +: ok=[0-9]+ +changed=0 +unreachable=0 +failed=0' "$work/second.out"

ansible-playbook "${inventory[@]}" check.yml -e "sshd_before='$sshd_before'"
