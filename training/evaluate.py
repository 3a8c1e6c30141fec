"""Evaluation with the ReasonSeg / refCOCO protocol of LISA: `python -m training.evaluate`.

Protocol (the reference's validation): the first query of each ReasonSeg image
(every referring expression of a refCOCO image) is asked with the fixed validation
prompt ("{sentence} Please output segmentation mask." or "What is {phrase} in this
image? Please output segmentation mask."), the answer "[SEG]." is
teacher-forced, and the mask is the model's [SEG] mask (LisaModel.forward without
labels, logits > 0) at the original resolution. gIoU / cIoU are accumulated with
lisa_model.metrics.SegmentationMeter (255 = ignore excluded).

Reported groups: ReasonSeg overall, by query kind (short / long) and by portion
(scannet / openimages); refCOCO-family overall (cIoU is the paper's number). With
`--scannet-root`, ReasonSeg ScanNet queries are also scored in 3D (see training.scannet3d).

Distributed: under `torchrun --nproc_per_node=N`, rank r takes samples r, r+N, ...
(no padding duplicates), meter states are all-reduced, rank 0 prints and writes.

Models: `--model-path DIR_OR_HUB_ID` loads a released / saved LISA checkpoint with
lisa_model.load_lisa; `--model tiny` builds the offline random-weight tiny model
(lisa_model.build_lisa_tiny, `--seed`), for smoke tests on miniature data only.
"""

from __future__ import annotations

import argparse
import inspect
import json
import math
import os
import sys
from dataclasses import dataclass, field
from typing import Callable

import numpy as np
import torch

from lisa_model.metrics import SegmentationMeter, intersection_union, mask_iou
from lisa_model.processing.conversation import Turn

from . import cli
from . import distributed as dist_utils
from .data import templates
from .data.collate import collate, to_device
from .data.reason_seg import ReasonSegDataset
from .data.sample import Sample

PROG = "python -m training.evaluate"
REASON_SEG_GROUPS = ("overall", "short", "long", "scannet", "openimages")


def reason_seg_groups(meta: dict) -> list[str]:
    """The groups a ReasonSeg query counts in: overall, its query kind, its portion."""
    return ["overall", "long" if meta["is_sentence"] else "short", meta["portion"]]


@dataclass
class EvalTask:
    """One dataset/split to evaluate.

    Attributes:
        name: key in the results, e.g. "reason_seg/val" or "refcoco/val".
        dataset: map-style dataset of Samples.
        groups: every group name reported (the same on all ranks).
        groups_of: per-conversation meta -> the groups it counts in.
    """

    name: str
    dataset: object
    groups: tuple[str, ...] = ("overall",)
    groups_of: Callable[[dict], list[str]] = lambda meta: ["overall"]
    limit: int | None = None

    def __len__(self) -> int:
        return len(self.dataset) if self.limit is None else min(self.limit, len(self.dataset))


@dataclass
class TaskResult:
    meters: dict[str, SegmentationMeter]
    records: list[dict] = field(default_factory=list)
    sums_3d: dict[str, float] = field(default_factory=dict)


def validation_sample(sample: Sample, use_im_start_end: bool) -> Sample:
    """The sample with the validation formulation: one single-turn conversation per
    query, the fixed validation prompt and the teacher-forced answer "[SEG].".

    Conversations whose meta names a "query" (or a referring "sentence") are rebuilt
    from it (is_sentence defaults to False, the refCOCO case); others are kept as
    they are. Conversations
    without masks (text-only answers) are dropped: there is nothing to score.
    """
    infos = sample.meta.get("conversation_meta") or [{} for _ in sample.conversations]
    conversations, masks, kept = [], [], []
    for turns, stack, info in zip(sample.conversations, sample.masks, infos):
        if stack.shape[0] == 0:
            continue
        query = info.get("query", info.get("sentence"))
        if query is not None:
            message = templates.validation_user_message(query, bool(info.get("is_sentence", False)), use_im_start_end)
            # One [SEG] per conversation: keep only the first target mask.
            turns, stack = [Turn(message, templates.VALIDATION_ANSWER)], stack[:1]
        conversations.append(turns)
        masks.append(stack)
        kept.append(info)
    meta = {**sample.meta, "conversation_meta": kept}
    return Sample(sample.image, conversations, masks, sample.source, meta)


