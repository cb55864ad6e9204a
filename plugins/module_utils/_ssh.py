# Copyright (c) 2026, the mngr.modal authors
# GNU General Public License v3.0+ (see COPYING or https://www.gnu.org/licenses/gpl-3.0.txt)

# This module is private to the mngr.modal collection: its interface may change at any time,
# do not use it from outside the collection.

"""SSH into a host's sandbox: the bootstrap that installs the keys and starts sshd, the wait for a real login,
and how Ansible connects (:func:`connection_vars`). The keys themselves live in :mod:`._keys`.
"""

from __future__ import annotations

import shlex
import shutil
import socket
import subprocess
import time
from typing import Any, Callable

SSH_USER = "root"
SSH_PORT = 22

# --- the bootstrap inside the sandbox --------------------------------------------------------------

# Environment variable names the bootstrap script reads its inputs from. The keys travel in the exec's
# environment (Modal passes it as a secret), never in the command line, so they never show in a process
# list or in an error message that quotes the command.
ENV_AUTHORIZED_KEYS = "MNGR_AUTHORIZED_KEYS"
ENV_HOST_KEY = "MNGR_HOST_KEY"
ENV_HOST_KEY_PUB = "MNGR_HOST_KEY_PUB"
ENV_LOGIN_ENV = "MNGR_LOGIN_ENV"

# The host's env option, as NAME=VALUE lines, for SSH logins: sshd starts each session with a clean
# environment, so the sandbox's own environment does not reach Ansible's tasks. The lines go to
# /root/.ssh/environment, which this sshd reads (PermitUserEnvironment; it runs without PAM), and to a
# marked block of /etc/environment, which pam_env reads for logins that do use PAM (su -l, an image's own sshd).
ETC_ENVIRONMENT_BEGIN = "# BEGIN mngr.modal env"
ETC_ENVIRONMENT_END = "# END mngr.modal env"

SSHD_PATH = "/usr/sbin/sshd"

# What a host needs so that Ansible can manage it over SSH, installed in one image layer when the image lacks it:
# sshd to log in, python3 to run modules, and CA certificates so that modules reach HTTPS sources. python3 must be
# /usr/bin/python3, the interpreter the role and the inventory name: Docker's python images keep theirs in
# /usr/local/bin, so they get the distribution's python3 too. Package names are
# the same for apt-get, apk and dnf. The layer's definition never changes, so the image cache builds it once per
# image, and nothing is left running (a build step's processes end with it).
HOST_PACKAGES = ("openssh-server", "python3", "ca-certificates")
_CHECK_SSHD = '[ -x /usr/sbin/sshd ] || missing="$missing openssh-server"; '
INSTALL_HOST_PACKAGES_COMMAND = (
    'missing=""; '
    + _CHECK_SSHD +
    '[ -x /usr/bin/python3 ] || missing="$missing python3"; '
    '[ -s /etc/ssl/certs/ca-certificates.crt ] || [ -s /etc/pki/tls/certs/ca-bundle.crt ] '
    '|| missing="$missing ca-certificates"; '
    'if [ -z "$missing" ]; then :; '
    "elif command -v apt-get >/dev/null 2>&1; then "
    "export DEBIAN_FRONTEND=noninteractive; apt-get update -qq && "
    "apt-get install -y -qq --no-install-recommends $missing && rm -rf /var/lib/apt/lists/*; "
    "elif command -v apk >/dev/null 2>&1; then apk add --no-cache $missing; "
    "elif command -v dnf >/dev/null 2>&1; then dnf install -y $missing && dnf clean all; "
    'else echo "mngr.modal: the image lacks$missing and has no apt-get, apk or dnf to install them" >&2; exit 1; fi'
)
# The command also runs at the start of the bootstrap exec (a no-op on an image built with it): it must not exit 0.

