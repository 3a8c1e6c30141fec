"""Masks -> 3D target regions: depth, camera_info and camera poses matched to the image by stamp.

Each mask of an answer becomes a `lisa_ros.geometry.TargetRegion` (back-projection with
depth and intrinsics, then the camera pose, then region extraction). A frame may carry its
depth, intrinsics and camera pose itself (the bag tools, datasets); otherwise the lifter
matches the ones it has cached (`set_depth`, `set_camera_info`, `set_camera_pose`, or a
`pose_lookup` such as tf2) to the image by stamp, within `max_depth_skew` seconds. The
returned status says why a region is missing; the 2D answer stands either way.
"""

from __future__ import annotations

import logging
import traceback
from dataclasses import dataclass
from typing import Callable

import numpy as np

from lisa_ros import geometry

from .stamps import StampCache, Stamped, skew_error
from .types import Frame


@dataclass
class View:
    """What one frame gives the 3D stage: depth in metres, its intrinsics, the camera pose.

    pose is the camera-to-`region_frame` transform, or None when regions stay in the
    camera frame (then views of a moving camera cannot be fused).
    """

    depth: np.ndarray
    intrinsics: geometry.CameraIntrinsics
    pose: np.ndarray | None
    region_frame: str
    depth_stamp: int = 0  # the stamp of the depth image used, nanoseconds


# Node parameters that are RegionLifter attributes of the same name.
GEOMETRY_PARAMETERS = ("min_depth", "max_depth", "mask_erosion", "max_depth_skew", "voxel_size", "target_frame")


