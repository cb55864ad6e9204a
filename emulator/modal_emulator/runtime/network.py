"""A sandbox's outbound network, as on Modal: open by default, blocked, or limited to CIDR blocks.

Every sandbox has its own network namespace. What it may reach from there:

- **open** (the default): user-mode networking with ``slirp4netns`` (Debian package ``slirp4netns``).
  slirp4netns runs on the host, creates ``tap0`` in the namespace (10.0.2.100/24, gateway 10.0.2.2,
  DNS 10.0.2.3) and turns the sandbox's packets into ordinary sockets of its own process. The host's
  routes and firewall are never touched. The host's loopback is reachable as 10.0.2.2, which tests use
  to reach a service of their own.
- **blocked** (``block_network=True``): loopback only, no slirp4netns at all; a connection fails at once
  with "Network is unreachable".
- **allowlist** (``cidr_allowlist``): slirp4netns as for open, plus an nftables output filter inside the
  namespace that accepts loopback and the listed blocks and rejects the rest (a TCP reset or an ICMP
  error, so that a refused connection fails fast rather than timing out). The rules are loaded with the
  host's own ``nft`` (Debian package ``nftables``) entered into the namespace's network only: nothing in
  the sandbox's image is used. DNS goes to 10.0.2.3, so with an allowlist names resolve only if
  10.0.2.3 is allowed, as on Modal, where the resolver is not reachable unless its address is listed.

The launcher holds the payload until :meth:`SandboxNetwork.start` has finished (see :mod:`launch`), so
nothing in the sandbox ever runs with more network than its policy allows. slirp4netns gets an exit
pipe whose write end only the emulator holds: it exits when the sandbox is terminated or when the
emulator dies, whichever comes first.
"""

from __future__ import annotations

import asyncio
import contextlib
import ipaddress
import logging
import os
from dataclasses import dataclass
from pathlib import Path

from modal_emulator.runtime._host import tool

log = logging.getLogger("modal_emulator.runtime")

OPEN, BLOCKED, ALLOWLIST = "open", "blocked", "allowlist"

SLIRP_DNS = "10.0.2.3"
SLIRP_HOST = "10.0.2.2"          # the host's loopback, seen from inside a sandbox
RESOLV_CONF = f"nameserver {SLIRP_DNS}\n"
_MTU = 65520                     # slirp4netns's largest useful MTU: far fewer packets for bulk downloads
_TAP = "tap0"
_READY_TIMEOUT_S = 10.0
_STOP_TIMEOUT_S = 5.0
_NFT_TABLE = "modal_emulator"


def normalize_cidrs(cidrs: list[str]) -> list[str]:
    """The blocks in canonical form (``10.1.2.3/8`` -> ``10.0.0.0/8``); ValueError naming a bad entry."""
    normalized = []
    for cidr in cidrs:
        try:
            normalized.append(str(ipaddress.ip_network(cidr.strip(), strict=False)))
        except ValueError:
            raise ValueError(f"cidr_allowlist entry {cidr!r} is not a CIDR block: expected ADDRESS/PREFIX "
                             "such as 10.0.0.0/8 or 2001:db8::/32") from None
    return normalized


@dataclass(frozen=True)
class NetworkPolicy:
    block_network: bool = False
    cidr_allowlist: list[str] | None = None   # None: no allowlist; []: nothing allowed outbound

    @property
    def access(self) -> str:
        if self.block_network:
            return BLOCKED
        return OPEN if self.cidr_allowlist is None else ALLOWLIST

    @property
    def mode(self) -> str:
        """How the policy is carried out, for the sandbox's record."""
        return {OPEN: "slirp4netns", BLOCKED: "loopback only", ALLOWLIST: "slirp4netns + nftables"}[self.access]

    def record(self) -> dict:
        return {"access": self.access, "block_network": self.block_network,
                "cidr_allowlist": None if self.cidr_allowlist is None else list(self.cidr_allowlist),
                "mode": self.mode}


