"""Text metrics on hand-made texts whose answers are counted by hand."""

import math

import pytest

from tinygpt.analysis.text_metrics import (
    distinct_n,
    known_word_share,
    mean_distinct_n,
    ngrams,
    repeated_ngram_share,
    self_similarity,
    shared_share,
    word_set,
    words,
)


def test_words_are_runs_of_letters_and_apostrophes_lower_cased():
    text = "Thou'rt a KING!\nDon't-stop: 3 rings, 'tis ' ' café_au"
    assert words(text) == ["thou'rt", "a", "king", "don't", "stop", "rings", "'tis", "café", "au"]
    assert words("") == [] and words("12 -- ' ''") == []


def test_ngrams():
    assert ngrams(["a", "b", "c"], 2) == [("a", "b"), ("b", "c")]
    assert ngrams(["a", "b"], 3) == []
    with pytest.raises(ValueError):
        ngrams(["a"], 0)


def test_distinct_n_by_hand():
    text = "the cat the cat the dog"  # words: the cat the cat the dog
    assert distinct_n(text, 1) == 3 / 6  # the, cat, dog
    assert distinct_n(text, 2) == 3 / 5  # the cat, cat the, the dog (of 5 bigrams)
    assert distinct_n(text, 3) == 3 / 4  # the cat the, cat the cat, cat the dog (of 4)
    assert distinct_n("a b c d", 2) == 1.0


def test_distinct_n_pools_samples_without_crossing_their_boundaries():
    # Bigrams: (a b) from the first, (b a) from the second; none spans "b | b".
    assert distinct_n(["a b", "b a"], 2) == 2 / 2
    assert distinct_n(["a b", "a b"], 2) == 1 / 2  # samples repeating each other count
    assert distinct_n(["a b", "a b"], 1) == 2 / 4


def test_mean_distinct_n_averages_each_samples_own():
    # "a a b" 2/3 and "c d" 1: the pooled measure counts 4 distinct of 5 words instead.
    assert mean_distinct_n(["a a b", "c d"], 1) == (2 / 3 + 1) / 2
    assert distinct_n(["a a b", "c d"], 1) == 4 / 5
    assert mean_distinct_n(["a b", "a b"], 1) == 1.0  # samples repeating each other: not counted
    assert mean_distinct_n(["one", "a b"], 2) == 1.0  # a sample without a bigram is left out
    assert math.isnan(mean_distinct_n(["one", ""], 2))


def test_metrics_with_nothing_to_count_are_nan():
    assert math.isnan(distinct_n("one two", 3))
    assert math.isnan(distinct_n([], 1))
    assert math.isnan(repeated_ngram_share("too short here"))
    assert math.isnan(known_word_share("!!! 42", {"x"}))


def test_repeated_ngram_share_by_hand():
    assert repeated_ngram_share("a b c d e f") == 0.0  # three 4-grams, all unique
    # Five 4-grams: abcd, bcda, cdab, dabc, abcd -> four unique.
    assert repeated_ngram_share("a b c d a b c d") == pytest.approx(1 - 4 / 5)
    # One word looping: seven 4-grams, all "x x x x".
    assert repeated_ngram_share("x " * 10) == pytest.approx(1 - 1 / 7)
    assert repeated_ngram_share("a b a b", n=2) == pytest.approx(1 - 2 / 3)


def test_known_word_share_counts_every_occurrence():
    vocabulary = word_set("To be, or not to be: that is the question.")
    assert vocabulary == {"to", "be", "or", "not", "that", "is", "the", "question"}
    assert known_word_share("to be or zorp", vocabulary) == 3 / 4
    assert known_word_share("Zorp zorp TO", vocabulary) == 1 / 3  # case folded, repeats counted
    assert known_word_share(["to be", "blargh"], vocabulary) == 2 / 3


def test_self_similarity_is_one_for_identical_samples_and_zero_for_disjoint_ones():
    same = ["to be or not to be"] * 3
    assert self_similarity(same, 2) == 1.0
    assert self_similarity(same, 4, unit="char") == 1.0
    assert self_similarity(["aaaa bbbb", "cccc dddd"], 1) == 0.0
    assert self_similarity(["abcdef", "uvwxyz"], 2, unit="char") == 0.0


def test_self_similarity_by_hand_with_clipped_counts():
    # Character 3-grams: abcd -> abc, bcd; abce -> abc, bce: each shares half with the other.
    assert self_similarity(["abcd", "abce"], 3, unit="char") == 0.5
    # Character 2-grams: "aaaa" has aa three times, "aa" once. Clipped as in BLEU: 1 of the
    # three is found in "aa", and the one of "aa" in "aaaa": the mean of 1/3 and 1.
    assert self_similarity(["aaaa", "aa"], 2, unit="char") == pytest.approx(2 / 3)
    # Three samples: the mean over the six ordered pairs; only "a b" and "a b" share.
    assert self_similarity(["a b", "a b", "c d"], 1) == pytest.approx(2 / 6)
    # Repetition within one sample does not count: one sample alone has no pairs.
    assert math.isnan(self_similarity(["the the the"], 1))
    assert math.isnan(self_similarity(["a b", ""], 1))  # the empty sample has no words
    with pytest.raises(ValueError, match="unit"):
        self_similarity(["a", "b"], 1, unit="line")


def test_char_ngrams_and_shared_share():
    assert ngrams("abcd", 3) == [("a", "b", "c"), ("b", "c", "d")]  # a string's characters
    assert ngrams("ab", 3) == []
    assert shared_share(["x", "x", "y"], ["x"]) == pytest.approx(1 / 3)
    assert math.isnan(shared_share([], ["x"]))
