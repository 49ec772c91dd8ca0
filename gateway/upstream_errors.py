"""The failures of the gateway -> worker hop (gateway/upstream.py), each also the standard exception it is.

A module of its own because these classes derive from two bases (ours and a built-in one, so that
`except TimeoutError` or `except ConnectionError` catches them too), which mypyc does not compile:
gateway/upstream.py is compiled in a production build (setup.py), this module stays interpreted.
"""

from __future__ import annotations

import asyncio


class UpstreamError(Exception):
    """A failure talking to a worker."""


class UpstreamConnectError(UpstreamError, ConnectionError):
    pass


class UpstreamConnectTimeout(UpstreamConnectError, asyncio.TimeoutError):
    pass


class UpstreamTimeout(UpstreamError, asyncio.TimeoutError):
    pass


class UpstreamClosed(UpstreamError, ConnectionResetError):
    pass


class UpstreamProtocolError(UpstreamError, ValueError):
    pass
