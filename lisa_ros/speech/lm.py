"""The language model the embedded recogniser uses, built at start-up from the expected sentences.

`build_arpa` estimates an interpolated Kneser-Ney n-gram model (Chen & Goodman 1998, the
interpolated variant with one discount per order) and writes it in the ARPA text format that
pocketsphinx reads. It is written here because no kept package estimates ARPA models offline
from Python: kenlm's PyPI package is a source-only query library (estimation is the `lmplz`
C++ binary, not shipped), nltk.lm estimates but does not write ARPA, and SRILM is not
redistributable. A few hundred sentences make a model in milliseconds.

Kneser-Ney rather than plain absolute discounting: its lower orders count the distinct
contexts a word follows, not its frequency, which is the probability that matters when a new
phrasing backs off ("the" is frequent but follows few words), so new phrasings over the known
vocabulary score better. Extra `vocabulary` words (e.g. object names that no sentence uses)
get the unigram floor only.
"""

from __future__ import annotations

import collections
import math
import re
from pathlib import Path
from typing import Iterable

BOS, EOS = "<s>", "</s>"


def normalise(text: str) -> list[str]:
    """Lower-case words of `text`: punctuation dropped, in-word apostrophes kept ("don't", "i'm")."""
    text = re.sub(r"[^a-z0-9' ]+", " ", text.lower())
    return [word.strip("'") for word in text.split() if word.strip("'")]


def read_sentences(path: str | Path) -> list[str]:
    """Sentences from a text file, one a line; blank lines and '#' comments skipped."""
    lines = Path(path).read_text().splitlines()
    return [line.strip() for line in lines if line.strip() and not line.lstrip().startswith("#")]


def build_arpa(sentences: Iterable[str], order: int = 3, discount: float = 0.7,
               vocabulary: Iterable[str] = ()) -> str:
    """An interpolated Kneser-Ney n-gram model of `sentences` as ARPA text.

    Arguments:
        sentences (Iterable[str]): the corpus, one sentence each (normalised with `normalise`).
        order (int): n, 1..5.
        discount (float): the absolute discount D, 0 < D < 1, subtracted from every count.
        vocabulary (Iterable[str]): extra words, given the unigram floor only.

    Returns:
        str: the ARPA model (log10 probabilities and back-off weights).
    """
    assert 1 <= order <= 5, f"order must be 1..5, not {order}"
    assert 0.0 < discount < 1.0, f"discount must be in (0, 1), not {discount}"
    corpus = [[BOS] + words + [EOS] for words in map(normalise, sentences) if words]
    assert corpus, "the language model needs at least one non-empty sentence"
    # counts[n][gram]: raw counts of the highest order; for lower orders, Kneser-Ney continuation
    # counts (distinct left extensions), except n-grams starting with <s>, which have none.
    raw = [collections.Counter() for _ in range(order + 1)]
    for words in corpus:
        for n in range(1, order + 1):
            for i in range(len(words) - n + 1):
                raw[n][tuple(words[i:i + n])] += 1
    counts = [collections.Counter() for _ in range(order + 1)]
    counts[order] = raw[order]
    for n in range(1, order):
        left = collections.Counter(gram[1:] for gram in raw[n + 1])
        counts[n] = collections.Counter({gram: (c if gram[0] == BOS else left[gram]) for gram, c in raw[n].items()})
    del counts[1][(BOS,)]  # never predicted
    words = sorted(({w for (w,) in counts[1]} | {w for v in vocabulary for w in normalise(v)}) - {BOS})
    # Context totals and the number of distinct continuations, per order.
    totals = [collections.Counter() for _ in range(order + 1)]
    types = [collections.Counter() for _ in range(order + 1)]
    for n in range(1, order + 1):
        for gram, c in counts[n].items():
            totals[n][gram[:-1]] += c
            types[n][gram[:-1]] += 1
    # Unigrams: discounted continuation counts interpolated with the uniform distribution.
    prob = {}
    total, seen = totals[1][()], types[1][()]
    uniform = 1.0 / len(words)
    for word in words:
        prob[(word,)] = max(counts[1][(word,)] - discount, 0.0) / total + discount * seen / total * uniform
    backoff = {}
    for n in range(2, order + 1):
        for gram, c in counts[n].items():
            context = gram[:-1]
            gamma = discount * types[n][context] / totals[n][context]
            prob[gram] = (c - discount) / totals[n][context] + gamma * prob[gram[1:]]
            backoff[context] = gamma
    lines = ["", "\\data\\"]
    by_order = [[(w,) for w in [BOS] + words]] + [sorted(counts[n]) for n in range(2, order + 1)]
    for n, grams in enumerate(by_order, start=1):
        lines.append(f"ngram {n}={len(grams)}")
    for n, grams in enumerate(by_order, start=1):
        lines += ["", f"\\{n}-grams:"]
        for gram in grams:
            logp = -99.0 if gram == (BOS,) else math.log10(prob[gram])
            entry = f"{logp:.6f}\t{' '.join(gram)}"
            if n < order and gram in backoff:
                entry += f"\t{math.log10(backoff[gram]):.6f}"
            lines.append(entry)
    lines += ["", "\\end\\", ""]
    return "\n".join(lines)
