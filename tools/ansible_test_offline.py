#!/usr/bin/env python3
"""Make ``ansible-test`` work where its pip bootstrap script cannot be downloaded.

ansible-test creates each sanity virtualenv empty, then runs a ``get-pip`` script that it downloads from
its CI file host and caches at ``~/.ansible/test/cache/get_pip_<version>.py``. When that host is out of
reach, this puts a stand-in at the cache path: it installs pip with ``ensurepip`` and then lets that pip
install the packages ansible-test asked for, from the package index this machine is configured to use.
A cached script that is already there (real or stand-in) is left alone.
"""

from __future__ import annotations

import pathlib
import sys
import urllib.request

STAND_IN = '''\
"""Stand-in for ansible-test's get-pip script (written by tools/ansible_test_offline.py)."""
import ensurepip
import os
import subprocess
import sys

ensurepip.bootstrap()
args = [arg for arg in sys.argv[1:] if arg not in ("--no-setuptools", "--no-wheel")]
cert = "/etc/ssl/certs/ca-certificates.crt"
cert_args = ["--cert", cert] if os.path.exists(cert) else []
sys.exit(subprocess.call([sys.executable, "-m", "pip", "install", *cert_args, *args]))
'''


def pip_version() -> str:
    from ansible_test._internal.python_requirements import get_venv_packages  # pylint: disable=import-outside-toplevel

    class _Python:  # get_venv_packages only reads .version
        version = f"{sys.version_info.major}.{sys.version_info.minor}"

    return get_venv_packages(_Python())["pip"]  # type: ignore[arg-type]


def main() -> int:
    version = pip_version()
    cache = pathlib.Path.home() / ".ansible" / "test" / "cache" / f"get_pip_{version.replace('.', '_')}.py"
    if cache.exists():
        print(f"ansible-test pip bootstrap: using {cache}")
        return 0
    url = f"https://ci-files.testing.ansible.com/ansible-test/get-pip-{version}.py"
    try:
        with urllib.request.urlopen(url, timeout=5) as response:  # noqa: S310 - fixed https URL
            body = response.read()
        print(f"ansible-test pip bootstrap: {url} is reachable, ansible-test will fetch it itself")
        del body
        return 0
    except OSError as exc:
        print(f"ansible-test pip bootstrap: {url} unreachable ({exc}); writing the ensurepip stand-in to {cache}")
    cache.parent.mkdir(parents=True, exist_ok=True)
    cache.write_text(STAND_IN)
    return 0


if __name__ == "__main__":
    sys.exit(main())
