"""The training mixture over the four kinds of data (reference: "sem_seg||refer_seg||vqa||reason_seg", rates 9,3,3,1).

`MixtureDataset` is map-style with a fixed number of samples per epoch. Item
`index` of epoch `epoch` is a pure function of (seed, epoch, index):
    rng = item_rng(seed, epoch, index)
    kind   ~ rates                       (rng.choices)
    source ~ that kind's source weights  (rng.choices; the reference: uniform)
    item   ~ uniform over the source     (rng.randrange)
    sample = source.get(item, rng)       (or source[item] for a dataset without `get`)
There is no hidden or global state, so any sampler (DistributedSampler across
ranks, several workers, a resumed run) gets the same sample for the same index.
Passing the generator on through `get` means an image drawn twice in one epoch
gets fresh classes, expressions and templates each time, as the reference's
global-random sampling does; a dataset with only `__getitem__` repeats itself.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from dataclasses import dataclass

from .sample import Sample, item_rng

KINDS = ("sem_seg", "refer_seg", "vqa", "reason_seg")
DEFAULT_DATASET = "||".join(KINDS)
DEFAULT_SAMPLE_RATES = "9,3,3,1"
# The reference's samples per epoch: 500 steps x 8 GPUs x batch 2 x 10 accumulation.
REFERENCE_SAMPLES_PER_EPOCH = 500 * 8 * 2 * 10


def parse_rates(
    dataset: str = DEFAULT_DATASET, sample_rates: str | Sequence[float] = DEFAULT_SAMPLE_RATES
) -> dict[str, float]:
    """"sem_seg||refer_seg||vqa||reason_seg", "9,3,3,1" -> {"sem_seg": 9.0, ...}, in that order."""
    kinds = [k.strip() for k in dataset.split("||") if k.strip()]
    if isinstance(sample_rates, str):
        sample_rates = [float(r) for r in sample_rates.split(",") if r.strip()]
    rates = [float(r) for r in sample_rates]
    if len(kinds) != len(rates):
        raise ValueError(f"{len(kinds)} kinds ({kinds}) but {len(rates)} sample rates ({rates})")
    if len(set(kinds)) != len(kinds):
        raise ValueError(f"a kind is listed twice: {kinds}")
    return dict(zip(kinds, rates))


@dataclass
class MixtureSource:
    """One dataset in the mixture: its name (e.g. "ade20k"), the dataset and its weight within its kind."""

    name: str
    dataset: object
    weight: float = 1.0


@dataclass(frozen=True)
class Draw:
    """What item `index` of an epoch is: a kind, a source (by name) and an item of that source."""

    kind: str
    source: str
    item: int


class MixtureDataset:
    """A weighted mixture of datasets grouped by kind.

    Args:
        sources (Mapping[str, Sequence[MixtureSource] | Mapping[str, dataset]]):
            per kind its sources, as MixtureSource entries (with weights) or a
            {name: dataset} mapping (equal weights).
        rates (Mapping[str, float]): relative rate per kind (see parse_rates);
            every kind with a positive rate needs at least one source, and every
            kind with sources needs a rate.
        samples_per_epoch (int): `len(self)`.
        seed (int): base seed of the per-item generators.
    """

    def __init__(
        self,
        sources: Mapping[str, Sequence[MixtureSource] | Mapping[str, object]],
        rates: Mapping[str, float],
        samples_per_epoch: int = REFERENCE_SAMPLES_PER_EPOCH,
        seed: int = 0,
    ):
        if samples_per_epoch < 1:
            raise ValueError("samples_per_epoch must be >= 1")
        self.sources: dict[str, list[MixtureSource]] = {}
        for kind, entries in sources.items():
            if isinstance(entries, Mapping):
                entries = [MixtureSource(name, dataset) for name, dataset in entries.items()]
            entries = [e for e in entries if e.weight > 0]
            for entry in entries:
                if len(entry.dataset) == 0:
                    raise ValueError(f"source {entry.name!r} of kind {kind!r} is empty")
            if entries:
                self.sources[kind] = list(entries)
        for kind, rate in rates.items():
            if rate < 0:
                raise ValueError(f"negative rate for {kind!r}")
            if rate > 0 and kind not in self.sources:
                raise ValueError(f"kind {kind!r} has rate {rate} but no source")
        unrated = [kind for kind in self.sources if kind not in rates]
        if unrated:
            raise ValueError(f"kinds {unrated} have sources but no rate")
        self.kinds = [kind for kind, rate in rates.items() if rate > 0]
        if not self.kinds:
            raise ValueError("no kind has a positive rate")
        self.kind_weights = [float(rates[kind]) for kind in self.kinds]
        self.samples_per_epoch = int(samples_per_epoch)
        self.seed = int(seed)
        self.epoch = 0

    def __len__(self) -> int:
        return self.samples_per_epoch

    def set_epoch(self, epoch: int) -> None:
        """Set the epoch here and on every source that has `set_epoch`."""
        self.epoch = int(epoch)
        for entries in self.sources.values():
            for entry in entries:
                if hasattr(entry.dataset, "set_epoch"):
                    entry.dataset.set_epoch(epoch)

    def _draw(self, rng) -> tuple[str, MixtureSource, int]:
        kind = rng.choices(self.kinds, weights=self.kind_weights)[0]
        entries = self.sources[kind]
        entry = rng.choices(entries, weights=[e.weight for e in entries])[0]
        return kind, entry, rng.randrange(len(entry.dataset))

    def draw(self, index: int) -> Draw:
        """The kind, source and item that `self[index]` uses in the current epoch (loads nothing)."""
        kind, entry, item = self._draw(item_rng(self.seed, self.epoch, self._check(index)))
        return Draw(kind, entry.name, item)

    def _check(self, index: int) -> int:
        index = int(index)
        if not 0 <= index < len(self):
            raise IndexError(f"index {index} out of range for a mixture of {len(self)} samples per epoch")
        return index

    def __getitem__(self, index: int) -> Sample:
        index = self._check(index)
        rng = item_rng(self.seed, self.epoch, index)
        kind, entry, item = self._draw(rng)
        dataset = entry.dataset
        sample = dataset.get(item, rng) if callable(getattr(dataset, "get", None)) else dataset[item]
        sample.meta.update({"kind": kind, "mixture_source": entry.name, "mixture_item": item, "mixture_index": index})
        return sample


def build_mixture(
    data_root,
    dataset: str = DEFAULT_DATASET,
    sample_rates: str | Sequence[float] = DEFAULT_SAMPLE_RATES,
    sem_seg_data: str = "ade20k||cocostuff||pascal_part||paco_lvis",
    refer_seg_data: str = "refclef||refcoco||refcoco+||refcocog",
    source_weights: Mapping[str, float] | None = None,
    reason_seg: object | None = None,
    samples_per_epoch: int = REFERENCE_SAMPLES_PER_EPOCH,
    use_im_start_end: bool = True,
    seed: int = 0,
) -> MixtureDataset:
    """The paper's mixture from the reference's directory layout under `data_root`.

    Only the kinds named in `dataset` are built. `source_weights` maps source
    names ("ade20k", "refcoco", "llava_instruct", "reason_seg", ...) to weights
    within their kind (default 1 each, the reference's uniform choice).
    `reason_seg` is the ReasonSeg training dataset, built by the caller
    (training.data.reason_seg), required when the kind "reason_seg" has a rate.
    """
    from .refer_seg import build_refer_seg_dataset
    from .semantic_seg import build_sem_seg_dataset
    from .vqa import build_vqa_dataset

    rates = parse_rates(dataset, sample_rates)
    weights = dict(source_weights or {})
    common = dict(use_im_start_end=use_im_start_end, seed=seed)

    def entry(name, build):
        return MixtureSource(name, build(), float(weights.get(name, 1.0)))

    sources: dict[str, list[MixtureSource]] = {}
    if "sem_seg" in rates:
        names = [n for n in sem_seg_data.split("||") if n]
        sources["sem_seg"] = [entry(n, lambda n=n: build_sem_seg_dataset(data_root, n, **common)) for n in names]
    if "refer_seg" in rates:
        names = [n for n in refer_seg_data.split("||") if n]
        sources["refer_seg"] = [
            entry(n, lambda n=n: build_refer_seg_dataset(data_root, n, "train", **common)) for n in names
        ]
    if "vqa" in rates:
        sources["vqa"] = [entry("llava_instruct", lambda: build_vqa_dataset(data_root, **common))]
    if "reason_seg" in rates:
        if reason_seg is None:
            raise ValueError("the mixture includes reason_seg: pass the ReasonSeg training dataset as reason_seg=")
        sources["reason_seg"] = [MixtureSource("reason_seg", reason_seg, float(weights.get("reason_seg", 1.0)))]
    unknown = set(rates) - set(KINDS)
    if unknown:
        raise ValueError(f"unknown kinds {sorted(unknown)}; the kinds are {KINDS}")
    return MixtureDataset(sources, rates, samples_per_epoch=samples_per_epoch, seed=seed)
