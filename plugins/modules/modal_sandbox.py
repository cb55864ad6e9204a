#!/usr/bin/python
# Copyright (c) 2026, the mngr.modal authors
# GNU General Public License v3.0+ (see COPYING or https://www.gnu.org/licenses/gpl-3.0.txt)

from __future__ import annotations

DOCUMENTATION = r"""
module: modal_sandbox
short_description: Create, tag, rename, stop, start and destroy Modal sandboxes as SSH hosts
version_added: 0.1.0
description:
  - Manages a I(host), that is a Modal sandbox that runs C(sshd) and is reachable over SSH as C(root), with a key
    pair and a pinned host key generated on the controller (no trust on first use).
  - Hosts are identified by O(name) within the Modal app O(app). Running the module twice with the same arguments
    changes nothing the second time.
  - Each host keeps a record on the app's state volume C(<app>-state) (C(hosts/<host_id>.json)) with its name, user
    tags, build spec, SSH host public key and status, so other controllers and later operations can find it.
  - Modal cannot pause a sandbox. O(state=stopped) takes a filesystem snapshot of the host and then terminates its
    sandbox; O(state=started) gives the host a new sandbox from that snapshot, with the same host id, name, tags
    and SSH keys (so the pinned host key stays the same; only the tunnel endpoint changes). Processes and memory
    are not kept, files are.
  - Modal cannot resize a running sandbox. When the requested spec (cpu, memory, gpu, image...) differs from the
    spec a running host was created with, the module reports the difference in the diff and as a warning, and
    changes nothing. To apply a new spec and keep the host's files, stop it (O(state=stopped)) and start it
    with the new spec; to start afresh, destroy it (O(state=absent)) and create it again.
  - This module talks to Modal and writes keys under O(key_dir) on the machine it runs on. Run it on the
    controller (C(delegate_to=localhost), or a play on C(localhost) with C(connection=local)).
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
      - Name of the host. Unique among the hosts of the app that are not destroyed.
      - Letters, digits, V(-), V(_) and V(.), starting with a letter or a digit, at most 63 characters. The name is used
        in sandbox tags.
      - Creating a host, or renaming one with O(new_name), first reserves the name on the app's state volume, so two
        runs doing it at the same time (on one controller or on several) cannot make two hosts of one name. The run
        that loses uses the other run's host when that host's keys are in its O(key_dir), and otherwise fails at once
        without creating or changing anything.
    type: str
    required: true
  state:
    description:
      - V(present) and V(started) make sure a running sandbox exists for the host, creating it if there is none.
        A new host is built from the requested spec, or from O(snapshot) when given.
      - A host that exists but has no running sandbox (stopped, or its sandbox ended on its own because its
        O(timeout) passed or it crashed) gets a new sandbox from the snapshot named by O(snapshot), else from its
        newest snapshot that has not expired, else built from its recorded spec (its files then start afresh).
        It keeps its id, name, tags and SSH keys, so it must be started where its key folder (under O(key_dir))
        is. A host with neither a usable snapshot nor a recorded spec cannot be started (an error says so).
      - V(stopped) takes a snapshot of the host (kind V(stop), named O(snapshot) or C(stop-YYYY-MM-DD-HH-MM-SS)),
        then terminates its sandbox. The host record keeps the status V(stopped) and the stop reason; the host
        stays listed by M(mngr.modal.modal_sandbox_info) with state V(stopped). Stopping a stopped host changes
        nothing. Stopping a host that does not exist is an error. Build options, O(tags) and O(ssh_public_key) are
        not used when stopping.
      - V(absent) terminates the host's sandbox and marks its record destroyed; the host's key folder is removed.
        Its snapshots stay in the catalog (M(mngr.modal.modal_snapshot) deletes them), so a host of the same name,
        or another host, can still be created from them with O(snapshot).
    type: str
    choices: [present, started, stopped, absent]
    default: present
  build_args:
    description:
      - Build arguments in any of three forms, which may be mixed. C(key=value), C(--key=value) (C(--flag) for a
        boolean), or one bulk string split like a shell splits words, for example V(gpu=h100 cpu=2 memory=8).
      - Accepted keys are C(gpu), C(cpu), C(memory), C(image), C(dockerfile), C(context-dir), C(docker-build-arg)
        (repeatable C(NAME=VALUE)), C(timeout), C(region), C(secret) (repeatable), C(cidr-allowlist) (repeatable),
        C(offline) (flag) and C(volume) (repeatable C(NAME:/path)).
      - A key given both here and as an option of the same meaning is an error that names both.
    type: raw
  gpu:
    description:
      - GPU to attach, for example V(h100), V(A100-80GB:2) (type and count). Case-insensitive.
      - When Modal refuses the type (one it does not offer to the workspace, or not in O(region)), the module fails
        with a message that names the GPU and lists the other types to try; no sandbox is started.
    type: str
  cpu:
    description:
      - CPU cores to request (fractional allowed). Default 1.
    type: float
  memory:
    description:
      - Memory to request, in GB. Default 1.
    type: float
  image:
    description:
      - Registry image to start from. Default V(debian:bookworm-slim). Mutually exclusive with O(dockerfile).
      - An image layer installs what an SSH host for Ansible needs whenever the image lacks it, with C(apt-get), C(apk)
        or C(dnf) through the sandbox's network, C(openssh-server), C(python3) and C(ca-certificates). Its definition
        is the same for every host, so Modal's image cache builds it once per image and the second host from the same
        image builds nothing; the layer leaves no process running. An image that lacks one of them and has none of
        those package managers fails to build, with a message that names the image and what is missing, and nothing is
        created.
      - An image reference that cannot be found fails with a message that names it and says what to check; a build
        step that fails (a C(RUN) line of O(dockerfile)) fails with its exit code and the last lines of the build log.
    type: str
  dockerfile:
    description:
      - Path on the controller of a Dockerfile to build the image from. Each instruction becomes one cached image
        layer on top of the image of its C(FROM) line.
      - Multi-stage Dockerfiles (more than one C(FROM), or C(COPY --from)) are refused. C(CMD) and C(ENTRYPOINT) are
        ignored with a warning, because the host's processes are C(sshd) and what you run over SSH.
    type: path
  context_dir:
    description:
      - Build context for O(dockerfile) (where C(COPY) and C(ADD) sources are read). Defaults to the Dockerfile's folder.
    type: path
  docker_build_args:
    description:
      - Values for the Dockerfile's C(ARG) lines. Naming an C(ARG) the Dockerfile does not declare is an error.
    type: dict
  timeout:
    description:
      - Maximum lifetime of the sandbox in seconds (1 to 86400). Default 900.
    type: int
  idle_timeout:
    description:
      - Seconds without activity after which Modal terminates the sandbox.
    type: int
  region:
    description:
      - Modal region to run the sandbox in, for example V(us-east).
    type: str
  secrets:
    description:
      - Names of environment variables of the controller whose values are passed to the sandbox as a Modal secret
        (same names inside the sandbox). Only the names are recorded.
      - The values reach the sandbox's own processes only, not SSH sessions (so not Ansible tasks on the host),
        because they are never written to the host's disk, where snapshots would keep them. Pass a secret to a
        task with the C(environment) keyword and C(no_log=true) instead.
    type: list
    elements: str
  cidr_allowlist:
    description:
      - CIDR blocks the sandbox may connect to; when set, all other outbound traffic is blocked. Inbound SSH
        through the tunnel is not affected.
      - Cannot be combined with O(offline=true).
    type: list
    elements: str
  offline:
    description:
      - Block all outbound network access from the sandbox, while SSH through the tunnel keeps working.
      - Implemented as an empty outbound allowlist (Modal's C(block_network) would close the SSH port too).
      - Cannot be combined with a non-empty O(cidr_allowlist).
    type: bool
  volumes:
    description:
      - Modal volumes to mount, as C(NAME:/path) strings or C({name, path}) dictionaries. Missing volumes are created.
    type: list
    elements: raw
  env:
    description:
      - Environment variables of the sandbox, for its own processes and for SSH sessions (so Ansible tasks on
        the host see them). For SSH, they are written to C(/root/.ssh/environment) and to a marked block of
        C(/etc/environment) when the host's sandbox starts, so they are in the host's files and snapshots. Put
        nothing secret here (see O(secrets)). Each value must fit on one line.
    type: dict
  tags:
    description:
      - User tags of the host, as a dictionary. Kept apart from the host's identity tags (stored on the sandbox as
        C(mngr_user_<key>)).
      - When not set, the host's tags are left alone.
      - At most 7 tags (a Modal sandbox holds 10 tags and 3 carry the host's identity); keys use letters, digits,
        V(-), V(_) and V(.) (at most 53 characters); values are strings of at most 255 characters without control
        characters. Numbers and booleans are converted to strings.
    type: dict
  purge_tags:
    description:
      - Whether tags not listed in O(tags) are removed. Only applies when O(tags) is set.
      - Defaults to V(false), so that a task that adds one tag never wipes tags set by another task or tool;
        use V(true) to make O(tags) the complete set. (This differs from amazon.aws, whose V(true) default users
        often found surprising.)
    type: bool
    default: false
  new_name:
    description:
      - Rename the host O(name) to this name. The host keeps its id, sandbox, keys and tags; its name tag, record,
        key folder and pinned C(known_hosts) line follow the new name.
      - If no host is called O(name) but one is called O(new_name), the rename is considered done (and any part of
        it interrupted earlier is completed). Renaming onto the name of another host is an error.
    type: str
  snapshot:
    description:
      - With O(state=present) or O(state=started), the snapshot a new sandbox starts from, when one is created
        (ignored for a host that is running). V(NAME) is a snapshot of this host, or of any host of the app when
        only one has a snapshot of that name; V(HOST/NAME) names another host's snapshot; V(im-...) is the
        snapshot's image id. Giving it for a new host makes a copy (a clone) of the snapshot's host, with its
        files and the spec recorded with the snapshot; each build option given here (O(memory), O(cpu)...)
        replaces only its own key of that spec.
      - With O(state=stopped), the name of the snapshot taken before the sandbox is terminated (same rules as the
        O(mngr.modal.modal_snapshot#module:name) option of M(mngr.modal.modal_snapshot)). A host that already has a
        snapshot of that name is not stopped (an error says so).
      - An unknown or expired snapshot is an error, and nothing is created.
      - Cannot be combined with O(image), O(dockerfile), O(context_dir) or O(docker_build_args), because a host
        started from a snapshot runs the snapshot's image.
    type: str
  ssh:
    description:
      - Whether the host gets C(sshd), SSH keys and a tunnel. Default V(true) for a new host.
      - With V(false), none of them exist; the host is reachable only through the P(mngr.modal.sandbox_exec#connection)
        connection (Modal's exec API), whatever its network policy, and no key folder is kept under O(key_dir). Its
        image layer installs only C(python3) and C(ca-certificates) when the image lacks them, so Ansible's modules
        run on it (the C(raw) module needs neither).
      - Recorded with the host, so a stopped host starts again the same way. A running host keeps what it was created
        with (a different value is reported like any other spec difference).
      - Cannot be combined with O(ssh_public_key).
    type: bool
  ssh_public_key:
    description:
      - An extra public key (one C(authorized_keys) line) allowed to log in as C(root), in addition to the key
        generated for the host. Added to a running host when missing.
    type: str
  wait:
    description:
      - Return only once an SSH login as C(root) with strict host key checking succeeds.
    type: bool
    default: true
  wait_timeout:
    description:
      - How many seconds to wait for SSH (and for the sandbox's tunnel) when O(wait=true). At least 1.
    type: int
    default: 300
notes:
  - The SSH endpoint, user and key files are returned under RV(modal_sandbox.ssh), ready for C(ansible.builtin.add_host).
    Pass RV(modal_sandbox.ssh.host_key_checking) as C(ansible_ssh_host_key_checking) as well. With
    C(host_key_checking=False) in the Ansible configuration (as under C(ansible-test)), Ansible puts
    C(StrictHostKeyChecking=no) on the ssh command line before C(ansible_ssh_common_args), and ssh keeps the
    first value it sees, so the pinned host key would not be enforced.
  - A snapshot image is kept by Modal for 30 days after it is taken (see M(mngr.modal.modal_snapshot)). A host
    stopped for longer than that can no longer be restored from its stop snapshot; it then starts from its build
    spec, with a warning.
  - Any failure after the sandbox was created terminates it before the module fails, and the failure message ends
    with the tail of the image build or bootstrap log, so a failed create never leaves a running sandbox behind.
  - The controller needs an OpenSSH client (C(ssh)) when O(wait=true).
  - Calls to Modal that fail for a transient reason (C(UNAVAILABLE), C(DEADLINE_EXCEEDED)...) or hit a rate limit or
    quota (C(RESOURCE_EXHAUSTED)) are tried again, up to 4 times in all, after random (jittered) waits that grow
    each time (up to 14 seconds in all for a rate limit). A rate limit or quota that outlasts them fails with a
    message that says so and what to do.
  - RV(modal_sandbox.timings) shows where the time of a create went (image build, sandbox start, SSH wait).
seealso:
  - module: mngr.modal.modal_sandbox_info
  - module: mngr.modal.modal_snapshot
  - module: mngr.modal.modal_snapshot_info
  - name: Modal Sandboxes
    description: The sandboxes each host runs in.
    link: https://modal.com/docs/guide/sandbox
  - name: modal.Sandbox
    description: The SDK class behind this module.
    link: https://modal.com/docs/reference/modal.Sandbox
  - name: GPUs on Modal
    description: The GPU types of the O(gpu) option.
    link: https://modal.com/docs/guide/gpu
author:
  - The mngr.modal authors (@mngr-modal)
"""

