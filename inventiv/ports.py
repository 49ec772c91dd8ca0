"""Is the gateway's port free? Checked before anything starts, so a taken port is one clear line."""

from __future__ import annotations

import errno
import socket


class PortUnavailable(RuntimeError):
    """Nothing can listen on the gateway's address; the message fits on one line."""


def check_port_free(host: str, port: int) -> None:
    """Fail with one line if something already listens there.

    The gateway's processes bind with SO_REUSEPORT, which would silently share the port with another
    gateway; this probe does not, so it sees any listener.
    """
    family = socket.AF_INET6 if ":" in host else socket.AF_INET
    with socket.socket(family, socket.SOCK_STREAM) as probe:
        # As on the gateway's own sockets (asyncio sets it): a gateway stopped a moment ago leaves its
        # closed connections in TIME_WAIT on the port for a minute, and without this they fail the bind
        # although nothing listens. A listening socket still does.
        probe.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        try:
            probe.bind((host, port))
        except OSError as exc:
            if exc.errno == errno.EADDRINUSE:
                raise PortUnavailable(f"port {port} on {host} is already in use") from None
            raise PortUnavailable(f"cannot listen on {host}:{port}: {exc.strerror}") from None
