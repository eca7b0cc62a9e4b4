"""One picture of a ``make bench`` run, drawn from its JSON file: pace and cost beside ``tail -F`` and ``cat``,
and the write-to-output delay distribution at both rates.

``python -m bench.plot bench/out/figures.json`` redraws it; ``bench.run`` calls :func:`draw` after a run.
Matplotlib is a bench-only extra (``pip install -e '.[bench]'``, which ``make bench`` does).
"""

from __future__ import annotations

import argparse
import json
from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import Any

_COLOURS = {
    "cat": "#9e9e9e",
    "tail -F": "#5b8fd6",
    "sidecar stream": "#e07b39",
    "sidecar stream --format json": "#f2b27c",
}


def draw(figures: Mapping[str, Any], png: Path) -> None:
    """Write the picture of ``figures`` (the JSON file's content) to ``png``."""
    import matplotlib  # noqa: PLC0415 - a bench-only extra, needed only when drawing

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt  # noqa: PLC0415

    benches = figures["benches"]
    fig, axes = plt.subplots(1, 3, figsize=(16, 6), layout="constrained")
    fig.suptitle(f"log-sidecar stream mode, {figures['machine']}, {figures['date']}", fontsize=11)
    if "stream_throughput" in benches:
        rows = benches["stream_throughput"]["rows"]
        mb = benches["stream_throughput"]["backlog_bytes"] / 1e6
        _bars(axes[0], rows, "mb_per_s", f"catch-up into a pipe, {mb:,.0f} MB backlog\nMB/s of log (higher is better)")
        _bars(axes[1], rows, "cpu_s_per_gb", "CPU seconds per GB of log\n(lower is better)")
        axes[0].legend(fontsize=8, loc="upper center", bbox_to_anchor=(0.5, -0.08), ncols=2)
    if "stream_latency" in benches:
        _latency(axes[2], benches["stream_latency"]["rows"])
    fig.savefig(png, dpi=110)
    plt.close(fig)


def _bars(ax: Any, rows: Sequence[Mapping[str, Any]], key: str, title: str) -> None:
    readers = sorted({row["reader"] for row in rows})
    followers = list(dict.fromkeys(row["follower"] for row in rows))
    width = 0.8 / len(followers)
    for index, follower in enumerate(followers):
        values = {row["reader"]: row[key] for row in rows if row["follower"] == follower}
        xs = [r + (index - (len(followers) - 1) / 2) * width for r in range(len(readers))]
        heights = [values.get(reader, 0.0) for reader in readers]
        bars = ax.bar(xs, heights, width, label=follower, color=_COLOURS.get(follower))
        ax.bar_label(bars, fmt="%.0f" if key == "mb_per_s" else "%.2f", fontsize=7)
    ax.set_xticks(range(len(readers)), [f"{reader} reader" for reader in readers])
    ax.set_title(title, fontsize=10)


def _latency(ax: Any, rows: Sequence[Mapping[str, Any]]) -> None:
    styles = {1_000: ":", 10_000: "-"}
    for row in rows:
        points = row["quantiles"]
        summary = f"p99 {row['p99_ms']:.2f} ms, CPU {row['cpu_percent']:.1f} %"
        ax.plot(
            [max(ms, 1e-3) for _, ms in points],
            [fraction * 100 for fraction, _ in points],
            styles.get(row["rate"], "--"),
            color=_COLOURS.get(row["follower"]),
            label=f"{row['follower']}, {row['rate']:,} lines/s ({summary})",
        )
    ax.set_xscale("log")
    ax.set_xlabel("delay from the app's write to the reader (ms, log scale)")
    ax.set_ylabel("% of lines delivered within")
    ax.axhline(99, color="#cccccc", linewidth=0.8)
    ax.set_title("latency distribution", fontsize=10)
    ax.legend(fontsize=7, loc="upper center", bbox_to_anchor=(0.5, -0.14), ncols=1)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("json_file", type=Path)
    parser.add_argument("--png", type=Path, help="[default: beside the JSON file, .png]")
    args = parser.parse_args()
    draw(json.loads(args.json_file.read_text()), args.png or args.json_file.with_suffix(".png"))


if __name__ == "__main__":
    main()
