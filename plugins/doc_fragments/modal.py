# Copyright (c) 2026, the mngr.modal authors
# GNU General Public License v3.0+ (see COPYING or https://www.gnu.org/licenses/gpl-3.0.txt)

from __future__ import annotations


class ModuleDocFragment:
    """Options every mngr.modal module and the inventory share: credentials, environment, app and key folder."""

    DOCUMENTATION = r"""
options:
  token_id:
    description:
      - ID of the Modal API token (the C(ak-...) part).
      - When O(token_id) and O(token_secret) are both given, the module uses them and does not read the user's
        C(~/.modal.toml). When neither is given, the Modal SDK's own configuration applies
        (E(MODAL_TOKEN_ID)/E(MODAL_TOKEN_SECRET), then the active profile in C(~/.modal.toml)).
      - Create a token with C(modal token new), or in the Modal dashboard.
      - When unset, the environment variable E(MODAL_TOKEN_ID) is used.
    type: str
  token_secret:
    description:
      - Secret of the Modal API token (the C(as-...) part). Never logged.
      - When unset, the environment variable E(MODAL_TOKEN_SECRET) is used.
    type: str
  environment:
    description:
      - Name of the Modal environment the app lives in.
      - When unset, the environment variable E(MODAL_ENVIRONMENT), else the workspace's default environment.
    type: str
  app:
    description:
      - Name of the Modal app that holds the hosts of this installation, and prefix of its state volume
        (C(<app>-state)) where host records and the snapshot catalog live.
      - Hosts are looked up by name within this app only.
      - When unset, the environment variable E(MNGR_MODAL_APP), else C(mngr-modal).
    type: str
    default: mngr-modal
  key_dir:
    description:
      - Folder on the controller where each host's SSH client key, host key and pinned C(known_hosts) file are kept,
        one sub-folder per host, C(<key_dir>/<app>@<environment>/<host_id>/) (C(default) as environment when
        O(environment) is not set). Folders the collection creates get mode 0700, keys mode 0600; an existing
        O(key_dir) keeps its mode.
      - Key folders of earlier versions, C(<key_dir>/<host name>/), are still used, and moved into this layout the
        first time M(mngr.modal.modal_sandbox) runs on their host.
      - When unset, the environment variable E(MNGR_MODAL_KEY_DIR), else C(~/.mngr-modal/keys) of the user
        running Ansible.
    type: path
notes:
  - The Modal SDK honours E(MODAL_SERVER_URL); point it at another API endpoint (for example a local
    C(modal-emulator serve)) and every module follows it.
requirements:
  - modal >= 1.6.3, < 2
  - cryptography
seealso:
  - name: Modal API tokens and configuration
    description: Where the Modal SDK reads the token and the other settings from.
    link: https://modal.com/docs/reference/modal.config
  - name: Modal environments
    description: What the O(environment) option selects.
    link: https://modal.com/docs/guide/environments
"""

    # Module attributes, in the shape ansible-core documents them (see community.docker's attributes fragment).
    ATTRIBUTES = r"""
options: {}
attributes:
  action_group:
    description: Use C(group/mngr.modal.modal) in C(module_defaults) to set defaults for this module.
    support: full
    membership:
      - mngr.modal.modal
  check_mode:
    description: Can run in C(check_mode) and return changed status prediction without modifying target.
  diff_mode:
    description: Will return details on what has changed (or possibly needs changing in C(check_mode)), when in diff mode.
  idempotent:
    description:
      - When run twice in a row outside check mode, with the same arguments, the second invocation indicates no change.
      - This assumes that the system controlled/queried by the module has not changed in a relevant way.
"""

    INFO_MODULE = r"""
options: {}
attributes:
  check_mode:
    support: full
    details:
      - This action does not modify state.
  diff_mode:
    support: N/A
    details:
      - This action does not modify state.
  idempotent:
    support: full
"""
