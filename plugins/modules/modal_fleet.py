#!/usr/bin/python
# Copyright (c) 2026, the mngr.modal authors
# GNU General Public License v3.0+ (see COPYING or https://www.gnu.org/licenses/gpl-3.0.txt)

from __future__ import annotations

DOCUMENTATION = r"""
module: modal_fleet
short_description: Keep an exact number of identical Modal sandbox hosts, created concurrently in one task
version_added: 0.1.0
description:
  - Manages a I(fleet), a set of identical hosts called C(<name>-1), C(<name>-2)... C(<name>-<exact_count>). Each is
    an ordinary host of the app, exactly as M(mngr.modal.modal_sandbox) makes it (its own key pair, pinned host key
    and record, no trust on first use), tagged with the user tag C(fleet=<name>) and the O(tags).
  - Missing hosts are created at the same time by this one module process, at most O(concurrency) at once; the image
    is built once for all of them. This is much faster, and uses much less of the controller's CPU, than one
    M(mngr.modal.modal_sandbox) task per host (see the collection's C(docs/performance.md)).
  - With fewer hosts wanted than exist, the hosts with the highest index are destroyed first.
  - A host of the fleet whose sandbox ended (timeout, crash, terminated elsewhere) gets a new sandbox from the fleet's
    spec, keeping its id, name and keys (so its pinned host key stays the same).
  - If some hosts fail to come up, the task fails and says which and why; their sandboxes are terminated, so
    nothing is left running for them. The hosts that came up are kept and returned in RV(modal_fleet.hosts); running
    the task again creates only the missing ones.
  - Run it on the controller (C(delegate_to=localhost), or a play on C(localhost) with C(connection=local)).
extends_documentation_fragment:
  - mngr.modal.modal
  - mngr.modal.modal.attributes
attributes:
  check_mode:
    support: full
  diff_mode:
    support: full
  idempotent:
    support: full
options:
  name:
    description:
      - Name of the fleet. Its hosts are called C(<name>-<index>), from C(<name>-1) to C(<name>-<exact_count>), so
        the rules of host names apply to them (letters, digits, V(-), V(_) and V(.), at most 63 characters).
      - A host called C(<name>-<index>) that is not tagged C(fleet=<name>) (made by M(mngr.modal.modal_sandbox), for
        example) is not taken over; the task fails naming it.
    type: str
    required: true
  exact_count:
    description:
      - How many hosts the fleet has after the task. Required with O(state=present). V(0) destroys every host of it.
    type: int
  state:
    description:
      - V(present) makes the fleet exactly O(exact_count) running hosts. V(absent) destroys every host of the fleet
        (like O(exact_count=0)).
    type: str
    choices: [present, absent]
    default: present
  concurrency:
    description:
      - How many hosts are created (or destroyed) at the same time, at least 1.
    type: int
    default: 16
  build_args:
    description:
      - Build arguments, as for M(mngr.modal.modal_sandbox) (O(mngr.modal.modal_sandbox#module:build_args)).
    type: raw
  gpu:
    description: As O(mngr.modal.modal_sandbox#module:gpu), for every host.
    type: str
  cpu:
    description: As O(mngr.modal.modal_sandbox#module:cpu), for every host.
    type: float
  memory:
    description: As O(mngr.modal.modal_sandbox#module:memory), for every host.
    type: float
  image:
    description:
      - As O(mngr.modal.modal_sandbox#module:image). The image is built once for the whole fleet.
    type: str
  dockerfile:
    description: As O(mngr.modal.modal_sandbox#module:dockerfile).
    type: path
  context_dir:
    description: As O(mngr.modal.modal_sandbox#module:context_dir).
    type: path
  docker_build_args:
    description: As O(mngr.modal.modal_sandbox#module:docker_build_args).
    type: dict
  timeout:
    description: As O(mngr.modal.modal_sandbox#module:timeout), for every host.
    type: int
  idle_timeout:
    description: As O(mngr.modal.modal_sandbox#module:idle_timeout), for every host.
    type: int
  region:
    description: As O(mngr.modal.modal_sandbox#module:region).
    type: str
  secrets:
    description: As O(mngr.modal.modal_sandbox#module:secrets).
    type: list
    elements: str
  cidr_allowlist:
    description: As O(mngr.modal.modal_sandbox#module:cidr_allowlist).
    type: list
    elements: str
  offline:
    description: As O(mngr.modal.modal_sandbox#module:offline).
    type: bool
  volumes:
    description:
      - As O(mngr.modal.modal_sandbox#module:volumes). Every host mounts the same volumes.
    type: list
    elements: raw
  env:
    description: As O(mngr.modal.modal_sandbox#module:env), for every host.
    type: dict
  tags:
    description:
      - User tags added to every host, besides C(fleet=<name>), which every host of the fleet carries. Tags of a host
        that are not listed are left alone.
      - At most 6 (a host holds 7 user tags, and C(fleet) is one). The key C(fleet) may only be given the fleet's
        name.
    type: dict
  wait:
    description:
      - Return only once an SSH login as C(root) with strict host key checking succeeds on every host created by
        this task. Hosts that were already running are not probed.
    type: bool
    default: true
  wait_timeout:
    description:
      - How many seconds to wait for SSH on each new host (and for its tunnel). At least 1.
    type: int
    default: 300
notes:
  - A running host whose recorded spec differs from the requested one is not resized (Modal cannot); the module
    warns. Lower O(exact_count) to destroy hosts and raise it again to create them with the new spec, or replace the
    fleet (O(state=absent), then O(state=present)).
  - Each host is an ordinary host of the app. M(mngr.modal.modal_sandbox) can stop, start, snapshot or destroy one,
    M(mngr.modal.modal_sandbox_info) lists them (O(mngr.modal.modal_sandbox_info#module:tags) C(fleet=<name>) lists
    one fleet), and the inventory plugin P(mngr.modal.modal#inventory) sees them (C(keyed_groups) on C(modal_tags.fleet)
    groups them by fleet).
  - M(mngr.modal.modal_gc) finds and removes what a crashed run may leave behind.
seealso:
  - module: mngr.modal.modal_sandbox
  - module: mngr.modal.modal_gc
author:
  - The mngr.modal authors (@mngr-modal)
"""

