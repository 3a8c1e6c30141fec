"""Render what config/lisa.rviz and config/lisa.foxglove.json show, from an output bag, as PNGs.

RViz and Foxglove cannot run here (no display, no ROS install), so the README's pictures
of the two shipped views are renders of the equivalent picture made with matplotlib from
the messages the node published (the demo's output bag, `make demo`): the overlay image,
the target cloud, the markers (oriented box, centroid, label) and the tf frames, the
answer text and the live targets. They are not screenshots of RViz or Foxglove.

  python -m lisa_ros.cli.render_views --bag outputs/demo/eval/bag --output docs/images
"""

from __future__ import annotations

import argparse
import sys
from pathlib import Path

import numpy as np

from lisa_ros.bag.bagfile import open_reader, read_messages
from lisa_ros.bag.transforms import TF_TOPICS, TransformTree
from lisa_ros.bag.typestore import typestore
from lisa_ros.runtime import codec
from lisa_ros.runtime.message_fields import MARKER_CUBE, MARKER_SPHERE, MARKER_TEXT_VIEW_FACING, pose_msg_to_matrix

TOPICS = ("/lisa/overlay", "/lisa/target_cloud", "/lisa/markers", "/lisa/explanation", "/lisa/targets")
NOTICE = "rendered with matplotlib from {bag}: the equivalent picture, not a screenshot"


def first_answer(bag: Path, answer: int = 0) -> dict:
    """The messages of the `answer`-th answer with a 3D region in `bag`: overlay, target_cloud and
    markers of one image stamp, the explanation and targets published with them, and the tf tree."""
    store = typestore()
    reader = open_reader(bag)
    tree, by_stamp, latest, found, chosen = TransformTree(), {}, {}, [], None
    try:
        for connection, _, raw in read_messages(reader, bag):
            topic = connection.topic
            if topic not in TOPICS and topic not in TF_TOPICS:
                continue
            message = store.deserialize_cdr(raw, connection.msgtype)
            if topic in TF_TOPICS:
                tree.add(message)
                continue
            if topic in ("/lisa/explanation", "/lisa/targets"):
                latest[topic] = message
                if chosen is not None and topic == "/lisa/targets":  # published after the 3D outputs
                    return {**chosen, **latest, "tf": tree}
                continue
            if chosen is not None:  # the next image's outputs: the answer had no targets message
                return {**chosen, **latest, "tf": tree}
            header = message.markers[0].header if topic == "/lisa/markers" and message.markers else message.header
            stamp = header.stamp
            key = (stamp.sec, stamp.nanosec)
            views = by_stamp.setdefault(key, {})
            views.setdefault(topic, message)
            markers = views["/lisa/markers"].markers if "/lisa/markers" in views else []
            if len(views) == 3 and any(m.type == MARKER_CUBE for m in markers) and key not in found:
                found.append(key)
                if len(found) > answer:
                    chosen = views
    finally:
        reader.close()
    if chosen is not None:
        return {**chosen, **latest, "tf": tree}
    raise ValueError(f"{bag} has no answer with a 3D region (overlay, target_cloud and markers of one stamp)")


def _cloud_points(cloud) -> np.ndarray:
    data = np.frombuffer(bytes(cloud.data), np.uint8).reshape(-1, cloud.point_step)
    return data[:, :12].copy().view("<f4").reshape(-1, 3)


def _box_edges(marker) -> list[np.ndarray]:
    """The 12 edges of a CUBE marker, in its frame."""
    matrix = pose_msg_to_matrix(marker.pose)
    half = np.array([marker.scale.x, marker.scale.y, marker.scale.z]) / 2
    corners = np.array([[sx, sy, sz] for sx in (-1, 1) for sy in (-1, 1) for sz in (-1, 1)]) * half
    corners = corners @ matrix[:3, :3].T + matrix[:3, 3]
    pairs = [(a, b) for a in range(8) for b in range(a + 1, 8) if bin(a ^ b).count("1") == 1]
    return [corners[[a, b]] for a, b in pairs]


