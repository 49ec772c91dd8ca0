"""The one error of `inventiv deploy`: its message names what is wrong and fits on one line."""

from __future__ import annotations


class DeployError(RuntimeError):
    """A deploy step cannot go on: a bad setting, a missing file, a refused host key, an unhealthy stack."""


class HostKeyMismatch(DeployError, ConnectionError):
    """The VM's SSH host key is not one of those Scaleway published for it."""


class SshUnreachable(DeployError, ConnectionError):
    """The VM does not answer SSH (yet): refused, timed out, dropped before login."""
