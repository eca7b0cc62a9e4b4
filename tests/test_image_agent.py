"""The built images in agent mode: shipping to a Forward receiver on the host loopback, with acks.

The container shares the host's network (``--network=host``; never a bridge) to reach the receiver on
127.0.0.1, and is otherwise as locked down as in stream mode. Its probes answer on the host loopback.
"""

from __future__ import annotations

import urllib.request
from pathlib import Path

import pytest

from images.build import VARIANTS
from tests.checker import assert_exactly_once
from tests.conftest import wait_for_checkpoint
from tests.containers import BUILD_TIMEOUT, FAST_ENV, LOG_MOUNT, ContainerSidecar, built, free_port, pod_dirs
from tests.forward_receiver import ForwardReceiver
from tests.test_agent_cli import shipped, wait_shipped
from tests.writer import LogWriter

pytestmark = [pytest.mark.timeout(BUILD_TIMEOUT), pytest.mark.parametrize("variant", sorted(VARIANTS))]


def probe(port: int, path: str) -> int:
    with urllib.request.urlopen(f"http://127.0.0.1:{port}{path}", timeout=10) as answer:
        status: int = answer.status
        return status


def test_image_ships_every_line_to_a_receiver_on_the_host_and_commits_on_its_acks(
    variant: str, tmp_path: Path, log_dir: Path, checkpoint_dir: Path
) -> None:
    metrics_port = free_port()
    with ForwardReceiver() as receiver:
        env = {
            "SIDECAR_MODE": "agent",
            "SIDECAR_PATHS": f"{LOG_MOUNT}/*.log",
            "SIDECAR_FLUENTD_HOST": "127.0.0.1",
            "SIDECAR_FLUENTD_PORT": str(receiver.port),
            "SIDECAR_CHUNK_RECORDS": "500",
            "SIDECAR_FLUSH_INTERVAL": "0.2s",
            "SIDECAR_METRICS_ADDRESS": "127.0.0.1",
            "SIDECAR_METRICS_PORT": str(metrics_port),
            **FAST_ENV,
        }
        image = built(variant).image_id
        container = ContainerSidecar(tmp_path / "container", image, "host", env, pod_dirs(log_dir, checkpoint_dir))
        writer = LogWriter(log_dir / "app.log")
        writer.write(2000)
        try:
            container.start(ready=False)
            container.wait_ready(timeout=60)
            wait_shipped(receiver, writer)
            # With acks required (the default) the checkpoint moves only once the receiver acknowledged.
            wait_for_checkpoint(checkpoint_dir, writer.path, writer.path.stat().st_size, timeout=30)
            assert (probe(metrics_port, "/healthz"), probe(metrics_port, "/readyz")) == (200, 200)
            writer.write(300, batch=False)
            wait_shipped(receiver, writer)
            wait_for_checkpoint(checkpoint_dir, writer.path, writer.path.stat().st_size, timeout=30)
            assert container.stop_container() == 0, container.stderr()
        finally:
            container.cleanup()
    assert_exactly_once(shipped(receiver), {"app": writer.written})
    assert all(message.option and message.option.get("chunk") for message in receiver.messages)
    assert receiver.events()[0].record["file"] == f"{LOG_MOUNT}/app.log"
