# Copyright (c) 2026, the mngr.modal authors
# GNU General Public License v3.0+ (see COPYING or https://www.gnu.org/licenses/gpl-3.0.txt)

"""Keys, key folders, known_hosts pinning, the bootstrap script (run for real by sh) and the SSH wait loop."""

from __future__ import annotations

import os
import stat
import subprocess

import pytest
from cryptography.hazmat.primitives import serialization

from ansible_collections.mngr.modal.plugins.module_utils import _ssh
from ansible_collections.mngr.modal.plugins.module_utils._ssh import (
    CLIENT_KEY,
    HOST_KEY,
    KeyFolder,
    SshNotReady,
    bootstrap_env,
    bootstrap_script,
    generate_ed25519_keypair,
    known_hosts_line,
    ssh_common_args,
    ssh_probe_command,
    sshd_command,
    wait_for_ssh,
)


def mode(path):
    return stat.S_IMODE(os.stat(path).st_mode)


def test_generated_keys_load_and_match():
    private, public = generate_ed25519_keypair("mngr-modal-client:host-1")
    key = serialization.load_ssh_private_key(private, password=None)
    derived = key.public_key().public_bytes(serialization.Encoding.OpenSSH, serialization.PublicFormat.OpenSSH).decode()
    assert public == derived + " mngr-modal-client:host-1"
    assert private.startswith(b"-----BEGIN OPENSSH PRIVATE KEY-----")
    assert generate_ed25519_keypair("x")[1] != generate_ed25519_keypair("x")[1]


def test_known_hosts_line_forms():
    assert known_hosts_line("127.0.0.1", 4022, "ssh-ed25519 AAAAC3 comment", "mngr-modal:web") == (
        "[127.0.0.1]:4022 ssh-ed25519 AAAAC3 mngr-modal:web\n"
    )
    # ssh looks port 22 up without brackets.
    assert known_hosts_line("example.org", 22, "ssh-ed25519 AAAAC3") == "example.org ssh-ed25519 AAAAC3\n"


def test_key_folder_is_private_and_stable(tmp_path):
    key_dir = tmp_path / "keys"
    folder = KeyFolder(str(key_dir), "web")
    assert folder.ensure("host-1") is True
    assert mode(key_dir) == 0o700
    assert mode(folder.path) == 0o700
    for name in (CLIENT_KEY, CLIENT_KEY + ".pub", HOST_KEY, HOST_KEY + ".pub", "host_id"):
        assert mode(os.path.join(folder.path, name)) == 0o600, name
    before = folder.read_public(HOST_KEY)
    assert folder.ensure("host-1") is False
    assert folder.read_public(HOST_KEY) == before
    assert folder.host_id() == "host-1"
    # ssh-keygen accepts the private key and derives the same public key.
    derived = subprocess.run(["ssh-keygen", "-y", "-f", folder.client_key], capture_output=True, text=True, check=True)
    assert derived.stdout.split()[:2] == folder.read_public(CLIENT_KEY).split()[:2]


def test_pin_writes_once_and_tracks_endpoint(tmp_path):
    folder = KeyFolder(str(tmp_path), "web")
    folder.ensure("host-1")
    assert folder.pin("127.0.0.1", 4022) is True
    assert folder.pin("127.0.0.1", 4022) is False
    assert folder.pinned_endpoint_matches("127.0.0.1", 4022)
    assert not folder.pinned_endpoint_matches("127.0.0.1", 4023)
    with open(folder.known_hosts) as handle:
        line = handle.read()
    assert line.startswith("[127.0.0.1]:4022 ssh-ed25519 ")
    assert line.endswith(" mngr-modal:web\n")
    assert mode(folder.known_hosts) == 0o600


def test_move_and_locate_after_interrupted_rename(tmp_path):
    folder = KeyFolder(str(tmp_path), "old")
    folder.ensure("host-1")
    KeyFolder(str(tmp_path), "other").ensure("host-2")
    # The record already says "new" but the folder was not moved: found through its host_id file.
    found = KeyFolder.locate(str(tmp_path), "new", "host-1")
    assert found is not None and found.name == "old"
    moved = found.move_to("new")
    assert moved.name == "new" and moved.exists() and not os.path.exists(folder.path)
    assert KeyFolder.locate(str(tmp_path), "new", "host-1").name == "new"
    assert KeyFolder.locate(str(tmp_path), "new", "host-9") is None
    # A folder of another host under the wanted name is never taken.
    assert KeyFolder.locate(str(tmp_path), "other", "host-1").name == "new"
    with pytest.raises(FileExistsError):
        moved.move_to("other")


