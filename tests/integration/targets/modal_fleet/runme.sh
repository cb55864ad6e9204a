#!/usr/bin/env bash
# modal_fleet and modal_gc against the Modal API at MODAL_SERVER_URL (the emulator under `make test`):
# exact_count twice (changed, then not), scaling 5 -> 2 -> 4 (highest index destroyed first), every host answering
# `ansible -m ping` through the inventory plugin with strict host key checking, a killed host replaced by the next
# run, modal_gc in check mode then for real on a planted orphan, duplicate and stale record (a sandbox without our
# tags untouched), the sandbox role's fleet path (sandbox_count), and a fleet converging with no duplicates on a
# private emulator failing 20% of all RPCs.
set -eux
cd "$(dirname "$0")"

python="${ANSIBLE_TEST_PYTHON_INTERPRETER:-python3}"
work="${OUTPUT_DIR:-$(mktemp -d)}/modal_fleet"
# shellcheck source=SCRIPTDIR/../setup_modal_env/modal_env.sh
source ../setup_modal_env/modal_env.sh
modal_env fleet "$work" "$python"

# The emulator's command and state dir (integration_config.yml, else the environment): kills and the fault run need
# them; against Modal itself (modal_is_emulator: false) those parts are skipped.
config=../../integration_config.yml
emulator="${MNGR_MODAL_EMULATOR:-$(dirname "$python")/modal-emulator}" state_dir="${MODAL_EMULATOR_STATE_DIR:-}"
is_emulator=true
if [ -f "$config" ]; then
    eval "$("$python" - "$config" <<'PY'
import shlex, sys, yaml
with open(sys.argv[1], encoding="utf-8") as handle:
    config = yaml.safe_load(handle) or {}
if config.get("modal_emulator"):
    print(f"emulator={shlex.quote(str(config['modal_emulator']))}")
if config.get("modal_emulator_state_dir"):
    print(f"state_dir={shlex.quote(str(config['modal_emulator_state_dir']))}")
print("is_emulator=" + ("true" if config.get("modal_is_emulator", True) else "false"))
PY
)"
fi
export FLEET_TEST_DIR="$work"

faulty_pid=""
cleanup() {
    ansible-playbook cleanup.yml || true
    if [ -s "$work/planted.json" ]; then "$python" files/plant.py terminate "$work/planted.json" foreign || true; fi
    if [ -n "$faulty_pid" ]; then kill "$faulty_pid" 2>/dev/null || true; wait "$faulty_pid" 2>/dev/null || true; fi
}
trap cleanup EXIT

# --- exact_count, scaling, results -----------------------------------------------------------------------
ansible-playbook scale.yml

# --- the sandbox role's path for a list of identical hosts ----------------------------------------------------
ansible-playbook role.yml

# --- the inventory sees the same hosts, and each answers with strict host key checking ----------------------
cat > "$work/fleet.modal.yml" <<YAML
plugin: mngr.modal.modal
app: $MNGR_MODAL_APP
key_dir: $MNGR_MODAL_KEY_DIR
keyed_groups:
  - key: modal_tags.fleet
    prefix: fleet
YAML
ANSIBLE_HOST_KEY_CHECKING=True ansible -i "$work/fleet.modal.yml" fleet_itf -m ansible.builtin.ping | tee "$work/ping.out"
[ "$(grep -c '"ping": "pong"' "$work/ping.out")" -eq 4 ]

if [ "$is_emulator" != true ] || [ -z "$state_dir" ]; then
    echo "SKIPPED (emulator only): modal_fleet kill, modal_gc and fault runs"
    trap - EXIT
    ansible-playbook cleanup.yml
    exit 0
fi

# --- a host killed behind our back is replaced by the next run -----------------------------------------------
"$emulator" kill "$(cat "$work/sandbox-itf-2")" --state-dir "$state_dir"
ansible-playbook replace.yml

# --- modal_gc: a planted orphan and duplicate, a stale record, and a sandbox that is not ours ------------------
"$python" files/plant.py plant "$MNGR_MODAL_APP" "$(cat "$work/host-itf-1")" itf-1 > "$work/planted.json"
"$emulator" kill "$(cat "$work/sandbox-itf-3")" --state-dir "$state_dir"
ansible-playbook gc.yml
# The sandbox without our tags still runs.
"$python" files/plant.py running "$work/planted.json" foreign

# --- a fleet on an emulator failing 20% of all RPCs converges, with no duplicates ---------------------------------
"$emulator" serve --port 0 --state-dir "$work/faulty-state" --ready-file "$work/faulty.ready" \
    --fail '*=0.2:UNAVAILABLE' --fault-seed 15 > "$work/faulty.log" 2>&1 &
faulty_pid=$!
for _ in $(seq 1 600); do [ -s "$work/faulty.ready" ] && break; sleep 0.1; done
faulty_url=$(sed -n 's/^MODAL_SERVER_URL=//p' "$work/faulty.ready")
MODAL_SERVER_URL="$faulty_url" MNGR_MODAL_KEY_DIR="$work/faulty-keys" ansible-playbook faults.yml
kill "$faulty_pid"
wait "$faulty_pid" || true
faulty_pid=""

# Clean up for real (a failure here fails the test); the trap only covers runs that stopped early.
trap - EXIT
ansible-playbook cleanup.yml
"$python" files/plant.py terminate "$work/planted.json" foreign