EXAMPLES = r"""
- name: Create a host with a GPU (list form of build arguments)
  mngr.modal.modal_sandbox:
    name: trainer
    build_args:
      - gpu=h100
      - cpu=2
      - memory=8
  delegate_to: localhost
  register: trainer

- name: Make it reachable as an inventory host
  ansible.builtin.add_host:
    name: "{{ trainer.modal_sandbox.name }}"
    ansible_host: "{{ trainer.modal_sandbox.ssh.host }}"
    ansible_port: "{{ trainer.modal_sandbox.ssh.port }}"
    ansible_user: "{{ trainer.modal_sandbox.ssh.user }}"
    ansible_ssh_private_key_file: "{{ trainer.modal_sandbox.ssh.private_key_file }}"
    ansible_ssh_common_args: "{{ trainer.modal_sandbox.ssh.common_args }}"
    # Keeps the pinned host key enforced even where host_key_checking is off in the Ansible configuration.
    ansible_ssh_host_key_checking: "{{ trainer.modal_sandbox.ssh.host_key_checking }}"
    # The interpreter the image layer guarantees, so Ansible neither searches for one nor warns.
    ansible_python_interpreter: /usr/bin/python3
  # Adding a host to the in-memory inventory is not a change of anything.
  changed_when: false

- name: Bulk string and flag forms work too
  mngr.modal.modal_sandbox:
    name: worker-1
    build_args: "--cpu=4 memory=16 image=python:3.11-slim timeout=3600"
    tags:
      team: data
  delegate_to: localhost

- name: Build from a Dockerfile with a build argument
  mngr.modal.modal_sandbox:
    name: app-builder
    dockerfile: files/Dockerfile
    context_dir: files
    docker_build_args:
      APP_VERSION: "1.2.3"
  delegate_to: localhost

- name: Make the listed tags the complete set
  mngr.modal.modal_sandbox:
    name: worker-1
    tags:
      team: research
    purge_tags: true
  delegate_to: localhost

- name: Rename a host
  mngr.modal.modal_sandbox:
    name: worker-1
    new_name: worker-east-1
  delegate_to: localhost

- name: Stop a host (snapshot its files, then terminate its sandbox)
  mngr.modal.modal_sandbox:
    name: trainer
    state: stopped
  delegate_to: localhost

- name: Start it again from that snapshot (same keys, new tunnel)
  mngr.modal.modal_sandbox:
    name: trainer
    state: started
  delegate_to: localhost
  register: trainer

- name: Stop it with a snapshot name of your choice
  mngr.modal.modal_sandbox:
    name: trainer
    state: stopped
    snapshot: before-holidays
  delegate_to: localhost

- name: Start it from an older snapshot than the newest one
  mngr.modal.modal_sandbox:
    name: trainer
    state: started
    snapshot: before-upgrade
  delegate_to: localhost

- name: A new host that starts as a copy of another host's snapshot
  mngr.modal.modal_sandbox:
    name: trainer-copy
    snapshot: trainer/before-upgrade
  delegate_to: localhost

- name: Destroy a host
  mngr.modal.modal_sandbox:
    name: worker-east-1
    state: absent
  delegate_to: localhost
"""

