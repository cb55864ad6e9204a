#!/usr/bin/env bash
# Every playbook that docs/*.md marks runnable (<!-- runnable -->), run against the Modal API at MODAL_SERVER_URL
# (the emulator under `make test`), guide by guide, each guide in its own app, cleaned up afterwards.
# By hand, from the repository root:
#   python tests/integration/targets/docs_examples/run_examples.py --docs docs --work /tmp/docs-examples [GUIDE.md...]
set -eux
cd "$(dirname "$0")"

config=../../integration_config.yml
work="${OUTPUT_DIR:-$(mktemp -d)}/docs_examples"
python="${ANSIBLE_TEST_PYTHON_INTERPRETER:-python3}"

# A sandbox_exec example ends its broker with its run: nothing is left running after the test.
export MNGR_MODAL_BROKER_PERSIST=0
"$python" run_examples.py --config "$config" --work "$work"
