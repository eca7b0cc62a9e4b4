"""The exceptions log-sidecar raises on purpose.

Each carries a message a user can act on: what is wrong, with which file or option, and what to do.
The CLI prints ``str(error)`` as one line and exits with :attr:`SidecarError.exit_code`.
"""


class SidecarError(Exception):
    """Base of every error the sidecar reports to its user instead of a traceback."""

    exit_code = 1


class ConfigError(SidecarError):
    """An option or environment variable has a value the sidecar cannot run with."""

    exit_code = 2


class CheckpointError(SidecarError):
    """The checkpoint directory or state file cannot be used."""


class ForwardError(SidecarError):
    """A Forward-protocol receiver refused or broke the conversation."""


class HandshakeError(ForwardError):
    """The shared-key handshake with a receiver failed."""


class InjectError(SidecarError):
    """A manifest given to ``sidecar inject`` cannot take the sidecar."""

    exit_code = 2
