"""report.html: a summary of the metrics, one row per command with its overlay, latency tables and charts."""

from __future__ import annotations

from pathlib import Path

from lisa_ros.runtime import message_fields as fields
from lisa_ros.runtime.types import NS_PER_S, Status

from .charts import latency_charts
from .metrics import Answer

TEMPLATES = Path(__file__).resolve().parent / "templates"


def write_report(
    output: Path,
    answers: list[Answer],
    metrics: dict,
    latency_values: dict | None = None,
    strips: dict[int, str] | None = None,
) -> Path:
    """Write report.html in `output` with overlays (overlays/command_NNNN.png: the answer's masks,
    the 2D ground truth's outline in yellow) and latency histograms (latency_*.png).

    Arguments:
        answers: the evaluated commands; each Answer's `overlay` is set to its overlay's path.
        metrics: compute_metrics()' dict with its "input", "output" and "tracking" sections.
        latency_values: stage -> seconds, for the histograms (lisa_ros.bag.metrics.latency_values).
        strips: command id -> the strip of its tracked images (lisa_ros.bag.tracking.write_strips).
    Returns the report's path.
    """
    for item in answers:
        _write_overlay(output, item)
    html = _template().render(
        stopped_by=metrics["stopped_by"],
        input=metrics["input"],
        output=metrics["output"],
        counts=metrics["counts"],
        seg=metrics["segmentation_2d"],
        r3=metrics["regions_3d"],
        tracking=metrics.get("tracking"),
        rows=[_row(item) for item in answers],
        strips=strips or {},
        latency=metrics["latency_s"],
        charts=latency_charts(output, latency_values or {}),
    )
    path = output / "report.html"
    path.write_text(html, encoding="utf-8")
    return path


def _write_overlay(output: Path, item: Answer) -> None:
    """The node's overlay image of the answer (none for errors), with the 2D truth's outline."""
    from lisa_model.visualize import mask_outline, save_png

    overlay = fields.overlay_image(item.result)
    if overlay is None:
        return
    if item.truth is not None and item.truth.has_2d:
        overlay = overlay.copy()
        overlay[mask_outline(item.truth.mask(*overlay.shape[:2]).astype(bool))] = (255, 255, 0)
    item.overlay = f"overlays/command_{int(item.result.command_id):04d}.png"
    save_png(output / item.overlay, overlay)


def _row(item: Answer) -> dict:
    """The commands table's row of one answer (an error shows its message as the answer; notes:
    the answer was truncated, the conversation reset)."""
    result = item.result
    status = Status(result.status).name
    notes = (("truncated", result.truncated), ("conversation reset", result.conversation_reset))
    return {
        "id": result.command_id,
        "time_s": item.log_time / NS_PER_S,
        "command": result.command,
        "answer": result.answer if status != "ERROR" else result.error,
        "status": status,
        "notes": ", ".join(note for note, flag in notes if flag),
        "iou": item.iou,
        "iou_3d": item.iou_3d,
        "first_mask_s": result.timings.get("first_mask"),
        "total_s": result.timings.get("total"),
        "overlay": item.overlay,
    }


def _fixed(value, digits: int = 3) -> str:
    """A number with `digits` decimals; "" for None."""
    return "" if value is None else f"{value:.{digits}f}"


def _template():
    import jinja2

    environment = jinja2.Environment(
        loader=jinja2.FileSystemLoader(TEMPLATES),
        autoescape=True,
        undefined=jinja2.StrictUndefined,
        trim_blocks=True,
        lstrip_blocks=True,
        keep_trailing_newline=True,
    )
    environment.filters["fixed"] = _fixed
    return environment.get_template("report.html.j2")
