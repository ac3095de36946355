"""The demo's report.md and plots."""

from __future__ import annotations

from collections.abc import Sequence
from pathlib import Path
from typing import Any

import numpy as np

ROLLING = 500


def _rolling(hits: Sequence[tuple[int, bool | float]], window: int) -> tuple[np.ndarray, np.ndarray]:
    if not hits:
        return np.array([]), np.array([])
    idx = np.array([i for i, _ in hits])
    ok = np.array([h for _, h in hits], dtype=float)
    w = max(1, min(window, len(ok)))
    csum = np.cumsum(np.insert(ok, 0, 0.0))
    return idx[w - 1 :], (csum[w:] - csum[:-w]) / w


def write_plots(out: Path, summary: dict[str, Any], series: dict[str, Any]) -> list[str]:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    files = []
    # A regressor's figure is its rolling MAE, a classifier's its rolling accuracy.
    regression = series.get("task") == "regression"
    kind, figure = ("errors", "MAE") if regression else ("hits", "accuracy")
    fig, ax = plt.subplots(figsize=(11, 4.5))
    for key, label, style in (
        ("served", "served (closed loop)", "-"),
        ("static", f"static model v{summary['baseline_model_version']}", "--"),
        ("bare", f"bare River {summary.get('bare_river_spec', '')}, same label delay", ":"),
        ("estimated", "served, estimated from confidence before the labels (monitoring's estimate)", "-."),
    ):
        x, y = _rolling(series.get(f"{key}_{kind}", []), ROLLING)
        if len(x):
            ax.plot(x, y, style, label=label)
    for k, p in enumerate(summary["drift_points"]):
        ax.axvline(p, color="black", linestyle=":", label="known drift point" if k == 0 else None)
    for k, i in enumerate(series["alert_indices"]):
        ax.axvline(i, color="red", alpha=0.6, label="concept drift alert" if k == 0 else None)
    for i, v in series["version_first_index"]:
        ax.annotate(f"v{v}", (i, 0.02), xycoords=("data", "axes fraction"), fontsize=7, color="green", rotation=90)
    ax.set_xlabel("event index")
    ax.set_ylabel(f"{figure} (rolling {ROLLING})")
    ax.set_title(f"Served {figure} against the static first model and bare River")
    ax.legend(loc="upper left" if regression else "lower left", fontsize=8)
    fig.tight_layout()
    name = "mae.png" if regression else "accuracy.png"
    fig.savefig(out / name, dpi=110)
    plt.close(fig)
    files.append(name)

    lat = series["latencies_ms"]
    if lat:
        fig, ax = plt.subplots(figsize=(7, 4))
        ax.hist(lat, bins=60)
        for q, c in ((50, "green"), (99, "red")):
            ax.axvline(float(np.percentile(lat, q)), color=c, linestyle="--", label=f"p{q}")
        ax.set_xlabel("event in -> prediction out (ms)")
        ax.set_ylabel("events")
        ax.set_title("End-to-end latency")
        ax.legend()
        fig.tight_layout()
        fig.savefig(out / "latency.png", dpi=110)
        plt.close(fig)
        files.append("latency.png")
    return files


def _fmt(v: Any) -> str:
    if isinstance(v, float):
        return f"{v:.4g}"
    return str(v)


def write_report(out: Path, summary: dict[str, Any], series: dict[str, Any]) -> None:
    plots = write_plots(out, summary, series)
    lines = [
        f"# driftloop demo — {summary['dataset']} (run {summary['run_id']})",
        "",
        "Every figure below was computed from the records read back from the topics after the run.",
        "",
        "| figure | value |",
        "|---|---|",
    ]
    lines += [f"| {k} | {_fmt(v)} |" for k, v in summary.items() if k not in ("dataset", "run_id")]
    lines += [""] + [f"![{p}]({p})" for p in plots] + [""]
    (out / "report.md").write_text("\n".join(lines))
