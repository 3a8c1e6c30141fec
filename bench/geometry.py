"""Latency of the 3D target region path on one depth frame: back-projection, open3d region extraction, fusion.

    python -m bench.geometry
    python -m bench.geometry --repeats 200 --mask-fraction 0.05 0.25

The frame: a 640x480 16UC1 depth image (ScanNet depth intrinsics, fx = fy = 577.87) of
a camera 1.2 m above a floor, pitched 40 degrees down, looking at a 30 x 20 x 25 cm box;
2 mm depth noise and 2% missing pixels (0). The mask is the box's pixels grown or shrunk
to cover --mask-fraction of the frame, dilated by 3 pixels so that, as with real masks,
some edge pixels carry floor depth. Stages, each timed separately (medians over --repeats
runs after --warmup):

  depth          16UC1 millimetres -> float32 metres (`depth_to_meters`)
  backproject    mask + depth -> camera-frame points (`backproject_mask`, 1 px erosion)
  backproject_hr the same from a 1296x968 mask (resampled to the depth grid first)
  extract        points -> region (`extract_region`: voxels, outliers, DBSCAN, boxes)
  fusion         one `RegionFusion.add_view` into a grid that already holds 10 views

Targets (issue 5, this 2-core CPU): back-projection <= 10 ms, back-projection + region
extraction <= 30 ms.
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import statistics
import time
from pathlib import Path

import numpy as np

from bench import at_least
from lisa_ros.geometry import (
    CameraIntrinsics,
    RegionFusion,
    backproject_mask,
    depth_to_meters,
    extract_region,
    transform_points,
)
from lisa_ros.synthetic.raycast import Primitive, cast_rays, pixel_rays

INTRINSICS = CameraIntrinsics(577.87, 577.87, 319.5, 239.5, 640, 480)
STAGES = ("depth", "backproject", "backproject_hr", "extract", "fusion")
STAGE_LABELS = {
    "depth": "16UC1 -> metres",
    "backproject": "back-projection (640x480 mask)",
    "backproject_hr": "back-projection (1296x968 mask)",
    "extract": "open3d region extraction",
    "fusion": "fusion add_view (11th view)",
    "backproject_total": "depth + back-projection",
    "total": "depth + back-projection + extraction",
}
TARGETS_MS = {"backproject_total": 10.0, "total": 30.0}


def camera_pose(height: float = 1.2, pitch_deg: float = 40.0, distance: float = 1.3) -> np.ndarray:
    """Camera-to-world of a camera `distance` m behind the origin (along -y), pitched down."""
    pitch = np.radians(pitch_deg)
    forward = np.array([0.0, np.cos(pitch), -np.sin(pitch)])
    right = np.array([1.0, 0.0, 0.0])
    down = np.cross(forward, right)
    pose = np.eye(4)
    pose[:3, 0], pose[:3, 1], pose[:3, 2], pose[:3, 3] = right, down, forward, (0.0, -distance, height)
    return pose


def synthetic_frame(seed: int = 0) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """(depth uint16 480x640 millimetres, box mask bool 480x640, camera-to-world 4x4)."""
    rng = np.random.default_rng(seed)
    pose = camera_pose()
    identity, grey = tuple(map(tuple, np.eye(3).tolist())), (0.5, 0.5, 0.5)
    floor = Primitive("box", (0.0, 0.0, -0.005), identity, (20.0, 20.0, 0.005), grey)  # its top is z = 0
    box = Primitive("box", (0.0, 0.0, 0.125), identity, (0.15, 0.10, 0.125), grey)
    hits = cast_rays([floor, box], *pixel_rays(INTRINSICS, pose))  # depth: rays through pixel centres
    on_box = hits.primitive == 1
    depth = hits.t.reshape(480, 640)
    depth = depth + rng.normal(0, 0.002, depth.shape)
    depth[rng.random(depth.shape) < 0.02] = 0
    millimetres = np.clip(np.nan_to_num(depth * 1000, posinf=0), 0, 65535).astype(np.uint16)
    return millimetres, on_box.reshape(480, 640), pose


def mask_with_fraction(mask: np.ndarray, fraction: float) -> np.ndarray:
    """`mask` dilated or eroded until it covers about `fraction` of the frame, then grown 3 px."""
    import cv2

    kernel = np.ones((3, 3), np.uint8)
    current = mask.astype(np.uint8)
    target = fraction * mask.size
    step = cv2.dilate if current.sum() < target else cv2.erode
    for _ in range(400):
        candidate = step(current, kernel)
        if (candidate.sum() > target) == (step is cv2.dilate) or candidate.sum() == current.sum():
            break
        current = candidate
    return cv2.dilate(current, kernel, iterations=3).astype(bool)


def median_ms(function, repeats: int, warmup: int) -> tuple[float, object]:
    for _ in range(warmup):
        result = function()
    samples = []
    for _ in range(repeats):
        start = time.perf_counter()
        result = function()
        samples.append(time.perf_counter() - start)
    return 1000 * statistics.median(samples), result


def run_case(millimetres, box_mask, pose, fraction: float, repeats: int, warmup: int) -> dict:
    """Time every stage for one mask size."""
    import cv2

    mask = mask_with_fraction(box_mask, fraction)
    mask_hr = cv2.resize(mask.astype(np.uint8), (1296, 968), interpolation=cv2.INTER_NEAREST).astype(bool)
    ms = {}
    ms["depth"], depth_m = median_ms(lambda: depth_to_meters(millimetres), repeats, warmup)
    ms["backproject"], points = median_ms(
        lambda: backproject_mask(mask, depth_m, INTRINSICS, erode_pixels=1), repeats, warmup
    )
    ms["backproject_hr"], _ = median_ms(
        lambda: backproject_mask(mask_hr, depth_m, INTRINSICS, erode_pixels=1), repeats, warmup
    )
    world = transform_points(points, pose)
    ms["extract"], region = median_ms(lambda: extract_region(world), repeats, warmup)

    fusion = RegionFusion()
    for _ in range(10):
        fusion.add_view(world, depth_m, INTRINSICS, pose)
    ms["fusion"], _ = median_ms(lambda: fusion.add_view(world, depth_m, INTRINSICS, pose), max(1, repeats // 4), 1)

    ms["backproject_total"] = ms["depth"] + ms["backproject"]
    ms["total"] = ms["backproject_total"] + ms["extract"]
    return {
        "mask_fraction": float(mask.mean()),
        "mask_pixels": int(mask.sum()),
        "points": int(len(points)),
        "region_voxels": int(len(region.points)) if region else 0,
        "region_point_count": int(region.point_count) if region else 0,
        "median_ms": ms,
        "targets": {
            name: {"target_ms": target, "measured_ms": ms[name], "met": ms[name] <= target}
            for name, target in TARGETS_MS.items()
        },
    }


def environment() -> dict:
    import open3d

    cpu = platform.processor() or platform.machine()
    try:
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            if line.startswith("model name"):
                cpu = line.split(":", 1)[1].strip()
                break
    except OSError:
        pass
    return {
        "cpu": cpu,
        "cpu_count": os.cpu_count(),
        "omp_num_threads": os.environ.get("OMP_NUM_THREADS", "unset"),
        "numpy": np.__version__,
        "open3d": open3d.__version__,
        "python": platform.python_version(),
        "platform": platform.platform(),
    }


def format_table(cases: list[dict]) -> str:
    width = max(len(label) for label in STAGE_LABELS.values())
    header = f"  {'stage':<{width}}" + "".join(f"  {100 * case['mask_fraction']:>6.1f}% mask" for case in cases)
    lines = [header]
    for key, label in STAGE_LABELS.items():
        lines.append(f"  {label:<{width}}" + "".join(f"  {case['median_ms'][key]:>9.2f} ms" for case in cases))
    counts = "".join(f"  {case['mask_pixels']:>6d}/{case['points']:<6d}" for case in cases)
    lines.append(f"  {'masked pixels / points kept':<{width}}" + counts)
    lines.append(f"  {'region voxels':<{width}}" + "".join(f"  {case['region_voxels']:>12d}" for case in cases))
    for name, target in TARGETS_MS.items():
        verdicts = " ".join("met" if case["targets"][name]["met"] else "MISSED" for case in cases)
        lines.append(f"  target: {STAGE_LABELS[name]} <= {target:.0f} ms: {verdicts}")
    return "\n".join(lines)


def _fraction(text: str) -> float:
    value = float(text)
    if not 0 < value < 1:
        raise argparse.ArgumentTypeError(f"a fraction of the frame in (0, 1), got {text!r}")
    return value


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="python -m bench.geometry",
        description="Latency of back-projection, open3d region extraction and fusion on a 640x480 depth frame.",
    )
    parser.add_argument(
        "--mask-fraction",
        type=_fraction,
        nargs="+",
        default=[0.05, 0.25],
        help="mask sizes, as fractions of the frame (default: 0.05, a typical object, and 0.25)",
    )
    parser.add_argument("--warmup", type=at_least(0), default=5, help="untimed runs first")
    parser.add_argument("--repeats", type=at_least(1), default=50, help="timed runs; medians are reported")
    parser.add_argument("--seed", type=int, default=0, help="seed of the depth noise")
    parser.add_argument("--output", type=Path, default=Path("outputs/bench/geometry.json"), help="JSON path")
    return parser


def main(argv: list[str] | None = None) -> int:
    args = build_parser().parse_args(argv)
    millimetres, box_mask, pose = synthetic_frame(args.seed)
    cases = [
        run_case(millimetres, box_mask, pose, fraction, args.repeats, args.warmup) for fraction in args.mask_fraction
    ]
    result = {
        "environment": environment(),
        "frame": [480, 640],
        "warmup": args.warmup,
        "repeats": args.repeats,
        "cases": cases,
    }
    args.output.parent.mkdir(parents=True, exist_ok=True)
    args.output.write_text(json.dumps(result, indent=2) + "\n")
    env = result["environment"]
    print(
        f"3D region latency on a 640x480 depth frame, {env['cpu']} "
        f"({env['cpu_count']} CPUs, OMP_NUM_THREADS={env['omp_num_threads']}), "
        f"open3d {env['open3d']}; median of {args.repeats} runs after {args.warmup} warm-up"
    )
    print()
    print(format_table(cases))
    print(f"\nwrote {args.output}")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
