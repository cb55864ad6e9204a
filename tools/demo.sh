#!/usr/bin/env bash
# `make demo`: the whole life cycle of a host against the local emulator.
set -euo pipefail
cd "$(dirname "$0")/.."
if [ ! -f playbooks/demo.yml ]; then
    echo "The demo is not built yet: playbooks/demo.yml does not exist." >&2
    exit 1
fi
tools/setup.sh
exec tools/demo-run.sh "$@"
