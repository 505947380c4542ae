"""The command-line boundary: values typed back into Hydra, and its grammar errors as one line."""

import runpy
import shlex
import sys

import pytest
from helpers import ROOT
from hydra.core.global_hydra import GlobalHydra
from hydra.core.override_parser.overrides_parser import OverridesParser

from tinygpt.cli.quoting import hydra_quoted, hydra_value, quoting_hint, shell_word

AWKWARD_VALUES = [
    "/runs/0_model.num_experts-2+seed-1/checkpoints/last.ckpt",  # today's job directories
    "outputs/multirun/x/0_model.num_experts=2/checkpoints/last.ckpt",  # the old ones
    "/runs/0_model=dense,seed=1",
    "/my runs/a",
    "it's",
    'say "hi"',
    "trailing\\",
    "back\\'slash",
    "$HOME/x",
    "null",
    "1e3",
    "[1,2]",
    "é",
    " padded ",
]


def typed_back(argument: str) -> str:
    """What Hydra makes of ``argument`` typed into a shell: its value of ``key``."""
    (word,) = shlex.split(argument)
    override = OverridesParser.create().parse_override(word)
    assert not override.is_sweep_override()
    return override.value()


@pytest.mark.parametrize("value", AWKWARD_VALUES)
def test_values_written_for_hydra_and_the_shell_read_back_exactly(value):
    assert typed_back(shell_word(f"key={hydra_value(value)}")) == value
    assert typed_back(shell_word(f"key={hydra_quoted(value)}")) == value


def test_safe_paths_stay_as_they_are():
    path = "/runs/0_model.num_experts-2+seed-1/checkpoints/last.ckpt"
    assert shell_word(f"ckpt_path={hydra_value(path)}") == f"ckpt_path={path}"
    assert hydra_value("/my runs/a") == "/my runs/a"  # Hydra keeps inner spaces...
    assert (
        shell_word("hydra.run.dir=/my runs/a") == '"hydra.run.dir=/my runs/a"'
    )  # ...the shell not


@pytest.mark.parametrize(
    ("override", "hint"),
    [
        (
            "ckpt_path=outputs/a=b/last.ckpt",
            "quote the value for Hydra, inside the shell's quotes: "
            "\"ckpt_path='outputs/a=b/last.ckpt'\"",
        ),
        ("hydra.run.dir='a,b'", "\"hydra.run.dir='a,b'\""),  # quoted for the shell only
        ("prompt=it's", "'prompt='\"'\"'it\\'\"'\"'s'\"'\"''"),
        ("=oops", "\"ckpt_path='outputs/a=b/last.ckpt'\""),  # no key: a generic example
    ],
)
def test_quoting_hint_shows_the_argument_to_type(override, hint):
    assert quoting_hint(override).endswith(hint)


@pytest.mark.parametrize("script", ["train", "generate"])
@pytest.mark.parametrize(
    ("override", "start"),
    [
        (
            "ckpt_path=outputs/multirun/x/0_model.num_experts=2/checkpoints/last.ckpt",
            "Hydra cannot parse 'ckpt_path=outputs/multirun/x/0_model.num_experts=2/checkpoints/"
            "last.ckpt': mismatched input '=' expecting <EOF>",
        ),
        ("prompt=Zé", "Hydra cannot parse 'prompt=Zé': a character it cannot read here: 'é'"),
        ("ckpt_path=a,b", "Ambiguous value for argument 'ckpt_path=a,b'"),  # a single run
    ],
    ids=["equals sign", "non-ASCII", "comma"],
)
def test_grammar_errors_are_one_line_ending_with_how_to_quote(
    script, override, start, monkeypatch, capsys
):
    monkeypatch.setenv("HYDRA_FULL_ERROR", "0")  # run_hydra_app sets it: restored afterwards
    monkeypatch.setattr(sys, "argv", [f"{script}.py", override])
    try:  # the script as `python script.py override` runs it, in this process
        with pytest.raises(SystemExit) as exit_info:
            runpy.run_path(str(ROOT / f"{script}.py"), run_name="__main__")
    finally:
        GlobalHydra.instance().clear()
    assert exit_info.value.code == 2
    lines = capsys.readouterr().err.splitlines()
    assert len(lines) == 1 and lines[0].startswith(f"error: {start}"), lines
    key, _, value = override.partition("=")
    assert lines[0].endswith(
        f"quote the value for Hydra, inside the shell's quotes: \"{key}='{value}'\""
    )