@torch.no_grad()
def predict_masks(model, tokenizer, samples: list[Sample], device: torch.device) -> tuple[list[np.ndarray], list[dict]]:
    """Teacher-forced masks for every conversation of `samples` (validation formulated).

    Returns:
        (predictions, meta): per conversation a bool array (n_i, H, W) and collate's
        meta dict (with "target", the uint8 (n_i, H, W) ground truth).
    """
    batch = collate(samples, tokenizer, model.config)
    kwargs = to_device(batch, device)
    kwargs.pop("labels"), kwargs.pop("gt_masks")
    output = model(**kwargs)
    predictions = [(logits > 0).cpu().numpy() for logits in output.mask_logits]
    for prediction, info in zip(predictions, batch["meta"]):
        if prediction.shape != info["target"].shape:
            raise RuntimeError(f"model gave masks {prediction.shape} for targets {info['target'].shape}")
    return predictions, batch["meta"]


def evaluate_task(
    model,
    tokenizer,
    task: EvalTask,
    rank: int = 0,
    world_size: int = 1,
    device: torch.device = torch.device("cpu"),
    batch_size: int = 1,
    progress: bool = False,
    scorer_3d=None,
    lockstep: bool = False,
) -> TaskResult:
    """This rank's share of one task: meters per group, one record per mask, 3D sums.

    Records: {"task", "index", "conversation", "mask", "iou", "intersection",
    "union", "query", "image_name"}; `index` is the dataset index.
    """
    meters = {group: SegmentationMeter() for group in task.groups}
    result = TaskResult(meters, sums_3d=scorer_3d.empty() if scorer_3d else {})
    indices = dist_utils.shard_indices(len(task), rank, world_size)
    bar = None
    if progress:
        from tqdm import tqdm

        # Rank 0 shows the global count: every rank advances in step.
        bar = tqdm(total=len(task), desc=task.name, file=sys.stderr, dynamic_ncols=True)
    use_im_start_end = model.config.mm_use_im_start_end
    chunks = [indices[start : start + batch_size] for start in range(0, len(indices), batch_size)]
    if lockstep:
        most = math.ceil(math.ceil(len(task) / world_size) / batch_size)
        chunks += [[] for _ in range(most - len(chunks))]
    for chunk in chunks:
        samples = [validation_sample(task.dataset[i], use_im_start_end) for i in chunk]
        predictions, metas = [], []
        if any(sample.conversations for sample in samples):
            predictions, metas = predict_masks(model, tokenizer, samples, device)
        elif lockstep:
            predict_masks(model, tokenizer, [_filler_sample(task, use_im_start_end)], device)
        for prediction, info in zip(predictions, metas):
            index = chunk[info["sample_index"]]
            for k, (pred, target) in enumerate(zip(prediction, info["target"])):
                inter, union = intersection_union(pred, target)
                for group in task.groups_of(info):
                    meters[group].update(pred, target)
                result.records.append(
                    dict(task=task.name, index=index, conversation=info["conversation_index"], mask=k,
                         iou=mask_iou(pred, target), intersection=inter, union=union,
                         query=info.get("query"), image_name=info.get("image_name"))
                )
            if scorer_3d is not None and info.get("portion") == "scannet":
                scorer_3d.add(result.sums_3d, samples[info["sample_index"]], info, prediction)
        if bar is not None:
            bar.update(min(len(task) - bar.n, len(chunk) * world_size))
    if bar is not None:
        bar.close()
    return result


def _filler_sample(task: EvalTask, use_im_start_end: bool) -> Sample:
    """The task's first sample with something to score (a lockstep filler forward)."""
    for index in range(len(task)):
        sample = validation_sample(task.dataset[index], use_im_start_end)
        if sample.conversations:
            return sample
    raise ValueError(f"{task.name}: no sample has a mask to predict")


def reduce_result(result: TaskResult) -> TaskResult:
    """All ranks' meters and 3D sums added up, records concatenated (every rank gets all)."""
    return TaskResult(
        dist_utils.all_reduce_meters(result.meters),
        dist_utils.gather_lists(result.records),
        dist_utils.all_reduce_sums(result.sums_3d),
    )


def save_worst_overlays(
    model, tokenizer, tasks: dict[str, EvalTask], records: list[dict], directory: str, count: int, device
) -> list[dict]:
    """Re-predict the `count` lowest-IoU masks and save GT (green) / prediction (red) overlays."""
    from lisa_model.visualize import overlay_masks, save_png

    worst = sorted(records, key=lambda r: (r["iou"], r["task"], r["index"], r["conversation"]))[:count]
    use_im_start_end = model.config.mm_use_im_start_end
    for rank_in_list, record in enumerate(worst):
        sample = validation_sample(tasks[record["task"]].dataset[record["index"]], use_im_start_end)
        predictions, metas = predict_masks(model, tokenizer, [sample], device)
        pred = predictions[record["conversation"]][record["mask"]]
        target = metas[record["conversation"]]["target"][record["mask"]]
        image = overlay_masks(sample.image, np.stack([target == 1, pred]), colors=[(0, 220, 0), (230, 0, 0)])
        stem = os.path.splitext(record.get("image_name") or str(record["index"]))[0]
        task = record["task"].replace("/", "_")
        path = os.path.join(directory, f"{rank_in_list:03d}_{task}_{stem}_q{record['conversation']}.png")
        save_png(path, image)
        record["overlay"] = path
    return worst


