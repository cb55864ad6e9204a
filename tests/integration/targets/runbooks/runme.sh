#!/usr/bin/env bash
# The sandbox role over a group of three hosts, and every runbook of playbooks/ as a user runs them
# (ansible-playbook mngr.modal.<name> -e ..., no inventory file but for configure), in a user's order: create,
# configure, snapshot, stop, list, start, restore, rename, tags, destroy, against the Modal API at MODAL_SERVER_URL
# (the emulator under `make test`). What they must refuse (no host_name, destroy without confirm=yes, start of an
# unknown host, restore from an unknown snapshot, tags of a stopped host) changes nothing, and the ssh command they
# print works as printed. (The demo runbook runs in `make test`'s demo step.)
set -eux
cd "$(dirname "$0")"

python="${ANSIBLE_TEST_PYTHON_INTERPRETER:-python3}"
work="${OUTPUT_DIR:-$(mktemp -d)}/runbooks"
# shellcheck source=SCRIPTDIR/../setup_modal_env/modal_env.sh
source ../setup_modal_env/modal_env.sh
modal_env runbooks "$work" "$python"

cleanup() {
    ansible-playbook cleanup.yml || true
}
trap cleanup EXIT

# Runs a command that must fail, with a message containing $1 in its output.
expect_failure() {
    local message=$1 out="$work/failure.out"
    shift
    if "$@" > "$out" 2>&1; then
        echo "expected a failure: $*" >&2
        exit 1
    fi
    grep -qF -- "$message" "$out" || { cat "$out" >&2; echo "missing: $message" >&2; exit 1; }
}

# The state of host $1 ("absent" when it is not listed), as the info module sees it.
host_state() {
    ansible localhost -m mngr.modal.modal_sandbox_info -a "name=$1" > "$work/info.out"
    "$python" - "$work/info.out" <<'PY'
import json, sys
text = open(sys.argv[1], encoding="utf-8").read()
hosts = json.loads(text[text.index("{"):])["modal_sandbox_info"]
print(hosts[0]["state"] if hosts else "absent")
PY
}

# The ssh command a runbook printed (the debug message that starts with "ssh "), exactly as shown.
printed_ssh_command() {
    "$python" - "$1" <<'PY'
import json, re, sys
lines = [line for line in open(sys.argv[1], encoding="utf-8") if re.match(r'\s*"msg": "ssh ', line)]
if not lines:
    sys.exit("no ssh command was printed")
print(json.loads("{" + lines[-1].strip() + "}")["msg"])
PY
}

# Runs the printed ssh command, as a user would paste it, with `true` as the remote command.
run_printed_ssh() {
    local command
    command=$(printed_ssh_command "$1")
    case "$command" in
        *" -i "*" -p "*"UserKnownHostsFile="*"StrictHostKeyChecking=yes"*) ;;
        *) echo "the printed ssh command lacks a needed option: $command" >&2; exit 1 ;;
    esac
    sh -c "$command true" < /dev/null
}

# --- the role over a group of three hosts -------------------------------------------------------------------
printf '[fleet]\nrb-fleet-a\nrb-fleet-b\nrb-fleet-c\n' > "$work/fleet.ini"
ansible-playbook -i "$work/fleet.ini" fleet.yml
[ "$(host_state rb-check-only)" = absent ]

# --- every runbook that names a host needs host_name ---------------------------------------------------------
for runbook in create start stop snapshot destroy restore rename tags; do
    expect_failure "host_name is required" ansible-playbook "mngr.modal.$runbook"
done

# --- create prints a working ssh command; a second run changes nothing -----------------------------------------
ansible-playbook mngr.modal.create -e host_name=rb-one | tee "$work/create.out"
run_printed_ssh "$work/create.out"
ansible-playbook mngr.modal.create -e host_name=rb-one | tee "$work/create-again.out"
grep -qE '^localhost +: ok=[0-9]+ +changed=0 ' "$work/create-again.out"

# --- destroy without confirm=yes destroys nothing ------------------------------------------------------------------
expect_failure "add -e confirm=yes" ansible-playbook mngr.modal.destroy -e host_name=rb-one
expect_failure "add -e confirm=yes" ansible-playbook mngr.modal.destroy -e host_name=rb-one -e confirm=no
[ "$(host_state rb-one)" = running ]

# --- configure, with the variables docs/runbooks.md documents --------------------------------------------------
printf "plugin: mngr.modal.modal\napp: %s\nkey_dir: %s\n" "$MNGR_MODAL_APP" "$MNGR_MODAL_KEY_DIR" > "$work/hosts.modal.yml"
inventory=(-i "$work/hosts.modal.yml")
ansible-playbook "${inventory[@]}" mngr.modal.configure -e target=rb-one \
    -e '{"host_setup_motd": "configured by the runbook", "host_setup_environment": {"RUNBOOK": "yes"}}'