def nft_ruleset(cidrs: list[str]) -> str:
    """An output filter accepting loopback, replies and `cidrs` (normalized), and rejecting the rest."""
    v4 = [c for c in cidrs if ipaddress.ip_network(c).version == 4]
    v6 = [c for c in cidrs if ipaddress.ip_network(c).version == 6]
    rules = ['oif "lo" accept', "ct state established,related accept"]
    if v4:
        rules.append(f"ip daddr {{ {', '.join(v4)} }} accept")
    if v6:
        rules.append(f"ip6 daddr {{ {', '.join(v6)} }} accept")
    rules += ["meta l4proto tcp reject with tcp reset", "reject with icmpx type admin-prohibited"]
    body = "\n".join(f"    {rule}" for rule in rules)
    return (f"table inet {_NFT_TABLE} {{\n  chain output {{\n"
            f"    type filter hook output priority 0; policy accept;\n{body}\n  }}\n}}\n")


class SandboxNetwork:
    """The host-side part of one sandbox's network: its slirp4netns process, if any."""

    def __init__(self, policy: NetworkPolicy, log_file: Path) -> None:
        self.policy = policy
        self.log_file = log_file                                  # slirp4netns's output (never a pipe: it
                                                                  # could fill up and stall the network)
        self.helper: asyncio.subprocess.Process | None = None   # slirp4netns
        self._exit_fd = -1

    @property
    def helper_pids(self) -> list[int]:
        return [self.helper.pid] if self.helper is not None and self.helper.returncode is None else []

    async def start(self, init_pid: int) -> None:
        """Configure the network namespace of `init_pid`; RuntimeError with the reason if it cannot."""
        if self.policy.access == BLOCKED:
            return
        if self.policy.access == ALLOWLIST:
            await _load_nft(init_pid, nft_ruleset(self.policy.cidr_allowlist or []))
        await self._start_slirp(init_pid)

    async def _start_slirp(self, init_pid: int) -> None:
        slirp = tool("slirp4netns", "slirp4netns")
        ready_read, ready_write = os.pipe()
        exit_read, self._exit_fd = os.pipe()
        try:
            with open(self.log_file, "wb") as output:
                self.helper = await asyncio.create_subprocess_exec(
                    slirp, "--configure", f"--mtu={_MTU}", f"--ready-fd={ready_write}",
                    f"--exit-fd={exit_read}", str(init_pid), _TAP, pass_fds=(ready_write, exit_read),
                    start_new_session=True, stdin=asyncio.subprocess.DEVNULL, stdout=output, stderr=output)
        except BaseException:
            os.close(ready_read)
            raise
        finally:
            os.close(ready_write)
            os.close(exit_read)
        try:
            ready = await asyncio.wait_for(asyncio.to_thread(_read_all, ready_read), _READY_TIMEOUT_S)
        except asyncio.TimeoutError:
            ready = b""
        if ready != b"1":
            await self.close()
            raise RuntimeError("slirp4netns could not set up the sandbox's network: "
                               f"{self._helper_output() or 'no answer within the time limit'}")

    def _helper_output(self) -> str:
        try:
            return self.log_file.read_text(errors="replace").strip()
        except OSError:
            return ""

    async def close(self) -> None:
        """Stop slirp4netns and wait for it; idempotent."""
        if self._exit_fd >= 0:
            os.close(self._exit_fd)   # slirp4netns exits on its own when its exit pipe closes
            self._exit_fd = -1
        helper = self.helper
        if helper is None:
            return
        if helper.returncode is None:
            with contextlib.suppress(ProcessLookupError):
                helper.kill()
        with contextlib.suppress(asyncio.TimeoutError):
            await asyncio.wait_for(helper.wait(), _STOP_TIMEOUT_S)


def _read_all(fd: int) -> bytes:
    """Read `fd` to end of file (slirp4netns writes "1" on its ready fd, then closes it); closes `fd`."""
    data = b""
    try:
        while chunk := os.read(fd, 64):
            data += chunk
    finally:
        os.close(fd)
    return data


async def _load_nft(init_pid: int, ruleset: str) -> None:
    process = await asyncio.create_subprocess_exec(
        tool("nsenter"), f"--net=/proc/{init_pid}/ns/net", "--", tool("nft", "nftables"), "-f", "-",
        stdin=asyncio.subprocess.PIPE, stdout=asyncio.subprocess.DEVNULL, stderr=asyncio.subprocess.PIPE)
    _, err = await process.communicate(ruleset.encode())
    if process.returncode != 0:
        raise RuntimeError(f"could not load the sandbox's cidr_allowlist firewall with nft: "
                           f"{err.decode(errors='replace').strip()}")
