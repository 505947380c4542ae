"""The named decoders are defined once, in tinygpt.generation.DECODERS: conf/decoder/, the
notebook's named functions and the decoding report's table read them from there."""

from pathlib import Path

import pytest
from helpers import CONF, compose_task

from tinygpt.analysis.decoding import NOTEBOOK_TABLE
from tinygpt.cli.generate import configured_decoder
from tinygpt.errors import ConfigError
from tinygpt.generation import DECODERS, Decoder, named_decoder

OPTIONS = sorted(p.stem for p in (CONF / "decoder").glob("[!_]*.yaml"))


def composed(tmp_path: Path, *overrides: str) -> tuple[Decoder, tuple[str, ...]]:
    return configured_decoder(compose_task("generate", list(overrides), tmp_path).decoder)


def test_every_decoder_config_is_a_named_decoder(tmp_path):
    assert set(OPTIONS) == set(DECODERS) - {"sampling"}
    for name in OPTIONS:
        assert composed(tmp_path, f"decoder={name}") == (DECODERS[name], ())
    assert composed(tmp_path, "decoder=_base") == (Decoder(), ())


def test_a_decoder_setting_can_be_overridden_or_switched_off(tmp_path):
    got, _ = composed(tmp_path, "decoder=combined", "decoder.top_k=null", "decoder.temperature=0.5")
    assert got == Decoder(temperature=0.5, top_k=None, top_p=0.9)
    assert named_decoder("combined", top_k=None, temperature=0.5) == got
    _, stops = composed(tmp_path, "decoder=greedy", "decoder.stop=[ab,cd]")
    assert stops == ("ab", "cd")


@pytest.mark.parametrize(
    ("overrides", "message"),
    [
        (
            ["decoder.name=bogus"],
            "decoder.name must be one of sampling, greedy, temperature",
        ),
        (["+decoder.top_a=1"], "unknown decoder parameter(s): top_a"),
        (["decoder.top_p=1.5"], "top_p must be a number in (0, 1]"),
        (["decoder.stop=''"], "stop strings must not be empty"),
    ],
)
def test_a_bad_decoder_is_a_config_error_naming_it(tmp_path, overrides, message):
    with pytest.raises(ConfigError) as error:
        composed(tmp_path, *overrides)
    assert str(error.value).startswith(message)


def test_the_notebooks_table_is_named_decoders_with_the_settings_each_row_changes():
    table = {s.name: (s.decoder, s.params) for s in NOTEBOOK_TABLE}
    assert table == {
        "greedy": ("greedy", Decoder(temperature=0.0)),
        "temperature 0.5": ("temperature", Decoder(temperature=0.5)),
        "temperature 1.5": ("temperature", Decoder(temperature=1.5)),
        "top-k 5": ("top_k", Decoder(top_k=5)),
        "nucleus 0.9": ("nucleus", Decoder(top_p=0.9)),
        "combined": ("combined", Decoder(temperature=0.8, top_k=10, top_p=0.9)),
    }