ansible rb-one "${inventory[@]}" -m ansible.builtin.shell -a "cat /etc/motd /etc/environment; ls /usr/bin/tmux /usr/bin/jq" \
    | tee "$work/configured.out"
grep -q "configured by the runbook" "$work/configured.out"
grep -q "RUNBOOK=" "$work/configured.out"
grep -q "/usr/bin/jq" "$work/configured.out"

# --- snapshot (a file written before it, one after), stop ----------------------------------------------------------
ansible rb-one "${inventory[@]}" -m ansible.builtin.copy -a "dest=/root/before.txt content=before mode=0644"
ansible-playbook mngr.modal.snapshot -e host_name=rb-one -e snapshot_name=rb-saved
ansible rb-one "${inventory[@]}" -m ansible.builtin.copy -a "dest=/root/after.txt content=after mode=0644"
ansible-playbook mngr.modal.stop -e host_name=rb-one
[ "$(host_state rb-one)" = stopped ]
# The tags of a stopped host can be read, not changed (that would start it).
expect_failure "its tags change on a running host only" \
    ansible-playbook mngr.modal.tags -e host_name=rb-one -e tags_action=add -e '{"host_tags": {"x": "y"}}'
[ "$(host_state rb-one)" = stopped ]
ansible-playbook mngr.modal.tags -e host_name=rb-one | grep -q '"rb-one: (no tags)"'

# --- list: the table shows the stopped host, why it stopped, its two snapshots (the newest is the stop's), its age ---
ansible-playbook mngr.modal.list | tee "$work/list.out"
grep -qE '"HOST +STATE +ENDPOINT +TAGS +SNAPSHOTS +AGE +WHY"' "$work/list.out"
grep -qE '"rb-one +stopped +- +- +2 \(newest stop-[0-9-]+\) +[0-9]+[smhd][0-9m]* +stopped by mngr.modal.modal_sandbox at ' \
    "$work/list.out"

# --- start refuses an unknown name and creates nothing; start prints a working ssh command -----------------------
expect_failure "there is no host named rb-typo to start" ansible-playbook mngr.modal.start -e host_name=rb-typo
[ "$(host_state rb-typo)" = absent ]
ansible-playbook mngr.modal.start -e host_name=rb-one | tee "$work/start.out"
[ "$(host_state rb-one)" = running ]
run_printed_ssh "$work/start.out"
ansible rb-one "${inventory[@]}" -m ansible.builtin.command -a "cat /root/before.txt /root/after.txt"

# --- restore: an unknown snapshot changes nothing; the named one brings back the files as they were -----------------
expect_failure "snapshot is required" ansible-playbook mngr.modal.restore -e host_name=rb-one
expect_failure "host rb-one has no snapshot named rb-nothing" \
    ansible-playbook mngr.modal.restore -e host_name=rb-one -e snapshot=rb-nothing
[ "$(host_state rb-one)" = running ]
ansible-playbook mngr.modal.restore -e host_name=rb-one -e snapshot=rb-saved | tee "$work/restore.out"
run_printed_ssh "$work/restore.out"
ansible rb-one "${inventory[@]}" -m ansible.builtin.shell -a "cat /root/before.txt; test ! -e /root/after.txt"

# --- rename ----------------------------------------------------------------------------------------------------------
expect_failure "new_name is required" ansible-playbook mngr.modal.rename -e host_name=rb-one
ansible-playbook mngr.modal.rename -e host_name=rb-one -e new_name=rb-two | tee "$work/rename.out"
grep -q '"rb-one is now rb-two' "$work/rename.out"
[ "$(host_state rb-one)" = absent ]
[ "$(host_state rb-two)" = running ]

# --- tags: add, get, set, remove --------------------------------------------------------------------------------------
ansible-playbook mngr.modal.tags -e host_name=rb-two -e tags_action=add -e '{"host_tags": {"team": "ml", "env": "dev"}}'
ansible-playbook mngr.modal.tags -e host_name=rb-two | tee "$work/tags.out"
grep -q '"rb-two: env=dev team=ml"' "$work/tags.out"
ansible-playbook mngr.modal.tags -e host_name=rb-two -e tags_action=set -e '{"host_tags": {"team": "ops"}}' \
    | tee "$work/tags.out"
grep -q '"rb-two: team=ops"' "$work/tags.out"
ansible-playbook mngr.modal.tags -e host_name=rb-two -e tags_action=remove -e '{"tag_keys": ["team"]}' \
    | tee "$work/tags.out"
grep -q '"rb-two: (no tags)"' "$work/tags.out"
expect_failure "tags_action=paint" ansible-playbook mngr.modal.tags -e host_name=rb-two -e tags_action=paint

# --- destroy with confirm=yes ---------------------------------------------------------------------------------------
ansible-playbook mngr.modal.destroy -e host_name=rb-two -e confirm=yes
[ "$(host_state rb-two)" = absent ]
