# Copyright (c) 2026, the mngr.modal authors
# GNU General Public License v3.0+ (see COPYING or https://www.gnu.org/licenses/gpl-3.0.txt)

from __future__ import annotations

DOCUMENTATION = r"""
name: sandbox_exec
short_description: Run tasks on a Modal sandbox through Modal's exec and filesystem APIs, without SSH
version_added: 0.2.0
description:
  - Runs commands in a host's running Modal sandbox with Modal's exec API, and copies files with Modal's sandbox
    filesystem API (streamed, binary-safe, no object store in between). The sandbox needs no C(sshd), no key and no
    tunnel, whatever its network policy; a host created with O(mngr.modal.modal_sandbox#module:ssh=false) is reachable
    only this way.
  - The target is a host of the collection, by name (the inventory host name, or O(host)) within O(app), or any
    running sandbox by O(sandbox_id).
  - Commands run as C(root), the user of Modal's exec. C(remote_user) (C(ansible_user)) is not used. C(become) with
    C(become_user) works with C(su) and C(sudo) where the image has them (C(root) needs no password; a become password
    is not supported).
  - "Speed: every task of a run is served by one local broker process, started by the first task, that keeps one Modal
    client and one sandbox handle per host for the whole run. Like SSH's C(ControlPersist), it stays O(broker_persist)
    seconds after the run, so that the next run finds its client open.
    Tasks therefore never import the Modal SDK or open a client themselves."
  - Pipelining is on by default, so a module task is one exec.
author:
  - The mngr.modal authors (@mngr-modal)
options:
  host:
    description:
      - Name of the host (as given to M(mngr.modal.modal_sandbox) O(mngr.modal.modal_sandbox#module:name)) whose running
        sandbox runs the tasks.
      - Defaults to C(ansible_host) when set, else the inventory host name (as for Ansible's other connections, so
        that C(delegate_to) reaches the host delegated to). Set C(ansible_modal_host) when C(ansible_host) holds
        something else, such as an SSH address.
    type: str
    vars:
      - name: inventory_hostname
      - name: ansible_host
      - name: ansible_modal_host
  sandbox_id:
    description:
      - Id of a running sandbox to use instead of looking up O(host). Such a sandbox may be any sandbox of the
        workspace, not only a host of the collection; it is not looked up again if it ends.
    type: str
    vars:
      - name: ansible_modal_sandbox_id
  app:
    description:
      - Name of the Modal app the host belongs to (see the M(mngr.modal.modal_sandbox) option of the same name).
    type: str
    default: mngr-modal
    env:
      - name: MNGR_MODAL_APP
    vars:
      - name: ansible_modal_app
  modal_environment:
    description:
      - Name of the Modal environment of the app; when unset, the workspace's default environment.
      - Named so because C(environment) is a task keyword of Ansible.
    type: str
    env:
      - name: MODAL_ENVIRONMENT
    vars:
      - name: ansible_modal_environment
  token_id:
    description:
      - ID of the Modal API token. With O(token_id) and O(token_secret) unset, the Modal SDK's own configuration
        applies (E(MODAL_TOKEN_ID)/E(MODAL_TOKEN_SECRET), then the active profile of C(~/.modal.toml)).
    type: str
    env:
      - name: MODAL_TOKEN_ID
    vars:
      - name: ansible_modal_token_id
  token_secret:
    description:
      - Secret of the Modal API token. Passed to the broker in its environment only, never on a command line or in
        a file.
    type: str
    env:
      - name: MODAL_TOKEN_SECRET
    vars:
      - name: ansible_modal_token_secret
  exec_timeout:
    description:
      - Seconds a command may run in the sandbox before Modal ends it (Modal's exec timeout).
    type: int
    default: 3600
    env:
      - name: MNGR_MODAL_EXEC_TIMEOUT
    vars:
      - name: ansible_modal_exec_timeout
  broker_persist:
    description:
      - Seconds the broker stays after the last run that used it has ended (and it has had no request), so that
        the next run reuses its Modal client and sandbox handles, as SSH's C(ControlPersist) does for connections.
      - V(0) ends it with the run. The broker started first for a set of Modal settings decides.
    type: int
    default: 60
    env:
      - name: MNGR_MODAL_BROKER_PERSIST
    vars:
      - name: ansible_modal_broker_persist
  pipelining:
    description:
      - Send modules to the interpreter's stdin instead of copying them first, so that a module task is one exec.
      - On by default, unlike Ansible's other connections, because stdin reaches the command byte for byte and
        C(sudo)'s C(requiretty) cannot apply (Modal's exec has no terminal).
    type: bool
    default: true
    env:
      - name: ANSIBLE_PIPELINING
    ini:
      - section: connection
        key: pipelining
    vars:
      - name: ansible_pipelining
      - name: ansible_modal_pipelining
notes:
  - Requires the C(modal) Python package on the controller (only the broker imports it).
  - A host without a running sandbox (stopped, ended by its timeout, or terminated during the run) is reported
    unreachable, with a message that names it and says how to start it. A host started again during a run (a new
    sandbox under the same name) is found again.
  - Modal's exec gives a command no terminal. Modules that need one are not supported.
  - Relative remote paths of file transfers (M(ansible.builtin.fetch) for example) start at C(/root), the home of
    C(root), as with SSH.
requirements:
  - modal >= 1.6.4, < 2
seealso:
  - module: mngr.modal.modal_sandbox
  - plugin: mngr.modal.modal
    plugin_type: inventory
"""

