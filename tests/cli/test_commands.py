"""``python -m tinygpt COMMAND``: one parser for the reports and the export; a missing or unknown
command is one ``error:`` line and exit 2, as every bad argument of each command."""

import runpy
import sys

import pytest
from helpers import one_error_line


@pytest.mark.parametrize(
    ("argv", "message"),
    [
        ([], "the following arguments are required: COMMAND"),
        (["report-all"], "argument COMMAND: invalid choice: 'report-all'"),
        (["export", "--bogus"], "the following arguments are required: checkpoint, out_dir"),
    ],
)
def test_a_bad_command_line_is_one_error_line_and_exit_2(argv, message, monkeypatch, capsys):
    monkeypatch.setattr(sys, "argv", ["python -m tinygpt", *argv])
    with pytest.raises(SystemExit) as exit_info:
        runpy.run_module("tinygpt", run_name="__main__")  # as python -m tinygpt runs it
    assert exit_info.value.code == 2
    line = one_error_line(capsys.readouterr().err)
    assert message in line and "(usage: python -m tinygpt" in line
