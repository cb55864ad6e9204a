# Copyright (c) 2026, the mngr.modal authors
# GNU General Public License v3.0+ (see COPYING or https://www.gnu.org/licenses/gpl-3.0.txt)

# This module is private to the mngr.modal collection: its interface may change at any time,
# do not use it from outside the collection.

"""SSH without trust on first use: keys on the controller, the bootstrap that installs them, the wait for sshd.

For each host the controller generates an Ed25519 client key and an Ed25519 host key. The host key
pair and the client public key go into the sandbox with one exec; sshd then proves it holds the host
key we generated, so the pinned ``known_hosts`` line is trusted from the first connection.

Key folder layout (``<key_dir>/<app>@<environment>/<host_id>/``, see :class:`KeyStore`; folders the
collection creates get mode 0700, keys 0600)::

    id_ed25519, id_ed25519.pub                  client key pair (Ansible's ansible_ssh_private_key_file)
    ssh_host_ed25519_key, ssh_host_ed25519_key.pub   the host's key pair, installed in the sandbox
    known_hosts                                 one pinned line: [host]:port ssh-ed25519 ... mngr-modal:<name>
    host_id                                     the host's id: a folder is only ever used for, or deleted by, that host
"""

from __future__ import annotations

import contextlib
import fcntl
import os
import shlex
import shutil
import subprocess
import time
from typing import Callable, Iterable, Iterator

try:
    from cryptography.hazmat.primitives import serialization
    from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PrivateKey

    HAS_CRYPTOGRAPHY = True
except ImportError:  # pragma: no cover - reported by the modules with missing_required_lib
    HAS_CRYPTOGRAPHY = False

SSH_USER = "root"
SSH_PORT = 22
CLIENT_KEY = "id_ed25519"
HOST_KEY = "ssh_host_ed25519_key"
KNOWN_HOSTS = "known_hosts"
HOST_ID_FILE = "host_id"
# The environment part of a key scope when no environment option is given (the profile's default environment).
DEFAULT_ENVIRONMENT_LABEL = "default"
# How long a run waits for another run on this controller to finish with a host's key folder.
LOCK_TIMEOUT_SECONDS = 60


def generate_ed25519_keypair(comment: str) -> tuple[bytes, str]:
    """A new Ed25519 key pair: (private key in OpenSSH PEM form, public key line ``ssh-ed25519 AAAA... comment``)."""
    key = Ed25519PrivateKey.generate()
    private = key.private_bytes(
        encoding=serialization.Encoding.PEM,
        format=serialization.PrivateFormat.OpenSSH,
        encryption_algorithm=serialization.NoEncryption(),
    )
    public = key.public_key().public_bytes(
        encoding=serialization.Encoding.OpenSSH,
        format=serialization.PublicFormat.OpenSSH,
    ).decode("ascii")
    return private, f"{public} {comment}".strip()


def public_key_body(public_line: str) -> str:
    """``ssh-ed25519 AAAA...`` without the trailing comment."""
    parts = public_line.split()
    return " ".join(parts[:2])


def known_hosts_line(host: str, port: int, host_public_key: str, comment: str = "") -> str:
    """A pinned known_hosts line for the endpoint, as ssh looks it up (``[host]:port`` unless port 22)."""
    pattern = host if int(port) == SSH_PORT else f"[{host}]:{int(port)}"
    line = f"{pattern} {public_key_body(host_public_key)}"
    return f"{line} {comment}\n" if comment else line + "\n"


def _write_private_file(path: str, data: bytes) -> None:
    """Write ``data`` to ``path`` with mode 0600 from the first byte (never briefly world-readable)."""
    tmp = f"{path}.tmp{os.getpid()}"
    fd = os.open(tmp, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o600)
    try:
        os.fchmod(fd, 0o600)
        os.write(fd, data)
        os.fsync(fd)
    finally:
        os.close(fd)
    os.replace(tmp, path)


class KeyFolderBusy(Exception):
    """Another run holds the lock of a key folder for longer than we may wait."""