EXAMPLES = r"""
# Inventory: a host of the collection, by name
# [sandboxes]
# trainer ansible_connection=mngr.modal.sandbox_exec ansible_python_interpreter=/usr/bin/python3

- name: Configure a host created with ssh=false
  hosts: localhost
  gather_facts: false
  tasks:
    - name: Create the host (no sshd, no keys, no tunnel)
      mngr.modal.modal_sandbox:
        name: worker-1
        ssh: false
      delegate_to: localhost

    - name: Add it to the play through Modal's exec API
      ansible.builtin.add_host:
        name: worker-1
        ansible_connection: mngr.modal.sandbox_exec
        ansible_python_interpreter: /usr/bin/python3

- name: Use it
  hosts: worker-1
  tasks:
    - name: Copy a file
      ansible.builtin.copy:
        src: dataset.bin
        dest: /data/dataset.bin
        mode: "0644"
"""

import os
import os.path
import typing as t

from ansible.errors import AnsibleConnectionFailure, AnsibleError, AnsibleFileNotFound
from ansible.module_utils.common.text.converters import to_bytes, to_native, to_text
from ansible.plugins.connection import ConnectionBase
from ansible.utils.display import Display

from ansible_collections.mngr.modal.plugins.plugin_utils._broker_client import BrokerClient, BrokerUnavailable

display = Display()

# Where relative remote paths start: the home of root, as for an SSH login.
REMOTE_HOME = "/root"


def remote_path(path: str) -> str:
    """An absolute path in the sandbox (Modal's filesystem API takes only those): ``~`` and relative paths from /root."""
    if path == "~" or path.startswith("~/"):
        path = REMOTE_HOME + path[1:]
    if not path.startswith("/"):
        path = f"{REMOTE_HOME}/{path}"
    return path


class Connection(ConnectionBase):
    """Commands through Modal's exec API and files through its filesystem API, by way of the run's broker."""

    transport = "mngr.modal.sandbox_exec"
    has_pipelining = True
    has_tty = False

    def __init__(self, *args: t.Any, **kwargs: t.Any) -> None:
        super().__init__(*args, **kwargs)
        self._broker: BrokerClient | None = None

    # --- target and broker ---------------------------------------------------------------------------------

    def _target(self) -> dict[str, str]:
        sandbox_id = self.get_option("sandbox_id")
        if sandbox_id:
            return {"sandbox_id": sandbox_id}
        host = self.get_option("host") or self._play_context.remote_addr
        if not host:
            raise AnsibleConnectionFailure("sandbox_exec needs a host name (option host) or a sandbox id (sandbox_id)")
        return {"host": host}

    def _connect(self) -> "Connection":
        if not self._connected:
            settings = {name: self.get_option(option) for name, option in (
                ("token_id", "token_id"), ("token_secret", "token_secret"), ("environment", "modal_environment"),
                ("app", "app"))}
            try:
                self._broker = BrokerClient(settings, self.get_option("broker_persist"))
            except PermissionError as exc:
                raise AnsibleConnectionFailure(str(exc)) from exc
            self._connected = True
        return self

    def _ask(self, header: dict[str, t.Any], payload: bytes = b"") -> tuple[dict[str, t.Any], bytes]:
        if self._broker is None:
            self._connect()
        header["target"] = self._target()
        try:
            reply, data = self._broker.request(header, payload)
        except BrokerUnavailable as exc:
            raise AnsibleConnectionFailure(str(exc)) from exc
        if not reply.get("ok"):
            message = reply.get("msg") or "the sandbox_exec broker reported a failure"
            if reply.get("kind") == "not_found":
                raise AnsibleFileNotFound(message)
            if reply.get("kind") == "unreachable":
                raise AnsibleConnectionFailure(message)
            raise AnsibleError(message)
        return reply, data

    # --- the connection interface -------------------------------------------------------------------------

    def exec_command(self, cmd: str, in_data: bytes | None = None, sudoable: bool = True) -> tuple[int, bytes, bytes]:
        super().exec_command(cmd, in_data=in_data, sudoable=sudoable)
        if sudoable and self.become and self.become.expect_prompt():
            raise AnsibleError("sandbox_exec runs commands as root, which needs no become password; a become "
                               "password (become_pass) is not supported. Leave it unset.")
        executable = self._play_context.executable or "/bin/sh"
        display.vvv(f"EXEC {cmd}", host=self._target().get("host") or self._target().get("sandbox_id"))
        reply, data = self._ask({"op": "exec", "argv": [executable, "-c", to_text(cmd, errors="surrogate_or_strict")],
                                 "timeout": self.get_option("exec_timeout")}, to_bytes(in_data or b""))
        split = int(reply["stdout_size"])
        return int(reply["rc"]), data[:split], data[split:]

    def put_file(self, in_path: str, out_path: str) -> None:
        super().put_file(in_path, out_path)
        local = to_native(in_path, errors="surrogate_or_strict")
        if not os.path.exists(to_bytes(in_path, errors="surrogate_or_strict")):
            raise AnsibleFileNotFound(f"file or module does not exist: {local}")
        remote = remote_path(to_text(out_path, errors="surrogate_or_strict"))
        display.vvv(f"PUT {local} TO {remote}", host=self._target().get("host") or self._target().get("sandbox_id"))
        self._ask({"op": "put", "local": os.path.abspath(local), "remote": remote})

    def fetch_file(self, in_path: str, out_path: str) -> None:
        super().fetch_file(in_path, out_path)
        remote = remote_path(to_text(in_path, errors="surrogate_or_strict"))
        local = os.path.abspath(to_native(out_path, errors="surrogate_or_strict"))
        display.vvv(f"FETCH {remote} TO {local}", host=self._target().get("host") or self._target().get("sandbox_id"))
        self._ask({"op": "fetch", "remote": remote, "local": local})

    def reset(self) -> None:
        """Nothing to reset: each request looks the host's sandbox up again when its sandbox has ended."""

    def close(self) -> None:
        self._connected = False
