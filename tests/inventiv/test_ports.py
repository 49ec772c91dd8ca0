"""The port check before `inventiv up` / `inventiv gateway`: a stopped gateway's port is free at once,
a live listener is refused with one line."""

from __future__ import annotations

import asyncio
import socket
from pathlib import Path

import pytest
from waiting import wait_until

from inventiv.ports import PortUnavailable, check_port_free

TIME_WAIT = "06"  # the state's code in /proc/net/tcp


def _states(port: int) -> list[str]:
    """TCP states of the IPv4 sockets whose local port is `port`."""
    states = []
    for line in Path("/proc/net/tcp").read_text().splitlines()[1:]:
        fields = line.split()
        if int(fields[1].rsplit(":", 1)[1], 16) == port:
            states.append(fields[3])
    return states


async def _serve_one_exchange_and_stop() -> int:
    """A server like the gateway's (asyncio's listener options) that answers, closes first, then stops.

    Closing first is what leaves TIME_WAIT on the server's own port: the side that sends the first FIN
    holds it, and a gateway closing keep-alive connections on shutdown is that side.
    """

    async def answer(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        await reader.readexactly(4)
        writer.write(b"pong")
        writer.close()
        await writer.wait_closed()

    server = await asyncio.start_server(answer, "127.0.0.1", 0)
    port = int(server.sockets[0].getsockname()[1])
    reader, writer = await asyncio.open_connection("127.0.0.1", port)
    writer.write(b"ping")
    assert await reader.read() == b"pong"  # read() to EOF: the server's FIN came first
    writer.close()
    await writer.wait_closed()
    server.close()
    await server.wait_closed()
    return port


@pytest.mark.skipif(not Path("/proc/net/tcp").exists(), reason="reads TCP states from Linux's /proc")
async def test_a_port_left_in_time_wait_by_a_stopped_server_is_free() -> None:
    port = await _serve_one_exchange_and_stop()
    await wait_until(lambda: TIME_WAIT in _states(port), timeout_s=1, interval_s=0.01, what="TIME_WAIT on the port")
    assert _states(port) == [TIME_WAIT], "the server side should hold TIME_WAIT on its port"
    check_port_free("127.0.0.1", port)
    # And the restarted server really listens there.
    server = await asyncio.start_server(lambda r, w: None, "127.0.0.1", port)
    server.close()
    await server.wait_closed()


@pytest.mark.parametrize("reuse_port", [False, True], ids=["plain", "like-a-gateway-process"])
def test_a_live_listener_is_refused_in_one_line(reuse_port: bool) -> None:
    with socket.socket() as listener:
        listener.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        if reuse_port:
            listener.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEPORT, 1)
        listener.bind(("127.0.0.1", 0))
        listener.listen()
        port = listener.getsockname()[1]
        with pytest.raises(PortUnavailable) as raised:
            check_port_free("127.0.0.1", port)
    assert str(raised.value) == f"port {port} on 127.0.0.1 is already in use"


def test_an_address_this_machine_lacks_is_one_line() -> None:
    with pytest.raises(PortUnavailable, match=r"^cannot listen on 192\.0\.2\.1:8003: "):
        check_port_free("192.0.2.1", 8003)
