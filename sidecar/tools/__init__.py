"""Operator tools beside the modes: ``sidecar status`` (the state file as a table) and ``sidecar inject``."""
