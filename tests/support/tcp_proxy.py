"""A loopback TCP proxy a test can cut and restore, to take a service away mid-run.

The target is a TCP address or a Unix socket: the embedded Postgres listens on a socket only, and a test
that cuts Postgres reaches it through the proxy's TCP port either way (`postgres_target`, `via_proxy`).
"""

from __future__ import annotations

import asyncio
import contextlib
from pathlib import Path
from urllib.parse import parse_qsl, urlencode, urlsplit, urlunsplit


def postgres_target(database_url: str) -> tuple[str, int] | str:
    """Where a Postgres URL connects: (host, port) over TCP, or the path of its Unix socket (libpq's
    `host` parameter naming a folder, the socket in it named `.s.PGSQL.<port>`)."""
    parts = urlsplit(database_url)
    folder = dict(parse_qsl(parts.query)).get("host")
    if folder is None or not folder.startswith("/"):
        return (parts.hostname or "127.0.0.1", parts.port or 5432)
    if parts.port is not None:
        return f"{folder}/.s.PGSQL.{parts.port}"
    sockets = [p for p in sorted(Path(folder).glob(".s.PGSQL.*")) if p.suffix != ".lock"]
    assert sockets, f"no Postgres socket in {folder}"
    return str(sockets[0])


def via_proxy(database_url: str, port: int) -> str:
    """The same database, user and options, reached at 127.0.0.1:`port` over TCP."""
    parts = urlsplit(database_url)
    query = urlencode([(k, v) for k, v in parse_qsl(parts.query) if k != "host"])
    netloc = f"{parts.username}@127.0.0.1:{port}" if parts.username else f"127.0.0.1:{port}"
    return urlunsplit(parts._replace(netloc=netloc, query=query))


class TcpProxy:
    @classmethod
    def to_postgres(cls, database_url: str) -> TcpProxy:
        target = postgres_target(database_url)
        return cls(target) if isinstance(target, str) else cls(*target)

    """Forwards 127.0.0.1:<port> to target; `cut()` drops every connection and refuses new ones."""

    def __init__(self, target_host: str, target_port: int | None = None) -> None:
        # A port: TCP to target_host; none: target_host is the path of a Unix socket.
        self.target = (target_host, target_port)
        self.port = 0
        self.open = True
        self._server: asyncio.Server | None = None
        self._writers: set[asyncio.StreamWriter] = set()

    async def start(self) -> TcpProxy:
        self._server = await asyncio.start_server(self._handle, "127.0.0.1", 0)
        self.port = self._server.sockets[0].getsockname()[1]
        return self

    async def _handle(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        if not self.open:
            writer.close()
            return
        try:
            host, port = self.target
            if port is None:
                up_reader, up_writer = await asyncio.open_unix_connection(host)
            else:
                up_reader, up_writer = await asyncio.open_connection(host, port)
        except OSError:
            writer.close()
            return
        self._writers.update((writer, up_writer))
        await asyncio.gather(self._pipe(reader, up_writer), self._pipe(up_reader, writer))

    async def _pipe(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        try:
            while data := await reader.read(65536):
                writer.write(data)
                await writer.drain()
        except (ConnectionError, OSError):
            pass
        finally:
            self._writers.discard(writer)
            writer.close()

    def cut(self) -> None:
        self.open = False
        for writer in list(self._writers):
            transport = writer.transport
            transport.abort()  # type: ignore[attr-defined]
        self._writers.clear()

    def restore(self) -> None:
        self.open = True

    async def close(self) -> None:
        self.cut()
        if self._server is not None:
            self._server.close()
            with contextlib.suppress(Exception):
                await self._server.wait_closed()