# A host without SSH (ssh=false) is reached through Modal's exec API only: the same layer without sshd. Ansible's
# modules still need python3 there (only the raw module works without it).
EXEC_HOST_PACKAGES = ("python3", "ca-certificates")
INSTALL_EXEC_HOST_PACKAGES_COMMAND = INSTALL_HOST_PACKAGES_COMMAND.replace(_CHECK_SSHD, "", 1)

BOOTSTRAP_SCRIPT = """set -eu
{install}
umask 077
mkdir -p /root/.ssh /etc/ssh /run/sshd
chmod 0700 /root /root/.ssh
chmod 0755 /run/sshd
printf '%s\\n' "${auth}" > /root/.ssh/authorized_keys
chmod 0600 /root/.ssh/authorized_keys
rm -f /etc/ssh/ssh_host_*_key /etc/ssh/ssh_host_*_key.pub
printf '%s\\n' "${host}" > /etc/ssh/ssh_host_ed25519_key
printf '%s\\n' "${host_pub}" > /etc/ssh/ssh_host_ed25519_key.pub
chmod 0600 /etc/ssh/ssh_host_ed25519_key
chmod 0644 /etc/ssh/ssh_host_ed25519_key.pub
printf '%s\n' "${login_env}" > /root/.ssh/environment
touch /etc/environment
sed -i '/^{env_begin}$/,/^{env_end}$/d' /etc/environment
if [ -n "${login_env}" ]; then
  printf '%s\n%s\n%s\n' '{env_begin}' "${login_env}" '{env_end}' >> /etc/environment
fi
chmod 0644 /etc/environment
{sshd} -t -f /etc/ssh/sshd_config {options}
echo mngr-modal-bootstrap-ok
"""

# sshd options: our host key only, keys only, root by key, no PAM (sandboxes have no login sessions), and
# ~/.ssh/environment read at login (the host's env option, see ENV_LOGIN_ENV).
SSHD_OPTIONS = (
    "-o", "HostKey=/etc/ssh/ssh_host_ed25519_key",
    "-o", "PermitRootLogin=prohibit-password",
    "-o", "PasswordAuthentication=no",
    "-o", "KbdInteractiveAuthentication=no",
    "-o", "PubkeyAuthentication=yes",
    "-o", "AuthorizedKeysFile=.ssh/authorized_keys",
    "-o", "UsePAM=no",
    "-o", "PermitUserEnvironment=yes",
    "-o", "PidFile=/run/sshd.pid",
)


def bootstrap_script() -> str:
    """The shell script of the setup exec: authorized keys, our host key pair, an sshd config check."""
    return BOOTSTRAP_SCRIPT.format(
        sshd=SSHD_PATH,
        install=INSTALL_HOST_PACKAGES_COMMAND,
        auth="{" + ENV_AUTHORIZED_KEYS + "}",
        host="{" + ENV_HOST_KEY + "}",
        host_pub="{" + ENV_HOST_KEY_PUB + "}",
        login_env="{" + ENV_LOGIN_ENV + "}",
        env_begin=ETC_ENVIRONMENT_BEGIN,
        env_end=ETC_ENVIRONMENT_END,
        options=" ".join(shlex.quote(option) for option in SSHD_OPTIONS),
    )


def bootstrap_env(client_public_key: str, host_private_key: str, host_public_key: str,
                  extra_authorized_keys: list[str] | None = None,
                  login_env: dict[str, str] | None = None) -> dict[str, str]:
    """The setup exec's environment: the keys, and the variables SSH logins get (``login_env``, the env option)."""
    keys = [client_public_key] + [key.strip() for key in (extra_authorized_keys or []) if key and key.strip()]
    return {
        ENV_AUTHORIZED_KEYS: "\n".join(keys),
        ENV_HOST_KEY: host_private_key.strip(),
        ENV_HOST_KEY_PUB: host_public_key.strip(),
        ENV_LOGIN_ENV: "\n".join(f"{name}={value}" for name, value in sorted((login_env or {}).items())),
    }


