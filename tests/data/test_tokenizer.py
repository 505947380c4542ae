import pytest
import torch

from tinygpt.data.tokenizer import CharTokenizer, UnknownCharactersError


def test_vocabulary_is_sorted_and_round_trips():
    tok = CharTokenizer.from_text("hello world")
    assert tok.chars == " dehlorw"
    ids = tok.encode("hello world")
    assert ids.dtype == torch.int64
    assert ids.tolist() == [3, 2, 4, 4, 5, 0, 7, 5, 6, 4, 1]
    assert tok.decode(ids) == "hello world"


def test_ids_do_not_depend_on_order_of_appearance():
    assert CharTokenizer.from_text("cba").chars == CharTokenizer.from_text("abc").chars


def test_unknown_characters_are_named():
    tok = CharTokenizer.from_text("abc")
    with pytest.raises(UnknownCharactersError, match=r"2 character\(s\).*'x', 'z'"):
        tok.encode("abzcx")


def test_unknown_characters_can_be_left_out():
    tok = CharTokenizer.from_text("abc")
    assert tok.encode("abzcxa", skip_unknown=True).tolist() == [0, 1, 2, 0]
    assert tok.encode("cab", skip_unknown=True).tolist() == [2, 0, 1]


def test_non_ascii_text_round_trips():
    text = "héllo — wörld ☃"
    tok = CharTokenizer.from_text(text)
    assert tok.decode(tok.encode(text)) == text


def test_serialises_as_plain_types():
    tok = CharTokenizer.from_text("To be, or not to be")
    state = tok.to_dict()
    assert state == {"chars": tok.chars}
    assert CharTokenizer.from_dict(state) == tok


def test_empty_text_encodes_to_empty_tensor():
    assert CharTokenizer.from_text("ab").encode("").numel() == 0


def test_invalid_vocabulary_refused():
    with pytest.raises(ValueError, match="sorted"):
        CharTokenizer("ba")
    with pytest.raises(ValueError, match="empty"):
        CharTokenizer("")
