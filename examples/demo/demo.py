"""The `make run` demo: an app writes and rotates its log while `sidecar stream` streams it to this terminal.

The app rotates every few seconds, alternating rename+create (as logrotate does by default) and
copytruncate, so you can watch every line arrive once, in order, through both. Ctrl-C stops both cleanly:
the sidecar drains, writes its checkpoint and exits 0.
"""

from __future__ import annotations

import argparse
import os
import shutil
import signal
import socket
import subprocess
import sys
import tempfile
import threading
import time
from pathlib import Path


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        port: int = sock.getsockname()[1]
        return port


def app(log: Path, stop: threading.Event, rate: float, rotate_every: float) -> None:
    """A pretend application: numbered lines, rotated by rename or by copytruncate in turn."""
    out = log.open("ab", buffering=0)
    number, generation, next_rotation = 0, 0, time.monotonic() + rotate_every
    while not stop.is_set():
        number += 1
        out.write(f"{time.strftime('%H:%M:%S')} demo-app line={number} generation={generation}\n".encode())
        if time.monotonic() >= next_rotation:
            generation += 1
            rotated = log.with_name(f"{log.name}.{generation}")
            if generation % 2:
                os.rename(log, rotated)
                out.close()
                out = log.open("ab", buffering=0)
                how = "rename"
            else:
                shutil.copyfile(log, rotated)
                os.truncate(log, 0)
                how = "copytruncate"
            print(f"[demo] rotated {log.name} -> {rotated.name} by {how}", file=sys.stderr, flush=True)
            next_rotation = time.monotonic() + rotate_every
        time.sleep(1 / rate)
    out.close()


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--seconds", type=float, default=0, help="stop by itself after this long (0: until Ctrl-C)")
    parser.add_argument("--rate", type=float, default=5.0, help="lines per second the app writes")
    parser.add_argument("--rotate-every", type=float, default=4.0, help="seconds between rotations")
    args = parser.parse_args()

    workdir = Path(tempfile.mkdtemp(prefix="sidecar-demo-"))
    log = workdir / "logs" / "app.log"
    log.parent.mkdir()
    port = free_port()
    print(f"[demo] app log: {log}\n[demo] metrics: http://127.0.0.1:{port}/metrics  "
          f"(also /healthz, /readyz)\n[demo] Ctrl-C to stop", file=sys.stderr, flush=True)
    stop = threading.Event()
    writer = threading.Thread(target=app, args=(log, stop, args.rate, args.rotate_every), daemon=True)
    writer.start()
    sidecar = subprocess.Popen(
        [sys.executable, "-m", "sidecar", "stream", str(log), "--checkpoint-dir", str(workdir / "checkpoints"),
         "--metrics-port", str(port), "--metrics-address", "127.0.0.1", "--rotate-wait", "2s"],
    )
    try:
        if args.seconds:
            time.sleep(args.seconds)
        else:
            while sidecar.poll() is None:
                time.sleep(0.2)
    except KeyboardInterrupt:
        pass
    stop.set()
    writer.join()
    if sidecar.poll() is None:
        sidecar.send_signal(signal.SIGTERM)
    code = sidecar.wait(timeout=30)
    print(f"[demo] sidecar exited with {code}; files kept in {workdir}", file=sys.stderr, flush=True)
    return code


if __name__ == "__main__":
    raise SystemExit(main())
