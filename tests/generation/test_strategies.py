"""The named decoding strategies are defined once: conf/decoder/ and the decoding report's table
read them from tinygpt/generation/strategies.py."""

from pathlib import Path

import pytest
from helpers import CONF, compose_task
from hydra.utils import instantiate

from tinygpt.errors import ConfigError
from tinygpt.generation import DECODERS, NOTEBOOK_STRATEGIES, SamplingParams
from tinygpt.generation.strategies import Decoder, decoder

OPTIONS = sorted(p.stem for p in (CONF / "decoder").glob("[!_]*.yaml"))


def composed_decoder(tmp_path: Path, *overrides: str) -> Decoder:
    return instantiate(compose_task("generate", list(overrides), tmp_path).decoder)


def test_every_decoder_config_is_a_named_strategy(tmp_path):
    assert set(OPTIONS) == set(DECODERS) - {"sampling"}
    for name in OPTIONS:
        assert composed_decoder(tmp_path, f"decoder={name}") == Decoder(name, DECODERS[name])
    plain = instantiate(compose_task("generate", ["decoder=_base"], tmp_path).decoder)
    assert plain == Decoder("sampling", SamplingParams())


def test_a_decoder_setting_can_be_overridden_or_switched_off(tmp_path):
    got = composed_decoder(
        tmp_path, "decoder=combined", "decoder.top_k=null", "decoder.temperature=0.5"
    )
    assert got.params == SamplingParams(temperature=0.5, top_k=None, top_p=0.9)
    stops = composed_decoder(tmp_path, "decoder=greedy", "decoder.stop=[ab,cd]").stop
    assert stops == ("ab", "cd")


@pytest.mark.parametrize(
    ("settings", "message"),
    [
        ({"name": "bogus"}, "decoder.name must be one of sampling, greedy, temperature, top_k"),
        ({"top_a": 1}, "unknown decoder parameter(s): top_a"),
        ({"top_p": 1.5}, "top_p must be a number in (0, 1]"),
        ({"stop": ""}, "stop strings must not be empty"),
    ],
)
def test_a_bad_decoder_is_a_config_error_naming_it(settings, message):
    with pytest.raises(ConfigError) as error:
        decoder(**settings)
    assert str(error.value).startswith(message)


def test_the_notebooks_table_is_named_decoders_with_the_settings_each_row_changes():
    table = {s.name: (s.decoder, s.params) for s in NOTEBOOK_STRATEGIES}
    assert table == {
        "greedy": ("greedy", SamplingParams(temperature=0.0)),
        "temperature 0.5": ("temperature", SamplingParams(temperature=0.5)),
        "temperature 1.5": ("temperature", SamplingParams(temperature=1.5)),
        "top-k 5": ("top_k", SamplingParams(top_k=5)),
        "nucleus 0.9": ("nucleus", SamplingParams(top_p=0.9)),
        "combined": ("combined", SamplingParams(temperature=0.8, top_k=10, top_p=0.9)),
    }


def test_the_notebooks_table_is_quoted_as_written():
    """The TinyGPT notebook's table: strategy, coherence, diversity, recommended use."""
    table = [(s.notebook_label, *s.claimed, s.use) for s in NOTEBOOK_STRATEGIES]
    assert table == [
        ("greedy", "high", "low", "technical text, consistency"),
        ("temperature 0.5", "high", "medium", "formal writing"),
        ("temperature 1.5", "low", "high", "creativity, brainstorming"),
        ("top-k (k=5)", "medium", "medium", "general balance"),
        ("nucleus (p=0.9)", "medium", "high", "creative narrative"),
        ("combined (T 0.8, top-k 10, top-p 0.9)", "high", "high", "best balance observed"),
    ]
    assert [s.claim for s in NOTEBOOK_STRATEGIES][:2] == ["high / low", "high / medium"]
