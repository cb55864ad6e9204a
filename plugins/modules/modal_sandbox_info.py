#!/usr/bin/python
# Copyright (c) 2026, the mngr.modal authors
# GNU General Public License v3.0+ (see COPYING or https://www.gnu.org/licenses/gpl-3.0.txt)

from __future__ import annotations

DOCUMENTATION = r"""
module: modal_sandbox_info
short_description: List the hosts of a Modal app with their SSH endpoints
version_added: 0.1.0
description:
  - Lists the hosts managed by M(mngr.modal.modal_sandbox) in the app O(app), optionally only the one called
    O(name) or those carrying every tag of O(tags).
  - Running hosts (a live sandbox) have state V(running) and their SSH endpoint; hosts kept without a live sandbox
    (for a later start) have state V(stopped). Destroyed hosts are not listed.
  - Reads only, and creates neither the app nor its state volume when they do not exist (the list is then empty).
  - Run it on the controller (C(delegate_to=localhost)), where the hosts' key folders are.
extends_documentation_fragment:
  - mngr.modal.modal
  - mngr.modal.modal.attributes
  - mngr.modal.modal.info_module
options:
  name:
    description:
      - Only the host with this name.
    type: str
  tags:
    description:
      - Only hosts whose user tags include every key and value given here.
    type: dict
author:
  - The mngr.modal authors (@mngr-modal)
seealso:
  - module: mngr.modal.modal_sandbox
  - name: modal.Sandbox
    description: The SDK class whose listing this module reads.
    link: https://modal.com/docs/reference/modal.Sandbox
"""

EXAMPLES = r"""
- name: List every host of the app
  mngr.modal.modal_sandbox_info:
  delegate_to: localhost
  register: hosts

- name: Add the running hosts of team data to the inventory
  ansible.builtin.add_host:
    name: "{{ item.name }}"
    groups: modal
    ansible_host: "{{ item.ssh.host }}"
    ansible_port: "{{ item.ssh.port }}"
    ansible_user: "{{ item.ssh.user }}"
    ansible_ssh_private_key_file: "{{ item.ssh.private_key_file }}"
    ansible_ssh_common_args: "{{ item.ssh.common_args }}"
    # Keeps the pinned host key enforced even where host_key_checking is off in the Ansible configuration.
    ansible_ssh_host_key_checking: "{{ item.ssh.host_key_checking }}"
  loop: "{{ hosts.modal_sandbox_info | selectattr('state', 'equalto', 'running') | selectattr('tags.team', 'defined')
            | selectattr('tags.team', 'equalto', 'data') }}"
  loop_control:
    label: "{{ item.name }}"

- name: One host by name
  mngr.modal.modal_sandbox_info:
    name: trainer
  delegate_to: localhost
  register: trainer
"""

