"""Showing what the sidecar does: Prometheus series, probe state, and the HTTP endpoint that serves both."""