class RegionLifter:
    """The 3D stage of the pipeline: cached depth, intrinsics and poses; masks -> regions.

    The `set_*` methods may be called from any thread; `regions` from one at a time.
    """

    def __init__(
        self,
        min_depth: float = 0.1,
        max_depth: float = 10.0,
        mask_erosion: int = 2,
        max_depth_skew: float = 0.05,
        voxel_size: float = 0.01,
        target_frame: str = "",
        pose_lookup: Callable[[str, int], tuple[np.ndarray, str]] | None = None,
        logger=None,
    ):
        """
        Arguments:
            min_depth, max_depth (float): metres; depth outside is ignored.
            mask_erosion (int): pixels eroded off each mask before back-projection, so that
                edge pixels do not pick up background depth.
            max_depth_skew (float): seconds the cached depth, camera_info and pose may be
                apart from the image; 0: any (the nearest is used).
            voxel_size (float): metres; the region's down-sampling grid.
            target_frame (str): the regions' frame; "": the camera frame. Reached through
                `pose_lookup`; without one the regions stay in the camera frame (and the
                status says so).
            pose_lookup (callable(camera_frame, stamp) -> (4x4 camera-to-target, target frame)
                | None): e.g. tf2, or `cached_pose` (poses given to `set_camera_pose`);
                raises LookupError with the reason when it has no pose.
            logger: anything with an error(str) method; default: logging.
        """
        self.min_depth = float(min_depth)
        self.max_depth = float(max_depth)
        self.mask_erosion = int(mask_erosion)
        self.max_depth_skew = float(max_depth_skew)
        self.voxel_size = float(voxel_size)
        self.target_frame = str(target_frame)
        self.pose_lookup = pose_lookup
        self.logger = logger or logging.getLogger(__name__)
        self._depths = StampCache()
        self._camera_infos = StampCache()
        self._poses = StampCache()

    def set_depth(self, depth, stamp: int, frame_id: str = "") -> Stamped:
        """Cache a depth image registered to the camera images (the newest few are kept).

        Arguments:
            depth (ndarray float32 [h,w] | callable): metres (NaN or 0 where invalid), or a
                function returning them (called only if a command needs this depth); a
                ValueError it raises makes this depth unusable, with that reason.
            stamp (int): its stamp, nanoseconds.
            frame_id (str): its optical frame (the regions' frame without a target_frame).
        """
        item = Stamped(int(stamp), frame_id)
        if callable(depth):
            item.decode = depth
        else:
            item.value = depth
        return self._depths.put(item)

    def set_camera_info(self, intrinsics, stamp: int, frame_id: str = "", error: str = "") -> Stamped:
        """Cache the intrinsics of the depth image (lisa_ros.geometry.CameraIntrinsics), or
        `error` saying why a camera_info message was unusable."""
        return self._camera_infos.put(Stamped(int(stamp), frame_id, value=intrinsics, error=error))

    def set_camera_pose(self, pose, stamp: int, target_frame: str) -> Stamped:
        """Cache a camera pose: the 4x4 camera-to-`target_frame` transform at `stamp`
        (used by `cached_pose`)."""
        return self._poses.put(Stamped(int(stamp), target_frame, value=np.asarray(pose, dtype=np.float64)))

    def cached_pose(self, camera_frame: str, stamp: int) -> tuple[np.ndarray, str]:
        """A `pose_lookup` over the poses given to `set_camera_pose`: the nearest by stamp.

        Raises LookupError when none was received, it is too far from `stamp`
        (max_depth_skew), or it is in another frame than target_frame.
        """
        item = self._poses.nearest(int(stamp))
        if item is None:
            raise LookupError("no camera pose received yet (pose_topic)")
        if self.target_frame and item.frame_id != self.target_frame:
            raise LookupError(f"the camera poses are in {item.frame_id!r}, not target_frame {self.target_frame!r}")
        message = skew_error("camera pose", item, stamp, self.max_depth_skew)
        if message:
            raise LookupError(message)
        return item.value, item.frame_id

    def has_depth(self, stamp: int) -> bool | None:
        """Whether a cached depth image and camera_info are within max_depth_skew of `stamp`;
        None when no depth image was ever cached (depth is not in use)."""
        if not len(self._depths):
            return None
        return all(cache.within(stamp, self.max_depth_skew) is not None for cache in (self._depths, self._camera_infos))

    def inputs_awaited(self, frame: Frame) -> bool:
        """True when `frame` relies on the cached depth, camera_info (and camera poses) and one
        of them for its stamp has not arrived yet, but may (StampCache.awaited)."""
        if frame.depth is not None:
            return False
        caches = [self._depths, self._camera_infos] + ([self._poses] if self.pose_lookup == self.cached_pose else [])
        return any(cache.awaited(frame.stamp, self.max_depth_skew) for cache in caches)

    def view(self, frame: Frame, rgb: np.ndarray) -> tuple[View | None, str]:
        """The depth, intrinsics and pose matched to `frame`; never raises.

        Returns:
            (view, note): the View (None when there is none) and a note saying why there is
            none, or what is wrong with it (e.g. regions stay in the camera frame).
        """
        try:
            inputs, note = self._inputs(frame, rgb)
        except Exception as error:  # a geometry failure must not lose the 2D answer
            self.logger.error(f"3D inputs failed: {traceback.format_exc()}")
            return None, f"failed: {type(error).__name__}: {error}"
        if inputs is None:
            return None, note
        return View(*inputs), note

    def lift(self, mask: np.ndarray, view: View, region: bool = True) -> tuple[np.ndarray, object, str]:
        """One mask's points (in view.region_frame) and 3D region; never raises.

        Arguments:
            region (bool): False: the points only (a tracked view that is fused into the
                target's region needs no region of its own).

        Returns:
            (points float [N,3], TargetRegion | None, why there is no region: "" when there is one).
        """
        try:
            points = geometry.backproject_mask(
                mask, view.depth, view.intrinsics, self.min_depth, self.max_depth, self.mask_erosion
            )
            if len(points) == 0:
                return points, None, "no valid depth under the mask"
            if view.pose is not None:
                points = geometry.transform_points(points, view.pose)
            if not region:
                return points, None, ""
            extracted = geometry.extract_region(points, voxel_size=self.voxel_size)
            if extracted is None:
                return points, None, f"no consistent cluster in its {len(points)} depth points"
            return points, extracted, ""
        except Exception as error:
            self.logger.error(f"3D region failed: {traceback.format_exc()}")
            return np.zeros((0, 3)), None, f"failed: {type(error).__name__}: {error}"

    def _inputs(self, frame: Frame, rgb: np.ndarray):
        """((depth, intrinsics, pose | None, region frame, depth stamp), note) for `frame`, or (None, reason)."""
        if frame.depth is not None:  # the frame brings its own (bag evaluator, datasets)
            depth_item = Stamped(frame.stamp, frame.depth_frame_id or frame.frame_id)
            if callable(frame.depth):
                depth_item.decode = frame.depth
            else:
                depth_item.value = frame.depth
            if frame.intrinsics is None:
                return None, "the frame has depth but no intrinsics"
            info_item = Stamped(frame.stamp, depth_item.frame_id, value=frame.intrinsics)
        else:
            depth_item = self._depths.nearest(frame.stamp)
            if depth_item is None:
                return None, "no depth image received (depth_topic)"
            info_item = self._camera_infos.nearest(frame.stamp)
            if info_item is None:
                return None, "no camera_info received (camera_info_topic)"
            for what, item in (("depth image", depth_item), ("camera_info", info_item)):
                message = skew_error(what, item, frame.stamp, self.max_depth_skew)
                if message:
                    return None, message
        try:
            depth = np.asarray(depth_item.get(), dtype=np.float32)
        except ValueError as error:
            return None, f"invalid depth image: {error}"
        try:
            intrinsics = info_item.get()
        except ValueError as error:
            return None, f"invalid camera_info: {error}"
        if depth.ndim != 2 or depth.size == 0:
            return None, f"invalid depth image: expected a 2D array, got shape {depth.shape}"
        height, width = depth.shape
        image_height, image_width = rgb.shape[:2]
        if abs(width * image_height - height * image_width) > 0.01 * width * image_height:
            return None, (
                f"the depth image ({width}x{height}) and the image ({image_width}x{image_height}) "
                "have different aspect ratios: depth must be registered to the image"
            )
        if not (intrinsics.width > 0 and intrinsics.height > 0 and intrinsics.fx > 0 and intrinsics.fy > 0):
            return None, "invalid camera_info: no calibration (zero K or size)"
        if (intrinsics.width, intrinsics.height) != (width, height):
            if abs(intrinsics.width * height - intrinsics.height * width) > 0.01 * intrinsics.width * height:
                return None, (
                    f"camera_info is for {intrinsics.width}x{intrinsics.height} images, "
                    f"the depth image is {width}x{height} (another aspect ratio)"
                )
            intrinsics = intrinsics.scaled(width, height)
        camera_frame = depth_item.frame_id or frame.frame_id
        if frame.depth is not None:
            if frame.pose is None:
                return (depth, intrinsics, None, camera_frame, depth_item.stamp), ""
            pose, region_frame = np.asarray(frame.pose, dtype=np.float64), frame.target_frame
        elif self.pose_lookup is not None:
            try:
                pose, region_frame = self.pose_lookup(camera_frame, frame.stamp)
            except LookupError as error:
                target = self.target_frame or "the target frame"
                return None, f"no camera pose in {target} for the image: {error}"
            pose = np.asarray(pose, dtype=np.float64)
        else:
            note = ""
            if self.target_frame and self.target_frame != camera_frame:
                note = (
                    f"target_frame {self.target_frame!r} is unreachable (no tf2_ros and no pose_topic): "
                    f"regions are in the camera frame {camera_frame!r}"
                )
            return (depth, intrinsics, None, camera_frame, depth_item.stamp), note
        if not geometry.is_valid_pose(pose):
            return None, "the camera pose is invalid (not a finite rigid transform)"
        return (depth, intrinsics, pose, region_frame, depth_item.stamp), ""