def format_table(results: dict) -> str:
    """Rows task/group with gIoU, cIoU (in %) and the number of masks; empty groups are left out."""
    task_width = max([24, *(len(task) + 2 for task in results)])
    group_width = max([12, *(len(group) + 2 for groups in results.values() for group in groups)])
    lines = [f"{'task':<{task_width}}{'group':<{group_width}}{'gIoU':>8}{'cIoU':>8}{'masks':>8}"]
    for task, groups in results.items():
        for group, value in groups.items():
            if value["count"] == 0 and group != "overall":
                continue  # e.g. the other portion when one portion is evaluated
            lines.append(f"{task:<{task_width}}{group:<{group_width}}"
                         f"{100 * value['giou']:>8.2f}{100 * value['ciou']:>8.2f}{value['count']:>8d}")
    return "\n".join(lines)


def run(model, tokenizer, tasks: list[EvalTask], rank=0, world_size=1, device=torch.device("cpu"), batch_size=1,
        progress=False, scorer_3d=None, overlays: str | None = None, worst: int = 8, lockstep: bool = False) -> dict:
    """Evaluate every task; returns the results dict (identical on all ranks).

    `lockstep`: every rank runs the same number of forwards (an FSDP-sharded model's
    forward is a collective); ranks with fewer samples run discarded filler batches.
    """
    results: dict = {"metrics": {}, "world_size": world_size}
    all_records = []
    for task in tasks:
        reduced = reduce_result(
            evaluate_task(model, tokenizer, task, rank, world_size, device, batch_size, progress and rank == 0,
                          scorer_3d, lockstep)
        )
        results["metrics"][task.name] = {group: reduced.meters[group].as_dict() for group in task.groups}
        if scorer_3d is not None and reduced.sums_3d:
            results.setdefault("scannet_3d", {})[task.name] = scorer_3d.summary(reduced.sums_3d)
        all_records.extend(reduced.records)
    if overlays and rank == 0 and worst > 0:
        tasks_by_name = {t.name: t for t in tasks}
        results["worst"] = save_worst_overlays(model, tokenizer, tasks_by_name, all_records, overlays, worst, device)
    return results


# Command line.


def build_tasks(args, use_im_start_end: bool) -> list[EvalTask]:
    tasks = []
    if args.reason_seg_root:
        for split in args.splits.split(","):
            dataset = ReasonSegDataset(args.reason_seg_root, split=split, portion=args.portion, train=False,
                                       use_im_start_end=use_im_start_end, all_queries=args.all_queries)
            tasks.append(EvalTask(f"reason_seg/{split}", dataset, REASON_SEG_GROUPS, reason_seg_groups, args.limit))
    if args.refer_root:
        # The referring loader comes from training.data.refer_seg (imported only when asked for).
        from .data.refer_seg import ReferSegDataset

        accepted = inspect.signature(ReferSegDataset).parameters
        for name in args.refer_datasets.split(","):
            for split in args.refer_splits.split(","):
                options = {"train": False, "use_im_start_end": use_im_start_end}
                options = {k: v for k, v in options.items() if k in accepted}
                dataset = ReferSegDataset(args.refer_root, dataset=name, split=split, **options)
                tasks.append(EvalTask(f"{name}/{split}", dataset, limit=args.limit))
    if args.demo_scenes:
        tasks.extend(demo_scene_tasks(args.demo_split, args.demo_scenes, use_im_start_end, limit=args.limit))
    return tasks


def demo_scene_tasks(split: str, scenes: int, use_im_start_end: bool, frames_per_scene: int = 8, seed: int = 0,
                     limit: int | None = None, phrasings: tuple[str, ...] = ("heldout", "train")) -> list[EvalTask]:
    """Synthetic demo scenes of `split`, asked with the held-out phrasings, then (by default) the training ones."""
    from .data.demo_scenes import DEMO_GROUPS, DemoScenesDataset, demo_groups

    return [
        EvalTask(f"demo_scenes/{split}_{phrasing}",
                 DemoScenesDataset(split, num_scenes=scenes, frames_per_scene=frames_per_scene, phrasing=phrasing,
                                   use_im_start_end=use_im_start_end, seed=seed),
                 DEMO_GROUPS, demo_groups, limit)
        for phrasing in phrasings
    ]


