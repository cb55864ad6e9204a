"""The host's own package-registry settings, read at run time, for base builds, build steps and sandboxes.

Emulated images reach the same package registries the host reaches, configured the way the host is:

- the Debian mirror lines of the host's apt sources (``/etc/apt/sources.list`` and ``sources.list.d/``,
  one-line and deb822 forms), which ``mmdebstrap`` builds the Debian bases from;
- the host's ``Acquire::`` apt options that decide whether a mirror is usable at all (a snapshot mirror
  needs ``Check-Valid-Until "false"``, a proxy needs ``Acquire::http::Proxy``);
- the host's CA bundle, so that ``pip`` trusts what the host trusts (an intercepting proxy's CA included);
- the host's http(s) package indexes for ``pip`` (``file://`` indexes are host paths a sandbox cannot see).

Nothing here is baked into an image: :func:`settings_files` returns small files that the runtime lays over
an image as a private layer (like the file tool), so they never reach an image layer or a snapshot.
"""

from __future__ import annotations

import configparser
import os
import re
import subprocess
from dataclasses import dataclass
from pathlib import Path

from modal_emulator.runtime._host import find_tool

APT_DIR = Path("/etc/apt")
#: Where the host CA bundle appears inside images (a private path: no package owns or rewrites it).
CA_BUNDLE_PATH = "/__modal/.registry/ca-certificates.crt"
APT_CONF_PATH = "/etc/apt/apt.conf.d/99-modal-emulator-registry"
PIP_CONF_PATH = "/etc/pip.conf"
_HOST_CA_CANDIDATES = ("/etc/ssl/certs/ca-certificates.crt", "/etc/pki/tls/certs/ca-bundle.crt")
#: apt options that decide whether the host's mirrors can be used; everything else stays the image's own.
_APT_OPTION_PATTERN = re.compile(
    r"^Acquire::(Check-Valid-Until|Check-Date|https?::Proxy|https?::Proxy::\S+|Retries|https?::Timeout)\s"
)
_PIP_KEYS = ("index-url", "extra-index-url", "trusted-host", "timeout", "retries")


@dataclass(frozen=True)
class DebianSource:
    uri: str
    suite: str
    components: tuple[str, ...]

    def line(self) -> str:
        return f"deb {self.uri} {self.suite} {' '.join(self.components)}"


def debian_sources(suite: str, apt_dir: Path = APT_DIR) -> list[DebianSource]:
    """The host's ``deb`` entries for `suite` and its -updates and -security suites, in file order."""
    wanted = {suite, f"{suite}-updates", f"{suite}-security"}
    found: list[DebianSource] = []
    for entry in _all_sources(apt_dir):
        if entry.suite in wanted and "main" in entry.components and entry not in found:
            found.append(DebianSource(entry.uri, entry.suite, ("main",)))
    return found


def _all_sources(apt_dir: Path) -> list[DebianSource]:
    files = [apt_dir / "sources.list", *sorted((apt_dir / "sources.list.d").glob("*.list"))]
    entries: list[DebianSource] = []
    for path in files:
        entries += _one_line_sources(path)
    for path in sorted((apt_dir / "sources.list.d").glob("*.sources")):
        entries += _deb822_sources(path)
    return entries


def _one_line_sources(path: Path) -> list[DebianSource]:
    entries = []
    for line in _read(path).splitlines():
        words = line.split("#", 1)[0].split()
        if len(words) >= 4 and words[0] == "deb":
            words = _drop_options(words)
            entries.append(DebianSource(words[1], words[2], tuple(words[3:])))
    return entries


def _drop_options(words: list[str]) -> list[str]:
    """``deb [arch=amd64 signed-by=...] URI suite comp...`` without the bracketed options."""
    text = " ".join(words)
    return re.sub(r"\[[^\]]*\]", "", text).split()


def _deb822_sources(path: Path) -> list[DebianSource]:
    entries = []
    for stanza in re.split(r"\n\s*\n", _read(path)):
        fields: dict[str, str] = {}
        for line in stanza.splitlines():
            if line.startswith("#") or ":" not in line or line[:1].isspace():
                continue
            key, _, value = line.partition(":")
            fields[key.strip().lower()] = value.strip()
        if "deb" not in fields.get("types", "").split() or fields.get("enabled", "yes").lower() == "no":
            continue
        for uri in fields.get("uris", "").split():
            for suite in fields.get("suites", "").split():
                entries.append(DebianSource(uri, suite, tuple(fields.get("components", "").split())))
    return entries


def _read(path: Path) -> str:
    try:
        return path.read_text()
    except OSError:
        return ""


def apt_options() -> list[str]:
    """The host's registry-related apt options as ``Name "value";`` lines (from ``apt-config dump``)."""
    apt_config = find_tool("apt-config")
    if apt_config is None:
        return []
    try:
        dump = subprocess.run([apt_config, "dump"], capture_output=True, text=True, timeout=30, check=False).stdout
    except (OSError, subprocess.SubprocessError):
        return []
    return [line.strip() for line in dump.splitlines() if _APT_OPTION_PATTERN.match(line.strip())]


def host_ca_bundle() -> Path | None:
    """The CA bundle the host's clients use (``SSL_CERT_FILE``, ``PIP_CERT``, else the distribution's)."""
    for candidate in (os.environ.get("SSL_CERT_FILE"), os.environ.get("PIP_CERT"), *_HOST_CA_CANDIDATES):
        if candidate and Path(candidate).is_file():
            return Path(candidate)
    return None


def pip_settings() -> dict[str, str]:
    """The host's http(s) pip index settings (``[global]`` of its pip configuration and ``PIP_*``)."""
    parser = configparser.ConfigParser()
    for path in ("/etc/pip.conf", "/etc/xdg/pip/pip.conf", os.path.expanduser("~/.config/pip/pip.conf"),
                 os.path.expanduser("~/.pip/pip.conf"), os.environ.get("PIP_CONFIG_FILE") or ""):
        if path and os.path.isfile(path):
            try:
                parser.read(path)
            except configparser.Error:
                continue
    settings = {key: parser.get("global", key) for key in _PIP_KEYS if parser.has_option("global", key)}
    for key in _PIP_KEYS:
        env_value = os.environ.get("PIP_" + key.upper().replace("-", "_"))
        if env_value:
            settings[key] = env_value
    for key in ("index-url", "extra-index-url"):
        if key in settings:
            urls = [u for u in settings[key].split() if u.startswith(("http://", "https://"))]
            if urls:
                settings[key] = " ".join(urls)
            else:
                del settings[key]
    return settings


def settings_files() -> list[tuple[str, bytes, int]]:
    """(path in the image, content, mode) of the registry settings laid over every build step and sandbox."""
    files: list[tuple[str, bytes, int]] = []
    ca = host_ca_bundle()
    apt_lines = apt_options()
    if ca is not None:
        files.append((CA_BUNDLE_PATH, ca.read_bytes(), 0o644))
        apt_lines.append(f'Acquire::https::CAInfo "{CA_BUNDLE_PATH}";')
    if apt_lines:
        header = "// The emulator host's registry settings; not part of any image.\n"
        files.append((APT_CONF_PATH, (header + "\n".join(apt_lines) + "\n").encode(), 0o644))
    pip = pip_settings()
    if ca is not None:
        pip["cert"] = CA_BUNDLE_PATH
    if pip:
        body = "".join(f"{key} = {value}\n" for key, value in sorted(pip.items()))
        files.append((PIP_CONF_PATH, f"# The emulator host's registry settings.\n[global]\n{body}".encode(), 0o644))
    return files