def make_private_dirs(path: str) -> list[str]:
    """Create ``path`` and any missing parent, each with mode 0700; return the folders created.

    Folders that already exist are left exactly as they are: a ``key_dir`` such as ``/tmp`` or a shared folder
    keeps its mode. Only what the collection creates is made private.
    """
    path = os.path.abspath(path)
    missing = []
    while not os.path.isdir(path):
        missing.append(path)
        parent = os.path.dirname(path)
        if parent == path:
            break
        path = parent
    created = []
    for folder in reversed(missing):
        try:
            os.mkdir(folder, 0o700)
        except FileExistsError:
            continue  # created meanwhile by another run: not ours, left alone
        os.chmod(folder, 0o700)  # the umask may have removed bits; never adds any for other users
        created.append(folder)
    return created


class KeyFolder:
    """One host's key folder: its two key pairs, its pinned known_hosts line and its host id.

    ``path`` is the folder; ``name`` is the host's current name, used only in the comment of the pinned line.
    """

    def __init__(self, path: str, name: str) -> None:
        self.path = os.path.abspath(os.path.expanduser(path))
        self.name = name

    @property
    def client_key(self) -> str:
        return os.path.join(self.path, CLIENT_KEY)

    @property
    def host_key(self) -> str:
        return os.path.join(self.path, HOST_KEY)

    @property
    def known_hosts(self) -> str:
        return os.path.join(self.path, KNOWN_HOSTS)

    def exists(self) -> bool:
        return os.path.isfile(self.client_key) and os.path.isfile(self.host_key)

    def host_id(self) -> str | None:
        try:
            with open(os.path.join(self.path, HOST_ID_FILE), encoding="utf-8") as handle:
                return handle.read().strip() or None
        except OSError:
            return None

    def belongs_to(self, host_id: str) -> bool:
        """True when the folder holds keys and records ``host_id`` as its host."""
        return self.exists() and self.host_id() == host_id

    def ensure(self, host_id: str) -> bool:
        """Create the folder and both key pairs if missing; True if anything was created.

        Existing keys are kept: a host keeps its keys across restarts, so its pinned host key stays valid.
        A folder that records another host's id is never written to (ValueError).
        """
        recorded = self.host_id()
        if recorded is not None and recorded != host_id:
            raise ValueError(f"key folder {self.path} belongs to host {recorded}, not to {host_id}: left untouched")
        created = bool(make_private_dirs(self.path))
        for filename, comment in ((CLIENT_KEY, f"mngr-modal-client:{host_id}"), (HOST_KEY, f"mngr-modal-host:{host_id}")):
            private_path = os.path.join(self.path, filename)
            if os.path.isfile(private_path) and os.path.isfile(private_path + ".pub"):
                continue
            private, public = generate_ed25519_keypair(comment)
            _write_private_file(private_path, private)
            _write_private_file(private_path + ".pub", (public + "\n").encode("ascii"))
            created = True
        if recorded != host_id:
            _write_private_file(os.path.join(self.path, HOST_ID_FILE), (host_id + "\n").encode("ascii"))
            created = True
        return created

    def read_public(self, which: str) -> str:
        with open(os.path.join(self.path, which + ".pub"), encoding="ascii") as handle:
            return handle.read().strip()

    def read_private(self, which: str) -> str:
        with open(os.path.join(self.path, which), encoding="ascii") as handle:
            return handle.read()

    def pin(self, host: str, port: int) -> bool:
        """Write the known_hosts line for the endpoint; True if the file changed."""
        line = known_hosts_line(host, port, self.read_public(HOST_KEY), f"mngr-modal:{self.name}")
        try:
            with open(self.known_hosts, encoding="ascii") as handle:
                if handle.read() == line:
                    return False
        except OSError:
            pass
        _write_private_file(self.known_hosts, line.encode("ascii"))
        return True

    def pinned_endpoint_matches(self, host: str, port: int) -> bool:
        try:
            with open(self.known_hosts, encoding="ascii") as handle:
                content = handle.read()
        except OSError:
            return False
        return content == known_hosts_line(host, port, self.read_public(HOST_KEY), f"mngr-modal:{self.name}")

    @contextlib.contextmanager
    def locked(self, timeout: float, create: bool = False,
               sleep: Callable[[float], None] = time.sleep,
               clock: Callable[[], float] = time.monotonic) -> Iterator[bool]:
        """Hold this machine's lock on the folder (``flock`` on the folder itself) for the ``with`` block.

        Runs on one controller that work on one host (create, start, destroy, migrate) take turns. With
        ``create``, the folder is made first (mode 0700); the block gets True when this call created it.
        Raises KeyFolderBusy after ``timeout`` seconds, and FileNotFoundError when the folder does not exist
        (or is removed while we wait).
        """
        created = bool(make_private_dirs(self.path)) if create else False
        fd = os.open(self.path, os.O_RDONLY | getattr(os, "O_DIRECTORY", 0))
        try:
            deadline = clock() + timeout
            while True:
                try:
                    fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
                    break
                except BlockingIOError:
                    if clock() >= deadline:
                        raise KeyFolderBusy(
                            f"key folder {self.path} is still in use by another run after {timeout:g} seconds"
                        ) from None
                    sleep(0.2)
            if not os.path.isdir(self.path) or os.stat(self.path).st_ino != os.fstat(fd).st_ino:
                raise FileNotFoundError(f"key folder {self.path} was removed by another run")
            yield created
        finally:
            os.close(fd)  # releases the lock

    def remove(self, host_id: str) -> bool:
        """Delete the folder if it is ``host_id``'s (or records no host at all); True if it was removed.

        A folder recording another host's id is never deleted: it holds the only keys of that host.
        """
        recorded = self.host_id()
        if recorded is not None and recorded != host_id:
            return False
        shutil.rmtree(self.path, ignore_errors=True)
        return True