def load_model(args, device):
    if args.model_path:
        from lisa_model import load_lisa

        return load_lisa(args.model_path, vision_tower=args.vision_tower, precision=args.precision, device=device)
    from lisa_model import lisa_model_registry

    if args.model not in lisa_model_registry:
        raise ValueError(f"--model must be one of {sorted(lisa_model_registry)} (or give --model-path)")
    model, tokenizer = lisa_model_registry[args.model](seed=args.seed)
    return model.to(device).eval(), tokenizer


def parse_args(argv=None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(prog=PROG, description=__doc__.split("\n\n")[0])
    model = parser.add_argument_group("model")
    model.add_argument("--model-path",
                       help="released or saved LISA checkpoint (folder or hub id), loaded with load_lisa")
    model.add_argument("--model", default="tiny",
                       help="built-in random-weight model when no --model-path (tiny, tiny_llava15)")
    model.add_argument("--vision-tower", help="CLIP vision tower for --model-path (default: from config.json)")
    model.add_argument("--precision", help="fp32, bf16, fp16, int8, int4 (default: as stored)")
    model.add_argument("--seed", type=int, default=0, help="seed of the built-in model's weights")
    data = parser.add_argument_group("data")
    data.add_argument("--reason-seg-root", help="ReasonSeg folder with train/ val/ test/")
    data.add_argument("--splits", default="val", help="comma-separated ReasonSeg splits (val,test)")
    data.add_argument("--portion", default="all", choices=("all", "scannet", "openimages"))
    data.add_argument("--all-queries", action="store_true",
                      help="ask every query of a ReasonSeg image (the reference asks only the first)")
    data.add_argument("--refer-root", help="refer_seg folder (refcoco/, refcoco+/, refcocog/, refclef/, images/)")
    data.add_argument("--refer-datasets", default="refcoco,refcoco+,refcocog")
    data.add_argument("--refer-splits", default="val")
    data.add_argument("--scannet-root", help="ScanNet exports (sceneXXXX_YY/color,depth,pose,intrinsic) for 3D metrics")
    data.add_argument("--demo-scenes", type=cli.positive_int,
                      help="evaluate on this many synthetic demo scenes (lisa_ros.synthetic.scenes), "
                           "held-out and training phrasings")
    data.add_argument("--demo-split", default="test", choices=("train", "val", "test"), help="their scene stream")
    data.add_argument("--limit", type=cli.positive_int,
                      help="evaluate only the first N images of each task (smoke runs)")
    run_group = parser.add_argument_group("run")
    run_group.add_argument("--batch-size", type=cli.positive_int, default=1,
                           help="images per forward pass on each rank")
    run_group.add_argument("--device", type=cli.device,
                           help="cpu, cuda, cuda:1 (default: cuda:LOCAL_RANK if available)")
    run_group.add_argument("--backend", choices=("gloo", "nccl"), help="torch.distributed backend under torchrun")
    run_group.add_argument("--output", help="write the results JSON here")
    run_group.add_argument("--overlays", help="folder for overlay PNGs of the worst masks")
    run_group.add_argument("--worst", type=cli.non_negative_int, default=8, help="how many worst masks get overlays")
    run_group.add_argument("--no-progress", action="store_true")
    cli.add_debug_flag(parser)
    return parser.parse_args(argv)


def main(argv=None) -> dict:
    args = parse_args(argv)
    with cli.user_errors(PROG, args.debug):
        return _evaluate(args)


def _evaluate(args: argparse.Namespace) -> dict:
    if not (args.reason_seg_root or args.refer_root or args.demo_scenes):  # before the model loads
        raise ValueError("nothing to evaluate: give --reason-seg-root, --refer-root and/or --demo-scenes")
    rank, world_size, device = dist_utils.init_distributed(args.backend)
    if args.device:
        device = torch.device(args.device)
    try:
        model, tokenizer = load_model(args, device)
        tasks = build_tasks(args, model.config.mm_use_im_start_end)
        scorer_3d = None
        if args.scannet_root:
            from .scannet3d import ScanNet3DScorer

            scorer_3d = ScanNet3DScorer(args.scannet_root)
        results = run(model, tokenizer, tasks, rank, world_size, device, args.batch_size, not args.no_progress,
                      scorer_3d, args.overlays, args.worst)
        results["model"] = args.model_path or args.model
        if rank == 0:
            print(format_table(results["metrics"]))
            if "scannet_3d" in results:
                print(json.dumps(results["scannet_3d"], indent=2))
            if args.output:
                os.makedirs(os.path.dirname(os.path.abspath(args.output)), exist_ok=True)
                with open(args.output, "w", encoding="utf-8") as handle:
                    json.dump(results, handle, indent=2)
        dist_utils.barrier()
        return results
    finally:
        dist_utils.cleanup()


if __name__ == "__main__":
    main()