RETURN = r"""
modal_sandbox:
  description:
    - The host after the module ran (in check mode, as it would be). For O(state=absent), the host that was removed,
      or just its name when there was none.
  returned: always
  type: dict
  contains:
    name:
      description: Name of the host.
      type: str
      sample: trainer
    host_id:
      description: Stable id of the host (kept across renames). V(null) in check mode for a host not yet created.
      type: str
      sample: host-3f2a0c4e5b6d47e8a9b0c1d2e3f4a5b6
    app:
      description: Modal app the host belongs to.
      type: str
      sample: mngr-modal
    state:
      description:
        - V(running), V(stopped) (no live sandbox), V(ended) (its sandbox ended by itself - timeout, idle timeout
          or crash - without a stop; RV(modal_sandbox.ended) says why and when), or V(absent).
        - O(state=started) starts an V(ended) host from its newest snapshot, else from its spec, with a warning
          naming that snapshot and its age (files written after it are lost).
      type: str
      sample: running
    ended:
      description:
        - Why and when the sandbox of a host in state V(ended) ended by itself.
        - C(reason) (for example C(it reached its timeout (timed out after 60s))), C(ended_at) (ISO 8601 UTC, or
          V(null) when Modal no longer lists the sandbox) and C(sandbox_id).
      returned: when RV(modal_sandbox.state) is V(ended)
      type: dict
      sample: {"reason": "it reached its idle_timeout (idle for 300s)", "ended_at": "2026-01-05T10:00:00+00:00",
               "sandbox_id": "sb-1234"}
    snapshot:
      description:
        - For O(state=stopped), the snapshot the stop took. When a sandbox was created from a snapshot (a start,
          or a new host with O(snapshot)), the snapshot it started from.
        - Same keys as RV(mngr.modal.modal_snapshot#module:modal_snapshot).
      returned: when a snapshot was taken or restored
      type: dict
      sample: {name: stop-2026-01-31-12-00-00, id: im-AbCdEf0123456789, host: trainer, kind: stop}
    sandbox_id:
      description: Id of the host's live Modal sandbox, or V(null).
      type: str
      sample: sb-0123456789abcdefghijkl
    tags:
      description: User tags of the host.
      type: dict
      sample: {team: data}
    spec:
      description: The build spec the host was created with (keys as in O(build_args), normalized).
      type: dict
      sample: {cpu: 2.0, memory: 8.0, gpu: H100, image: "debian:bookworm-slim", timeout: 900}
    timings:
      description:
        - How many seconds each phase of creating the host's sandbox took, so that you can see where the time went.
        - C(build) is preparing the image (building its missing layers, only looking it up when Modal's image cache
          has them all, or loading a snapshot's image); C(start) is creating the sandbox and setting up SSH in it
          (keys, sshd, the tunnel); C(ssh_wait) is waiting until an SSH login succeeds (V(0.0) with O(wait=false)).
      returned: when this run created a sandbox for the host (a new host, or a start), outside check mode
      type: dict
      sample: {build: 0.41, start: 2.87, ssh_wait: 0.52}
    connection:
      description:
        - How Ansible reaches the host. V(ssh) through its SSH tunnel (RV(modal_sandbox.ssh)); V(sandbox_exec) for a
          host created with O(ssh=false), through the C(mngr.modal.sandbox_exec) connection only.
      type: str
      sample: ssh
    ssh:
      description: How to reach the host over SSH (every value but C(user) is V(null) for a host without SSH).
      type: dict
      contains:
        host:
          description: Address of the SSH tunnel.
          type: str
          sample: r7.modal.host
        port:
          description: Port of the SSH tunnel.
          type: int
          sample: 41234
        user:
          description: User to log in as.
          type: str
          sample: root
        private_key_file:
          description: Client private key on the controller (V(null) in check mode for a host not created yet).
          type: str
          sample: /home/me/.mngr-modal/keys/mngr-modal@default/host-3f2a0c4e5b6d47e8a9b0c1d2e3f4a5b6/id_ed25519
        known_hosts_file:
          description: The host's pinned known_hosts file on the controller (V(null) like RV(modal_sandbox.ssh.private_key_file)).
          type: str
          sample: /home/me/.mngr-modal/keys/mngr-modal@default/host-3f2a0c4e5b6d47e8a9b0c1d2e3f4a5b6/known_hosts
        common_args:
          description:
            - Value for C(ansible_ssh_common_args) that enforces the pinned host key.
            - V(null) like RV(modal_sandbox.ssh.private_key_file).
          type: str
          sample: -o UserKnownHostsFile=/home/me/.mngr-modal/keys/mngr-modal@default/host-3f2a.../known_hosts -o StrictHostKeyChecking=yes
        host_key_checking:
          description:
            - Always V(true). Value for C(ansible_ssh_host_key_checking), so that Ansible does not put
              C(StrictHostKeyChecking=no) ahead of RV(modal_sandbox.ssh.common_args) when host key checking is off
              in its configuration (ssh keeps the first value of an option).
          type: bool
          sample: true
"""