def _path_part(text: str) -> str:
    """``text`` as one safe path component (Modal app and environment names already are)."""
    cleaned = "".join(c if c.isalnum() or c in "._-" else "_" for c in text)
    return cleaned if cleaned and cleaned[0] not in "." else "_" + cleaned


def key_scope(app: str, environment: str | None) -> str:
    """The folder, under ``key_dir``, of the key folders of one Modal app in one environment: ``APP@ENV``.

    The ``@`` cannot occur in a host name, so a scope never collides with a key folder of the older layout
    (``<key_dir>/<host name>/``). Without an environment option the scope says ``default`` (the profile's
    environment); a host is found by its id in any scope, so a change of that label loses no keys.
    """
    return f"{_path_part(app)}@{_path_part(environment or DEFAULT_ENVIRONMENT_LABEL)}"


class KeyStore:
    """Where the key folders of one Modal environment and app live under ``key_dir``.

    Layout: ``<key_dir>/<app>@<environment>/<host_id>/``. The folder is named after the host id, which never
    changes and is never reused, so a host keeps its folder across renames, and hosts of the same name in
    other apps or environments (or a later host that reuses a destroyed host's name) never share one.

    Folders of the older layout, ``<key_dir>/<host name>/``, are still read: a folder there whose ``host_id``
    file names the host is moved into the new layout the first time a module that changes hosts uses it
    (``migrate=True``); read-only callers (info module, inventory) use it where it is.
    """

    def __init__(self, key_dir: str, app: str, environment: str | None = None) -> None:
        self.key_dir = os.path.abspath(os.path.expanduser(key_dir))
        self.scope = os.path.join(self.key_dir, key_scope(app, environment))

    def folder_for(self, host_id: str, name: str) -> KeyFolder:
        """The folder a host's keys belong in (it may not exist yet)."""
        return KeyFolder(os.path.join(self.scope, _path_part(host_id)), name)

    def find(self, host_id: str, name: str, other_names: Iterable[str | None] = (),
             migrate: bool = False) -> KeyFolder | None:
        """The key folder of ``host_id``, or None when this controller has none.

        Looked up in this scope, then in the other scopes of ``key_dir``, then in the older layout under
        ``name``, ``other_names`` (a rename in progress) and finally any folder whose ``host_id`` file names the
        host. A folder recording another host's id is never returned.
        """
        own = self.folder_for(host_id, name)
        if own.exists() and own.host_id() in (host_id, None):
            return own
        for scope in self._entries(lambda entry: "@" in entry):
            folder = KeyFolder(os.path.join(self.key_dir, scope, _path_part(host_id)), name)
            if folder.belongs_to(host_id):
                return folder
        legacy = self._legacy_folder(host_id, name, other_names)
        if legacy is None or not migrate:
            return legacy
        return self._migrate(legacy, own)

    def is_older_layout(self, folder: KeyFolder) -> bool:
        """True for a folder of the older layout (``<key_dir>/<host name>/``), which ``find(migrate=True)`` moves."""
        return os.path.dirname(folder.path) == self.key_dir

    def _entries(self, keep: Callable[[str], bool]) -> list[str]:
        try:
            return sorted(entry for entry in os.listdir(self.key_dir) if keep(entry))
        except OSError:
            return []

    def _legacy_folder(self, host_id: str, name: str, other_names: Iterable[str | None]) -> KeyFolder | None:
        candidates = [name] + [other for other in other_names if other]
        candidates += [entry for entry in self._entries(_is_legacy_entry) if entry not in candidates]
        for candidate in candidates:
            if not _is_legacy_entry(candidate):
                continue
            folder = KeyFolder(os.path.join(self.key_dir, candidate), name)
            if folder.belongs_to(host_id):
                return folder
        return None

    def _migrate(self, legacy: KeyFolder, target: KeyFolder) -> KeyFolder:
        """Move a folder of the older layout to the host's folder (one rename: same file system)."""
        make_private_dirs(self.scope)
        with legacy.locked(LOCK_TIMEOUT_SECONDS):
            if os.path.exists(target.path):
                # Only a crash can leave both: keep the older layout's keys, the ones the sandbox was given.
                return legacy
            os.rename(legacy.path, target.path)
        return target