RETURN = r"""
modal_sandbox_info:
  description: The hosts found, sorted by name. Each item has the shape of RV(mngr.modal.modal_sandbox#module:modal_sandbox).
  returned: always
  type: list
  elements: dict
  contains:
    name:
      description: Name of the host.
      type: str
      sample: trainer
    host_id:
      description: Stable id of the host.
      type: str
      sample: host-3f2a0c4e5b6d47e8a9b0c1d2e3f4a5b6
    app:
      description: Modal app the host belongs to.
      type: str
      sample: mngr-modal
    state:
      description: V(running), V(stopped), or V(ended) (its sandbox ended by itself - timeout, idle timeout or crash).
      type: str
      sample: running
    ended:
      description:
        - Why and when the sandbox of a host in state V(ended) ended by itself.
        - C(reason) (for example C(it reached its timeout (timed out after 60s))), C(ended_at) (ISO 8601 UTC, or
          V(null) when Modal no longer lists the sandbox) and C(sandbox_id).
      returned: when the item's state is V(ended)
      type: dict
      sample: {"reason": "it reached its idle_timeout (idle for 300s)", "ended_at": "2026-01-05T10:00:00+00:00",
               "sandbox_id": "sb-1234"}
    sandbox_id:
      description: Id of the live sandbox, or V(null) for a stopped host.
      type: str
      sample: sb-0123456789abcdefghijkl
    tags:
      description: User tags of the host.
      type: dict
      sample: {team: data}
    spec:
      description: Build spec from the host's record (empty when the host has no record).
      type: dict
      sample: {cpu: 2.0, memory: 8.0}
    connection:
      description:
        - How Ansible reaches the host. V(ssh) through its SSH tunnel; V(sandbox_exec) for a host created with
          C(ssh=false), through the C(mngr.modal.sandbox_exec) connection only.
      type: str
      sample: ssh
    created_at:
      description:
        - When the host was created (UTC, ISO 8601), from its record; V(null) for a host that has no record.
        - Only listings carry it (M(mngr.modal.modal_sandbox) does not), for the age of each host.
      type: str
      sample: "2026-01-31T12:00:00+00:00"
    stop_reason:
      description:
        - Why the host has no sandbox, from its record, for example the stop and the snapshot it took.
      returned: when the item's state is V(stopped)
      type: str
      sample: "stopped by mngr.modal.modal_sandbox at 2026-01-31T12:00:00+00:00; snapshot stop-2026-01-31-12-00-00"
    ssh:
      description: How to reach the host (host and port are V(null) for a stopped host, and every value but C(user) for a host without SSH).
      type: dict
      contains:
        host:
          description: Address of the SSH tunnel.
          type: str
        port:
          description: Port of the SSH tunnel.
          type: int
        user:
          description: User to log in as.
          type: str
        private_key_file:
          description: Client private key on the controller.
          type: str
        known_hosts_file:
          description: Pinned known_hosts file on the controller.
          type: str
        common_args:
          description: Value for C(ansible_ssh_common_args) enforcing the pinned host key.
          type: str
        host_key_checking:
          description:
            - Always V(true). Value for C(ansible_ssh_host_key_checking), so that Ansible does not put
              C(StrictHostKeyChecking=no) ahead of RV(modal_sandbox_info[].ssh.common_args) when host key checking
              is off in its configuration (ssh keeps the first value of an option).
          type: bool
          sample: true
"""

from typing import Any

from ansible_collections.mngr.modal.plugins.module_utils._base import ModalModule, run_module
from ansible_collections.mngr.modal.plugins.module_utils._client import ModalError
from ansible_collections.mngr.modal.plugins.module_utils._hosts import (
    HostDirectory,
    filter_hosts,
    found_host_result,
    validate_host_name,
)
from ansible_collections.mngr.modal.plugins.module_utils._live import (
    TUNNEL_TIMEOUT_SECONDS,
    ended_details,
    ssh_tunnel_endpoint,
)
from ansible_collections.mngr.modal.plugins.module_utils._records import host_records
from ansible_collections.mngr.modal.plugins.module_utils._tags import normalize_user_tags


class ModalSandboxInfoModule(ModalModule):
    """Lists hosts without creating anything."""

    represent = "modal_sandbox_info"
    options = {
        "name": {"type": "str"},
        "tags": {"type": "dict"},
    }

    # The filters, once validated.
    name_filter: str | None = None
    tags_filter: dict[str, str] | None = None

    def validate_inputs(self) -> None:
        name, tags = self.params["name"], self.params["tags"]
        self.name_filter = validate_host_name(name, "name") if name is not None else None
        self.tags_filter = normalize_user_tags(tags, "tags") if tags is not None else None

    def execute(self) -> list[dict[str, Any]]:
        session = self.session
        app = session.app(create_if_missing=False)
        if app is None:
            return []
        directory = HostDirectory(session, app, host_records(session, create=False))
        results = []
        for host in filter_hosts(directory.hosts(), name=self.name_filter, tags=self.tags_filter):
            endpoint = host.ssh_endpoint
            if endpoint is None and host.sandbox is not None:
                endpoint = self._endpoint_from_modal(host.sandbox.handle)
            result = found_host_result(host, session, endpoint=endpoint)
            if host.state == "ended":
                result["ended"] = ended_details(session, host)
            # Listing-only facts from the record: the host's age, and why a stopped host has no sandbox.
            result["created_at"] = host.record.created_at if host.record else None
            if host.state == "stopped":
                result["stop_reason"] = host.record.stop_reason if host.record else None
            results.append(result)
        return results

    def _endpoint_from_modal(self, handle: Any) -> tuple[str, int] | None:
        """The tunnel of a host whose tags and list page do not carry it (made by another tool, or mid-bootstrap)."""
        try:
            return ssh_tunnel_endpoint(self.session.call, handle, TUNNEL_TIMEOUT_SECONDS)
        except ModalError:
            return None


def main() -> None:
    run_module(ModalSandboxInfoModule)


if __name__ == "__main__":
    main()