def test_locate_in_missing_key_dir(tmp_path):
    assert KeyFolder.locate(str(tmp_path / "nope"), "web", "host-1") is None


def fake_root_script(root, fake_sshd):
    """The bootstrap script with every absolute path it writes moved under ``root``."""
    script = bootstrap_script()
    for path in ("/root", "/etc/ssh", "/etc/environment", "/run/sshd"):
        script = script.replace(path, str(root) + path)
    return script.replace("/usr/sbin/sshd", str(fake_sshd))


def test_bootstrap_script_installs_keys(tmp_path):
    """Run the script with sh against a fake root: paths rewritten, sshd replaced by a stub that checks its config."""
    folder = KeyFolder(str(tmp_path / "keys"), "web")
    folder.ensure("host-1")
    root = tmp_path / "root"
    fake_sshd = tmp_path / "sshd"
    fake_sshd.write_text("#!/bin/sh\necho \"sshd $*\" > " + str(tmp_path / "sshd.args") + "\n")
    fake_sshd.chmod(0o755)
    script = fake_root_script(root, fake_sshd)
    env = dict(os.environ)
    env.update(bootstrap_env(folder.read_public(CLIENT_KEY), folder.read_private(HOST_KEY),
                             folder.read_public(HOST_KEY), ["ssh-ed25519 AAAAEXTRA extra"]))
    (root / "etc" / "ssh").mkdir(parents=True)
    (root / "etc" / "ssh" / "ssh_host_rsa_key").write_text("image key")
    result = subprocess.run(["sh", "-c", script], env=env, capture_output=True, text=True, check=False)
    assert result.returncode == 0, result.stderr
    assert "mngr-modal-bootstrap-ok" in result.stdout
    authorized = (root / "root" / ".ssh" / "authorized_keys").read_text().splitlines()
    assert authorized == [folder.read_public(CLIENT_KEY), "ssh-ed25519 AAAAEXTRA extra"]
    assert mode(root / "root" / ".ssh" / "authorized_keys") == 0o600
    host_key = root / "etc" / "ssh" / "ssh_host_ed25519_key"
    assert host_key.read_text().strip() == folder.read_private(HOST_KEY).strip()
    assert mode(host_key) == 0o600
    assert not (root / "etc" / "ssh" / "ssh_host_rsa_key").exists()
    assert "-t" in (tmp_path / "sshd.args").read_text()


def test_bootstrap_writes_env_for_ssh_logins(tmp_path):
    folder = KeyFolder(str(tmp_path / "keys"), "web")
    folder.ensure("host-1")
    root = tmp_path / "root"
    (root / "etc" / "ssh").mkdir(parents=True)
    (root / "etc" / "environment").write_text('PATH="/usr/bin:/bin"\n')
    fake_sshd = tmp_path / "sshd"
    fake_sshd.write_text("#!/bin/sh\nexit 0\n")
    fake_sshd.chmod(0o755)
    script = fake_root_script(root, fake_sshd)

    def bootstrap(login_env):
        env = dict(os.environ)
        env.update(bootstrap_env(folder.read_public(CLIENT_KEY), folder.read_private(HOST_KEY),
                                 folder.read_public(HOST_KEY), login_env=login_env))
        result = subprocess.run(["sh", "-c", script], env=env, capture_output=True, text=True, check=False)
        assert result.returncode == 0, result.stderr

    bootstrap({"STAGE": "prod", "GREETING": "hello world"})
    # A restart (from a snapshot that kept the files) rewrites the block instead of adding a second one.
    bootstrap({"STAGE": "test", "GREETING": "hello world"})
    assert (root / "root" / ".ssh" / "environment").read_text() == "GREETING=hello world\nSTAGE=test\n"
    assert mode(root / "root" / ".ssh" / "environment") == 0o600
    assert (root / "etc" / "environment").read_text() == (
        'PATH="/usr/bin:/bin"\n# BEGIN mngr.modal env\nGREETING=hello world\nSTAGE=test\n# END mngr.modal env\n'
    )
    assert mode(root / "etc" / "environment") == 0o644
    bootstrap({})
    assert (root / "etc" / "environment").read_text() == 'PATH="/usr/bin:/bin"\n'
    assert "PermitUserEnvironment=yes" in sshd_command()


def test_bootstrap_keeps_secrets_out_of_the_command():
    script = bootstrap_script()
    assert "PRIVATE KEY" not in script
    assert "$" + "{MNGR_HOST_KEY}" in script


def test_sshd_command_and_host_key_option():
    argv = sshd_command()
    assert argv[:3] == ["/usr/sbin/sshd", "-D", "-e"]
    assert "HostKey=/etc/ssh/ssh_host_ed25519_key" in argv


