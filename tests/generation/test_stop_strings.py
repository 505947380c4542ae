"""Stop strings: normalising them, and cutting text fed in pieces after the first one."""

import pytest

from tinygpt.errors import ConfigError
from tinygpt.generation.text import StopStrings, check_stop, check_stop_characters


def test_stop_is_normalised_to_a_tuple():
    assert check_stop(None) == ()
    assert check_stop([]) == ()
    assert check_stop("\n\n") == ("\n\n",)
    assert check_stop(["a", "bc"]) == ("a", "bc")


def test_a_stop_string_split_between_two_pieces_is_found():
    stops = StopStrings(["\n\n"], rows=2)
    assert stops.cut(0, "ab\n") == ("ab\n", False)
    assert stops.cut(1, "\ncd") == ("\ncd", False)  # rows are watched separately
    assert stops.cut(0, "\ncd") == ("\n", True)


def test_the_earliest_ending_stop_string_wins():
    assert StopStrings(["abc", "b"], rows=1).cut(0, "xabc") == ("xab", True)
    assert StopStrings(["cd", "abcde"], rows=1).cut(0, "abcdef") == ("abcd", True)


def test_a_long_piece_keeps_only_the_overlap():
    stops = StopStrings(["xyz"], rows=1)
    assert stops.cut(0, "0123456789x") == ("0123456789x", False)
    assert stops.tails == ["9x"]
    assert stops.cut(0, "y") == ("y", False)
    assert stops.cut(0, "z!") == ("z", True)


def test_no_stop_strings_cut_nothing():
    assert StopStrings((), rows=1).cut(0, "anything") == ("anything", False)


def test_a_stop_string_outside_the_vocabulary_is_refused():
    check_stop_characters(["ab"], "abc")
    with pytest.raises(ConfigError, match=r"stop string 'aé' can never be generated: 'é' not in"):
        check_stop_characters(["ab", "aé"], "abc")
