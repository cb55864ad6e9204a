#!/usr/bin/env bash
# Start or stop a modal-emulator for tests and the demo.
#   tools/emulator.sh start STATE_DIR [serve options...]   prints the MODAL_SERVER_URL line, leaves it running
#   tools/emulator.sh stop STATE_DIR                       SIGTERM, wait for a clean exit
set -euo pipefail
cd "$(dirname "$0")/.."
VENV=${VENV:-$(pwd)/.venv}
cmd=${1:?start|stop}; state=${2:?state dir}; shift 2
mkdir -p "$state"
case "$cmd" in
start)
    rm -f "$state/ready" "$state/serve.pid"
    setsid "$VENV/bin/modal-emulator" serve --port 0 --state-dir "$state" --ready-file "$state/ready" "$@" \
        >"$state/serve.log" 2>&1 < /dev/null &
    echo $! > "$state/serve.pid"
    for _ in $(seq 1 600); do
        if [ -s "$state/ready" ]; then cat "$state/ready"; exit 0; fi
        if ! kill -0 "$(cat "$state/serve.pid")" 2>/dev/null; then
            echo "modal-emulator exited before it was ready; its log:" >&2
            tail -n 50 "$state/serve.log" >&2
            exit 1
        fi
        sleep 0.1
    done
    echo "modal-emulator not ready after 60 s; its log:" >&2
    tail -n 50 "$state/serve.log" >&2
    exit 1
    ;;
stop)
    pid=$(cat "$state/serve.pid" 2>/dev/null || true)
    [ -n "$pid" ] || exit 0
    kill -TERM "$pid" 2>/dev/null || exit 0
    for _ in $(seq 1 300); do kill -0 "$pid" 2>/dev/null || exit 0; sleep 0.1; done
    echo "modal-emulator did not stop within 30 s; killing it" >&2
    kill -KILL "$pid" 2>/dev/null || true
    exit 1
    ;;
*) echo "usage: $0 start|stop STATE_DIR [options]" >&2; exit 2 ;;
esac
