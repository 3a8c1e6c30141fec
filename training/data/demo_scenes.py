"""Training/evaluation Samples from the synthetic reasoning scenes (`lisa_ros.synthetic.scenes`).

One item is one frame of one scene; its conversations are the scene's commands whose
target is visible in that frame (at least `min_visible_pixels`), each with the
target's mask. Training draws up to `queries_per_image` commands and, per command,
one of three prompt forms:

  0. the raw command, answered "[SEG] <explanation>" (what the node sends and the
     demo model answers),
  1. the paper's long question ("<command> Please output segmentation mask."),
     answered with a template answer ("Sure, [SEG]."),
  2. the command plus an explanation request, answered "<template answer> <explanation>".

Evaluation uses the reference's fixed validation prompt with "[SEG]." for every
visible command (conversation_meta carries query/is_sentence for the evaluator).
Scenes of the "val"/"test" split are unseen layouts; their commands use the held-out
phrasings by default.
"""

from __future__ import annotations

from collections import OrderedDict
from dataclasses import replace

import numpy as np

from lisa_model.processing.conversation import Turn, image_user_message
from lisa_ros.geometry import CameraIntrinsics
from lisa_ros.synthetic.intents import INTENTS
from lisa_ros.synthetic.scenes import DEMO_INTRINSICS, Command, DemoScene, RenderedView, make_scene

from . import templates
from .base import ItemDataset
from .sample import Sample

__all__ = ["DEMO_GROUPS", "DemoScenesDataset", "demo_groups"]

# Result groups for training.evaluate.EvalTask: overall and one per intent.
DEMO_GROUPS = ("overall", *INTENTS)


def demo_groups(meta: dict) -> list[str]:
    """The groups a conversation counts in (its conversation_meta names its intent)."""
    return ["overall", meta["intent"]] if meta.get("intent") in INTENTS else ["overall"]