EXAMPLES = r"""
- name: Ten identical workers
  mngr.modal.modal_fleet:
    name: worker
    exact_count: 10
    build_args: cpu=2 memory=4
    tags:
      team: ci
  delegate_to: localhost
  register: workers

- name: Add every worker to the in-memory inventory
  ansible.builtin.add_host:
    name: "{{ item.name }}"
    groups: workers
    ansible_host: "{{ item.ssh.host }}"
    ansible_port: "{{ item.ssh.port }}"
    ansible_user: "{{ item.ssh.user }}"
    ansible_ssh_private_key_file: "{{ item.ssh.private_key_file }}"
    ansible_ssh_common_args: "{{ item.ssh.common_args }}"
    ansible_ssh_host_key_checking: "{{ item.ssh.host_key_checking }}"
    ansible_python_interpreter: /usr/bin/python3
  loop: "{{ workers.modal_fleet.hosts }}"
  loop_control:
    label: "{{ item.name }}"
  changed_when: false

- name: Scale down to 3 (worker-10 ... worker-4 are destroyed)
  mngr.modal.modal_fleet:
    name: worker
    exact_count: 3
    build_args: cpu=2 memory=4
  delegate_to: localhost

- name: Destroy the whole fleet
  mngr.modal.modal_fleet:
    name: worker
    state: absent
  delegate_to: localhost
"""

