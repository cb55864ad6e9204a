#!/usr/bin/env bash
# The project's whole test suite (`make test`): sanity, unit tests, emulator tests, integration tests against
# the emulator, the demo, the ansible-core matrix, the modal SDK range, a run through ansible-runner, the execution environment
# build context, the docs lint, ansible-lint, changelog lint and an artifact check. Every step runs; the exit status
# is non-zero when any step failed. `make test STEPS="units integration"` runs a subset.
set -uo pipefail
cd "$(dirname "$0")/.." || exit 1
ROOT=$(pwd)
export VENV=${VENV:-$ROOT/.venv}
export STAGE=${STAGE:-$ROOT/build/collections}
COLL="$STAGE/ansible_collections/mngr/modal"
STEPS=${STEPS:-"sanity units emulator integration demo matrix sdk runner ee docs lint changelog artifact"}
# Steps that start beside the integration step when both are asked for: they mostly wait too (for pip, SSH and the
# sandboxes), and each works in its own virtualenv, staged copy and emulator.
BESIDE_INTEGRATION=" emulator demo matrix sdk runner "
PY="$VENV/bin/python"

say() { printf '\n\033[1m==> %s\033[0m\n' "$*"; }

tools/setup.sh || { echo "setup failed"; exit 1; }
export PATH="$VENV/bin:$PATH"
export ANSIBLE_COLLECTIONS_PATH="$STAGE"
# Tests never read the user's Modal configuration.
export MODAL_CONFIG_PATH="$ROOT/build/modal.toml"
: > "$MODAL_CONFIG_PATH"
# ansible-test runs the tests with this Python: the virtualenv's own, whatever its version.
PYVER=$("$PY" -c 'import sys; print("%d.%d" % sys.version_info[:2])')

