"""Benchmarks for log-sidecar: each prints figures and ratios against ``cat``, ``tail -F`` and reference tools.

They are measurements, never assertions: timings on a shared 2-core machine vary too much to gate a
build on, so the numbers are printed for a human to read next to the field notes. Run them all with
``python -m bench.run`` (``--quick`` for a smoke run) or one with ``python -m bench.<name>``.
"""
