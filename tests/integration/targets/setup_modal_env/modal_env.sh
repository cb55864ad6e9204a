# shellcheck shell=bash
# Sourced by the script targets (runme.sh): the Modal settings they run with. Call `modal_env NAME WORK PYTHON` from
# the target's folder, WORK being the target's private folder and PYTHON the interpreter to read the config with. It
# exports the Modal settings that integration_config.yml holds (written by the test runner; else the caller's
# environment is used as it is), MNGR_MODAL_APP (the run's own app from modal_test_app when tools/test_modal.sh gives
# one, which it removes afterwards; else a fresh app) and MNGR_MODAL_KEY_DIR (under WORK).

modal_env() {
    local name=$1 work=$2 python=$3 config=../../integration_config.yml tracing=""
    # The settings include the token: never let `set -x` print them.
    case $- in *x*) tracing=1 ;; esac
    { set +x; } 2>/dev/null
    mkdir -p "$work"
    chmod 0700 "$work"
    if [ -f "$config" ]; then
        eval "$("$python" - "$config" <<'PY'
import shlex, sys, yaml
with open(sys.argv[1], encoding="utf-8") as handle:
    config = yaml.safe_load(handle) or {}
for key, value in (config.get("modal_env") or {}).items():
    print(f"export {key}={shlex.quote(str(value))}")
if config.get("modal_test_app"):
    print(f"MODAL_TEST_APP={shlex.quote(str(config['modal_test_app']))}")
PY
)"
    fi
    export MODAL_CONFIG_PATH="${MODAL_CONFIG_PATH:-$work/modal.toml}"
    touch "$MODAL_CONFIG_PATH"
    if [ -n "${MODAL_TEST_APP:-}" ]; then
        MNGR_MODAL_APP="$MODAL_TEST_APP-$name"
    else
        MNGR_MODAL_APP="it-$name-$(date +%s%N)"
    fi
    export MNGR_MODAL_APP MNGR_MODAL_KEY_DIR="$work/keys"
    echo "modal_env: Modal settings loaded for $name (app $MNGR_MODAL_APP); not traced, they hold the token"
    if [ -n "$tracing" ]; then set -x; fi
}
