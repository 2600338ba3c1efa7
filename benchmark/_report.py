"""The results file (markdown) and the bar chart (PNG, when matplotlib is there)."""

from __future__ import annotations

import math
import os
import platform
import subprocess
from pathlib import Path

from ._redis_server import redis_version
from ._runner import ROWS


def machine() -> str:
    """One line about the machine: cores, CPU model, Python, redis-server."""
    model = "unknown CPU"
    try:
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            if line.startswith("model name"):
                model = line.split(":", 1)[1].strip()
                break
    except OSError:
        pass
    return (
        f"{os.cpu_count()} cores ({model}), {platform.system()} "
        f"{platform.release()}, Python {platform.python_version()}, "
        f"redis-server {redis_version()}"
    )


def commit() -> str:
    """The repository's current commit (short), or 'unknown'."""
    try:
        out = subprocess.run(
            ["git", "rev-parse", "--short", "HEAD"],
            capture_output=True,
            text=True,
            cwd=Path(__file__).parent,
            timeout=10,
            check=False,
        )
    except OSError:
        return "unknown"
    return out.stdout.strip() or "unknown"


def chart(values: dict[str, dict[str, float]], path: Path) -> str | None:
    """Grouped bars, tasks/s per row and library (log scale); None if no matplotlib."""
    try:
        import matplotlib  # noqa: PLC0415 - optional, benchmark-only

        matplotlib.use("Agg")
        import matplotlib.pyplot as plt  # noqa: PLC0415
    except ImportError:
        return None
    rows = list(ROWS)
    libs = list(values)
    width = 0.8 / len(libs)
    fig, ax = plt.subplots(figsize=(11, 5.5))
    for i, lib in enumerate(libs):
        heights = [values[lib].get(row, math.nan) for row in rows]
        xs = [r + (i - (len(libs) - 1) / 2) * width for r in range(len(rows))]
        bars = ax.bar(
            xs, [0 if math.isnan(h) else h for h in heights], width, label=lib
        )
        for bar, height in zip(bars, heights, strict=True):
            missing = math.isnan(height)
            text = "n/a" if missing else f"{height / 1000:.1f}k"
            ax.annotate(
                text,
                (bar.get_x() + bar.get_width() / 2, 60 if missing else height),
                ha="center",
                va="bottom",
                fontsize=6,
                rotation=90,
            )
    ax.set_yscale("log")
    ax.set_ylim(bottom=50)
    ax.set_ylabel("tasks per second (log scale, higher is better)")
    ax.set_xticks(range(len(rows)), [ROWS[row][2] for row in rows])
    ax.set_title("One producer / one worker process on one Redis (median of repeats)")
    ax.legend(
        fontsize=8,
        ncols=len(libs),
        loc="upper center",
        bbox_to_anchor=(0.5, -0.07),
        frameon=False,
    )
    ax.grid(axis="y", which="major", alpha=0.3)
    fig.tight_layout()
    fig.savefig(path, dpi=110)
    plt.close(fig)
    return path.name