def _is_legacy_entry(entry: str) -> bool:
    """A folder name of the older layout: a host name (never starts with '.', never contains '@')."""
    return bool(entry) and not entry.startswith(".") and "@" not in entry


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
INSTALL_HOST_PACKAGES_COMMAND = (
    'missing=""; '
    '[ -x /usr/sbin/sshd ] || missing="$missing openssh-server"; '
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


def wait_for_ssh(host: str, port: int, private_key_file: str, known_hosts_file: str, timeout: float,
                 still_alive: Callable[[], str | None] | None = None,
                 run: Callable[..., subprocess.CompletedProcess] = subprocess.run,
                 sleep: Callable[[float], None] = time.sleep,
                 clock: Callable[[], float] = time.monotonic) -> int:
    """Log in as root until it works; return the number of attempts.

    ``still_alive`` returns None while the sandbox and sshd live, or a reason once they died, so a dead
    sandbox fails at once instead of after ``timeout``.
    """
    ssh_binary = shutil.which("ssh")
    if ssh_binary is None:
        raise SshNotReady("no ssh client found on the controller: install openssh-client")
    deadline = clock() + timeout
    attempts = 0
    delay = 0.2
    last_error = ""
    while True:
        attempts += 1
        command = ssh_probe_command(host, port, private_key_file, known_hosts_file, ssh_binary)
        try:
            result = run(command, stdin=subprocess.DEVNULL, capture_output=True, text=True, timeout=30, check=False)
            if result.returncode == 0:
                return attempts
            last_error = (result.stderr or "").strip() or f"ssh exited with {result.returncode}"
        except subprocess.TimeoutExpired:
            last_error = "ssh did not finish within 30 seconds"
        if still_alive is not None:
            reason = still_alive()
            if reason:
                raise SshNotReady(f"the sandbox stopped before SSH answered: {reason}", last_error)
        if clock() >= deadline:
            raise SshNotReady(
                f"SSH to {SSH_USER}@{host}:{port} did not succeed within {timeout:g} seconds", last_error
            )
        sleep(delay)
        delay = min(delay * 2, 2.0)