RETURN = r"""
modal_fleet:
  description: The fleet after the task (in check mode, as it would be).
  returned: always
  type: dict
  contains:
    name:
      description: Name of the fleet.
      type: str
      sample: worker
    exact_count:
      description: How many hosts the fleet has now.
      type: int
      sample: 10
    hosts:
      description:
        - Every host of the fleet that is running, by index, each in the shape of
          RV(mngr.modal.modal_sandbox#module:modal_sandbox) (C(name), C(host_id), C(state), C(tags), C(spec), C(ssh)...),
          ready for C(ansible.builtin.add_host) in a loop.
        - In check mode, hosts that would be created have V(null) C(host_id) and endpoint.
      type: list
      elements: dict
    created:
      description: Names of the hosts this task created, or would create in check mode.
      type: list
      elements: str
      sample: [worker-9, worker-10]
    started:
      description: Names of hosts of the fleet whose sandbox had ended and that got a new one.
      type: list
      elements: str
    destroyed:
      description: Names of the hosts this task destroyed, highest index first.
      type: list
      elements: str
    failed:
      description:
        - The hosts that did not come up, each with C(name) and C(msg) (why). Their sandboxes were terminated.
        - Only in a failed task.
      type: list
      elements: dict
      returned: when some hosts failed
    timings:
      description:
        - Seconds spent building the image (C(build)) and launching the hosts, all at once (C(launch)).
      type: dict
      returned: when hosts were created or started, outside check mode
      sample: {build: 0.4, launch: 6.2}
"""

import re
import time
from typing import Any

from ansible_collections.mngr.modal.plugins.module_utils._base import ModalModule, run_module
from ansible_collections.mngr.modal.plugins.module_utils._build_args import BUILD_OPTIONS, requested_spec
from ansible_collections.mngr.modal.plugins.module_utils._dockerfile import DockerfilePlan
from ansible_collections.mngr.modal.plugins.module_utils._errors import HostError, ModalCollectionError
from ansible_collections.mngr.modal.plugins.module_utils._hosts import (
    HOST_NAME_MAX_LENGTH,
    Host,
    HostDirectory,
    found_host_result,
    host_result,
    new_host_id,
    validate_host_name,
)
from ansible_collections.mngr.modal.plugins.module_utils._keys import HAS_CRYPTOGRAPHY
from ansible_collections.mngr.modal.plugins.module_utils._launch import HostLauncher, Launch, NameTaken
from ansible_collections.mngr.modal.plugins.module_utils._live import run_bounded
from ansible_collections.mngr.modal.plugins.module_utils._provision import (
    build_image,
    check_spec_on_controller,
    seconds_since,
)
from ansible_collections.mngr.modal.plugins.module_utils._records import HostRecords, host_records
from ansible_collections.mngr.modal.plugins.module_utils._reservations import NameReservations
from ansible_collections.mngr.modal.plugins.module_utils._tags import (
    encode_sandbox_tags,
    format_endpoint,
    merge_user_tags,
    normalize_user_tags,
)

# The user tag every host of a fleet carries: its fleet's name.
FLEET_TAG = "fleet"


class FleetFailure(ModalCollectionError):
    """Some hosts did not come up; the rest of the fleet is in the result that rides along."""


