"""The modes over the core: ``stream`` (stdout) and ``agent`` (Forward). Each depends on the core, never the reverse."""
