"""3D metrics for the ScanNetv2 portion of ReasonSeg (evaluation with `--scannet-root`).

For a ReasonSeg image `sceneXXXX_YY_N.jpg`, the scene's export
`{scannet_root}/sceneXXXX_YY/` (color, depth, pose, intrinsic, mesh) is searched for
the frame the image was taken from (training.data.scannet_frames.associate). The
ground-truth mask (== 1; ignore pixels count as outside) and the predicted mask are
then lifted onto the scene mesh's vertices through that frame's depth and pose
(lisa_ros.geometry.scannet.lift_masks_to_vertices), and compared (lisa_ros.geometry's 3D metrics):

* point IoU of the two vertex sets,
* IoU of their axis-aligned 3D boxes (in the scene's axis-aligned frame), giving
  Acc@0.25 / Acc@0.5 as in ScanRefer (an empty prediction scores box IoU 0).

Images whose scene is not exported, or whose best frame scores below `min_score`
(NCC), are counted as skipped. Everything is kept as sums so ranks can all-reduce.
"""

from __future__ import annotations

import os

import numpy as np

from lisa_ros.geometry import accuracy_at, axis_aligned_box, box_iou_3d, point_iou
from lisa_ros.geometry.scannet import ScanNetScene, lift_masks_to_vertices

from .data.scannet_frames import associate

SUM_KEYS = ("count", "point_iou", "box_iou", "hits_025", "hits_050", "skipped")


class ScanNet3DScorer:
    """Lifts 2D masks of ReasonSeg ScanNet images to 3D and accumulates 3D metrics.

    Arguments:
        scannet_root (str): folder of exported scenes `sceneXXXX_YY/`.
        min_score (float): lowest NCC accepted for a frame association.
        depth_tolerance (float): metres, the visibility test of the lifting.
    """

    def __init__(self, scannet_root: str, min_score: float = 0.9, depth_tolerance: float = 0.2):
        self.root = scannet_root
        self.min_score = min_score
        self.depth_tolerance = depth_tolerance
        self._scenes: dict[str, object] = {}
        self._thumbnails: dict = {}
        self.associations: dict[str, tuple[int, float] | None] = {}

    @staticmethod
    def empty() -> dict[str, float]:
        return {key: 0.0 for key in SUM_KEYS}

    def _scene(self, scene_id: str):
        if scene_id not in self._scenes:
            self._scenes[scene_id] = ScanNetScene(os.path.join(self.root, scene_id))
        return self._scenes[scene_id]

    def associate(self, image: np.ndarray, image_name: str, scene_id: str) -> int | None:
        """The associated frame id of an image (cached by name), or None when unavailable."""
        if image_name not in self.associations:
            scene_dir = os.path.join(self.root, scene_id)
            found = associate(image, scene_dir, cache=self._thumbnails) if os.path.isdir(scene_dir) else None
            self.associations[image_name] = found
        found = self.associations[image_name]
        return found[0] if found is not None and found[1] >= self.min_score else None

    def _lift(self, scene, frame: int, mask: np.ndarray) -> np.ndarray:
        return lift_masks_to_vertices(scene, [frame], [mask], depth_tolerance=self.depth_tolerance)

    @staticmethod
    def _box(vertices: np.ndarray) -> tuple[np.ndarray, np.ndarray] | None:
        return axis_aligned_box(vertices) if len(vertices) else None

    def add(self, sums: dict[str, float], sample, info: dict, predictions: np.ndarray) -> None:
        """Score one conversation's masks: predictions bool (n, H, W), info["target"] uint8 (n, H, W)."""
        scene_id = info.get("scene")
        frame = self.associate(sample.image, info["image_name"], scene_id) if scene_id else None
        if frame is None:
            sums["skipped"] += len(predictions)
            return
        scene = self._scene(scene_id)
        aligned = self._scannet_vertices(scene)
        for pred, target in zip(predictions, info["target"]):
            gt_points = self._lift(scene, frame, target == 1)
            pred_points = self._lift(scene, frame, pred)
            gt_box, pred_box = self._box(aligned[gt_points]), self._box(aligned[pred_points])
            box_iou = 0.0 if gt_box is None or pred_box is None else box_iou_3d(*pred_box, *gt_box)
            sums["count"] += 1
            sums["point_iou"] += point_iou(pred_points, gt_points)
            sums["box_iou"] += box_iou
            sums["hits_025"] += accuracy_at([box_iou], 0.25)
            sums["hits_050"] += accuracy_at([box_iou], 0.5)

    @staticmethod
    def _scannet_vertices(scene) -> np.ndarray:
        return scene.vertices(aligned=True)

    @staticmethod
    def summary(sums: dict[str, float]) -> dict:
        """Means over the scored masks: point_iou, box_iou, acc@0.25, acc@0.5, with counts."""
        count = sums["count"]
        mean = (lambda key: sums[key] / count) if count else (lambda key: float("nan"))
        return {
            "point_iou": mean("point_iou"),
            "box_iou": mean("box_iou"),
            "acc@0.25": mean("hits_025"),
            "acc@0.5": mean("hits_050"),
            "count": int(count),
            "skipped": int(sums["skipped"]),
        }
