"""Word-level diversity and vocabulary metrics for generated text, in pure Python.

A *word* is a maximal run of letters and apostrophes, lower-cased, that holds at least one
letter: "Thou'rt" is one word ("thou'rt"), "don't!" gives "don't", "hear-me" gives "hear" and
"me", digits and punctuation split words, and a run of apostrophes alone (a quotation mark) is
no word. Letters are Unicode letters, so accented characters belong to words.

N-grams never cross sample boundaries: a metric given several samples counts the n-grams of
each sample, then pools the counts. A metric with nothing to count returns ``nan``, so an empty
sample shows up in a report instead of passing for a perfect or a terrible score.
"""

from __future__ import annotations

import math
import re
from collections import Counter
from collections.abc import Iterable, Sequence

_WORD = re.compile(r"(?:[^\W\d_]|')+")
_LETTER = re.compile(r"[^\W\d_]")


def words(text: str) -> list[str]:
    """The words of ``text``, lower-cased, in order (see the module docstring)."""
    return [w.lower() for w in _WORD.findall(text) if _LETTER.search(w)]


def word_set(text: str) -> set[str]:
    """The distinct words of a text: the reference vocabulary for :func:`known_word_share`."""
    return set(words(text))


def ngrams(tokens: Sequence[str], n: int) -> list[tuple[str, ...]]:
    """Contiguous n-grams of a token sequence (a list of words, or a string's characters, spaces
    and line breaks included); none when it is shorter than ``n``."""
    if n < 1:
        raise ValueError(f"n must be >= 1, got {n}")
    return [tuple(tokens[i : i + n]) for i in range(len(tokens) - n + 1)]


def _samples(texts: str | Iterable[str]) -> list[str]:
    return [texts] if isinstance(texts, str) else list(texts)


def distinct_n(texts: str | Iterable[str], n: int) -> float:
    """Pooled distinct-n: unique word n-grams / total word n-grams, pooled over the samples.

    1.0 means no n-gram repeats anywhere; low values mean repetitive or mode-collapsed text.
    Pooling across samples also penalises samples that repeat each other. Reports call it
    "pooled distinct-n", apart from :func:`mean_distinct_n`.
    """
    all_ngrams = [g for text in _samples(texts) for g in ngrams(words(text), n)]
    if not all_ngrams:
        return math.nan
    return len(set(all_ngrams)) / len(all_ngrams)


def mean_distinct_n(texts: Iterable[str], n: int) -> float:
    """Mean distinct-n: each sample's distinct-n, averaged over the samples that have an n-gram.

    Unlike the pooled :func:`distinct_n`, samples that repeat each other (a greedy decoder's
    seeds) are not scored down for it.
    """
    values = [v for v in (distinct_n(text, n) for text in texts) if not math.isnan(v)]
    return sum(values) / len(values) if values else math.nan


def repeated_ngram_share(text: str, n: int = 4) -> float:
    """Within one sample: 1 - unique n-grams / total n-grams (word 4-grams by default).

    0.0 when no n-gram occurs twice; it grows towards 1 as a sample loops. Each extra occurrence
    of an n-gram adds one to the repeated count, e.g. "a b c d a b c d" has five 4-grams of
    which four are unique: 1 - 4/5 = 0.2.
    """
    grams = ngrams(words(text), n)
    if not grams:
        return math.nan
    return 1.0 - len(set(grams)) / len(grams)


def known_word_share(texts: str | Iterable[str], vocabulary: set[str]) -> float:
    """The share of generated words (every occurrence counted) found in ``vocabulary``.

    Build ``vocabulary`` with :func:`word_set` on the training text. A character model that
    invents words scores low; one that copies the training text scores 1.
    """
    generated = [w for text in _samples(texts) for w in words(text)]
    if not generated:
        return math.nan
    return sum(w in vocabulary for w in generated) / len(generated)


def shared_share(grams: Sequence, reference: Sequence) -> float:
    """The share of ``grams`` also found in ``reference``, each n-gram counted at most as often
    as ``reference`` holds it (BLEU's clipped n-gram precision, for one n); ``nan`` if
    ``grams`` is empty."""
    if not grams:
        return math.nan
    available = Counter(reference)
    return sum(min(count, available[g]) for g, count in Counter(grams).items()) / len(grams)


def self_similarity(texts: Sequence[str], n: int = 4, unit: str = "word") -> float:
    """How much samples of one prompt repeat each other: the mean over ordered pairs of samples
    ``(a, b)``, ``a != b``, of :func:`shared_share` of ``a``'s n-grams in ``b``'s.

    ``unit`` is ``"word"`` (word n-grams, as :func:`words` splits them) or ``"char"``. 1 when
    every sample is the same text, 0 when no two share an n-gram; within-sample repetition
    does not count, only repetition across samples. ``nan`` with fewer than two samples that
    have an n-gram.
    """
    if unit not in ("word", "char"):
        raise ValueError(f"unit must be 'word' or 'char', got {unit!r}")
    grams = [ngrams(words(text) if unit == "word" else text, n) for text in texts]
    grams = [g for g in grams if g]
    pairs = [shared_share(a, b) for i, a in enumerate(grams) for j, b in enumerate(grams) if i != j]
    return sum(pairs) / len(pairs) if pairs else math.nan
