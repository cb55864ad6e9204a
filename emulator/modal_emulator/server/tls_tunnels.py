"""The TLS side of tunnels: ``tunnel.url`` / ``tunnel.tls_socket`` answer HTTPS, as on Modal.

On Modal every opened port gets a TLS endpoint (``TunnelData.host``/``port``, what ``tunnel.url``
points at); ports listed in ``unencrypted_ports`` also get a raw TCP endpoint
(``unencrypted_host``/``unencrypted_port``, what ``tunnel.tcp_socket`` returns). The runtime
forwards a plain loopback port into the sandbox; this module puts a TLS terminator in front of it.

Certificates come from a private CA the emulator creates once per state dir,
``<state_dir>/tls/ca.pem``. A client verifies the emulator's HTTPS tunnels by trusting that file
(``SSL_CERT_FILE``, ``REQUESTS_CA_BUNDLE`` or ``ssl.create_default_context(cafile=...)``); the
server certificate is valid for ``127.0.0.1`` and ``localhost``.
"""

from __future__ import annotations

import asyncio
import datetime
import ipaddress
import logging
import os
import pathlib
import ssl
from dataclasses import dataclass, field

from .core import EmulatorState, atomic_write_bytes

log = logging.getLogger("modal_emulator.server")

_RELAY_CHUNK = 64 * 1024


def _create_certificates(directory: pathlib.Path) -> None:
    """A CA and a server certificate for 127.0.0.1 / localhost signed by it (written once)."""
    from cryptography import x509
    from cryptography.hazmat.primitives import hashes, serialization
    from cryptography.hazmat.primitives.asymmetric import ec
    from cryptography.x509.oid import NameOID

    now = datetime.datetime.now(datetime.timezone.utc)
    not_before, not_after = now - datetime.timedelta(days=1), now + datetime.timedelta(days=3650)

    def private_key_pem(key: ec.EllipticCurvePrivateKey) -> bytes:
        return key.private_bytes(
            serialization.Encoding.PEM, serialization.PrivateFormat.PKCS8, serialization.NoEncryption()
        )

    ca_key = ec.generate_private_key(ec.SECP256R1())
    ca_name = x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, "Modal emulator tunnel CA")])
    ca_cert = (
        x509.CertificateBuilder()
        .subject_name(ca_name)
        .issuer_name(ca_name)
        .public_key(ca_key.public_key())
        .serial_number(x509.random_serial_number())
        .not_valid_before(not_before)
        .not_valid_after(not_after)
        .add_extension(x509.BasicConstraints(ca=True, path_length=0), critical=True)
        .add_extension(
            x509.KeyUsage(
                digital_signature=True, key_cert_sign=True, crl_sign=True, content_commitment=False,
                key_encipherment=False, data_encipherment=False, key_agreement=False, encipher_only=False,
                decipher_only=False,
            ),
            critical=True,
        )
        .add_extension(x509.SubjectKeyIdentifier.from_public_key(ca_key.public_key()), critical=False)
        .sign(ca_key, hashes.SHA256())
    )
    server_key = ec.generate_private_key(ec.SECP256R1())
    server_cert = (
        x509.CertificateBuilder()
        .subject_name(x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, "127.0.0.1")]))
        .issuer_name(ca_name)
        .public_key(server_key.public_key())
        .serial_number(x509.random_serial_number())
        .not_valid_before(not_before)
        .not_valid_after(not_after)
        .add_extension(
            x509.SubjectAlternativeName(
                [x509.IPAddress(ipaddress.ip_address("127.0.0.1")), x509.DNSName("localhost")]
            ),
            critical=False,
        )
        .add_extension(x509.BasicConstraints(ca=False, path_length=None), critical=True)
        .add_extension(x509.ExtendedKeyUsage([x509.oid.ExtendedKeyUsageOID.SERVER_AUTH]), critical=False)
        .add_extension(
            x509.AuthorityKeyIdentifier.from_issuer_public_key(ca_key.public_key()), critical=False
        )
        .sign(ca_key, hashes.SHA256())
    )
    directory.mkdir(parents=True, exist_ok=True, mode=0o700)
    atomic_write_bytes(directory / "server.key", private_key_pem(server_key))
    os.chmod(directory / "server.key", 0o600)
    atomic_write_bytes(directory / "server.pem", server_cert.public_bytes(serialization.Encoding.PEM))
    # The CA key is not kept: no further certificate is ever signed.
    atomic_write_bytes(directory / "ca.pem", ca_cert.public_bytes(serialization.Encoding.PEM))


def server_context(state: EmulatorState) -> ssl.SSLContext:
    """The TLS context of every tunnel endpoint (certificates created on first use)."""
    context = state.services.get("tls_context")
    if context is None:
        directory = state.state_dir / "tls"
        if not (directory / "ca.pem").exists():
            _create_certificates(directory)
        context = ssl.create_default_context(ssl.Purpose.CLIENT_AUTH)
        context.load_cert_chain(directory / "server.pem", directory / "server.key")
        state.services["tls_context"] = context
    return context


async def _pipe(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
    try:
        while chunk := await reader.read(_RELAY_CHUNK):
            writer.write(chunk)
            await writer.drain()
    except (ConnectionError, OSError, ssl.SSLError):
        pass
    finally:
        try:
            if writer.can_write_eof():
                writer.write_eof()
        except (ConnectionError, OSError, RuntimeError):
            pass


@dataclass
class TlsTerminator:
    """Accepts TLS on a loopback port and relays the plain bytes to ``target`` (the runtime's forwarder)."""

    target: tuple[str, int]
    server: asyncio.AbstractServer | None = None
    port: int = 0
    _connections: set[asyncio.Task[None]] = field(default_factory=set)

    async def start(self, context: ssl.SSLContext) -> int:
        self.server = await asyncio.start_server(self._serve, "127.0.0.1", 0, ssl=context)
        self.port = self.server.sockets[0].getsockname()[1]
        return self.port

    async def _serve(self, client_reader: asyncio.StreamReader, client_writer: asyncio.StreamWriter) -> None:
        task = asyncio.current_task()
        assert task is not None
        self._connections.add(task)
        upstream_writer: asyncio.StreamWriter | None = None
        try:
            upstream_reader, upstream_writer = await asyncio.open_connection(*self.target)
            await asyncio.gather(_pipe(client_reader, upstream_writer), _pipe(upstream_reader, client_writer))
        except OSError as exc:
            log.debug("tunnel target %s:%s refused: %s", *self.target, exc)
        except asyncio.CancelledError:
            # close() cancels open connections when the sandbox stops: an expected end, not an error.
            # Ending the task normally matters, as asyncio (3.11) logs a cancelled connection task as an ERROR.
            pass
        finally:
            for writer in (upstream_writer, client_writer):
                if writer is not None:
                    writer.close()
            self._connections.discard(task)

    async def close(self) -> None:
        if self.server is not None:
            self.server.close()
        for task in list(self._connections):
            task.cancel()
        self._connections.clear()