def _draw_3d(axes, views: dict, dark: bool) -> None:
    """Target cloud, markers and tf axes of the camera in the cloud's frame, as RViz's 3D view shows them."""
    cloud = views["/lisa/target_cloud"]
    frame = cloud.header.frame_id
    points = _cloud_points(cloud)
    axes.scatter(*points.T, s=2, c="#00ff00", depthshade=False, label="/lisa/target_cloud")
    for marker in views["/lisa/markers"].markers:
        position = np.array([marker.pose.position.x, marker.pose.position.y, marker.pose.position.z])
        if marker.type == MARKER_CUBE:
            for edge in _box_edges(marker):
                axes.plot(*edge.T, color="#33dd55", linewidth=1.5)
        elif marker.type == MARKER_SPHERE:
            axes.scatter(*position, s=60, c="#ff3319", depthshade=False)
        elif marker.type == MARKER_TEXT_VIEW_FACING:
            axes.text(*position, marker.text + "  ", color="white" if dark else "black", fontsize=7, ha="right")
    frames = [frame] + [child for child in views["tf"].parents if child != frame]
    span = max(float(np.ptp(points, axis=0).max()) if len(points) else 0.2, 0.2)
    for child in frames:
        try:
            pose = views["tf"].lookup(frame, child)
        except LookupError:
            continue
        origin = pose[:3, 3]
        for column, color in zip(range(3), ("#ff0000", "#00cc00", "#0066ff")):
            axes.plot(*np.stack([origin, origin + pose[:3, column] * span * 0.3]).T, color=color, linewidth=2)
        axes.text(*origin, f" {child}", color="#dddddd" if dark else "#333333", fontsize=7)
    axes.set_xlabel("x (m)", fontsize=7)
    axes.set_ylabel("y (m)", fontsize=7)
    axes.set_zlabel("z (m)", fontsize=7)
    axes.tick_params(labelsize=6)
    axes.set_title(f"3D: target_cloud, markers, TF (fixed frame {frame})", fontsize=9, color="white" if dark else "k")


def _overlay(views: dict) -> np.ndarray:
    return codec.image_to_rgb(views["/lisa/overlay"])


def render_rviz(views: dict, path: Path, bag: Path) -> None:
    """The RViz view: the overlay Image display beside the 3D view, on RViz's grey."""
    from matplotlib.figure import Figure

    figure = Figure(figsize=(12, 5.2), facecolor="#303030")
    image_axes = figure.add_subplot(1, 2, 1)
    image_axes.imshow(_overlay(views))
    image_axes.set_title("Image: /lisa/overlay", fontsize=9, color="white")
    image_axes.axis("off")
    axes = figure.add_subplot(1, 2, 2, projection="3d", facecolor="#303030")
    _draw_3d(axes, views, dark=True)
    for axis in (axes.xaxis, axes.yaxis, axes.zaxis):
        axis.label.set_color("white")
        axis.set_tick_params(colors="#bbbbbb")
    figure.suptitle("config/lisa.rviz, " + NOTICE.format(bag=bag), fontsize=9, color="#cccccc")
    figure.tight_layout()
    figure.savefig(path, dpi=90, facecolor=figure.get_facecolor())


def render_foxglove(views: dict, path: Path, bag: Path) -> None:
    """The Foxglove layout: Image and 3D panels above the answer's and the targets' Raw Messages panels."""
    from matplotlib.figure import Figure

    figure = Figure(figsize=(12, 7.5), facecolor="#f4f4f6")
    grid = figure.add_gridspec(2, 2, height_ratios=[3, 1])
    image_axes = figure.add_subplot(grid[0, 0])
    image_axes.imshow(_overlay(views))
    image_axes.set_title("Image  /lisa/overlay", fontsize=9, loc="left")
    image_axes.axis("off")
    _draw_3d(figure.add_subplot(grid[0, 1], projection="3d"), views, dark=False)
    answer = views.get("/lisa/explanation")
    targets = views.get("/lisa/targets")
    texts = (
        ("Raw Messages  /lisa/explanation.data", repr(answer.data) if answer is not None else "(none yet)"),
        (
            "Raw Messages  /lisa/targets",
            "\n".join(f"id {t.id}: {t.command!r} score {t.score:.2f} status {t.status}" for t in targets.targets)
            if targets is not None
            else "(none yet)",
        ),
    )
    for column, (title, text) in enumerate(texts):
        axes = figure.add_subplot(grid[1, column])
        axes.axis("off")
        axes.set_title(title, fontsize=9, loc="left")
        axes.text(0, 0.9, text, fontsize=8, family="monospace", va="top", wrap=True)
    figure.suptitle("config/lisa.foxglove.json, " + NOTICE.format(bag=bag), fontsize=9)
    figure.tight_layout()
    figure.savefig(path, dpi=90, facecolor=figure.get_facecolor())


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m lisa_ros.cli.render_views", description=__doc__.split("\n\n")[0])
    parser.add_argument("--bag", type=Path, default=Path("outputs/demo/eval/bag"), help="an output bag (make demo)")
    parser.add_argument("--output", type=Path, default=Path("docs/images"))
    parser.add_argument("--answer", type=int, default=0, help="which answer with a 3D region to show (0: the first)")
    args = parser.parse_args(argv)
    import matplotlib

    matplotlib.use("Agg")
    try:
        views = first_answer(args.bag, args.answer)
    except (ValueError, OSError) as error:
        print(f"render_views: {error}", file=sys.stderr)
        return 2
    args.output.mkdir(parents=True, exist_ok=True)
    render_rviz(views, args.output / "rviz_view.png", args.bag)
    render_foxglove(views, args.output / "foxglove_view.png", args.bag)
    print(f"wrote {args.output / 'rviz_view.png'} and {args.output / 'foxglove_view.png'}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
