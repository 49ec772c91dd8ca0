"""The error a command raises for the operator: `inventiv` prints its one line and exits with status 2."""


class CommandError(RuntimeError):
    """A one-line error for the operator."""
