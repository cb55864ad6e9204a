#!/usr/bin/env bash
# `make demo`: the whole life cycle of a host (playbooks/demo.yml) against a local Modal emulator.
# Set MODAL_SERVER_URL yourself (or unset DEMO_EMULATOR=1) to point it elsewhere.
set -euo pipefail
cd "$(dirname "$0")/.."
ROOT=$(pwd)
tools/setup.sh
export PATH="$ROOT/.venv/bin:$PATH"
export ANSIBLE_COLLECTIONS_PATH="$ROOT/build/collections"
export ANSIBLE_HOST_KEY_CHECKING=True
state="$ROOT/build/demo-state"
tools/emulator.sh stop "$state" 2>/dev/null || true
rm -rf "$state"
trap 'tools/emulator.sh stop "$state"' EXIT
url=$(tools/emulator.sh start "$state")
export MODAL_SERVER_URL=${url#MODAL_SERVER_URL=}
export MODAL_TOKEN_ID=ak-demo MODAL_TOKEN_SECRET=as-demo
export MODAL_CONFIG_PATH="$ROOT/build/demo-modal.toml"
: > "$MODAL_CONFIG_PATH"
export MNGR_MODAL_KEY_DIR="$ROOT/build/demo-keys"
rm -rf "$MNGR_MODAL_KEY_DIR"
echo "Modal emulator at $MODAL_SERVER_URL (state in $state)"
# The modules run on the controller, in the virtualenv's Python (it has the modal SDK).
inventory="$ROOT/build/demo-inventory.ini"
echo "localhost ansible_connection=local ansible_python_interpreter=$ROOT/.venv/bin/python" > "$inventory"
ansible-playbook -i "$inventory" "$ROOT/build/collections/ansible_collections/mngr/modal/playbooks/demo.yml" "$@"
