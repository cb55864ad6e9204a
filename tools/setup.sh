#!/usr/bin/env bash
# Prepare a fresh Debian machine (as root) for `make test` and `make demo`:
# system packages, the project virtualenv with pinned tools, and the collection staged from the working tree.
# Idempotent: a second run only re-stages the collection.
set -euo pipefail
cd "$(dirname "$0")/.."
ROOT=$(pwd)
VENV=${VENV:-$ROOT/.venv}
STAGE=${STAGE:-$ROOT/build/collections}
# The Python the virtualenv is created with (an existing virtualenv keeps its own).
PYTHON=${PYTHON:-python3}

say() { printf '\033[1m==> %s\033[0m\n' "$*"; }

# --- system packages ---------------------------------------------------------------------------------
# ssh: the controller's client; e2fsprogs/util-linux/iproute2: the emulator's layer store, mounts and
# namespaces; mmdebstrap: the emulator's Debian base images, built from the host's Debian mirror;
# tini-static and busybox-static: PID 1 and the setup tools inside every sandbox, whatever its image holds;
# slirp4netns/nftables: the sandboxes' outbound network and its CIDR allowlists; rsync: staging; git: ansible-test
# reads the staged collection's file list from git; python3-venv: the virtualenvs (Debian ships ensurepip apart from
# python3); shellcheck: ansible-test's shell sanity check.
need_pkgs=()
if [ ! -x "$VENV/bin/python" ] && [ "$PYTHON" = python3 ] && command -v dpkg-query >/dev/null 2>&1 &&
   ! dpkg-query -W -f '${Status}' python3-venv 2>/dev/null | grep -q 'ok installed'; then
    need_pkgs+=(python3-venv)
fi
for pair in git:git ssh:openssh-client mkfs.ext4:e2fsprogs losetup:mount nsenter:util-linux ip:iproute2 \
            rsync:rsync tini-static:tini busybox:busybox-static mmdebstrap:mmdebstrap \
            slirp4netns:slirp4netns nft:nftables shellcheck:shellcheck; do
    cmd=${pair%%:*} pkg=${pair#*:}
    if ! command -v "$cmd" >/dev/null 2>&1 && ! [ -x "/usr/sbin/$cmd" ] && ! [ -x "/usr/bin/$cmd" ]; then
        need_pkgs+=("$pkg")
    fi
done
if [ ${#need_pkgs[@]} -gt 0 ]; then
    say "installing system packages: ${need_pkgs[*]}"
    if [ "$(id -u)" != 0 ]; then
        echo "error: these Debian packages are missing and installing them needs root: ${need_pkgs[*]}" >&2
        exit 1
    fi
    DEBIAN_FRONTEND=noninteractive apt-get update -qq
    DEBIAN_FRONTEND=noninteractive apt-get install -y -qq --no-install-recommends "${need_pkgs[@]}" >/dev/null
fi

# --- Python virtualenv -------------------------------------------------------------------------------
if [ ! -x "$VENV/bin/python" ]; then
    say "creating virtualenv $VENV"
    "$PYTHON" -m venv "$VENV"
fi
stamp="$VENV/.requirements-stamp"
want=$(cat requirements.txt requirements-dev.txt emulator/pyproject.toml | sha256sum | cut -d' ' -f1)
if [ "$(cat "$stamp" 2>/dev/null)" != "$want" ]; then
    say "installing pinned Python packages into $VENV"
    "$VENV/bin/python" -m pip install -q --disable-pip-version-check -r requirements-dev.txt
    echo "$want" > "$stamp"
fi

# --- the collection, staged where ansible and ansible-test expect it ----------------------------------
# ansible-test insists on <root>/ansible_collections/<namespace>/<name>; the staged copy holds what
# the built artifact ships plus tests/, so sanity checks exactly the shipped tree.
dest="$STAGE/ansible_collections/mngr/modal"
mkdir -p "$dest"
rsync -a --delete \
    --exclude '/.git' --exclude '/.venv' --exclude '/venv' --exclude '/build' --exclude '/emulator' \
    --exclude '/benchmarks' --exclude '/collections' --exclude '/tools' --exclude '/.ci' --exclude '__pycache__' --exclude '*.pyc' \
    --exclude '/tests/output' --exclude '.pytest_cache' --exclude '/tests/integration/integration_config.yml' \
    --exclude '*.egg-info' --exclude '/*.tar.gz' \
    ./ "$dest/"
# ansible-test decides which files exist from the nearest git repository; give the staged copy its own so the
# checkout's .gitignore (which ignores build/) does not hide it.
(
    cd "$dest"
    [ -d .git ] || git init -q
    git add -A >/dev/null
    git -c user.name=stage -c user.email=stage@localhost commit -q -m stage --allow-empty >/dev/null
)
say "collection staged at $dest"

# --- the emulator's base images ------------------------------------------------------------------------
# Built once per machine into the base cache (outside any state dir), so that no test pays for it mid-run:
# debian:bookworm-slim is the collection's default image, python:3.11-slim is what debian_slim() and the
# python references stand on.
if [ "$(id -u)" = 0 ]; then
    say "base images for the emulator (built once per machine; the first build takes about a minute each)"
    "$VENV/bin/modal-emulator" image pull debian:bookworm-slim python:3.11-slim
fi
