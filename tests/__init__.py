"""Tests of log-sidecar; a package so that helpers import as ``tests.writer``, ``tests.checker``."""