def sshd_command() -> list[str]:
    """argv of the long-running sshd exec (-D: stay in the foreground; -e: log to stderr)."""
    return [SSHD_PATH, "-D", "-e", *SSHD_OPTIONS]


# --- readiness: a real login -----------------------------------------------------------------------


def ssh_options(private_key_file: str, known_hosts_file: str, connect_timeout: int = 5) -> list[str]:
    """ssh options that refuse any host key but the pinned one and never prompt."""
    return [
        "-o", "BatchMode=yes",
        "-o", "StrictHostKeyChecking=yes",
        "-o", f"UserKnownHostsFile={known_hosts_file}",
        "-o", "GlobalKnownHostsFile=/dev/null",
        "-o", "IdentitiesOnly=yes",
        "-o", f"ConnectTimeout={connect_timeout}",
        "-o", "LogLevel=ERROR",
        "-i", private_key_file,
    ]


def ssh_common_args(known_hosts_file: str) -> str:
    """``ansible_ssh_common_args`` for a host: strict checking against its pinned known_hosts file."""
    return (
        f"-o UserKnownHostsFile={shlex.quote(known_hosts_file)} -o StrictHostKeyChecking=yes "
        "-o GlobalKnownHostsFile=/dev/null -o IdentitiesOnly=yes"
    )


def ssh_probe_command(host: str, port: int, private_key_file: str, known_hosts_file: str,
                      ssh_binary: str = "ssh") -> list[str]:
    return [ssh_binary, *ssh_options(private_key_file, known_hosts_file), "-p", str(int(port)),
            f"{SSH_USER}@{host}", "true"]


class SshNotReady(Exception):
    """SSH did not answer in time, or the sandbox died while waiting; ``last_error`` is ssh's last stderr."""

    def __init__(self, message: str, last_error: str = "") -> None:
        super().__init__(message)
        self.last_error = last_error


def ssh_banner_ready(host: str, port: int, timeout: float = 2.0) -> bool:
    """Whether an SSH server answers at ``host:port`` (it sends its ``SSH-`` banner first); costs no ssh process.

    A tunnel may accept the TCP connection before sshd listens behind it: then no banner comes.
    """
    try:
        with socket.create_connection((host, int(port)), timeout=timeout) as sock:
            sock.settimeout(timeout)
            return sock.recv(8).startswith(b"SSH-")
    except OSError:
        return False


# Seconds between banner probes while sshd starts, and between liveness checks meanwhile.
BANNER_POLL_SECONDS = 0.05
LIVENESS_POLL_SECONDS = 1.0


def wait_for_ssh(host: str, port: int, private_key_file: str, known_hosts_file: str, timeout: float,
                 still_alive: Callable[[], str | None] | None = None,
                 run: Callable[..., subprocess.CompletedProcess] = subprocess.run,
                 sleep: Callable[[float], None] = time.sleep,
                 clock: Callable[[], float] = time.monotonic,
                 banner: Callable[[str, int], bool] = ssh_banner_ready) -> int:
    """Log in as root until it works; return the number of login attempts.

    Until sshd sends its banner, the port is probed every BANNER_POLL_SECONDS, which is cheap, instead of running
    ssh: a login is tried once sshd answers, so a host is ready as soon as its sshd is, even when many start at
    once. ``still_alive`` returns None while the sandbox and sshd live, or a reason once they died, so a dead
    sandbox fails at once instead of after ``timeout``.
    """
    ssh_binary = shutil.which("ssh")
    if ssh_binary is None:
        raise SshNotReady("no ssh client found on the controller: install openssh-client")
    deadline = clock() + timeout
    attempts = 0
    delay = 0.2
    last_error = ""
    next_liveness = clock()
    while True:
        if banner(host, port):
            attempts += 1
            command = ssh_probe_command(host, port, private_key_file, known_hosts_file, ssh_binary)
            try:
                result = run(command, stdin=subprocess.DEVNULL, capture_output=True, text=True, timeout=30, check=False)
                if result.returncode == 0:
                    return attempts
                last_error = (result.stderr or "").strip() or f"ssh exited with {result.returncode}"
            except subprocess.TimeoutExpired:
                last_error = "ssh did not finish within 30 seconds"
            pause = delay
            delay = min(delay * 2, 2.0)
            next_liveness = clock()  # a failed login: check at once whether the sandbox is gone
        else:
            last_error = last_error or f"no SSH server answers at {host}:{port} yet"
            pause = BANNER_POLL_SECONDS
        if still_alive is not None and clock() >= next_liveness:
            reason = still_alive()
            if reason:
                raise SshNotReady(f"the sandbox stopped before SSH answered: {reason}", last_error)
            next_liveness = clock() + LIVENESS_POLL_SECONDS
        if clock() >= deadline:
            raise SshNotReady(
                f"SSH to {SSH_USER}@{host}:{port} did not succeed within {timeout:g} seconds", last_error
            )
        sleep(pause)


