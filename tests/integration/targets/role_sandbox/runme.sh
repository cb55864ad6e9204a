#!/usr/bin/env bash
# The role mngr.modal.sandbox: a list of hosts with their own specs and tags, provisioned concurrently (and one
# after another in check mode, creating nothing), reachable with the role's connection variables; stop, start and
# destroy through the role; bad values refused by its argument specs before anything is done.
set -eux
cd "$(dirname "$0")"

python="${ANSIBLE_TEST_PYTHON_INTERPRETER:-python3}"
work="${OUTPUT_DIR:-$(mktemp -d)}/role_sandbox"
# shellcheck source=SCRIPTDIR/../setup_modal_env/modal_env.sh
source ../setup_modal_env/modal_env.sh
modal_env role_sandbox "$work" "$python"

cleanup() {
    ansible-playbook cleanup.yml || true
}
trap cleanup EXIT

# Bad values are refused by the argument specs, naming the variable and what is accepted, and nothing is created.
if ansible localhost -m ansible.builtin.include_role -a name=mngr.modal.sandbox \
    -e sandbox_name=rs-bad -e sandbox_state=paused > "$work/bad.out" 2>&1; then
    echo "sandbox_state=paused was accepted" >&2; exit 1
fi
grep -q "sandbox_state" "$work/bad.out"
grep -q "present, started, stopped, absent" "$work/bad.out"
if ansible localhost -m ansible.builtin.include_role -a name=mngr.modal.sandbox \
    -e '{"sandbox_hosts": [{"build_args": "cpu=2"}]}' > "$work/bad.out" 2>&1; then
    echo "a host without a name was accepted" >&2; exit 1
fi
grep -q "name" "$work/bad.out"

ansible-playbook play.yml