import json
import re
import time
from typing import Any

from ansible.module_utils.basic import AnsibleModule

from ansible_collections.mngr.modal.plugins.module_utils._base import ModalModule, run_module
from ansible_collections.mngr.modal.plugins.module_utils._build_args import (
    BUILD_OPTIONS,
    BuildArgError,
    requested_spec,
)
from ansible_collections.mngr.modal.plugins.module_utils._client import ModalError, is_not_found
from ansible_collections.mngr.modal.plugins.module_utils._errors import HostError
from ansible_collections.mngr.modal.plugins.module_utils._hosts import (
    Host,
    HostDirectory,
    find_host,
    found_host_result,
    host_result,
    new_host_id,
    validate_host_name,
)
from ansible_collections.mngr.modal.plugins.module_utils._journal import Journal, recover_journal, take_snapshot
from ansible_collections.mngr.modal.plugins.module_utils._keys import (
    HAS_CRYPTOGRAPHY,
    LOCK_TIMEOUT_SECONDS,
    KeyFolder,
    KeyFolderBusy,
    KeyStore,
)
from ansible_collections.mngr.modal.plugins.module_utils._launch import HostLauncher, Launch, NameTaken
from ansible_collections.mngr.modal.plugins.module_utils._live import ended_details
from ansible_collections.mngr.modal.plugins.module_utils._provision import (
    seconds_since,
    check_spec_on_controller,
    build_image,
    snapshot_image,
    tail,
    tunnel_endpoint,
)
from ansible_collections.mngr.modal.plugins.module_utils._records import (
    STATUS_STOPPED,
    HostRecord,
    HostRecords,
    host_records,
)
from ansible_collections.mngr.modal.plugins.module_utils._snapshots import (
    KIND_STOP,
    SnapshotCatalog,
    SnapshotError,
    SnapshotRecord,
    snapshot_age,
    validate_snapshot_name,
    volume_catalog,
)
from ansible_collections.mngr.modal.plugins.module_utils._ssh import (
    SshNotReady,
    sandbox_liveness,
    ssh_enabled,
    wait_for_ssh,
)
from ansible_collections.mngr.modal.plugins.module_utils._state_volume import state_files
from ansible_collections.mngr.modal.plugins.module_utils._tags import (
    encode_sandbox_tags,
    format_endpoint,
    merge_user_tags,
    normalize_user_tags,
)
from ansible_collections.mngr.modal.plugins.module_utils._dockerfile import (
    DockerfileError,
    DockerfilePlan,
)
from ansible_collections.mngr.modal.plugins.module_utils._reservations import (
    NameReservations,
    Reservation,
)

# Spec keys that say how to build an image: meaningless when the host starts from a snapshot's image.
IMAGE_SPEC_KEYS = ("image", "dockerfile", "context_dir", "docker_build_args")


# --- the module ------------------------------------------------------------------------------------


