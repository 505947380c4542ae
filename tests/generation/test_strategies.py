"""The named decoding strategies are defined once: conf/decoder/ reads them from
tinygpt/generation/strategies.py."""

from pathlib import Path

import pytest
from helpers import CONF, compose_task
from hydra.utils import instantiate

from tinygpt.errors import ConfigError
from tinygpt.generation import DECODERS, SamplingParams
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