class ModalFleetModule(ModalModule):
    """Decides which hosts a fleet lacks or has too many of, then launches or destroys them all at once."""

    represent = "modal_fleet"
    options = {
        "name": {"type": "str", "required": True},
        "exact_count": {"type": "int"},
        "state": {"type": "str", "default": "present", "choices": ["present", "absent"]},
        "concurrency": {"type": "int", "default": 16},
        **BUILD_OPTIONS,
        "tags": {"type": "dict"},
        "wait": {"type": "bool", "default": True},
        "wait_timeout": {"type": "int", "default": 300},
    }
    reports_diff = True
    required_libraries = {"cryptography": HAS_CRYPTOGRAPHY}

    def __init__(self, module: Any) -> None:
        super().__init__(module)
        self.count = 0
        self.spec: dict[str, Any] = {}
        self.given_spec_keys: list[str] = []
        self.tags: dict[str, str] = {}
        self.dockerfile_plan: DockerfilePlan | None = None
        self.directory: HostDirectory | None = None
        self.launcher: HostLauncher | None = None

    # --- input ----------------------------------------------------------------------------------

    def validate_inputs(self) -> None:
        params = self.params
        name = validate_host_name(params["name"], "name")
        if params["state"] == "present":
            if params["exact_count"] is None:
                raise HostError("exact_count is required with state=present: give the number of hosts the fleet has")
            if params["exact_count"] < 0:
                raise HostError(f"exact_count must be 0 or more, got {params['exact_count']}")
            self.count = params["exact_count"]
        last = host_name(name, max(self.count, 1))
        if len(last) > HOST_NAME_MAX_LENGTH:
            raise HostError(f"name {name} is too long for {max(self.count, 1)} hosts: the last one would be called "
                            f"{last} ({len(last)} characters), and host names have at most {HOST_NAME_MAX_LENGTH}")
        if params["concurrency"] < 1:
            raise HostError(f"concurrency must be at least 1, got {params['concurrency']}")
        if params["wait_timeout"] < 1:
            raise HostError(f"wait_timeout must be a number of seconds of at least 1, got {params['wait_timeout']}")
        tags = normalize_user_tags(params["tags"] or {}, "tags")
        if tags.get(FLEET_TAG, name) != name:
            raise HostError(f"tags: the tag {FLEET_TAG} is the fleet's name ({name}) on every host of the fleet, got "
                            f"{FLEET_TAG}={tags[FLEET_TAG]!r}; leave it out or use another key")
        tags[FLEET_TAG] = name
        # Checked again with the fleet tag, so the message counts it.
        self.tags = normalize_user_tags(tags, "tags (with the fleet tag)")
        if params["state"] == "present":
            self.spec, self.given_spec_keys = requested_spec(params)
            self.dockerfile_plan = check_spec_on_controller(self.spec, building=True)

    # --- the fleet as it is -----------------------------------------------------------------------

    def members(self, hosts: list[Host]) -> dict[int, Host]:
        """The fleet's hosts by index; a host named like one that is not tagged with this fleet is an error."""
        name = self.params["name"]
        pattern = re.compile(re.escape(name) + r"-([1-9][0-9]*)")
        found: dict[int, Host] = {}
        for host in hosts:
            match = pattern.fullmatch(host.name)
            if match is None:
                continue
            if host.user_tags.get(FLEET_TAG) != name:
                raise HostError(
                    f"host {host.name} (host_id {host.host_id}) is named like a host of fleet {name} but is not tagged "
                    f"{FLEET_TAG}={name}, so it is not taken over. Rename or destroy it with mngr.modal.modal_sandbox, "
                    "or choose another fleet name"
                )
            index = int(match.group(1))
            # Two hosts claiming one name: the running one is the member (as find_host decides for modal_sandbox).
            if index not in found or (found[index].sandbox is None and host.sandbox is not None):
                found[index] = host
        return found

    # --- entry point ----------------------------------------------------------------------------

    def execute(self) -> dict[str, Any]:
        session = self.session
        wanted = self.count if self.params["state"] == "present" else 0
        create = wanted > 0 and not self.check_mode
        app = session.app(create_if_missing=create)
        store = HostRecords.holding() if app is None else host_records(session, create)
        self.directory = HostDirectory(session, app, store)
        members = self.members(self.directory.hosts())
        self.launcher = HostLauncher(session, self.directory, NameReservations(store.files), self.params["wait"],
                                     self.params["wait_timeout"], None, self.warnings)

        doomed = sorted((index for index in members if index > wanted), reverse=True)
        missing = [index for index in range(1, wanted + 1) if index not in members]
        ended = [index for index in sorted(members) if index <= wanted and members[index].sandbox is None]
        retag = self._tag_changes(members, wanted)
        self._warn_spec_differences(members, wanted)
        self.changed = bool(doomed or missing or ended or retag)
        self.diff["before"] = {"hosts": {host.name: host.state for host in _by_index(members)}}
        self.diff["after"] = {"hosts": {host_name(self.params["name"], index): "running" for index in range(1, wanted + 1)}}

        result: dict[str, Any] = {
            "name": self.params["name"], "exact_count": wanted,
            "created": [host_name(self.params["name"], index) for index in missing],
            "started": [members[index].name for index in ended],
            "destroyed": [members[index].name for index in doomed],
        }
        if self.check_mode:
            result["hosts"] = self._planned_hosts(members, wanted)
            return result

        self._destroy([members[index] for index in doomed])
        for index, tags in retag.items():
            self._retag(members[index], tags)
        launched, failures = self._launch_all(members, missing, ended, result)
        hosts = [self._result_of(members[index]) for index in sorted(members) if index <= wanted and index not in ended]
        hosts.extend(launched)
        hosts.sort(key=lambda host: _index_of(host["name"]))
        result["hosts"] = hosts
        if failures:
            result["failed"] = failures
            listed = "; ".join(f"{failure['name']}: {failure['msg']}" for failure in failures)
            raise FleetFailure(
                f"{len(failures)} of the {len(missing) + len(ended)} hosts to launch in fleet {self.params['name']} did "
                f"not come up, and their sandboxes were terminated ({listed}). The {len(hosts)} hosts that are up are "
                "kept (modal_fleet.hosts); run the task again to launch the missing ones",
                modal_fleet=result, changed=bool(launched or doomed or retag),
            )
        return result

    # --- what changes -------------------------------------------------------------------------------

    def _tag_changes(self, members: dict[int, Host], wanted: int) -> dict[int, dict[str, str]]:
        """The running hosts that lack a requested tag, with the tags they get (others are left alone)."""
        changes = {}
        for index, host in members.items():
            if index > wanted or host.sandbox is None:
                continue
            desired = merge_user_tags(host.user_tags, self.tags, purge=False)
            if desired != host.user_tags or host.tags_out_of_date:
                changes[index] = desired
        return changes

    def _warn_spec_differences(self, members: dict[int, Host], wanted: int) -> None:
        differing = []
        for index in sorted(members):
            record = members[index].record
            if index > wanted or members[index].sandbox is None or record is None or not record.spec:
                continue
            if any(record.spec.get(key) != self.spec.get(key) for key in self.given_spec_keys):
                differing.append(members[index].name)
        if differing:
            self.warnings.append(
                f"hosts {', '.join(differing)} of fleet {self.params['name']} run with another spec than requested. "
                "Modal cannot resize a running sandbox: lower exact_count and raise it again to replace hosts, or "
                "replace the fleet (state=absent, then state=present)"
            )

    def _planned_hosts(self, members: dict[int, Host], wanted: int) -> list[dict[str, Any]]:
        session = self.session
        hosts = []
        for index in range(1, wanted + 1):
            host = members.get(index)
            if host is not None and host.sandbox is not None:
                hosts.append(self._result_of(host))
                continue
            tags = merge_user_tags(host.user_tags, self.tags, purge=False) if host else dict(self.tags)
            hosts.append(host_result(host.host_id if host else None, host_name(self.params["name"], index), "running",
                                     tags, self.spec, None, None, session.key_dir, session.app_name, session.environment))
        return hosts

    def _result_of(self, host: Host) -> dict[str, Any]:
        return found_host_result(host, self.session)

    # --- doing it -------------------------------------------------------------------------------------

    def _destroy(self, hosts: list[Host]) -> None:
        """Destroy ``hosts`` (highest index first), at most ``concurrency`` at once."""
        outcomes = run_bounded(self.launcher.destroy, hosts, self.params["concurrency"])
        errors = [f"{host.name}: {error}" for host, _result, error in outcomes if error is not None]
        if errors:
            raise HostError(f"destroying hosts of fleet {self.params['name']} failed: {'; '.join(errors)}. Run the task "
                            "again to finish")

    def _retag(self, host: Host, tags: dict[str, str]) -> None:
        """Give a running host the fleet's tags: record first, then the sandbox (the order modal_sandbox keeps)."""
        if host.record is not None:
            host.record.user_tags = dict(tags)
            self.directory.store.put(host.record)
        endpoint = format_endpoint(*host.ssh_endpoint) if host.ssh_endpoint else None
        self.session.call(host.sandbox.handle.set_tags, encode_sandbox_tags(host.host_id, host.name, tags, endpoint))
        host.user_tags = dict(tags)

    def _launch_all(self, members: dict[int, Host], missing: list[int], ended: list[int],
                    result: dict[str, Any]) -> tuple[list[dict[str, Any]], list[dict[str, str]]]:
        """Build the image once, then launch every missing or ended host at once; (results, failures)."""
        launches = [self._new_launch(index) for index in missing]
        failures = []
        for index in ended:
            launch_or_failure = self._start_launch(members[index])
            if isinstance(launch_or_failure, Launch):
                launches.append(launch_or_failure)
            else:
                failures.append(launch_or_failure)
        if not launches:
            return [], failures
        started = time.monotonic()
        if self.dockerfile_plan is not None:
            self.warnings.extend(self.dockerfile_plan.warnings)
        image = build_image(self.session, self.directory.app, self.spec, self.dockerfile_plan)
        result["timings"] = {"build": seconds_since(started)}
        started = time.monotonic()
        outcomes = run_bounded(lambda launch: self.launcher.launch(launch, image), launches, self.params["concurrency"])
        result["timings"]["launch"] = seconds_since(started)
        launched = []
        for launch, host, error in outcomes:
            if error is None:
                launched.append(host)
            else:
                failures.append({"name": launch.name, "msg": _why(error)})
        failed = {failure["name"] for failure in failures}
        result["created"] = [name for name in result["created"] if name not in failed]
        result["started"] = [name for name in result["started"] if name not in failed]
        return launched, failures

    def _new_launch(self, index: int) -> Launch:
        return Launch(host_name(self.params["name"], index), new_host_id(), self.spec, dict(self.tags))

    def _start_launch(self, host: Host) -> Launch | dict[str, str]:
        """A new sandbox for a host of the fleet whose sandbox ended, with its own keys; a failure when they are not here."""
        keys = self.launcher.keys
        previous = host.record.previous_name if host.record else None
        folder = keys.find(host.host_id, host.name, (previous,), migrate=True)
        if folder is None:
            return {"name": host.name, "msg": f"its sandbox ended and its SSH keys (host_id {host.host_id}) are not in "
                                              f"{self.session.key_dir}: start it from the controller that created it"}
        tags = merge_user_tags(host.user_tags, self.tags, purge=False)
        return Launch(host.name, host.host_id, self.spec, tags, existing=host, folder=folder)


def host_name(fleet: str, index: int) -> str:
    """The name of host ``index`` (from 1) of ``fleet``."""
    return f"{fleet}-{index}"


def _index_of(name: str) -> int:
    return int(name.rsplit("-", 1)[1])


def _by_index(members: dict[int, Host]) -> list[Host]:
    return [members[index] for index in sorted(members)]


def _why(error: BaseException) -> str:
    """One host's failure, as the user should read it."""
    if isinstance(error, NameTaken):
        return (f"its name is held by another run at the same time ({error.holder.describe()}); nothing was created "
                "for it")
    if isinstance(error, ModalCollectionError):
        kwargs = error.fail_kwargs()
        return kwargs["msg"]
    return f"unexpected error: {error!r}"


def main() -> None:
    run_module(ModalFleetModule)


if __name__ == "__main__":
    main()
