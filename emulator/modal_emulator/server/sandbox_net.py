"""TCP sockets inside a sandbox's network namespace, read from the host without entering it.

``/proc/<pid>/net/tcp`` (and ``tcp6``) lists the sockets of the network namespace that process
``pid`` is in, so reading it for a sandbox's init process shows the sandbox's sockets. The server
uses this for readiness probes on a TCP port (is something listening?) and for idle timeouts (an
open connection through a tunnel counts as activity, as on Modal).
"""

from __future__ import annotations

import pathlib

_LISTEN = "0A"
_ESTABLISHED = "01"


def _sockets(pid: int) -> list[tuple[int, str]]:
    """(local port, state) of every TCP socket in the namespace of ``pid``; empty if it is gone."""
    found = []
    for name in ("tcp", "tcp6"):
        try:
            lines = pathlib.Path(f"/proc/{pid}/net/{name}").read_text().splitlines()[1:]
        except OSError:
            continue
        for line in lines:
            fields = line.split()
            if len(fields) < 4:
                continue
            local_port = int(fields[1].rsplit(":", 1)[1], 16)
            found.append((local_port, fields[3]))
    return found


def is_listening(pid: int, port: int) -> bool:
    return any(local == port and state == _LISTEN for local, state in _sockets(pid))


def has_connection_on(pid: int, ports: list[int]) -> bool:
    """Whether an established connection uses one of ``ports`` as its local port (a tunnel client)."""
    wanted = set(ports)
    return any(local in wanted and state == _ESTABLISHED for local, state in _sockets(pid))
