"""Plots of an interactive evaluation: mean Dice, FPV and FNV (autoPET V: and DMM) against the
number of clicks or scribble steps."""

from __future__ import annotations

from pathlib import Path

import matplotlib
import numpy as np
from matplotlib.figure import Figure  # no pyplot: no backend is chosen, no global state

from petloop.io.atomic import write_figure
from petloop.metrics.interactive import Summary, mean_interval, summary_metrics

LABELS = {"dice": "Dice", "dmm": "DMM (lesion F1)", "fpv": "false positive volume (ml)",
          "fnv": "false negative volume (ml)"}


def plot_curves(summary: Summary, out: str | Path, title: str = "", tracer: str | None = None,
                reference: tuple[str, dict[str, float]] | None = None) -> Path:
    """One panel per metric, one line per model (mean) with a band of its 95 % confidence
    interval (Student's t, :func:`~petloop.metrics.interactive.mean_interval`; none at a step
    with one case). ``tracer`` restricts to that tracer's cases.
    ``reference`` (label, {metric: value}) adds a dashed horizontal line, e.g. a method that
    takes no clicks."""
    metrics = summary_metrics(summary)
    fig = Figure(figsize=(5 * len(metrics), 4.4))
    axes = fig.subplots(1, len(metrics))
    colors = matplotlib.rcParams["axes.prop_cycle"].by_key()["color"]
    for n, (model, entry) in enumerate(summary["models"].items()):
        source = entry if tracer is None else entry["tracers"].get(tracer)
        if source is None:
            continue
        color = colors[n % len(colors)]
        for ax, metric in zip(axes, metrics, strict=True):
            rows = source["per_step"][metric]
            steps = np.array([r["step"] for r in rows])
            mean = np.array([r["mean"] for r in rows], dtype=float)
            sd = np.array([r["sd"] for r in rows], dtype=float)  # None (from JSON): NaN
            bounds = np.array([mean_interval(m, d, r["n"]) for m, d, r in zip(mean, sd, rows,
                                                                               strict=True)])
            lo, hi = (np.where(np.isnan(b), mean, b) for b in bounds.T)
            n_cases = max(r["n"] for r in rows)
            ax.plot(steps, mean, "-o", color=color, ms=3.5, label=f"{model} (n={n_cases})")
            ax.fill_between(steps, lo, hi, color=color, alpha=0.18, lw=0)
    if reference is not None:
        label, values = reference
        for ax, metric in zip(axes, metrics, strict=True):
            v = values.get(metric)
            if v is not None and np.isfinite(v):
                ax.axhline(v, color="0.35", ls="--", lw=1.0, label=label)
    scribbles = summary.get("protocol") == "autopet5"
    for ax, metric in zip(axes, metrics, strict=True):
        ax.set_xlabel("step (0: no scribble, then one scribble each)" if scribbles
                      else "clicks (tumour + background pairs)")
        ax.set_ylabel(LABELS[metric])
        ax.set_xticks(range(summary["n_steps"]))
        ax.grid(alpha=0.3)
        if metric in ("dice", "dmm"):
            ax.set_ylim(bottom=max(0.0, ax.get_ylim()[0]), top=min(1.0, ax.get_ylim()[1] + 0.02))
        else:
            ax.set_ylim(bottom=0)
        name = LABELS[metric].split(" (")[0]
        ax.set_title(name[0].upper() + name[1:] + " (mean, 95 % CI band)", fontsize=10)
    axes[0].legend(fontsize=8, loc="lower right")
    suffix = f" ({tracer.upper()} cases)" if tracer else ""
    fig.suptitle((title or "Interactive evaluation") + suffix)
    fig.tight_layout()
    return write_figure(fig, out, dpi=90)
