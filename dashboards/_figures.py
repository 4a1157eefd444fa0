"""Matplotlib figures (Agg backend, PNG files): annotated heatmaps, curves, horizontal bars."""

from __future__ import annotations

import math
from collections.abc import Sequence
from dataclasses import dataclass, field
from pathlib import Path

import matplotlib

matplotlib.use("Agg")

import matplotlib.pyplot as plt
import numpy as np
from matplotlib.patches import Patch, Rectangle
from matplotlib.ticker import MaxNLocator

DPI = 110
STATUS_COLORS = {"finished": "#2f6fdf", "stopped": "#f59e0b", "failed": "#c53030"}


def status_color(outcome: str) -> str:
    """Bar colour for a run outcome (``finished``, ``stopped (ASHA)``, ``failed``...)."""
    return STATUS_COLORS.get(outcome.split(" ")[0], "#9aa5b1")


@dataclass
class Series:
    """One line on a curves panel."""

    label: str
    points: list[tuple[int, float]]
    dashed: bool = False


@dataclass
class Panel:
    """One axes of a curves figure."""

    title: str
    ylabel: str
    series: list[Series] = field(default_factory=list)


def _save(fig: plt.Figure, path: Path) -> Path:
    fig.savefig(path, dpi=DPI, bbox_inches="tight", facecolor="white")
    plt.close(fig)
    return path


def annotated_heatmap(
    path: Path,
    *,
    title: str,
    row_labels: Sequence[str],
    col_labels: Sequence[str],
    values: Sequence[Sequence[float]],
    notes: Sequence[Sequence[str]] | None = None,
    hatched: Sequence[Sequence[bool]] | None = None,
    best: tuple[int, int] | None = None,
    xlabel: str = "",
    ylabel: str = "",
    cbar_label: str = "",
    cmap: str = "viridis",
    fmt: str = "{:.4g}",
) -> Path:
    """A heatmap with each cell's value (and note) written in it; NaN cells are grey.

    ``hatched`` cells get a diagonal hatch (e.g. trials ASHA stopped), ``best`` a red frame.
    """
    data = np.ma.masked_invalid(np.asarray(values, dtype=float))
    n_rows, n_cols = data.shape
    fig, ax = plt.subplots(figsize=(max(4.8, 1.6 * n_cols + 2.2), max(2.6, 1.0 * n_rows + 1.4)))
    colormap = plt.get_cmap(cmap).with_extremes(bad="#e4e7eb")
    image = ax.imshow(data, cmap=colormap, aspect="auto")
    if data.count():
        fig.colorbar(image, ax=ax, label=cbar_label, fraction=0.05, pad=0.03)
    for r in range(n_rows):
        for c in range(n_cols):
            value = values[r][c]
            note = notes[r][c] if notes else ""
            text = "no data" if math.isnan(value) else fmt.format(value)
            text = f"{text}\n{note}" if note else text
            ax.text(
                c,
                r,
                text,
                ha="center",
                va="center",
                fontsize=10,
                color=_ink(colormap, image, value),
            )
            if hatched and hatched[r][c]:
                ax.add_patch(_cell(r, c, hatch="///", edgecolor="#f59e0b", lw=0))
    if best is not None:
        ax.add_patch(_cell(best[0], best[1], edgecolor="#c53030", lw=3))
    ax.set_xticks(range(n_cols), labels=list(col_labels))
    ax.set_yticks(range(n_rows), labels=list(row_labels))
    ax.set_xlabel(xlabel)
    ax.set_ylabel(ylabel)
    ax.set_title(title, fontsize=12)
    return _save(fig, path)


def _ink(colormap, image, value: float) -> str:
    """White text on dark cells, dark text on light ones."""
    if math.isnan(value):
        return "#616e7c"
    r, g, b, _ = colormap(image.norm(value))
    return "white" if 0.299 * r + 0.587 * g + 0.114 * b < 0.5 else "#1f2933"


def _cell(r: int, c: int, **kw) -> Rectangle:
    return Rectangle((c - 0.5, r - 0.5), 1, 1, fill=False, **kw)


def curves(path: Path, panels: Sequence[Panel], *, xlabel: str = "step") -> Path:
    """Side-by-side line plots sharing one legend; dashed lines for stopped runs."""
    fig, axes = plt.subplots(1, len(panels), figsize=(6.0 * len(panels), 4.2), squeeze=False)
    labels: list[str] = []
    handles = []
    palette = plt.get_cmap("tab10" if _n_series(panels) <= 10 else "tab20")
    colors: dict[str, object] = {}
    for ax, panel in zip(axes[0], panels):
        for s in panel.series:
            if not s.points:
                continue
            color = colors.setdefault(s.label, palette(len(colors) % palette.N))
            steps, vals = zip(*s.points)
            (line,) = ax.plot(
                steps, vals, "--" if s.dashed else "-", marker="o", ms=3, color=color, lw=1.6
            )
            if s.label not in labels:
                labels.append(s.label)
                handles.append(line)
        if not any(s.points for s in panel.series):
            ax.text(0.5, 0.5, "no data logged", ha="center", va="center", transform=ax.transAxes)
        ax.set_title(panel.title, fontsize=12)
        ax.set_xlabel(xlabel)
        ax.set_ylabel(panel.ylabel)
        ax.xaxis.set_major_locator(MaxNLocator(integer=True))
        ax.grid(alpha=0.3)
    if handles:
        fig.legend(
            handles,
            labels,
            loc="lower center",
            ncol=min(4, len(labels)),
            fontsize=9,
            bbox_to_anchor=(0.5, -0.02 - 0.045 * math.ceil(len(labels) / 4)),
            frameon=False,
        )
    fig.tight_layout()
    return _save(fig, path)


def _n_series(panels: Sequence[Panel]) -> int:
    return len({s.label for p in panels for s in p.series})


def bars(
    path: Path,
    *,
    title: str,
    labels: Sequence[str],
    values: Sequence[float],
    colors: Sequence[str],
    notes: Sequence[str] | None = None,
    hatched: Sequence[bool] | None = None,
    xlabel: str = "",
    legend: dict[str, str] | None = None,
    fmt: str = "{:.4g}",
) -> Path:
    """Horizontal bars, top to bottom in the given order, each with its value and note."""
    n = len(labels)
    fig, ax = plt.subplots(figsize=(8.5, max(2.2, 0.42 * n + 1.3)))
    ys = np.arange(n)[::-1]
    clean = [0.0 if math.isnan(v) else v for v in values]
    ax.barh(ys, clean, color=colors, hatch=None, edgecolor="white")
    for y, v, i in zip(ys, values, range(n)):
        if hatched and hatched[i]:
            ax.barh([y], [clean[i]], fill=False, hatch="///", edgecolor="#92400e", lw=0)
        note = notes[i] if notes else ""
        text = "no data" if math.isnan(v) else fmt.format(v)
        ax.text(clean[i], y, f"  {text}  {note}".rstrip(), va="center", fontsize=9)
    ax.set_yticks(ys, labels=list(labels))
    ax.set_xlabel(xlabel)
    ax.set_title(title, fontsize=12)
    top = max(clean, default=1.0) or 1.0
    ax.set_xlim(0, top * 1.35)
    ax.grid(axis="x", alpha=0.3)
    if legend:
        ax.legend(
            handles=[Patch(color=c, label=k) for k, c in legend.items()],
            loc="upper left",
            bbox_to_anchor=(1.01, 1.0),
            fontsize=9,
            frameon=False,
        )
    return _save(fig, path)
