#!/usr/bin/env bash
# `make test-modal`: the integration targets against the Modal account that MODAL_SERVER_URL and
# MODAL_TOKEN_ID/MODAL_TOKEN_SECRET (or the active profile of the Modal config file) point at. Starts no emulator.
#  - Prints an estimate of what the run costs and asks for confirmation (MODAL_ACCEPT_COST=1: no question;
#    without a terminal and without it: refuses).
#  - The whole run uses one app name, mngr-modal-test-<time>-<random>; each target adds its own suffix.
#  - Steps only an emulator can do (modal-emulator kill, fault injection) are skipped (modal_is_emulator: false)
#    and listed at the end.
#  - On exit, however the targets ended, every host and snapshot record of the run's apps is removed and their
#    state volumes deleted.
# TARGETS="ansible_ready runbooks" limits the run to some targets. See docs/testing.md.
set -uo pipefail
cd "$(dirname "$0")/.." || exit 1
ROOT=$(pwd)
export VENV=${VENV:-$ROOT/.venv}
export STAGE=${STAGE:-$ROOT/build/collections}
COLL="$STAGE/ansible_collections/mngr/modal"
PY="$VENV/bin/python"
TARGETS=${TARGETS:-}

# --- the cost estimate -----------------------------------------------------------------------------------------
# Modal's sandbox prices in USD per second, as published on Modal's pricing page (read 2025-06; check them there
# before relying on the estimate): CPU per physical core, memory per GiB, one H100 GPU.
PRICE_CPU_CORE_SECOND=0.00003942
PRICE_MEMORY_GIB_SECOND=0.00000672
PRICE_H100_SECOND=0.001097
# What the targets create, counted from their tasks: sandboxes (default size: 1 core, 1 GiB unless listed),
# of which some are larger or have a GPU, and typical minutes each sandbox lives (build, SSH wait, the checks).
# target:sandboxes:minutes:extra_core_minutes:extra_gib_minutes:h100_minutes
COST_TABLE="
modal_sandbox:40:3:30:90:9
modal_sandbox_info:4:3:0:0:0
modal_snapshot:8:4:0:0:0
inventory_modal:3:4:0:0:4
runbooks:8:4:0:0:0
role_sandbox:3:2:2:2:0
role_host_setup:1:4:0:0:0
docs_examples:20:3:0:0:0
ansible_ready:3:5:0:0:0
"

estimate_cost() {
    local selected=$1
    awk -F: -v selected=" $selected " -v cpu="$PRICE_CPU_CORE_SECOND" -v mem="$PRICE_MEMORY_GIB_SECOND" \
        -v gpu="$PRICE_H100_SECOND" '
        NF == 6 && (selected == "  " || index(selected, " " $1 " ")) {
            minutes = $2 * $3
            usd = (minutes * 60) * (cpu + mem) + $4 * 60 * cpu + $5 * 60 * mem + $6 * 60 * gpu
            printf "  %-20s %3d sandboxes x ~%d min%s: ~%.2f USD\n", $1, $2, $3, ($6 > 0 ? ", incl. H100 minutes" : ""), usd
            total += usd; count += $2
        }
        END { printf "  %-20s %3d sandboxes: ~%.2f USD (an estimate; images and snapshots may add storage)\n", "total", count, total }
    ' <<<"$COST_TABLE"
}

confirm_cost() {
    echo "make test-modal creates real sandboxes on Modal at $MODAL_SERVER_URL. Estimated cost:"
    estimate_cost "$TARGETS"
    if [ "${MODAL_ACCEPT_COST:-}" = 1 ]; then
        echo "MODAL_ACCEPT_COST=1: going ahead."
        return 0
    fi
    if [ ! -t 0 ]; then
        echo "refusing to run without a confirmation: set MODAL_ACCEPT_COST=1 to accept the cost" >&2
        return 1
    fi
    local answer
    read -r -p "Run it? [y/N] " answer
    case "$answer" in
        y|Y|yes|YES) return 0 ;;
        *) echo "not run"; return 1 ;;
    esac
}

