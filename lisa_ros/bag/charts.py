"""Latency histograms (PNG, matplotlib's Agg backend) for the report."""

from __future__ import annotations

from pathlib import Path


def latency_charts(output: Path, latency: dict[str, list[float]]) -> list[str]:
    """Write latency_total.png (the total latency per command) and latency_stages.png (one
    histogram per stage) in `output`; latency: stage -> seconds. Returns the written file names."""
    if not latency:
        return []
    import matplotlib

    matplotlib.use("Agg")
    charts = []
    total = list(latency.get("total", []))
    stages = [(stage, values) for stage, values in latency.items() if values]
    if total:
        _total_chart(output / "latency_total.png", total)
        charts.append("latency_total.png")
    if stages:
        _stage_charts(output / "latency_stages.png", stages)
        charts.append("latency_stages.png")
    return charts


def _total_chart(path: Path, total: list[float]) -> None:
    from matplotlib.figure import Figure

    figure = Figure(figsize=(6, 3.5))
    axes = figure.subplots()
    axes.hist(total, bins=min(30, max(5, len(total))), color="#3a7")
    axes.set_xlabel("seconds")
    axes.set_ylabel("commands")
    axes.set_title("total latency per command")
    figure.tight_layout()
    figure.savefig(path, dpi=80)


def _stage_charts(path: Path, stages: list[tuple[str, list[float]]]) -> None:
    """A grid of histograms, three per row."""
    from matplotlib.figure import Figure

    columns = 3
    rows = (len(stages) + columns - 1) // columns
    figure = Figure(figsize=(4 * columns, 2.6 * rows))
    grid = figure.subplots(rows, columns, squeeze=False)
    for axes, (stage, values) in zip(grid.ravel(), stages):
        axes.hist(values, bins=min(20, max(5, len(values))), color="#37a")
        axes.set_title(f"{stage} (s)", fontsize=9)
        axes.tick_params(labelsize=7)
    for axes in grid.ravel()[len(stages) :]:
        axes.set_visible(False)
    figure.tight_layout()
    figure.savefig(path, dpi=80)
