"""The runtime side of a sandbox's network: policies, the held entrypoint, slirp4netns's life."""

from __future__ import annotations

import asyncio
import os

import pytest
from runtime_helpers import running, sh, spec

from modal_emulator.runtime import network
from modal_emulator.runtime.container import Container
from modal_emulator.runtime.network import NetworkPolicy, normalize_cidrs, nft_ruleset
from modal_emulator.runtime.store import Store


def test_cidrs_are_normalized_and_bad_ones_named() -> None:
    assert normalize_cidrs(["10.1.2.3/8", " 192.0.2.7/32", "2001:db8::1/32"]) == [
        "10.0.0.0/8", "192.0.2.7/32", "2001:db8::/32"]
    with pytest.raises(ValueError, match=r"'10\.0\.0/33' is not a CIDR block: expected ADDRESS/PREFIX"):
        normalize_cidrs(["10.0.0.0/8", "10.0.0/33"])


def test_ruleset_accepts_loopback_and_the_blocks_and_rejects_the_rest() -> None:
    rules = nft_ruleset(["192.0.2.0/24", "2001:db8::/32"])
    assert 'oif "lo" accept' in rules
    assert "ip daddr { 192.0.2.0/24 } accept" in rules and "ip6 daddr { 2001:db8::/32 } accept" in rules
    assert rules.index("accept\n    meta l4proto tcp reject") > 0 and "reject with icmpx" in rules
    assert "daddr" not in nft_ruleset([])   # an empty allowlist: nothing but loopback and replies


def test_entrypoint_waits_for_its_network(store: Store, monkeypatch: pytest.MonkeyPatch) -> None:
    # A slow network setup must delay the entrypoint, not race it.
    real_start = network.SandboxNetwork.start

    async def slow_start(self, init_pid: int) -> None:
        await asyncio.sleep(0.5)
        await real_start(self, init_pid)

    monkeypatch.setattr(network.SandboxNetwork, "start", slow_start)

    async def body() -> None:
        container = await Container.start(store, spec(entrypoint=["ls", "/sys/class/net"]))
        try:
            assert container.entrypoint is not None and container.entrypoint.stdout is not None
            assert await asyncio.wait_for(container.entrypoint.stdout.read(), 30) == b"lo\ntap0\n"
            assert await asyncio.wait_for(container.wait(), 30) == 0
        finally:
            await container.terminate()

    asyncio.run(body())


def test_blocked_sandbox_has_loopback_only_and_no_helper(store: Store) -> None:
    async def body() -> None:
        async with running(store, spec(network=NetworkPolicy(block_network=True))) as container:
            assert await sh(container, "ls /sys/class/net") == (0, "lo\n", "")
            assert container.info()["network_helpers"] == []
            assert container.info()["network"]["mode"] == "loopback only"

    asyncio.run(body())


def test_terminate_stops_slirp(store: Store) -> None:
    async def body() -> None:
        container = await Container.start(store, spec())
        (helper,) = container.info()["network_helpers"]
        assert os.path.exists(f"/proc/{helper}")
        await container.terminate()
        # Reaped, not a zombie: nothing of the sandbox is left once terminate returns.
        assert not os.path.exists(f"/proc/{helper}")

    asyncio.run(body())


def test_failed_network_setup_leaves_nothing(store: Store, monkeypatch: pytest.MonkeyPatch) -> None:
    # An allowlist nft cannot load (a rule it does not know): the sandbox does not start and nothing
    # of it stays behind.
    monkeypatch.setattr(network, "nft_ruleset", lambda cidrs: "table inet t { chain c { no-such-rule } }\n")

    async def body() -> None:
        container_spec = spec(network=NetworkPolicy(cidr_allowlist=[]))
        with pytest.raises(RuntimeError, match="could not load the sandbox's cidr_allowlist firewall with nft"):
            await Container.start(store, container_spec)
        assert not store.sandbox_dir(container_spec.sandbox_id).exists()
        assert not list((store.state_dir / "run").glob("*.pid"))

    asyncio.run(body())