# --- the run -------------------------------------------------------------------------------------------------------
tools/setup.sh > /dev/null || { echo "setup failed"; exit 1; }
# ansible-test runs the targets with the virtualenv's own Python, whatever its version.
PYVER=$("$PY" -c 'import sys; print("%d.%d" % sys.version_info[:2])')
export PATH="$VENV/bin:$PATH"
export ANSIBLE_COLLECTIONS_PATH="$STAGE"

settings=$("$PY" tools/test_modal_apps.py settings) || exit 1
eval "$settings"
confirm_cost || exit 1

RUN_APP="mngr-modal-test-$(date +%s)-$(od -An -N2 -tx1 /dev/urandom | tr -d ' \n')"
WORK="$ROOT/build/test-modal/$RUN_APP"
mkdir -p "$WORK"
chmod 0700 "$WORK"
LOG="$WORK/integration.log"
# The modules read only what integration_config.yml gives them, never the caller's Modal config file.
export MODAL_CONFIG_PATH="$WORK/modal.toml"
: > "$MODAL_CONFIG_PATH"
echo "run app: $RUN_APP (work folder $WORK)"

cleanup() {
    local apps
    echo
    echo "==> cleanup of $RUN_APP"
    # The token must not stay in the staged tree.
    rm -f "$COLL/tests/integration/integration_config.yml"
    apps=$("$PY" tools/test_modal_apps.py apps "$RUN_APP" docs | "$PY" -c 'import json, sys; print(json.dumps([l for l in sys.stdin.read().split() if l]))')
    cleanup_rc=0
    ansible-playbook tools/test_modal_cleanup.yml \
        -e "{\"test_modal_apps\": $apps, \"test_modal_key_dir\": \"$WORK/cleanup-keys\"}" > "$WORK/cleanup.log" 2>&1 \
        || cleanup_rc=1
    # shellcheck disable=SC2046
    "$PY" tools/test_modal_apps.py delete-volumes $("$PY" -c 'import json, sys; print(" ".join(json.loads(sys.argv[1])))' "$apps") \
        || cleanup_rc=1
    grep -E "changed: .*item=|CLEANUP FAILED" "$WORK/cleanup.log" || true
    if [ "$cleanup_rc" -eq 0 ]; then
        echo "cleanup: every host, snapshot record and state volume of $RUN_APP-* removed"
    else
        echo "cleanup FAILED: see $WORK/cleanup.log; look for apps named $RUN_APP-* in your Modal account"
    fi
}

summary() {
    local rc=$1
    cleanup
    echo
    echo "==> summary"
    echo "skipped (these need an emulator):"
    # What the targets print (not their shell traces, which repeat it).
    grep -v '^+' "$LOG" | grep -ohE "SKIPPED \(emulator only\): [^\"']*" | sort -u | sed 's/^/  /' || true
    [ "$rc" -eq 0 ] && echo "integration targets: passed" || echo "integration targets: FAILED (log: $LOG)"
    [ "$rc" -eq 0 ] && [ "$cleanup_rc" -eq 0 ]
}

cat > "$COLL/tests/integration/integration_config.yml" <<YAML
---
modal_env:
  MODAL_SERVER_URL: "$MODAL_SERVER_URL"
  MODAL_TOKEN_ID: "$MODAL_TOKEN_ID"
  MODAL_TOKEN_SECRET: "$MODAL_TOKEN_SECRET"
  MODAL_CONFIG_PATH: "$MODAL_CONFIG_PATH"
modal_server_url: "$MODAL_SERVER_URL"
modal_token_id: "$MODAL_TOKEN_ID"
modal_token_secret: "$MODAL_TOKEN_SECRET"
modal_key_dir: "$WORK/keys"
# Not an emulator: the targets skip what only an emulator can do, and report it.
modal_is_emulator: false
modal_test_app: "$RUN_APP"
YAML
chmod 0600 "$COLL/tests/integration/integration_config.yml"

trap 'summary 1; exit 1' INT TERM
# shellcheck disable=SC2086
(cd "$COLL" && ansible-test integration --python "$PYVER" --local --color no --continue-on-error $TARGETS) 2>&1 | tee "$LOG"
rc=${PIPESTATUS[0]}
trap - INT TERM
summary "$rc"
