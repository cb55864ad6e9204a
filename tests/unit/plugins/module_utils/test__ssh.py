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
from ansible_collections.mngr.modal.plugins.module_utils._keys import (
    CLIENT_KEY,
    HOST_KEY,
    KeyFolder,
    KeyFolderBusy,
    KeyStore,
    generate_ed25519_keypair,
    known_hosts_line,
)
from ansible_collections.mngr.modal.plugins.module_utils._ssh import (
    SshNotReady,
    bootstrap_env,
    bootstrap_script,
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
    folder = KeyStore(str(key_dir), "app").folder_for("host-1", "web")
    assert folder.ensure("host-1") is True
    # Every folder the collection creates is private: key_dir, the scope and the host's folder.
    assert mode(key_dir) == 0o700
    assert mode(os.path.dirname(folder.path)) == 0o700
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


@pytest.mark.parametrize("existing_mode", [0o755, 0o1777])
def test_an_existing_key_dir_keeps_its_mode(tmp_path, existing_mode):
    """A key_dir such as /tmp or a shared folder is never chmodded; only what the collection creates is 0700."""
    key_dir = tmp_path / "shared"
    key_dir.mkdir()
    key_dir.chmod(existing_mode)
    folder = KeyStore(str(key_dir), "app").folder_for("host-1", "web")
    folder.ensure("host-1")
    assert stat.S_IMODE(os.stat(key_dir).st_mode) == existing_mode
    assert mode(folder.path) == 0o700


def test_same_name_in_two_apps_gets_two_folders(tmp_path):
    """Hosts called web in apps a and b (or in two environments) never share, rewrite or remove each other's keys."""
    in_a = KeyStore(str(tmp_path), "a").folder_for("host-a", "web")
    in_a.ensure("host-a")
    key_a = in_a.read_public(CLIENT_KEY)
    in_b = KeyStore(str(tmp_path), "b").folder_for("host-b", "web")
    in_b.ensure("host-b")
    in_dev = KeyStore(str(tmp_path), "a", "dev").folder_for("host-c", "web")
    in_dev.ensure("host-c")
    assert len({in_a.path, in_b.path, in_dev.path}) == 3
    assert in_a.read_public(CLIENT_KEY) == key_a
    assert KeyStore(str(tmp_path), "a").find("host-a", "web").path == in_a.path
    assert KeyStore(str(tmp_path), "b").find("host-b", "web").path == in_b.path
    # A host is found by its id even where the environment label differs (option given in one run, not another).
    assert KeyStore(str(tmp_path), "a", "main").find("host-a", "web").path == in_a.path
    assert KeyStore(str(tmp_path), "a").find("host-z", "web") is None


def test_a_folder_of_another_host_is_never_written_or_removed(tmp_path):
    folder = KeyStore(str(tmp_path), "a").folder_for("host-a", "web")
    folder.ensure("host-a")
    with pytest.raises(ValueError, match="belongs to host host-a"):
        KeyFolder(folder.path, "web").ensure("host-b")
    assert folder.remove("host-b") is False
    assert folder.exists()
    assert folder.remove("host-a") is True
    assert not os.path.exists(folder.path)


def test_pin_writes_once_and_tracks_endpoint(tmp_path):
    folder = KeyFolder(str(tmp_path / "web"), "web")
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


def legacy_folder(key_dir, name, host_id):
    """A key folder of the older layout, <key_dir>/<host name>/."""
    folder = KeyFolder(os.path.join(str(key_dir), name), name)
    folder.ensure(host_id)
    return folder


def test_older_layout_is_read_and_migrated_on_first_use(tmp_path):
    old = legacy_folder(tmp_path, "web", "host-1")
    key = old.read_public(CLIENT_KEY)
    store = KeyStore(str(tmp_path), "app")
    # Read-only callers use it where it is.
    assert store.find("host-1", "web").path == old.path
    # After a rename recorded but not finished, it is found under the old name or by its host_id file.
    assert store.find("host-1", "front", ("web",)).path == old.path
    assert store.find("host-1", "front").path == old.path
    # A module that changes hosts moves it into the new layout, keys unchanged.
    moved = store.find("host-1", "web", migrate=True)
    assert moved.path == store.folder_for("host-1", "web").path
    assert moved.read_public(CLIENT_KEY) == key
    assert not os.path.exists(old.path)
    assert store.find("host-1", "web").path == moved.path


def test_older_layout_folder_of_another_host_is_left_alone(tmp_path):
    """web in app a (older layout) and a new web in app b: b's lookups never take or move a's folder."""
    old = legacy_folder(tmp_path, "web", "host-a")
    store_b = KeyStore(str(tmp_path), "b")
    assert store_b.find("host-b", "web", migrate=True) is None
    new = store_b.folder_for("host-b", "web")
    new.ensure("host-b")
    assert old.host_id() == "host-a" and old.exists()
    assert store_b.find("host-b", "web").path == new.path


def test_find_in_missing_key_dir(tmp_path):
    assert KeyStore(str(tmp_path / "nope"), "app").find("host-1", "web") is None


def test_lock_serialises_runs_and_times_out(tmp_path):
    folder = KeyStore(str(tmp_path), "app").folder_for("host-1", "web")
    clock = iter(range(100))
    with folder.locked(5, create=True) as created:
        assert created is True
        with pytest.raises(KeyFolderBusy):
            with folder.locked(3, sleep=lambda _s: None, clock=lambda: next(clock)):
                pass
    with folder.locked(1) as created:
        assert created is False
    folder.remove("host-1")
    with pytest.raises(FileNotFoundError):
        with folder.locked(1):
            pass


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
    attempts = wait_for_ssh("h", 1, "k", "kh", 60, run=lambda *a, **k: answers.pop(0), sleep=clock.sleep, clock=clock,
                            banner=lambda host, port: True)
    assert attempts == 3


def test_wait_for_ssh_times_out_with_last_error(monkeypatch):
    monkeypatch.setattr(_ssh.shutil, "which", lambda name: "/usr/bin/ssh")
    clock = FakeClock()
    with pytest.raises(SshNotReady) as info:
        wait_for_ssh("h", 1, "k", "kh", 5, run=lambda *a, **k: completed(255, "Host key verification failed."),
                     sleep=clock.sleep, clock=clock, banner=lambda host, port: True)
    assert "within 5 seconds" in str(info.value)
    assert info.value.last_error == "Host key verification failed."


def test_wait_for_ssh_stops_when_sandbox_dies(monkeypatch):
    monkeypatch.setattr(_ssh.shutil, "which", lambda name: "/usr/bin/ssh")
    clock = FakeClock()
    with pytest.raises(SshNotReady) as info:
        wait_for_ssh("h", 1, "k", "kh", 600, still_alive=lambda: "the sandbox exited with code 137",
                     run=lambda *a, **k: completed(255, "refused"), sleep=clock.sleep, clock=clock,
                     banner=lambda host, port: True)
    assert "exited with code 137" in str(info.value)
    assert clock.now == 0.0


def test_wait_for_ssh_logs_in_only_once_sshd_answers(monkeypatch):
    """No ssh process while the port is silent: short banner probes, then one login."""
    monkeypatch.setattr(_ssh.shutil, "which", lambda name: "/usr/bin/ssh")
    clock = FakeClock()
    banners = [False] * 5 + [True]
    logins = []
    attempts = wait_for_ssh("h", 1, "k", "kh", 60, run=lambda *a, **k: logins.append(a) or completed(0),
                            sleep=clock.sleep, clock=clock, banner=lambda host, port: banners.pop(0))
    assert attempts == 1 and len(logins) == 1
    assert clock.now == pytest.approx(5 * _ssh.BANNER_POLL_SECONDS)


def test_wait_for_ssh_checks_liveness_while_sshd_is_silent(monkeypatch):
    monkeypatch.setattr(_ssh.shutil, "which", lambda name: "/usr/bin/ssh")
    clock = FakeClock()
    checks = []

    def still_alive():
        checks.append(clock.now)
        return "the sandbox exited with code 137" if len(checks) == 3 else None

    with pytest.raises(SshNotReady, match="exited with code 137"):
        wait_for_ssh("h", 1, "k", "kh", 600, still_alive=still_alive, run=lambda *a, **k: completed(0),
                     sleep=clock.sleep, clock=clock, banner=lambda host, port: False)
    # Once a second, not at every banner probe.
    assert len(checks) == 3 and checks[2] >= 2 * _ssh.LIVENESS_POLL_SECONDS


def test_ssh_banner_ready_reads_the_banner():
    import socket
    import threading
    with socket.socket() as server:
        server.bind(("127.0.0.1", 0))
        server.listen(2)
        port = server.getsockname()[1]

        def answer(first: bytes) -> None:
            connection, _address = server.accept()
            with connection:
                connection.sendall(first)

        for first, ready in ((b"SSH-2.0-OpenSSH_9.2\r\n", True), (b"", False)):
            thread = threading.Thread(target=answer, args=(first,))
            thread.start()
            assert _ssh.ssh_banner_ready("127.0.0.1", port, timeout=2) is ready
            thread.join()


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
    folder = KeyFolder(str(tmp_path / "keys" / "web"), "web")
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
        other = KeyFolder(str(tmp_path / "keys" / "other"), "other")
        other.ensure("host-2")
        other.pin("127.0.0.1", port)  # pins a different host key: must be refused
        with pytest.raises(SshNotReady) as info:
            wait_for_ssh("127.0.0.1", port, folder.client_key, other.known_hosts, 1)
        assert "verification failed" in info.value.last_error.lower() or "host key" in info.value.last_error.lower()
    finally:
        process.kill()
        process.wait()
