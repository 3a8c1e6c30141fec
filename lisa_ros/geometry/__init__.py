"""Masks + depth + intrinsics + pose -> 3D target regions, without ROS or torch.

Conventions used throughout:
  * Pixels: column u (x, to the right) and row v (y, down); integer (u, v) is the
    *centre* of a pixel, so pixel (0, 0) covers [-0.5, 0.5] x [-0.5, 0.5].
  * Camera optical frame (ROS `*_optical_frame`, ScanNet, OpenCV): x right, y down,
    z forward, metres. Depth is the z coordinate, not the distance along the ray.
  * Poses are 4x4 camera-to-world matrices (ScanNet `pose/<frame>.txt`, or a tf
    lookup of the camera frame in the target frame): p_world = T @ p_camera.
  * Depth in metres as float32 with NaN for "no measurement" (`depth_to_meters`).

The pieces, in the order the pipeline uses them:
  `CameraIntrinsics` -> `depth_to_meters` -> `backproject_mask` -> `transform_points`
  -> `extract_region` (one frame) or `RegionFusion` (several frames) -> `TargetRegion`.

Modules: camera (intrinsics, projection), depth (raw depth -> metres), backprojection
(masks -> camera-frame points), poses (pose checks, look_at, transforms), visibility
(the ScanNet visibility test), voxels, boxes (axis-aligned and oriented), region
(`extract_region`; open3d is imported on first use), fusion (`RegionFusion`), metrics
(3D IoUs and accuracy), scannet (ScanNet scenes on disk, masks lifted onto the mesh).
"""

from .backprojection import backproject_mask, resample_mask
from .boxes import axis_aligned_box
from .camera import CameraIntrinsics
from .depth import depth_to_meters
from .fusion import RegionFusion
from .metrics import accuracy_at, box_iou_3d, point_iou
from .poses import is_valid_pose, look_at, transform_points
from .region import TargetRegion, extract_region
from .visibility import visible_points
from .voxels import voxel_downsample

__all__ = [
    "CameraIntrinsics",
    "RegionFusion",
    "TargetRegion",
    "accuracy_at",
    "axis_aligned_box",
    "backproject_mask",
    "box_iou_3d",
    "depth_to_meters",
    "extract_region",
    "is_valid_pose",
    "look_at",
    "point_iou",
    "resample_mask",
    "transform_points",
    "visible_points",
    "voxel_downsample",
]