step_sanity() {
    local ignores
    ignores=$(cat tests/sanity/ignore-*.txt 2>/dev/null | grep -v '^\s*\(#\|$\)' || true)
    if [ -n "$ignores" ]; then
        echo "tests/sanity/ignore-*.txt must stay empty; found:"; echo "$ignores"; return 1
    fi
    "$PY" tools/ansible_test_offline.py || return 1
    # SANITY_TESTS="compile validate-modules" runs only those sanity tests (the matrix's smoke run on another Python).
    local only=()
    for test in ${SANITY_TESTS:-}; do only+=(--test "$test"); done
    (cd "$COLL" && ansible-test sanity --python "$PYVER" --local --color no "${only[@]}")
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

# Integration targets, in three groups that run side by side: most of their time is spent waiting (for SSH, package
# downloads, timeouts), so three groups finish much sooner than one queue, even on 2 cores. Each group runs in its
# own copy of the staged collection (ansible-test keeps per-run state under the collection's tests/output), against
# one shared emulator; every target uses apps of its own. Balanced by measured duration; a target not listed runs in
# the first group.
INTEGRATION_GROUPS=("modal_sandbox inventory_modal"
                    "ansible_ready runbooks role_host_setup modal_sandbox_info"
                    "docs_examples modal_snapshot modal_fleet connection_sandbox_exec role_sandbox")

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

# integration_config.yml for the targets: write_integration_config COLLECTION URL STATE KEY_DIR
write_integration_config() {
    local url=$2
    cat > "$1/tests/integration/integration_config.yml" <<YAML
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
modal_emulator_state_dir: "$3"
modal_key_dir: "$4"
modal_is_emulator: true
YAML
}

step_integration() {
    local state="$ROOT/build/integration-state" url rc=0 index=0 group copy pids=() logs=()
    tools/emulator.sh stop "$state" 2>/dev/null
    rm -rf "$state"
    url=$(tools/emulator.sh start "$state") || return 1
    url=${url#MODAL_SERVER_URL=}
    write_integration_config "$COLL" "$url" "$state" "$ROOT/build/integration-keys"
    while read -r group; do
        index=$((index + 1))
        copy="$ROOT/build/integration-$index/ansible_collections/mngr/modal"
        mkdir -p "$copy"
        rsync -a --delete --exclude '/tests/output' "$COLL/" "$copy/"
        logs+=("$ROOT/build/integration-$index.log")
        echo "group $index: $group"
        # shellcheck disable=SC2086 # the group is a list of target names
        (cd "$copy" && ansible-test integration --python "$PYVER" --local --color no --continue-on-error $group) \
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

# `make demo` as a user runs it, against an emulator of its own: it must end with its summary and leave nothing
# behind. The set-up is done already (and staging again beside the integration step would race with its copies).
step_demo() {
    DEMO_SETUP=0 tools/demo.sh
}

# --- extra virtualenvs: the ansible-core matrix and the modal SDK range ---------------------------------------
# extra_venv DIR PYTHON PACKAGE...: a virtualenv of its own with requirements-matrix.txt and the given packages,
# created once and reused while the same packages are asked for (build/venvs/ stays between runs; `make clean`
# removes it).
extra_venv() {
    local dir=$1 python=$2 want
    shift 2
    want=$(printf '%s\n' "$("$python" --version 2>&1)" "$@" | cat - requirements-matrix.txt requirements.txt \
        | sha256sum | cut -d' ' -f1)
    [ "$(cat "$dir/.stamp" 2>/dev/null)" = "$want" ] && return 0
    echo "creating $dir ($*)"
    rm -rf "$dir"
    "$python" -m venv "$dir" || return 1
    "$dir/bin/python" -m pip install -q --disable-pip-version-check -r requirements-matrix.txt "$@" || return 1
    echo "$want" > "$dir/.stamp"
}

# stage_copy NAME: a copy of the staged collection under build/NAME/ for a run that writes into it (ansible-test
# keeps its state in tests/output); prints the collection's path.
stage_copy() {
    local copy="$ROOT/build/$1/ansible_collections/mngr/modal"
    mkdir -p "$copy"
    rsync -a --delete --exclude '/tests/output' "$COLL/" "$copy/"
    echo "$copy"
}

# The oldest ansible-core release line that meta/runtime.yml claims (2.17 for ">=2.17.0").
oldest_core() {
    local floor
    floor=$(sed -n 's/^requires_ansible: *"*>= *\([0-9]*\.[0-9]*\).*/\1/p' meta/runtime.yml)
    [ -n "$floor" ] || { echo "no requires_ansible floor in meta/runtime.yml" >&2; return 1; }
    echo "$floor"
}

# Another Python 3 for the matrix: MATRIX_PYTHON, else python3.13 or python3.12, on PATH or one that pyenv has
# (pyenv's shims exist on PATH for every installed version but run only the selected one).
other_python() {
    local name version root
    if [ -n "${MATRIX_PYTHON:-}" ]; then echo "$MATRIX_PYTHON"; return; fi
    for name in python3.13 python3.12; do
        if command -v "$name" >/dev/null && "$name" -c '' 2>/dev/null; then command -v "$name"; return; fi
        command -v pyenv >/dev/null || continue
        root=$(pyenv root)
        for version in $(pyenv versions --bare 2>/dev/null | sort -rV); do
            if [ -x "$root/versions/$version/bin/$name" ]; then echo "$root/versions/$version/bin/$name"; return; fi
        done
    done
}

# The one integration target that every ansible-core of the matrix runs: the inventory plugin, the modules that
# make its hosts, and SSH to them.
MATRIX_TARGET=inventory_modal

# Units and MATRIX_TARGET on the oldest ansible-core that meta/runtime.yml claims. The newest one for this Python
# is the one requirements-dev.txt pins, which the units and integration steps run. Then, when this machine has a
# Python 3 other than the virtualenv's (MATRIX_PYTHON, else the newest of python3.13 and python3.12 on PATH), the
# units and a sanity smoke run under it, through this script itself: that is what proves the runs take their
# --python from the virtualenv.
step_matrix() {
    local core venv copy state url rc=0 other
    core=$(oldest_core) || return 1
    venv="$ROOT/build/venvs/ansible-core-$core"
    extra_venv "$venv" "$PY" "ansible-core~=$core.0" || return 1  # the newest patch release of that line
    echo "ansible-core $("$venv/bin/python" -c 'import ansible; print(ansible.__version__)'), Python $PYVER:"
    (cd "$COLL" && PATH="$venv/bin:$PATH" PYTHONPATH="$STAGE" "$venv/bin/python" -m pytest -p no:cacheprovider -q \
        tests/unit) || rc=1
    state="$ROOT/build/matrix-state"
    tools/emulator.sh stop "$state" 2>/dev/null
    rm -rf "$state"
    url=$(tools/emulator.sh start "$state") || return 1
    copy=$(stage_copy matrix)
    write_integration_config "$copy" "${url#MODAL_SERVER_URL=}" "$state" "$ROOT/build/matrix-keys"
    (cd "$copy" && PATH="$venv/bin:$PATH" ANSIBLE_COLLECTIONS_PATH="$ROOT/build/matrix" \
        ansible-test integration --python "$PYVER" --local --color no "$MATRIX_TARGET") || rc=1
    tools/emulator.sh stop "$state" || rc=1

    other=$(other_python)
    if [ -z "$other" ]; then
        echo "no python3.13 or python3.12 found (PATH, pyenv; or set MATRIX_PYTHON): the run under another Python is skipped"
    elif [ "$("$other" -c 'import sys; print("%d.%d" % sys.version_info[:2])')" = "$PYVER" ]; then
        echo "$other is Python $PYVER, the virtualenv's own: the run under another Python is skipped"
    else
        echo "units and sanity (compile, validate-modules) under $("$other" --version):"
        PYTHON="$other" VENV="$ROOT/build/venvs/$(basename "$other")" STAGE="$ROOT/build/$(basename "$other")" \
            STEPS="units sanity" SANITY_TESTS="compile validate-modules" tools/test.sh || rc=1
    fi
    return $rc
}

# The emulator's docs-examples suite and the unit tests of the code that talks to the SDK (_client, _live, the
# inventory, the private SDK paths), on the oldest modal release that requirements.txt allows. The newest allowed
# one is the one requirements-dev.txt pins, which the emulator and units steps run. The emulator itself stays on its
# own pinned release, as Modal's servers speak the newest protocol to every client.
step_sdk() {
    local oldest newest venv rc=0 core
    oldest=$(sed -n 's/^modal *>= *\([0-9.]*\).*/\1/p' requirements.txt)
    newest=$(sed -n 's/^modal *== *\([0-9.]*\).*/\1/p' requirements-dev.txt)
    core=$(grep '^ansible-core==' requirements-dev.txt)
    if [ -z "$oldest" ] || [ -z "$newest" ] || [ -z "$core" ]; then
        echo "cannot read the modal range from requirements.txt and requirements-dev.txt"; return 1
    fi
    echo "modal range: $oldest (oldest allowed, tested here) to $newest (pinned for development, tested by the units and emulator steps)"
    [ "$oldest" = "$newest" ] && return 0
    venv="$ROOT/build/venvs/modal-$oldest"
    extra_venv "$venv" "$PY" "modal==$oldest" "$core" || return 1
    MODAL_EMULATOR="$VENV/bin/modal-emulator" "$venv/bin/python" -m pytest -p no:cacheprovider -q \
        emulator/tests/test_docs_examples.py || rc=1
    (cd "$COLL" && PYTHONPATH="$STAGE" "$venv/bin/python" -m pytest -p no:cacheprovider -q \
        tests/unit/plugins/module_utils/test__client.py tests/unit/plugins/module_utils/test__hosts.py \
        tests/unit/plugins/module_utils/test__sdk_private_paths.py tests/unit/plugins/inventory) || rc=1
    return $rc
}

# The demo playbook and the inventory plugin through ansible-runner, as AWX runs them (tools/ansible_runner_check.py).
step_runner() {
    local state="$ROOT/build/runner-state" url rc=0
    tools/emulator.sh stop "$state" 2>/dev/null
    rm -rf "$state"
    url=$(tools/emulator.sh start "$state") || return 1
    MODAL_SERVER_URL=${url#MODAL_SERVER_URL=} "$PY" tools/ansible_runner_check.py "$ROOT/build/runner" || rc=1
    tools/emulator.sh stop "$state" || rc=1
    return $rc
}

# What an execution environment is built from: ansible-builder reads the collection's dependencies
# (meta/execution-environment.yml), and the example EE definition that installs the built collection gives a build
# context (no container engine needed for that; `ansible-builder build` is the same with one).
step_ee() {
    local dir="$ROOT/build/ee" deps
    rm -rf "$dir" && mkdir -p "$dir"
    deps=$(ansible-builder introspect --sanitize "$STAGE") || return 1
    echo "$deps"
    grep -q "^- 'modal>=.* # from collection mngr.modal'" <<<"$deps" || { echo "introspect lacks the modal SDK"; return 1; }
    grep -q "^- 'openssh-client .* # from collection mngr.modal'" <<<"$deps" || { echo "introspect lacks ssh"; return 1; }
    ansible-galaxy collection build --output-path "$dir" "$COLL" >/dev/null || return 1
    cp docs/examples/execution-environment.yml "$dir/"
    (cd "$dir" && ansible-builder create --file execution-environment.yml --context context \
        --output-filename Containerfile -v 1) || return 1
    "$PY" - "$dir/context" <<'PY' || return 1
import pathlib, sys
context = pathlib.Path(sys.argv[1])
containerfile = (context / "Containerfile").read_text()
tarballs = sorted(str(p.relative_to(context / "_build")) for p in (context / "_build").rglob("mngr-modal-*.tar.gz"))
requirements = (context / "_build" / "requirements.yml").read_text()
assert tarballs, "the collection tarball is not in the build context"
# The image installs the collection from the tarball, then reads its dependencies from it (introspect).
assert any(f"name: {name}" in requirements for name in tarballs), requirements
assert "ansible-galaxy collection install" in containerfile and "introspect" in containerfile, containerfile
print(f"build context {context}: Containerfile, {', '.join(tarballs)}")
PY
}

# The plugin and module docs as docs.ansible.com builds them, and the docsite files (docs/docsite/).
step_docs() {
    (cd "$COLL" && antsibull-docs lint-collection-docs --plugin-docs .)
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
record() {  # record STEP STATUS
    if [ "$2" -eq 0 ]; then
        passed=$((passed + 1))
    else
        failed=$((failed + 1)); failures+=("$1")
    fi
}

# With the integration step asked for, the BESIDE_INTEGRATION steps start when it starts, one after the other (two
# cores), each with its output in build/step-NAME.log, shown when the integration step is done.
beside=()
if [[ " $STEPS " == *" integration "* ]]; then
    for step in $STEPS; do
        [[ "$BESIDE_INTEGRATION" == *" $step "* ]] && beside+=("$step")
    done
fi

for step in $STEPS; do
    [[ " ${beside[*]} " == *" $step "* ]] && continue
    if [ "$step" = integration ] && [ ${#beside[@]} -gt 0 ]; then
        mkdir -p "$ROOT/build"
        rm -f "$ROOT"/build/step-*.status
        (
            for other in "${beside[@]}"; do
                "step_$other" > "$ROOT/build/step-$other.log" 2>&1
                echo $? > "$ROOT/build/step-$other.status"
            done
        ) &
        queue=$!
        say "integration (with ${beside[*]} beside it)"
        step_integration; record integration $?
        wait "$queue"
        for other in "${beside[@]}"; do
            say "$other (ran beside integration; log: build/step-$other.log)"
            cat "$ROOT/build/step-$other.log"
            record "$other" "$(cat "$ROOT/build/step-$other.status" 2>/dev/null || echo 1)"
        done
        continue
    fi
    say "$step"
    "step_$step"; record "$step" $?
done
say "summary"
[ $failed -eq 0 ] || echo "failed steps: ${failures[*]}"
echo "steps: $passed passed, $failed failed"
[ $failed -eq 0 ]
