# Copyright (c) 2026, the mngr.modal authors
# GNU General Public License v3.0+ (see COPYING or https://www.gnu.org/licenses/gpl-3.0.txt)

"""The image layer that makes a host ready for Ansible, run for real by /bin/sh against fake roots.

Each fake root has its own ``bin`` folder, the only one on PATH, where ``apt-get``, ``apk``, ``dnf`` and
``rm`` are stub scripts that record how they were called. The absolute paths the command checks or cleans are moved
under the fake root, so nothing on this machine is read or touched.
"""

from __future__ import annotations

import subprocess

import pytest

from ansible_collections.mngr.modal.plugins.module_utils._ssh import HOST_PACKAGES, INSTALL_HOST_PACKAGES_COMMAND

# The absolute paths the command looks at: sshd, the CA bundles of Debian/Alpine and of Fedora, apt's lists.
SSHD = "/usr/sbin/sshd"
PYTHON3 = "/usr/bin/python3"
DEBIAN_CA_BUNDLE = "/etc/ssl/certs/ca-certificates.crt"
FEDORA_CA_BUNDLE = "/etc/pki/tls/certs/ca-bundle.crt"
APT_LISTS = "/var/lib/apt/lists"
ALL_MISSING = "openssh-server python3 ca-certificates"


class FakeImage:
    """A root folder with the tools an image has, and the log of every stub call."""

    def __init__(self, root):
        self.root = root
        self.bin = root / "bin"
        self.bin.mkdir(parents=True)
        self.calls_file = root / "calls.log"

    def tool(self, name, exit_code=0):
        """A stub command on PATH that records ``name args...`` (and DEBIAN_FRONTEND for apt-get)."""
        stub = self.bin / name
        stub.write_text(
            "#!/bin/sh\n"
            f'printf "%s\\n" "{name} $* ${{DEBIAN_FRONTEND:+[DEBIAN_FRONTEND=$DEBIAN_FRONTEND]}}" >> {self.calls_file}\n'
            f"exit {exit_code}\n"
        )
        stub.chmod(0o755)
        return self

    def file(self, path, content="x", mode=0o644):
        target = self.root / path.lstrip("/")
        target.parent.mkdir(parents=True, exist_ok=True)
        target.write_text(content)
        target.chmod(mode)
        return self

    def ready(self):
        """Everything a host needs is there already."""
        return self.file(SSHD, mode=0o755).file(DEBIAN_CA_BUNDLE).file(PYTHON3, mode=0o755)

    def run(self):
        command = INSTALL_HOST_PACKAGES_COMMAND
        for path in (SSHD, PYTHON3, DEBIAN_CA_BUNDLE, FEDORA_CA_BUNDLE, APT_LISTS):
            command = command.replace(path, str(self.root) + path)
        result = subprocess.run(["/bin/sh", "-c", command], env={"PATH": str(self.bin)},
                                capture_output=True, text=True, check=False)
        calls = self.calls_file.read_text().splitlines() if self.calls_file.exists() else []
        return result, [call.strip() for call in calls]


@pytest.fixture
def image(tmp_path):
    return FakeImage(tmp_path / "image")


def test_the_command_checks_the_paths_this_test_moves():
    """The stubs below only mean something if the command looks exactly at these paths."""
    for path in (SSHD, PYTHON3, DEBIAN_CA_BUNDLE, FEDORA_CA_BUNDLE, APT_LISTS):
        assert path in INSTALL_HOST_PACKAGES_COMMAND
    assert " ".join(HOST_PACKAGES) == ALL_MISSING


def test_apt_image_installs_everything_missing_non_interactively(image):
    image.tool("apt-get").tool("rm")
    result, calls = image.run()
    assert result.returncode == 0, result.stderr
    assert calls == [
        "apt-get update -qq [DEBIAN_FRONTEND=noninteractive]",
        f"apt-get install -y -qq --no-install-recommends {ALL_MISSING} [DEBIAN_FRONTEND=noninteractive]",
        f"rm -rf {image.root}{APT_LISTS}/* [DEBIAN_FRONTEND=noninteractive]",
    ]


def test_apt_image_installs_only_what_is_missing(image):
    image.tool("apt-get").tool("rm").file(SSHD, mode=0o755).file(DEBIAN_CA_BUNDLE)
    result, calls = image.run()
    assert result.returncode == 0, result.stderr
    assert "apt-get install -y -qq --no-install-recommends python3 [DEBIAN_FRONTEND=noninteractive]" in calls


def test_apt_update_failure_fails_the_layer_without_installing(image):
    image.tool("apt-get", exit_code=100).tool("rm")
    result, calls = image.run()
    assert result.returncode != 0
    assert calls == ["apt-get update -qq [DEBIAN_FRONTEND=noninteractive]"]


def test_apk_image(image):
    image.tool("apk")
    result, calls = image.run()
    assert result.returncode == 0, result.stderr
    assert calls == [f"apk add --no-cache {ALL_MISSING}"]


def test_dnf_image_with_fedora_ca_bundle(image):
    image.tool("dnf").file(FEDORA_CA_BUNDLE)
    result, calls = image.run()
    assert result.returncode == 0, result.stderr
    assert calls == ["dnf install -y openssh-server python3", "dnf clean all"]


def test_apt_is_preferred_when_several_package_managers_exist(image):
    image.tool("dnf").tool("apk").tool("apt-get").tool("rm").ready()
    (image.root / SSHD.lstrip("/")).unlink()
    result, calls = image.run()
    assert result.returncode == 0, result.stderr
    assert [call.split()[0] for call in calls] == ["apt-get", "apt-get", "rm"]
    assert "openssh-server" in calls[1] and "python3" not in calls[1]


def test_nothing_is_called_when_the_image_has_everything(image):
    image.tool("apt-get").tool("apk").tool("dnf").tool("rm").ready()
    result, calls = image.run()
    assert result.returncode == 0, result.stderr
    assert calls == []
    assert result.stdout == result.stderr == ""


def test_empty_ca_bundle_or_non_executable_sshd_count_as_missing(image):
    image.tool("apk").file(PYTHON3, mode=0o755).file(SSHD, mode=0o644).file(DEBIAN_CA_BUNDLE, content="")
    result, calls = image.run()
    assert result.returncode == 0, result.stderr
    assert calls == ["apk add --no-cache openssh-server ca-certificates"]


def test_no_package_manager_fails_naming_what_is_missing(image):
    image.file(PYTHON3, mode=0o755)
    result, calls = image.run()
    assert result.returncode == 1
    assert calls == []
    assert result.stderr.strip() == (
        "mngr.modal: the image lacks openssh-server ca-certificates and has no apt-get, apk or dnf to install them"
    )


def test_no_package_manager_is_fine_when_nothing_is_missing(image):
    image.ready()
    result, calls = image.run()
    assert result.returncode == 0, result.stderr
    assert calls == []


def test_python_image_with_python_only_in_usr_local_gets_usr_bin_python3(image):
    """Docker's python images keep python3 in /usr/local/bin; Ansible is told to use /usr/bin/python3."""
    image.tool("apt-get").tool("rm").tool("python3").file(SSHD, mode=0o755).file(DEBIAN_CA_BUNDLE)
    result, calls = image.run()
    assert result.returncode == 0, result.stderr
    assert "apt-get install -y -qq --no-install-recommends python3 [DEBIAN_FRONTEND=noninteractive]" in calls