class ModalSandboxModule(ModalModule):
    """Decides what a host needs, then (outside check mode) does it."""

    represent = "modal_sandbox"
    options = {
        "name": {"type": "str", "required": True},
        "state": {"type": "str", "default": "present", "choices": ["present", "started", "stopped", "absent"]},
        **BUILD_OPTIONS,
        "tags": {"type": "dict"},
        "purge_tags": {"type": "bool", "default": False},
        "new_name": {"type": "str"},
        "snapshot": {"type": "str"},
        "ssh": {"type": "bool"},
        "ssh_public_key": {"type": "str", "no_log": False},
        "wait": {"type": "bool", "default": True},
        "wait_timeout": {"type": "int", "default": 300},
    }
    reports_diff = True
    required_libraries = {"cryptography": HAS_CRYPTOGRAPHY}

    def __init__(self, module: AnsibleModule) -> None:
        super().__init__(module)
        self.directory: HostDirectory | None = None
        self.given_spec_keys: list[str] = []
        self.spec: dict[str, Any] = {}
        self.requested_tags: dict[str, str] | None = None
        self.dockerfile_plan: DockerfilePlan | None = None
        self._catalog: SnapshotCatalog | None = None
        self._reservations: NameReservations | None = None
        self._launcher: HostLauncher | None = None
        # Seconds each phase of a create took (build, start, ssh_wait), returned as timings.
        self.timings: dict[str, float] = {}

    # --- input ----------------------------------------------------------------------------------

    def validate_inputs(self) -> None:
        """Everything that can be checked without Modal: names, tags, build args, the Dockerfile."""
        params = self.params
        state = params["state"]
        validate_host_name(params["name"], "name")
        if params["wait_timeout"] < 1:
            # Checked first: with no time to wait, a new sandbox would be created and then given up on.
            raise HostError(f"wait_timeout must be a number of seconds of at least 1, got {params['wait_timeout']}")
        if params["new_name"] is not None:
            validate_host_name(params["new_name"], "new_name")
            if state in ("absent", "stopped"):
                raise HostError(f"new_name cannot be used with state={state}: rename first, then use state={state}")
        self.requested_tags = None if params["tags"] is None else normalize_user_tags(params["tags"], "tags")
        if params["snapshot"] is not None:
            if state == "absent":
                raise SnapshotError("snapshot cannot be used with state=absent (mngr.modal.modal_snapshot deletes "
                                    "snapshots)")
            if state == "stopped":
                validate_snapshot_name(params["snapshot"], "snapshot")
        if state in ("absent", "stopped"):
            # Destroying or stopping a host uses what it was created with: the build options are not needed.
            return
        self.spec, self.given_spec_keys = requested_spec(params)
        if params["ssh"] is not None:
            # Recorded with the spec, so a stopped host starts again the way it was created.
            self.spec["ssh"] = params["ssh"]
            self.given_spec_keys = sorted(set(self.given_spec_keys) | {"ssh"})
            if not params["ssh"] and params["ssh_public_key"] is not None:
                raise HostError("ssh_public_key cannot be used with ssh=false: a host without SSH has no "
                                "authorized_keys. Give one or the other.")
        image_keys = [key for key in IMAGE_SPEC_KEYS if key in self.given_spec_keys]
        if params["snapshot"] is not None and image_keys:
            raise BuildArgError(
                f"snapshot={params['snapshot']} cannot be combined with {', '.join(image_keys)}: a host started from "
                "a snapshot runs the snapshot's image. Give one or the other."
            )
        self._check_on_controller(building=True)
        if params["ssh_public_key"] is not None:
            key = params["ssh_public_key"].strip()
            if not re.fullmatch(r"(ssh-ed25519|ssh-rsa|ecdsa-sha2-nistp\d+|sk-\S+)\s+[A-Za-z0-9+/=]+(\s.*)?", key) or "\n" in key:
                raise HostError(f"ssh_public_key is not one OpenSSH public key line: {key[:60]!r}")

    def _check_on_controller(self, building: bool) -> None:
        """The checks of a spec (requested, or read from a record) that depend on this controller.

        The Dockerfile matters only when the image is built (``building``), not when a snapshot's image is used;
        the secrets' values are read from the controller's environment whenever a sandbox is created.
        """
        plan = check_spec_on_controller(self.spec, building)
        if plan is not None:
            self.dockerfile_plan = plan

    # --- entry point ----------------------------------------------------------------------------

    def execute(self) -> dict[str, Any]:
        state = self.params["state"]
        if state == "absent":
            return self.absent()
        if state == "stopped":
            return self.stopped()
        return self.present()

    # --- reading the app's hosts ----------------------------------------------------------------------

    def load(self, create: bool) -> HostDirectory:
        session = self.session
        app = session.app(create_if_missing=create)
        store = HostRecords.holding() if app is None else host_records(session, create)
        self.directory = HostDirectory(session, app, store)
        return self.directory

    @property
    def keys(self) -> KeyStore:
        """The key folders of this app and environment under key_dir."""
        session = self.session
        return KeyStore(session.key_dir, session.app_name, session.environment)

    def reservations(self, create: bool = True) -> NameReservations:
        """The app's host name reservations (on its state volume; see _reservations)."""
        if self._reservations is None:
            self._reservations = NameReservations(state_files(self.session, create))
        return self._reservations

    def launcher(self, create: bool = True) -> HostLauncher:
        """Launches and destroys hosts in the crash-safe order (see _launch); ``create`` as for reservations()."""
        if self._launcher is None:
            params = self.params
            self._launcher = HostLauncher(self.session, self.directory, self.reservations(create), params["wait"],
                                          params["wait_timeout"], params["ssh_public_key"], self.warnings)
        return self._launcher

    def _evidence(self, host_id: str) -> Any:
        return self.launcher().evidence(host_id)

    def _release_names(self, host_id: str, *names: str | None) -> None:
        self.launcher(create=False).release_names(host_id, *names)

    def describe(self, host: Host | None, whole_spec: bool = False) -> dict[str, Any]:
        """The before/after view used in the diff.

        The spec shows the keys the task gives, or every key with ``whole_spec`` (a sandbox about to be built).
        """
        if host is None:
            return {}
        spec = host.record.spec if host.record else {}
        return {
            "name": host.name,
            "state": host.state,
            "tags": dict(host.user_tags),
            "spec": self._spec_view(spec, whole_spec) if spec else {},
        }

    def _spec_view(self, spec: dict[str, Any], whole_spec: bool) -> dict[str, Any]:
        keys = sorted(spec) if whole_spec else self.given_spec_keys
        return {key: spec.get(key) for key in keys}

    def result_for(self, host: Host | None, name: str, state: str | None = None) -> dict[str, Any]:
        session = self.session
        if host is None:
            return host_result(None, name, state or "absent", {}, {}, None, None, session.key_dir, session.app_name,
                               session.environment)
        result = found_host_result(host, session, state)
        if result["state"] == "ended":
            result["ended"] = ended_details(session, host)
        return result

    # --- absent ---------------------------------------------------------------------------------

    def absent(self) -> dict[str, Any]:
        name = self.params["name"]
        directory = self.load(create=False)
        host = find_host(directory.hosts(), name)
        if host is None:
            return self.result_for(None, name)
        self.diff["before"] = self.describe(host)
        self.diff["after"] = {}
        self.changed = True
        if not self.check_mode:
            self.launcher(create=False).destroy(host)
        result = self.result_for(host, host.name, "absent")
        result["sandbox_id"] = None
        return result

    def _terminate_all(self, host_id: str, keep: str | None = None) -> list[str]:
        """Terminate every live sandbox tagged with ``host_id`` except ``keep``; return their ids."""
        directory = self.directory
        directory.forget()
        terminated = []
        for sandbox in directory.sandboxes_of(host_id):
            if sandbox.sandbox_id == keep:
                continue
            self.session.call(sandbox.handle.terminate)
            terminated.append(sandbox.sandbox_id)
        directory.forget()
        return terminated

    # --- present ----------------------------------------------------------------------------------

    def present(self) -> dict[str, Any]:
        params = self.params
        name = params["name"]
        new_name = params["new_name"] if params["new_name"] != name else None
        # Outside check mode the app and its state volume are created on first use; in check mode nothing is.
        directory = self.load(create=not self.check_mode)
        hosts = directory.hosts()
        host = find_host(hosts, name)
        if new_name is not None:
            target = find_host(hosts, new_name)
            if host is not None and target is not None and target.host_id != host.host_id:
                raise HostError(
                    f"cannot rename host {name} to {new_name}: a host named {new_name} already exists "
                    f"(host_id {target.host_id}). Choose another new_name, or destroy {new_name} first."
                )
            if host is None and target is None:
                raise HostError(f"cannot rename host {name} to {new_name}: there is no host named {name}")
            if host is None:
                host = target  # renamed earlier; finish whatever that run left undone
            name = new_name
        if host is None:
            return self.create(name, source=self.source_snapshot(None))
        if host.sandbox is None:
            return self.start(host, name)
        return self.update(host, name)

    # --- update an existing running host ----------------------------------------------------------

    def update(self, host: Host, name: str) -> dict[str, Any]:
        params = self.params
        before = self.describe(host)
        self.diff["before"] = before
        desired_tags = merge_user_tags(host.user_tags, self.requested_tags, params["purge_tags"])
        renaming = host.name != name
        tags_change = desired_tags != host.user_tags
        recorded_spec = host.record.spec if host.record else None
        if recorded_spec is None:
            self.warnings.append(
                f"host {host.name} has no record on the state volume: its build spec cannot be compared"
            )
        else:
            differences = {
                key: {"current": _spec_value(recorded_spec, key), "requested": _spec_value(self.spec, key)}
                for key in self.given_spec_keys
                if _normalized(_spec_value(recorded_spec, key)) != _normalized(_spec_value(self.spec, key))
            }
            if differences:
                listed = ", ".join(f"{k}: {v['current']!r} -> {v['requested']!r}" for k, v in differences.items())
                self.warnings.append(
                    f"host {host.name} is running with a different spec than requested ({listed}). Modal cannot "
                    "resize a running sandbox: stop the host (state=stopped) and start it with the new spec to apply it "
                    "and keep its files, or destroy it (state=absent) and create it again."
                )
        extra_key = params["ssh_public_key"].strip() if params["ssh_public_key"] else None
        authorized = list(host.record.authorized_keys) if host.record else []
        key_change = extra_key is not None and extra_key not in authorized
        previous_name = host.record.previous_name if host.record else None
        folder = self.keys.find(host.host_id, name, (host.name, previous_name))
        # A key folder of the older layout is moved into the current one (see _ssh.KeyStore): a change, made below.
        migrate = folder is not None and self.keys.is_older_layout(folder)
        repair = host.tags_out_of_date or previous_name is not None or migrate
        self.changed = renaming or tags_change or key_change or repair

        after_host = Host(host.host_id, name, desired_tags, record=host.record, sandbox=host.sandbox,
                          ssh_endpoint=host.ssh_endpoint)
        after = self.describe(after_host)
        # The diff shows the requested spec, so a spec the running sandbox cannot take is visible there too.
        after["spec"] = {key: self.spec.get(key) for key in self.given_spec_keys}
        self.diff["after"] = after
        if self.check_mode or not self.changed:
            return self._finish_existing(after_host, folder)

        record = host.record
        # 0. The new name, reserved on the state volume: a run renaming or creating onto it at the same time loses.
        if renaming:
            holder = self.reservations().reserve(name, host.host_id, self._evidence)
            if holder.host_id != host.host_id:
                raise HostError(
                    f"cannot rename host {host.name} to {name}: another run took the name {name} at the same time "
                    f"({holder.describe()}). Nothing was changed; choose another new_name."
                )
        # 1. The record first: from here on the host is found under its new name (see _hosts.Host).
        if record is not None and (renaming or tags_change or key_change or record.previous_name):
            record.begin_rename(name)
            record.user_tags = desired_tags
            if key_change:
                record.authorized_keys = authorized + [extra_key]
            self.directory.store.put(record)
        # 2. The sandbox's tags (identity + user tags), keeping the recorded SSH endpoint.
        endpoint = host.ssh_endpoint
        self.session.call(
            host.sandbox.handle.set_tags,
            encode_sandbox_tags(host.host_id, name, desired_tags, format_endpoint(*endpoint) if endpoint else None),
        )
        # 3. The known_hosts comment (the key folder is named after the host id, so a rename does not move it).
        if migrate:
            folder = self.keys.find(host.host_id, name, (host.name, previous_name), migrate=True)
        if folder is not None and endpoint is not None:
            folder.pin(*endpoint)
        if key_change:
            self._append_authorized_key(host.sandbox.handle, extra_key)
        # 4. The rename is complete: the old names are free again.
        if record is not None and record.previous_name is not None:
            record.finish_rename()
            self.directory.store.put(record)
        self._release_names(host.host_id, *(old for old in (host.name, previous_name) if old != name))
        return self._finish_existing(after_host, folder)

    def _finish_existing(self, host: Host, folder: KeyFolder | None) -> dict[str, Any]:
        """Fill in the SSH endpoint, check SSH answers (wait=true), and build the result."""
        if host.record is not None and not ssh_enabled(host.record.spec):
            return self.result_for(host, host.name)  # reached through Modal's exec API: nothing of SSH to check
        if host.ssh_endpoint is None and host.sandbox is not None:
            host.ssh_endpoint = tunnel_endpoint(self.session, host.sandbox.handle, 30)
        if folder is None:
            self.warnings.append(
                f"the SSH keys of host {host.name} (host_id {host.host_id}) are not in {self.session.key_dir}: the "
                "host was created with another key_dir or on another controller, or its key folder was removed. "
                f"Copy its key folder ({self.keys.folder_for(host.host_id, host.name).path}) here to reach it over SSH"
            )
        elif not self.check_mode and host.ssh_endpoint is not None:
            if host.record is None:
                # A host known from its sandbox's tags only may still be in the middle of its create by another run
                # on this controller: wait until that run is done with the keys.
                try:
                    with folder.locked(self.params["wait_timeout"] + LOCK_TIMEOUT_SECONDS):
                        pass
                except (KeyFolderBusy, FileNotFoundError) as exc:
                    raise HostError(f"host {host.name} is being created by another run: {exc}")
            folder.pin(*host.ssh_endpoint)
            if self.params["wait"]:
                try:
                    wait_for_ssh(host.ssh_endpoint[0], host.ssh_endpoint[1], folder.client_key, folder.known_hosts,
                                 self.params["wait_timeout"], sandbox_liveness(host.sandbox.handle))
                except SshNotReady as exc:
                    raise HostError(f"host {host.name} is running but SSH does not answer: {exc}",
                                    ssh_error=exc.last_error)
        return self.result_for(host, host.name)

    def _append_authorized_key(self, handle: Any, key: str) -> None:
        script = 'set -eu; umask 077; mkdir -p /root/.ssh; printf "%s\\n" "$MNGR_EXTRA_KEY" >> /root/.ssh/authorized_keys'
        process = self.session.call(handle.exec, "sh", "-c", script, env={"MNGR_EXTRA_KEY": key})
        code = self.session.call(process.wait)
        if code != 0:
            raise ModalError(f"adding ssh_public_key to host {self.params['name']} failed (exit code {code}): "
                             + tail(self.session.call(process.stderr.read).splitlines()))

    # --- snapshots: stop, start, clone ------------------------------------------------------------------

    def catalog(self, create: bool) -> SnapshotCatalog:
        if self._catalog is None:
            self._catalog = volume_catalog(self.session, create=create)
        return self._catalog

    def flush_catalog_warnings(self) -> None:
        if self._catalog is not None:
            self.warnings.extend(self._catalog.warnings)
            self._catalog.warnings.clear()

    def source_snapshot(self, host: Host | None) -> SnapshotRecord | None:
        """The snapshot a new sandbox starts from: the one the snapshot option names, else the host's newest.

        None when there is none (a new host without the option, or a host without usable snapshots).
        """
        ref = self.params["snapshot"]
        if not ref and host is None:
            return None
        catalog = self.catalog(create=False)
        try:
            if ref:
                names = {other.name: other.host_id for other in self.directory.hosts()}
                record: SnapshotRecord | None = catalog.find(ref, host.host_id if host else None, names)
                if record is not None and record.expired():
                    raise SnapshotError(
                        f"snapshot {record.name} (image {record.image_id}) expired at {record.expires_at}: Modal no "
                        "longer keeps its image. mngr.modal.modal_snapshot_info lists the snapshots."
                    )
            else:
                record = catalog.newest(host.host_id)
                if record is None and catalog.newest(host.host_id, usable_only=False) is not None:
                    self.warnings.append(
                        f"every snapshot of host {host.name} has expired (Modal no longer keeps their images): "
                        "its new sandbox is built from its build spec, so its files start afresh"
                    )
        finally:
            self.flush_catalog_warnings()
        return record

    def stopped(self) -> dict[str, Any]:
        """Snapshot the running sandbox (kind stop), then terminate it; the host record keeps the stop reason.

        The host stays listed (state stopped) with its id, name, tags, keys and snapshots; a later start
        restores the stop snapshot into a new sandbox.
        """
        name = self.params["name"]
        directory = self.load(create=False)
        host = find_host(directory.hosts(), name)
        if host is None:
            raise HostError(f"there is no host named {name} to stop in the Modal app "
                            f"{self.session.app_name}; mngr.modal.modal_sandbox_info lists the hosts")
        before = self.describe(host)
        self.diff["before"] = before
        self.diff["after"] = dict(before, state="stopped")
        if host.sandbox is None:
            return self._mark_sandboxless_host_stopped(host)
        snapshot_name = self.params["snapshot"]
        if snapshot_name is not None:
            existing = self.catalog(create=False).get(host.host_id, snapshot_name)
            self.flush_catalog_warnings()
            if existing is not None:
                raise HostError(
                    f"host {host.name} already has a snapshot named {snapshot_name} (image {existing.image_id}), "
                    "so the host was not stopped: choose another snapshot name, or delete that snapshot with "
                    "mngr.modal.modal_snapshot (state=absent)"
                )
        self.changed = True
        if self.check_mode:
            result = self.result_for(host, host.name, "stopped")
            result.update(sandbox_id=None)
            result["ssh"].update(host=None, port=None)
            return result

        catalog = self.catalog(create=True)
        journal = Journal(self.session.key_dir)
        for recovered in recover_journal(catalog, journal, host.host_id):
            self.warnings.append(f"recorded snapshot {recovered.name} (image {recovered.image_id}) that an "
                                 "interrupted earlier run had taken but not recorded")
        spec = host.record.spec if host.record else {}
        try:
            snap, written = take_snapshot(self.session.call, catalog, journal, host.sandbox.handle, host.host_id,
                                          host.name, spec, name=snapshot_name, kind=KIND_STOP)
        except ModalError as exc:
            if not is_not_found(exc):
                raise
            raise HostError(
                f"the sandbox of host {host.name} ended while its stop snapshot was being taken (Modal said: "
                f"{exc.msg}), so no stop snapshot was taken and the files written since its newest snapshot are "
                "lost. The host is not running; its record, keys and earlier snapshots are kept. state=stopped "
                "marks it stopped; state=started starts it from its newest snapshot, else from its spec"
            ) from exc
        self.flush_catalog_warnings()
        if not written:
            # Another run recorded a snapshot under this name meanwhile: the host's files are not safely kept.
            raise HostError(
                f"snapshot {snap.name} of host {host.name} was recorded by another run at the same time, so the "
                "host was not stopped (its files would not be in the catalog): retry with another snapshot name"
            )
        # Terminate first, record second: a crash in between leaves a host whose record says running and that
        # has no sandbox, which the next stop marks stopped and the next start restores from this snapshot.
        self._terminate_all(host.host_id)
        record = host.record or HostRecord(host_id=host.host_id, name=host.name, user_tags=dict(host.user_tags))
        record.mark_stopped(f"stopped by mngr.modal.modal_sandbox at {snap.created_at}; snapshot {snap.name}")
        directory.store.put(record)
        host.record = record
        host.sandbox = None
        host.ssh_endpoint = None
        result = self.result_for(host, host.name, "stopped")
        result["snapshot"] = snap.result(host.name)
        return result

    def _mark_sandboxless_host_stopped(self, host: Host) -> dict[str, Any]:
        """A host without a sandbox is already stopped; one whose sandbox ended on its own gets its record fixed."""
        record = host.record
        if record is not None and record.status != STATUS_STOPPED:
            self.changed = True
            self.warnings.append(
                f"the sandbox of host {host.name} had already ended without a stop (timeout or crash), so no stop "
                "snapshot was taken; a start restores its newest snapshot, if any, else rebuilds it from its spec"
            )
            if not self.check_mode:
                record.mark_stopped("its sandbox ended without a stop (timeout or crash); no stop snapshot")
                self.directory.store.put(record)
        else:
            self.diff["after"] = self.diff["before"]
        return self.result_for(host, host.name, "stopped")

    def start(self, host: Host, name: str) -> dict[str, Any]:
        """A new sandbox for a host that has none: stopped, or ended (its sandbox ended without a stop).

        It starts from the snapshot the snapshot option names, else the host's newest snapshot, else its build
        spec, and keeps the host's id, name, tags and keys (so its pinned host key stays the same).
        """
        if host.name != name:
            raise HostError(f"host {host.name} is stopped: start it (state=started) before renaming it "
                            f"to {name}")
        record = host.record  # never None: a host without a sandbox is only known from its record
        source = self.source_snapshot(host)
        if host.state == "ended":
            self.warnings.append(self._ended_start_warning(host, source))
        if source is None and not (record and record.spec):
            raise HostError(
                f"host {host.name} cannot be started: it has no usable snapshot and no recorded build spec. "
                "Start it from another snapshot (snapshot: HOST/NAME or an image id), or destroy it "
                "(state=absent) and create it again."
            )
        folder = self.keys.find(host.host_id, host.name, (record.previous_name if record else None,),
                                migrate=not self.check_mode)
        if folder is None and not ssh_enabled(record.spec):
            # No keys to keep: the folder is only this controller's lock while the host starts (see _launch).
            folder = self.keys.folder_for(host.host_id, host.name)
        elif folder is None:
            raise HostError(
                f"the SSH keys of host {host.name} (host_id {host.host_id}) are not in {self.session.key_dir}: "
                "start it from the controller that created it, or copy its key folder here (a host keeps its keys "
                "across starts, so that its pinned host key stays valid)"
            )
        return self.create(name, existing=host, source=source, folder=folder)

    def _ended_start_warning(self, host: Host, source: SnapshotRecord | None) -> str:
        """What a start of a host whose sandbox ended by itself brings back, and what it loses."""
        ended = ended_details(self.session, host)
        when = f" at {ended['ended_at']}" if ended["ended_at"] else ""
        lead = f"the sandbox of host {host.name} ended by itself{when}: {ended['reason']}. "
        if source is None:
            return lead + ("It has no snapshot, so it is rebuilt from its spec, without any of the files it had "
                           "(mngr.modal.modal_snapshot takes snapshots)")
        return lead + (f"It starts from snapshot {source.name}{snapshot_age(source.created_at)}: files written after "
                       "that snapshot are lost")

    # --- create ----------------------------------------------------------------------------------------

    def create(self, name: str, existing: Host | None = None, source: SnapshotRecord | None = None,
               folder: KeyFolder | None = None) -> dict[str, Any]:
        """Create a host, or a new sandbox for ``existing``, a host without one (stopped, or ended).

        ``source`` is the snapshot whose image the sandbox runs (else the image is built from the spec);
        ``folder`` the key folder of ``existing``, whose keys the new sandbox gets.
        """
        params = self.params
        spec = dict(self.spec)
        if existing is None:
            user_tags = self.requested_tags or {}
        else:
            user_tags = merge_user_tags(existing.user_tags, self.requested_tags, params["purge_tags"])
        # The spec the host (or, for a clone, the snapshot's host) was created with, changed only where this task
        # asks for something else. With a snapshot's image, the keys that describe how to build one stay as recorded.
        base_spec = existing.record.spec if existing is not None and existing.record is not None else (source.spec if source else {})
        if base_spec:
            overrides = [key for key in self.given_spec_keys if source is None or key not in IMAGE_SPEC_KEYS]
            spec = dict(self.spec)
            spec.update(base_spec)
            spec.update({key: self.spec[key] for key in overrides})
            self.spec = spec
            try:
                self._check_on_controller(building=source is None)
            except (BuildArgError, DockerfileError) as exc:
                raise HostError(f"host {name} needs a new sandbox, but its recorded spec cannot be "
                                f"used on this controller: {exc}")
        self.changed = True
        # A new sandbox is built from the whole spec, so the diff shows all of it (not only the keys the task gives).
        self.diff["before"] = self.describe(existing, whole_spec=True)
        self.diff["after"] = {"name": name, "state": "running", "tags": dict(user_tags),
                              "spec": self._spec_view(spec, whole_spec=True)}
        if source is not None:
            self.diff["after"]["snapshot"] = source.name
        if self.check_mode:
            result = host_result(existing.host_id if existing else None, name, "running", user_tags, spec, None, None,
                                 self.session.key_dir, self.session.app_name, self.session.environment)
            if source is not None:
                result["snapshot"] = source.result()
            return result

        if existing is None:
            # Fail fast, before building anything, when another run holds the name.
            holder = self.launcher().claimant(name)
            if holder is not None:
                return self._name_taken(name, holder)
        host_id = existing.host_id if existing else new_host_id()
        # The image first: a failed build has created nothing (no sandbox, no keys, no record) to clean up.
        build_started = time.monotonic()
        if source is not None:
            image = snapshot_image(self.session, self.directory.app, source)
        else:
            if self.dockerfile_plan is not None:
                self.warnings.extend(self.dockerfile_plan.warnings)
            image = build_image(self.session, self.directory.app, self.spec, self.dockerfile_plan)
        self._time("build", build_started)
        # A new host gets a new folder (named after its new id); another run on this controller that wants the
        # same host waits for its lock, so it finds the keys complete (see _name_taken).
        launch = Launch(name, host_id, spec, user_tags, existing=existing, source=source, folder=folder,
                        timings=self.timings)
        try:
            result = self.launcher().launch(launch, image)
        except NameTaken as exc:
            return self._name_taken(name, exc.holder)
        result["timings"] = {key: self.timings[key] for key in ("build", "start", "ssh_wait")}
        return result

    def _time(self, phase: str, started: float, minus: float = 0.0) -> None:
        """Record how many seconds ``phase`` took since ``started`` (a time.monotonic() reading)."""
        self.timings[phase] = seconds_since(started, minus)

    def _name_taken(self, name: str, holder: Reservation) -> dict[str, Any]:
        """Another run created a host named ``name`` at the same time: use that host, or fail touching nothing.

        With that host's keys on this controller, wait until the other run is done with them (its lock on the key
        folder), then treat the host like any existing one. Without them this run could not reach the host.
        """
        folder = self.keys.find(holder.host_id, name)
        if folder is None:
            raise HostError(
                f"host name {name} is taken in app {self.session.app_name} by another run at the same time "
                f"({holder.describe()}), and that host's SSH keys are not in {self.session.key_dir}. Nothing was "
                f"created. Use the host from the controller that created it, or choose another name."
            )
        try:
            with folder.locked(self.params["wait_timeout"] + LOCK_TIMEOUT_SECONDS):
                pass
        except (KeyFolderBusy, FileNotFoundError) as exc:
            raise HostError(f"host {name} is being created by another run on this controller "
                            f"({holder.describe()}): {exc}. Nothing was created; rerun when it is done.")
        self.directory.forget()
        host = find_host(self.directory.hosts(), name)
        if host is None or host.host_id != holder.host_id:
            raise HostError(
                f"another run was creating host {name} at the same time ({holder.describe()}) and did not finish "
                "it. Nothing was created by this run; run the task again."
            )
        self.warnings.append(f"host {name} was created by another run at the same time ({holder.describe()}); this "
                             "run uses that host")
        if host.sandbox is None:
            return self.start(host, name)
        return self.update(host, name)


def _spec_value(spec: dict[str, Any], key: str) -> Any:
    """A spec's value for ``key``; ``ssh`` is only recorded when given, and means true when it is not."""
    if key == "ssh":
        return ssh_enabled(spec)
    return spec.get(key)


def _normalized(value: Any) -> str:
    return json.dumps(value, sort_keys=True, default=str)


def main() -> None:
    run_module(ModalSandboxModule)


if __name__ == "__main__":
    main()