def sandbox_liveness(sandbox: Any, sshd: Any = None) -> Callable[[], str | None]:
    """A ``still_alive`` for :func:`wait_for_ssh`: None while ``sandbox`` (and ``sshd``, an exec, if given) run.

    A poll that fails says nothing (None): the login attempts go on until they succeed or time out.
    """

    def exit_reason(what: str, process: Any) -> str | None:
        try:
            code = process.poll()
        except Exception:  # pylint: disable=broad-exception-caught
            return None
        return None if code is None else f"{what} exited with code {code}"

    def still_alive() -> str | None:
        return exit_reason("the sandbox", sandbox) or (exit_reason("sshd", sshd) if sshd is not None else None)

    return still_alive


# --- how Ansible connects ----------------------------------------------------------------------------

# The keys of connection_vars() and the Ansible variable each becomes.
_ANSIBLE_VARIABLES = (
    ("host", "ansible_host"),
    ("port", "ansible_port"),
    ("user", "ansible_user"),
    ("private_key_file", "ansible_ssh_private_key_file"),
    ("common_args", "ansible_ssh_common_args"),
    ("host_key_checking", "ansible_ssh_host_key_checking"),
)


def ssh_enabled(spec: dict[str, Any] | None) -> bool:
    """Whether a host gets sshd, keys and a tunnel; a spec says ``ssh: false`` only for a host without them."""
    return (spec or {}).get("ssh") is not False


def connection_vars(folder: Any, endpoint: tuple[str, int] | None, user: str = SSH_USER,
                    with_key: bool = True) -> dict[str, Any]:
    """How to reach a host over SSH (the ``ssh`` of module results): its endpoint and its key folder's files.

    ``folder`` is the host's :class:`._keys.KeyFolder`, or None for a host not created yet (check mode): then
    no file is known. ``with_key=False`` leaves the private key out (a folder that is not on this controller).
    """
    return {
        "host": endpoint[0] if endpoint else None,
        "port": int(endpoint[1]) if endpoint else None,
        "user": user,
        "private_key_file": folder.client_key if folder and with_key else None,
        "known_hosts_file": folder.known_hosts if folder else None,
        "common_args": ssh_common_args(folder.known_hosts) if folder else None,
        # For ansible_ssh_host_key_checking: with host key checking off in Ansible's configuration, Ansible puts
        # StrictHostKeyChecking=no before ansible_ssh_common_args, and ssh keeps the first value of an option.
        "host_key_checking": True,
    }


def ansible_connection_vars(ssh: dict[str, Any]) -> dict[str, Any]:
    """:func:`connection_vars` as Ansible host variables (what the inventory sets), leaving out what is unknown."""
    return {variable: ssh[key] for key, variable in _ANSIBLE_VARIABLES if ssh.get(key) is not None}