def test_probe_is_strict():
    argv = ssh_probe_command("127.0.0.1", 4022, "/k/id", "/k/known_hosts")
    text = " ".join(argv)
    assert "StrictHostKeyChecking=yes" in text
    assert "BatchMode=yes" in text
    assert "UserKnownHostsFile=/k/known_hosts" in text
    assert argv[-2:] == ["root@127.0.0.1", "true"]
    assert "-p 4022" in text
    assert "StrictHostKeyChecking=yes" in ssh_common_args("/k/known_hosts")


class FakeClock:
    def __init__(self):
        self.now = 0.0

    def __call__(self):
        return self.now

    def sleep(self, seconds):
        self.now += seconds


def completed(code, stderr=""):
    return subprocess.CompletedProcess([], code, "", stderr)


def test_wait_for_ssh_retries_until_login(monkeypatch):
    monkeypatch.setattr(_ssh.shutil, "which", lambda name: "/usr/bin/ssh")
    answers = [completed(255, "Connection refused"), completed(255, "Connection refused"), completed(0)]
    clock = FakeClock()
    attempts = wait_for_ssh("h", 1, "k", "kh", 60, run=lambda *a, **k: answers.pop(0), sleep=clock.sleep, clock=clock)
    assert attempts == 3


def test_wait_for_ssh_times_out_with_last_error(monkeypatch):
    monkeypatch.setattr(_ssh.shutil, "which", lambda name: "/usr/bin/ssh")
    clock = FakeClock()
    with pytest.raises(SshNotReady) as info:
        wait_for_ssh("h", 1, "k", "kh", 5, run=lambda *a, **k: completed(255, "Host key verification failed."),
                     sleep=clock.sleep, clock=clock)
    assert "within 5 seconds" in str(info.value)
    assert info.value.last_error == "Host key verification failed."


def test_wait_for_ssh_stops_when_sandbox_dies(monkeypatch):
    monkeypatch.setattr(_ssh.shutil, "which", lambda name: "/usr/bin/ssh")
    clock = FakeClock()
    with pytest.raises(SshNotReady) as info:
        wait_for_ssh("h", 1, "k", "kh", 600, still_alive=lambda: "the sandbox exited with code 137",
                     run=lambda *a, **k: completed(255, "refused"), sleep=clock.sleep, clock=clock)
    assert "exited with code 137" in str(info.value)
    assert clock.now == 0.0


def test_wait_for_ssh_needs_a_client(monkeypatch):
    monkeypatch.setattr(_ssh.shutil, "which", lambda name: None)
    with pytest.raises(SshNotReady) as info:
        wait_for_ssh("h", 1, "k", "kh", 5)
    assert "openssh-client" in str(info.value)


def test_wait_for_ssh_against_real_sshd(tmp_path):
    """A real sshd on loopback with the generated host key: strict login works, a wrong pin fails."""
    sshd = "/usr/sbin/sshd"
    if not os.path.exists(sshd) or os.geteuid() != 0:
        pytest.skip("needs root and /usr/sbin/sshd")
    folder = KeyFolder(str(tmp_path / "keys"), "web")
    folder.ensure("host-1")
    authorized = tmp_path / "authorized_keys"
    authorized.write_text(folder.read_public(CLIENT_KEY) + "\n")
    authorized.chmod(0o600)
    import socket
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        port = probe.getsockname()[1]
    os.makedirs("/run/sshd", exist_ok=True)
    process = subprocess.Popen(
        [sshd, "-D", "-e", "-f", "/dev/null", "-p", str(port), "-o", "ListenAddress=127.0.0.1",
         "-o", f"HostKey={folder.host_key}", "-o", f"AuthorizedKeysFile={authorized}", "-o", "StrictModes=no",
         "-o", "PermitRootLogin=prohibit-password", "-o", "UsePAM=no", "-o", f"PidFile={tmp_path}/sshd.pid"],
        stdout=subprocess.DEVNULL, stderr=subprocess.PIPE,
    )
    try:
        folder.pin("127.0.0.1", port)
        assert wait_for_ssh("127.0.0.1", port, folder.client_key, folder.known_hosts, 30) >= 1
        other = KeyFolder(str(tmp_path / "keys"), "other")
        other.ensure("host-2")
        other.pin("127.0.0.1", port)  # pins a different host key: must be refused
        with pytest.raises(SshNotReady) as info:
            wait_for_ssh("127.0.0.1", port, folder.client_key, other.known_hosts, 1)
        assert "verification failed" in info.value.last_error.lower() or "host key" in info.value.last_error.lower()
    finally:
        process.kill()
        process.wait()