class DemoScenesDataset(ItemDataset):
    """Map-style dataset over (scene, frame) of the synthetic demo scenes.

    Arguments:
        split (str): "train", "val" or "test" (disjoint scene streams).
        num_scenes (int): scenes 0..num_scenes-1 of the split.
        frames_per_scene (int): frames along each scene's camera arc.
        seed (int): seed of the scenes and of the per-item randomness.
        train (bool | None): training formulation (random prompts); default split == "train".
        phrasing (str | None): "train" or "heldout" command phrasings; default "train"
            for split "train", else "heldout". Training draws a random phrasing of the
            intent per draw; evaluation uses the scene's fixed one.
        queries_per_image (int): training: at most this many commands per item.
        word_dropout (float): training: each word of a command is left out with this
            probability (at least two words stay), so that no sentence frame alone
            identifies an intent and the command's key words must be used.
        prompt_weights (tuple): training: probabilities of the three prompt forms above.
        min_visible_pixels (int): a command is asked in a frame only when its target
            covers at least this many pixels there.
        use_im_start_end (bool): wrap the image placeholder (LISA-7B-v1 and tiny: True).
        cache_frames (int): rendered frames kept in memory (LRU).
        num_objects (tuple): (min, max) objects per scene.
        intrinsics (CameraIntrinsics): the camera (image size, field of view).
    """

    source = "demo_scenes"

    def __init__(
        self,
        split: str = "train",
        num_scenes: int = 200,
        frames_per_scene: int = 8,
        seed: int = 0,
        train: bool | None = None,
        phrasing: str | None = None,
        queries_per_image: int = 3,
        word_dropout: float = 0.15,
        prompt_weights: tuple[float, float, float] = (0.5, 0.25, 0.25),
        min_visible_pixels: int = 100,
        use_im_start_end: bool = True,
        cache_frames: int = 64,
        num_objects: tuple[int, int] = (4, 5),
        intrinsics: CameraIntrinsics = DEMO_INTRINSICS,
    ):
        super().__init__(seed)
        self.split = split
        self.num_scenes = int(num_scenes)
        self.frames_per_scene = int(frames_per_scene)
        self.train = (split == "train") if train is None else bool(train)
        self.phrasing = phrasing or ("train" if split == "train" else "heldout")
        if self.phrasing not in ("train", "heldout"):
            raise ValueError(f"phrasing must be 'train' or 'heldout', got {self.phrasing!r}")
        self.queries_per_image = int(queries_per_image)
        self.word_dropout = float(word_dropout)
        self.prompt_weights = tuple(float(w) for w in prompt_weights)
        self.min_visible_pixels = int(min_visible_pixels)
        self.use_im_start_end = use_im_start_end
        self._cache: OrderedDict = OrderedDict()
        self._cache_size = int(cache_frames)
        self.num_objects = tuple(num_objects)
        self.intrinsics = intrinsics
        self._scenes: OrderedDict = OrderedDict()  # plain dicts: the dataset pickles (DataLoader workers)
        make_scene(self.seed, split, 0)  # validates the split

    def __len__(self) -> int:
        return self.num_scenes * self.frames_per_scene

    def scene(self, scene_index: int) -> DemoScene:
        """Scene `scene_index` of the split (cached)."""
        key = int(scene_index)
        if key not in self._scenes:
            self._scenes[key] = make_scene(**self._scene_arguments(key))
            while len(self._scenes) > 256:
                self._scenes.popitem(last=False)
        return self._scenes[key]

    def _scene_arguments(self, scene_index: int) -> dict:
        return dict(seed=self.seed, split=self.split, index=scene_index, frames=self.frames_per_scene,
                    num_objects=self.num_objects, intrinsics=self.intrinsics)

    def frame(self, index: int) -> RenderedView:
        """The rendered view of item `index` (cached)."""
        key = int(index)
        if key in self._cache:
            self._cache.move_to_end(key)
            return self._cache[key]
        scene_index, frame_index = divmod(key, self.frames_per_scene)
        frame = self.scene(scene_index).render(frame_index)
        self._cache[key] = frame
        while len(self._cache) > self._cache_size:
            self._cache.popitem(last=False)
        return frame

    def render_all(self, processes: int | None = None, progress: bool = True) -> None:
        """Render every frame into the cache, in `processes` worker processes (default: all cores).

        Rendering (about 0.15-0.2 s a frame on one core) dominates a small model's first
        epoch otherwise. The cache must hold every frame (`cache_frames` >= len(self)).
        """
        import multiprocessing
        import os

        from tqdm import tqdm

        if self._cache_size < len(self):
            raise ValueError(f"cache_frames {self._cache_size} cannot hold all {len(self)} frames")
        jobs = [self._scene_arguments(scene) for scene in range(self.num_scenes)]
        with multiprocessing.get_context("spawn").Pool(processes or os.cpu_count()) as pool:
            scenes = pool.imap(_render_scene, jobs)
            bar = tqdm(scenes, total=len(jobs), desc="render demo scenes", disable=not progress)
            for scene, views in enumerate(bar):
                for view_index, view in enumerate(views):
                    self._cache[scene * self.frames_per_scene + view_index] = view

    def visible_commands(self, index: int) -> list[Command]:
        """The commands of item `index`'s scene whose target is visible in its frame."""
        frame = self.frame(index)
        scene = self.scene(index // self.frames_per_scene)
        return [c for c in scene.commands(self.phrasing) if int(c.mask(frame).sum()) >= self.min_visible_pixels]

    def get(self, index: int, rng) -> Sample:
        # A frame where no target is visible (rare) falls back to the next frames, deterministically.
        for offset in range(len(self)):
            item = (int(index) + offset) % len(self)
            commands = self.visible_commands(item)
            if commands:
                break
        else:
            raise RuntimeError("no command has a visible target in any frame")
        frame = self.frame(item)
        scene_index, frame_index = divmod(item, self.frames_per_scene)
        scene = self.scene(scene_index)
        if self.train:
            chosen = rng.sample(commands, min(self.queries_per_image, len(commands)))
            # A fresh phrasing of the same intent each time the item is drawn.
            chosen = [replace(c, text=self._drop_words(rng.choice(getattr(INTENTS[c.intent], self.phrasing)), rng))
                      for c in chosen]
            conversations, info = zip(*(self._train_turn(c, rng) for c in chosen))
        else:
            chosen = commands
            answer = templates.VALIDATION_ANSWER
            conversations = [
                [Turn(templates.validation_user_message(c.text, True, self.use_im_start_end), answer)] for c in chosen
            ]
            info = [{"query": c.text, "is_sentence": True} for c in chosen]
        info = [
            dict(entry, intent=c.intent, target=c.target, category=scene.objects[c.target].category)
            for entry, c in zip(info, chosen)
        ]
        masks = [c.mask(frame)[None].astype(np.uint8) for c in chosen]
        meta = {
            "image_name": f"{scene.scene_id}_frame{frame_index:02d}",
            "split": self.split,
            "scene": scene.scene_id,
            "frame": frame_index,
            "is_sentence": True,
            "conversation_meta": info,
        }
        return Sample(image=frame.rgb, conversations=list(conversations), masks=masks, source=self.source, meta=meta)

    def _drop_words(self, text: str, rng) -> str:
        words = text.split()
        kept = [word for word in words if rng.random() >= self.word_dropout]
        return " ".join(kept) if len(kept) >= 2 else text

    def _train_turn(self, command: Command, rng):
        form = rng.choices(range(3), weights=self.prompt_weights)[0]
        if form == 0:
            turn = Turn(image_user_message(command.text, self.use_im_start_end), command.answer)
        elif form == 1:
            turn = Turn(image_user_message(templates.long_question(command.text, rng), self.use_im_start_end),
                        templates.seg_answer(rng))
        else:
            question = f"{command.text} {templates.explanatory_question(rng)}"
            turn = Turn(image_user_message(question, self.use_im_start_end),
                        f"{templates.seg_answer(rng)} {command.explanation}")
        return [turn], {"query": command.text, "is_sentence": True, "explanatory": form}


def _render_scene(arguments: dict) -> list[RenderedView]:
    """Every view of one scene (a worker process's job in `render_all`)."""
    scene = make_scene(**arguments)
    return [scene.render(frame) for frame in range(arguments["frames"])]
