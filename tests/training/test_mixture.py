"""The weighted mixture over sem_seg / refer_seg / vqa / reason_seg: rates, determinism, the real loaders."""

import math
import random
from collections import Counter

import numpy as np
import pytest

from tests.helpers.collate_checks import assert_labels_are_answers, tiny_collate_setup
from tests.helpers.mini_data.reason_seg import make_reason_seg
from tests.helpers.mini_data.sources import make_all
from training.data.collate import collate
from training.data.mixture import MixtureDataset, MixtureSource, build_mixture, parse_rates
from training.data.reason_seg import ReasonSegDataset
from training.data.sample import Sample
from training.data.semantic_seg import ADE20KDataset


class FakeSource:
    """A dataset that only records what it was asked for."""

    def __init__(self, name, size):
        self.name, self.size = name, size

    def __len__(self):
        return self.size

    def get(self, index, rng):
        image = np.zeros((2, 2, 3), np.uint8)
        return Sample(image, [], [], self.name, {"item": index, "draw": rng.random()})


def fake_mixture(seed=0, samples=1000, weights=(2.0, 1.0, 1.0)):
    sources = {
        "sem_seg": [
            MixtureSource(n, FakeSource(n, 50), w) for n, w in zip(("ade20k", "cocostuff", "paco_lvis"), weights)
        ],
        "refer_seg": {"refcoco": FakeSource("refcoco", 7), "refclef": FakeSource("refclef", 3)},
        "vqa": {"llava_instruct": FakeSource("llava_instruct", 11)},
        "reason_seg": {"reason_seg": FakeSource("reason_seg", 5)},
    }
    return MixtureDataset(sources, parse_rates(), samples_per_epoch=samples, seed=seed)


def test_parse_rates():
    assert parse_rates() == {"sem_seg": 9.0, "refer_seg": 3.0, "vqa": 3.0, "reason_seg": 1.0}
    assert parse_rates("sem_seg||vqa", [1, 2]) == {"sem_seg": 1.0, "vqa": 2.0}
    with pytest.raises(ValueError):
        parse_rates("sem_seg||vqa", "1,2,3")


def test_kinds_and_sources_follow_the_rates():
    n = 20000
    mixture = fake_mixture(samples=n)
    draws = [mixture.draw(i) for i in range(n)]
    kinds = Counter(d.kind for d in draws)
    total = 9 + 3 + 3 + 1
    for kind, rate in parse_rates().items():
        p = rate / total
        sigma = math.sqrt(p * (1 - p) / n)
        assert abs(kinds[kind] / n - p) < 5 * sigma, (kind, kinds[kind] / n, p)
    sem = Counter(d.source for d in draws if d.kind == "sem_seg")
    m = sum(sem.values())
    for name, p in (("ade20k", 0.5), ("cocostuff", 0.25), ("paco_lvis", 0.25)):
        assert abs(sem[name] / m - p) < 5 * math.sqrt(p * (1 - p) / m), (name, sem)
    refer = Counter(d.source for d in draws if d.kind == "refer_seg")
    assert abs(refer["refcoco"] / sum(refer.values()) - 0.5) < 0.05  # equal weights by default
    # items uniform over each source, within range
    items = Counter(d.item for d in draws if d.source == "refclef")
    assert sorted(items) == [0, 1, 2] and min(items.values()) > 0.25 * sum(items.values())


def test_deterministic_per_seed_epoch_and_index():
    first, second = fake_mixture(seed=1), fake_mixture(seed=1)
    order = list(range(len(first)))
    random.Random(0).shuffle(order)  # any access order (e.g. another rank) gives the same items
    assert [first.draw(i) for i in range(len(first))] == [second.draw(i) for i in sorted(order)]
    assert [first[i].meta for i in range(50)] == [second[i].meta for i in range(50)]
    other_seed = fake_mixture(seed=2)
    assert [first.draw(i) for i in range(100)] != [other_seed.draw(i) for i in range(100)]
    before = [first.draw(i) for i in range(100)]
    first.set_epoch(1)
    assert [first.draw(i) for i in range(100)] != before
    first.set_epoch(0)
    assert [first.draw(i) for i in range(100)] == before


def test_distributed_sampler_shards_are_consistent():
    from torch.utils.data import DistributedSampler

    mixture = fake_mixture(seed=4, samples=64)
    reference = {i: mixture[i].meta for i in range(len(mixture))}
    seen = {}
    for rank in range(2):
        replica = fake_mixture(seed=4, samples=64)  # each rank builds its own copy
        sampler = DistributedSampler(replica, num_replicas=2, rank=rank, shuffle=True, seed=0)
        for index in sampler:
            seen[index] = replica[index].meta
    assert seen == reference


def test_validation_of_sources():
    with pytest.raises(ValueError, match="no source"):
        MixtureDataset({"sem_seg": {"a": FakeSource("a", 1)}}, {"sem_seg": 1, "vqa": 1})
    with pytest.raises(ValueError, match="no rate"):
        MixtureDataset({"sem_seg": {"a": FakeSource("a", 1)}, "vqa": {"b": FakeSource("b", 1)}}, {"sem_seg": 1})
    with pytest.raises(ValueError, match="empty"):
        MixtureDataset({"sem_seg": {"a": FakeSource("a", 0)}}, {"sem_seg": 1})
    with pytest.raises(IndexError):
        fake_mixture(samples=10)[10]


@pytest.fixture(scope="module")
def data_root(tmp_path_factory):
    root = tmp_path_factory.mktemp("data")
    make_all(root)
    make_reason_seg(str(root / "reason_seg" / "ReasonSeg"))
    return root


def test_repeated_draws_of_one_image_vary(data_root):
    # One source with one image of four classes: the mixture passes its generator on,
    # so repeated draws of the same image ask about different classes.
    ade = ADE20KDataset(data_root / "ade20k")
    mixture = MixtureDataset({"sem_seg": {"ade20k": ade}}, {"sem_seg": 1}, samples_per_epoch=12)
    draws = [mixture[i] for i in range(len(mixture)) if mixture.draw(i).item == 0]
    assert len({tuple(sorted(s.meta["classes"])) for s in draws}) > 1


def test_build_mixture_from_layout_and_collate(data_root):
    reason = ReasonSegDataset(str(data_root / "reason_seg" / "ReasonSeg"), "train")
    mixture = build_mixture(data_root, reason_seg=reason, samples_per_epoch=200, seed=5)
    assert {e.name for e in mixture.sources["sem_seg"]} == {"ade20k", "cocostuff", "pascal_part", "paco_lvis"}
    assert {e.name for e in mixture.sources["refer_seg"]} == {"refclef", "refcoco", "refcoco+", "refcocog"}
    kinds = Counter()
    samples_by_kind = {}
    for index in range(60):
        sample = mixture[index]
        sample.validate()
        assert sample.meta["kind"] == mixture.draw(index).kind
        kinds[sample.meta["kind"]] += 1
        samples_by_kind.setdefault(sample.meta["kind"], sample)
    assert set(kinds) == {"sem_seg", "refer_seg", "vqa", "reason_seg"}  # seed 5: all four in 60 draws
    tokenizer, config = tiny_collate_setup()
    samples = list(samples_by_kind.values())
    batch = collate(samples, tokenizer, config)
    assert_labels_are_answers(batch, samples, tokenizer)
    with pytest.raises(ValueError, match="reason_seg"):
        build_mixture(data_root)
    only_vqa = build_mixture(data_root, "vqa", "1", samples_per_epoch=5)
    assert all(only_vqa[i].source == "llava_instruct" for i in range(5))
