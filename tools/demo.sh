#!/usr/bin/env bash
# `make demo`: the first day with mngr.modal (playbooks/demo.yml) against a local Modal emulator, then a summary.
# Two hosts are created at once, configured through the dynamic inventory (a demo.modal.yml file written here, with
# strict host key checking), snapshotted, stopped, started, renamed, listed and destroyed.
#
# DEMO_EMULATOR=0 runs the same demo against Modal itself, with your credentials (MODAL_TOKEN_ID/MODAL_TOKEN_SECRET
# or ~/.modal.toml) and the app DEMO_APP (default mngr-demo); the hosts cost money for the few minutes they run.
#
# Whatever happens (success, a failed step, Ctrl-C), the hosts are destroyed, the emulator is stopped and nothing of
# the demo is left running or mounted.
set -euo pipefail
cd "$(dirname "$0")/.."
ROOT=$(pwd)
export VENV=${VENV:-$ROOT/.venv}
export STAGE=${STAGE:-$ROOT/build/collections}
DEMO_EMULATOR=${DEMO_EMULATOR:-1}
DEMO_APP=${DEMO_APP:-mngr-demo}
# DEMO_SETUP=0: the virtualenv and the staged collection are ready (make test has just made them).
DEMO_SETUP=${DEMO_SETUP:-1}
work="$ROOT/build/demo"
state="$ROOT/build/demo-state"

say() { printf '\033[1m==> %s\033[0m\n' "$*"; }

[ "$DEMO_SETUP" = 0 ] || tools/setup.sh
export PATH="$VENV/bin:$PATH"
export ANSIBLE_COLLECTIONS_PATH="$STAGE"
# The hosts' pinned keys are checked even if an ansible.cfg says otherwise.
export ANSIBLE_HOST_KEY_CHECKING=True
export MNGR_MODAL_APP="$DEMO_APP"
# The demo's own keys, apart from the hosts you keep in ~/.mngr-modal/keys.
export MNGR_MODAL_KEY_DIR="$work/keys"
# The background jobs of the concurrent create, where the clean-up can find them.
export ANSIBLE_ASYNC_DIR="$work/async"

tools/emulator.sh stop "$state" 2>/dev/null || true
rm -rf "$work" "$state"
mkdir -p "$work"
chmod 0700 "$work"

finished=0
emulator_started=0

# Waits (at most 2 minutes) until no background create job of the demo is still running.
wait_for_jobs() {
    local _
    for _ in $(seq 1 120); do
        grep -qs '"finished": 0' "$ANSIBLE_ASYNC_DIR"/* || return 0
        sleep 1
    done
    echo "some background jobs of the demo were still running after 2 minutes: see $ANSIBLE_ASYNC_DIR" >&2
}

# What the demo could leave behind on this machine: mounts under its state folder, and processes whose root is in
# it (the sandboxes'). A namespace lives only while a process is in it or a mount holds it, so this covers them too.
leftovers() {
    local pid root
    grep -F " $state/" /proc/mounts || true
    for pid in /proc/[0-9]*; do
        root=$(readlink "$pid/root" 2>/dev/null) || continue
        case "$root" in "$state"/*) echo "process ${pid#/proc/}: $(tr '\0' ' ' < "$pid/cmdline")" ;; esac
    done
}

cleanup() {
    local status=$?
    trap - EXIT INT TERM
    if [ "$finished" != 1 ]; then
        say "cleaning up after a failed or interrupted demo"
        if [ "$DEMO_EMULATOR" = 1 ] && [ "$emulator_started" = 1 ]; then
            # Stopping the emulator terminates every sandbox; the create jobs then fail at once.
            tools/emulator.sh stop "$state" || true
            emulator_started=0
            wait_for_jobs
        else
            wait_for_jobs
            for host in demo-bulk demo-list demo-renamed; do
                ansible localhost -m mngr.modal.modal_sandbox -a "name=$host state=absent" > /dev/null \
                    || echo "could not destroy $host: run ansible-playbook mngr.modal.list with MNGR_MODAL_APP=$DEMO_APP" >&2
            done
        fi
    fi
    if [ "$emulator_started" = 1 ]; then
        tools/emulator.sh stop "$state" || status=1
    fi
    if [ "$DEMO_EMULATOR" = 1 ]; then
        local left
        left=$(leftovers)
        if [ -n "$left" ]; then
            echo "the demo left these behind:" >&2; echo "$left" >&2; status=1
        else
            echo "nothing of the demo is left running or mounted"
        fi
        rm -rf "$state"
    fi
    rm -rf "$MNGR_MODAL_KEY_DIR" "$ANSIBLE_ASYNC_DIR"
    exit "$status"
}
trap cleanup EXIT
trap 'exit 130' INT
trap 'exit 143' TERM

if [ "$DEMO_EMULATOR" = 1 ]; then
    say "starting the local Modal emulator (state in $state)"
    url=$(tools/emulator.sh start "$state")
    emulator_started=1
    export MODAL_SERVER_URL=${url#MODAL_SERVER_URL=}
    # Any token works against the emulator; your own Modal configuration is never read.
    export MODAL_TOKEN_ID=ak-demo MODAL_TOKEN_SECRET=as-demo
    export MODAL_CONFIG_PATH="$work/modal.toml"
    : > "$MODAL_CONFIG_PATH"
    echo "Modal emulator at $MODAL_SERVER_URL"
else
    # Your Modal settings as they are (MODAL_SERVER_URL too, when set: Modal's own API otherwise).
    say "running against ${MODAL_SERVER_URL:-Modal} (app $DEMO_APP); the hosts are destroyed at the end"
fi

inventory="$work/demo.modal.yml"
cat > "$inventory" <<YAML
# The demo's hosts, read from Modal by the dynamic inventory.
plugin: mngr.modal.modal
app: $DEMO_APP
key_dir: $MNGR_MODAL_KEY_DIR
strict: true
YAML

say "running the demo: the first image build takes a minute or two; while the hosts build, each check of the role's background jobs shows as a RETRYING line"
ansible-playbook -i "$inventory" "$STAGE/ansible_collections/mngr/modal/playbooks/demo.yml" \
    -e demo_app="$DEMO_APP" -e demo_summary_file="$work/summary.txt" "$@"
finished=1

say "summary"
cat "$work/summary.txt"
