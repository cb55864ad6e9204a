#!/usr/bin/env bash
# The project's whole test suite (`make test`): sanity, unit tests, emulator tests, integration tests against
# the emulator, ansible-lint, changelog lint and an artifact check. Every step runs; the exit status is non-zero
# when any step failed. `make test STEPS="units integration"` runs a subset.
set -uo pipefail
cd "$(dirname "$0")/.." || exit 1
ROOT=$(pwd)
export VENV=${VENV:-$ROOT/.venv}
export STAGE=${STAGE:-$ROOT/build/collections}
COLL="$STAGE/ansible_collections/mngr/modal"
STEPS=${STEPS:-"sanity units emulator integration lint changelog artifact"}
PY="$VENV/bin/python"

say() { printf '\n\033[1m==> %s\033[0m\n' "$*"; }

tools/setup.sh || { echo "setup failed"; exit 1; }
export PATH="$VENV/bin:$PATH"
export ANSIBLE_COLLECTIONS_PATH="$STAGE"
# Tests never read the user's Modal configuration.
export MODAL_CONFIG_PATH="$ROOT/build/modal.toml"
: > "$MODAL_CONFIG_PATH"

step_sanity() {
    local ignores
    ignores=$(cat tests/sanity/ignore-*.txt 2>/dev/null | grep -v '^\s*\(#\|$\)' || true)
    if [ -n "$ignores" ]; then
        echo "tests/sanity/ignore-*.txt must stay empty; found:"; echo "$ignores"; return 1
    fi
    "$PY" tools/ansible_test_offline.py || return 1
    (cd "$COLL" && ansible-test sanity --python 3.11 --local --color no)
}

step_units() {
    (cd "$COLL" && PYTHONPATH="$STAGE" "$PY" -m pytest -p no:cacheprovider -q tests/unit)
}

step_emulator() {
    if [ -z "$(ls emulator/tests/*.py emulator/tests/*/*.py 2>/dev/null)" ]; then
        echo "no emulator tests"; return 1
    fi
    "$PY" -m pytest -p no:cacheprovider -q emulator/tests
}

# Integration targets, in two groups that run side by side: most of their time is spent waiting (for SSH, package
# downloads, timeouts), so two groups finish much sooner than one queue, even on 2 cores. Each group runs in its
# own copy of the staged collection (ansible-test keeps per-run state under the collection's tests/output), against
# one shared emulator; every target uses apps of its own. Balanced by measured duration; a target not listed runs in
# the first group.
INTEGRATION_GROUPS=("modal_sandbox inventory_modal ansible_ready" "docs_examples modal_snapshot modal_sandbox_info runbooks modal_fleet")

integration_targets() {
    local listed=" ${INTEGRATION_GROUPS[*]} " extra="" dir name
    for dir in "$COLL"/tests/integration/targets/*/; do
        name=$(basename "$dir")
        case "$name" in setup_*) continue ;; esac
        [[ "$listed" == *" $name "* ]] || extra+=" $name"
    done
    echo "${INTEGRATION_GROUPS[0]}$extra"
    printf '%s\n' "${INTEGRATION_GROUPS[@]:1}"
}

step_integration() {
    local state="$ROOT/build/integration-state" url rc=0 index=0 group copy pids=() logs=()
    tools/emulator.sh stop "$state" 2>/dev/null
    rm -rf "$state"
    url=$(tools/emulator.sh start "$state") || return 1
    url=${url#MODAL_SERVER_URL=}
    cat > "$COLL/tests/integration/integration_config.yml" <<YAML
---
modal_env:
  MODAL_SERVER_URL: "$url"
  MODAL_TOKEN_ID: ak-integration
  MODAL_TOKEN_SECRET: as-integration
  MODAL_CONFIG_PATH: "$MODAL_CONFIG_PATH"
modal_server_url: "$url"
modal_token_id: ak-integration
modal_token_secret: as-integration
modal_emulator: "$VENV/bin/modal-emulator"
modal_emulator_state_dir: "$state"
modal_key_dir: "$ROOT/build/integration-keys"
modal_is_emulator: true
YAML
    while read -r group; do
        index=$((index + 1))
        copy="$ROOT/build/integration-$index/ansible_collections/mngr/modal"
        mkdir -p "$copy"
        rsync -a --delete --exclude '/tests/output' "$COLL/" "$copy/"
        logs+=("$ROOT/build/integration-$index.log")
        echo "group $index: $group"
        # shellcheck disable=SC2086 # the group is a list of target names
        (cd "$copy" && ansible-test integration --python 3.11 --local --color no --continue-on-error $group) \
            > "${logs[-1]}" 2>&1 &
        pids+=($!)
    done < <(integration_targets)
    for index in "${!pids[@]}"; do
        wait "${pids[$index]}" || rc=1
        echo "--- group $((index + 1)) (log: ${logs[$index]})"
        cat "${logs[$index]}"
    done
    tools/emulator.sh stop "$state" || rc=1
    return $rc
}

step_lint() {
    local targets=()
    for dir in roles playbooks; do
        [ -n "$(find "$COLL/$dir" -name '*.yml' 2>/dev/null)" ] && targets+=("$dir")
    done
    if [ ${#targets[@]} -eq 0 ]; then
        echo "no roles or playbooks yet: nothing for ansible-lint"; return 0
    fi
    (cd "$COLL" && ansible-lint --offline "${targets[@]}")
}

step_changelog() {
    antsibull-changelog lint
}

step_artifact() {
    local out listing
    out=$(mktemp -d)
    ansible-galaxy collection build --output-path "$out" "$COLL" >/dev/null || { rm -rf "$out"; return 1; }
    listing=$(tar -tzf "$out"/mngr-modal-*.tar.gz)
    rm -rf "$out"
    if grep -E '^(emulator|tests|benchmarks|tools)/' <<<"$listing"; then
        echo "the built artifact ships files it must not (above)"; return 1
    fi
    grep -q '^plugins/module_utils/_client.py$' <<<"$listing" || { echo "artifact lacks plugins"; return 1; }
    echo "artifact: $(wc -l <<<"$listing") entries, no emulator/, tests/, benchmarks/"
}

passed=0 failed=0 failures=()
for step in $STEPS; do
    say "$step"
    if "step_$step"; then
        passed=$((passed + 1))
    else
        failed=$((failed + 1)); failures+=("$step")
    fi
done
say "summary"
[ $failed -eq 0 ] || echo "failed steps: ${failures[*]}"
echo "steps: $passed passed, $failed failed"
[ $failed -eq 0 ]
