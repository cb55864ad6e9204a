#!/usr/bin/env bash
# The mngr.modal.modal inventory against the Modal API at MODAL_SERVER_URL (the emulator under `make test`):
# hosts made by modal_sandbox show up in the expected groups, Ansible reaches them over SSH with strict host key
# checking, the cache serves until flushed, and a killed sandbox leaves the inventory on refresh.
set -eux
cd "$(dirname "$0")"

config=../../integration_config.yml
extra=()
[ -f "$config" ] && extra=(-e "@$config")
python="${ANSIBLE_TEST_PYTHON_INTERPRETER:-python3}"

# From integration_config.yml: the run's app name (modal_test_app, given by tools/test_modal.sh) and whether the
# server is an emulator (modal_is_emulator, default true): only an emulator can kill a sandbox behind our back.
run_app="" is_emulator=true
if [ -f "$config" ]; then
    eval "$("$python" - "$config" <<'PY'
import shlex, sys, yaml
with open(sys.argv[1], encoding="utf-8") as handle:
    config = yaml.safe_load(handle) or {}
print(f"run_app={shlex.quote(str(config.get('modal_test_app') or ''))}")
print("is_emulator=" + ("true" if config.get("modal_is_emulator", True) else "false"))
PY
)"
fi

export INVENTORY_TEST_DIR="${OUTPUT_DIR:-$(mktemp -d)}/inventory_modal"
if [ -n "$run_app" ]; then
    INVENTORY_TEST_APP="$run_app-inventory"
else
    INVENTORY_TEST_APP="it-inventory-$(date +%s%N)"
fi
export INVENTORY_TEST_APP
mkdir -p "$INVENTORY_TEST_DIR"
chmod 0700 "$INVENTORY_TEST_DIR"
source_file="$INVENTORY_TEST_DIR/test.modal.yml"

cleanup() {
    ansible-playbook cleanup.yml "${extra[@]}" || true
}
trap cleanup EXIT

ansible-playbook prepare.yml "${extra[@]}"

# The Modal settings; the inventory runs get the token through the templated options instead of the environment.
# Not traced: the file holds the token.
{ set +x; } 2>/dev/null
# shellcheck disable=SC1091
source "$INVENTORY_TEST_DIR/modal.env"
set -x
inventory=(-i "$source_file" -e "@$INVENTORY_TEST_DIR/tokens.yml")
without_token() {
    env -u MODAL_TOKEN_ID -u MODAL_TOKEN_SECRET "$@"
}
# Read Modal again instead of the inventory cache (the fresh data is cached again): ansible-inventory --flush-cache
# where it has the option (ansible-core 2.18 and later), else a run of ansible-playbook --flush-cache, which builds
# the inventory the same way.
flush_inventory_cache() {
    if ansible-inventory --help | grep -q -- --flush-cache; then
        without_token ansible-inventory "${inventory[@]}" --graph --flush-cache
    else
        without_token ansible-playbook "${inventory[@]}" --flush-cache flush.yml
    fi
}
graph_of() {
    without_token ansible-inventory "${inventory[@]}" --graph "$1" 2>/dev/null | sed -e 's/^ *|--//' -e 's/^@//' | LC_ALL=C sort | tr '\n' ' '
}

# --- groups ----------------------------------------------------------------------------------------------
flush_inventory_cache
app_group="modal_app_${INVENTORY_TEST_APP//-/_}"
[ "$(graph_of modal)" = "inv-gpu1 inv-web1 inv-web2 modal: " ]
[ "$(graph_of "$app_group")" = "inv-gpu1 inv-web1 inv-web2 $app_group: " ]
[ "$(graph_of role_web)" = "inv-web1 inv-web2 role_web: " ]
[ "$(graph_of role_train)" = "inv-gpu1 role_train: " ]
[ "$(graph_of modal_gpu_h100)" = "inv-gpu1 modal_gpu_h100: " ]
[ "$(graph_of front)" = "front: inv-web1 " ]

# --- SSH through the inventory ------------------------------------------------------------------------------
without_token ansible all "${inventory[@]}" -m ansible.builtin.ping
without_token ansible-playbook "${inventory[@]}" play.yml "${extra[@]}"
# Strict checking is really on: with an empty known_hosts file (and no shared connection left from the runs
# above, which would skip the host key check) the same connection is refused.
if ANSIBLE_SSH_ARGS="-o ControlMaster=no -o ControlPath=none" without_token ansible inv-web1 "${inventory[@]}" -m ansible.builtin.ping \
        -e 'ansible_ssh_common_args="-o UserKnownHostsFile=/dev/null -o GlobalKnownHostsFile=/dev/null -o StrictHostKeyChecking=yes"' \
        > "$INVENTORY_TEST_DIR/unpinned.out" 2>&1; then
    echo "a host whose key is not pinned was accepted" >&2
    exit 1
fi
grep -q "Host key verification failed" "$INVENTORY_TEST_DIR/unpinned.out"

# --- cache: served until flushed; refresh_inventory in a play (both kill a sandbox: emulator only) --------------
if [ "$is_emulator" != true ]; then
    echo "SKIPPED (emulator only): inventory_modal cache and refresh_inventory checks (modal-emulator kill)"
    trap - EXIT
    ansible-playbook cleanup.yml "${extra[@]}"
    exit 0
fi
"$MODAL_EMULATOR" kill --state-dir "$MODAL_EMULATOR_STATE_DIR" "$(cat "$INVENTORY_TEST_DIR/sandbox-inv-gpu1")"
[ "$(graph_of modal)" = "inv-gpu1 inv-web1 inv-web2 modal: " ]          # cached: still there
flush_inventory_cache > /dev/null
[ "$(graph_of modal)" = "inv-web1 inv-web2 modal: " ]                   # read again: gone, the others stay

# refresh_inventory in a play
without_token ansible-playbook "${inventory[@]}" refresh.yml "${extra[@]}"

# Clean up for real (a failure here fails the test); the trap only covers runs that stopped early.
trap - EXIT
ansible-playbook cleanup.yml "${extra[@]}"
