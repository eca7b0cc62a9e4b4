"""The modes over the core: ``stream`` (stdout) and ``agent`` (Forward). Each depends on the core, never the reverse.

Adding a mode is one entry here (its command, loaded only when used) and its package: ``sidecar run`` and
the command group take the list from :data:`MODES`.
"""

MODES: dict[str, str] = {
    "stream": "sidecar.modes.stream.cli:stream_command",
    "agent": "sidecar.modes.agent.cli:agent_command",
}
"""Each mode's click command, as ``module:attribute``."""
