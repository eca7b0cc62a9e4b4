"""Stream mode: the followed lines, byte for byte, on the sidecar's stdout."""
