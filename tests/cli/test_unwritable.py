"""Places the OS refuses to write: each is one ``error: cannot write <path>: <reason>`` line,
exit 1, and nothing written there. Real refusals (the tests run as root, which ignores file
modes): a tmpfs mounted read-only, a directory with the immutable attribute, and a directory an
unprivileged user (uid 65534) may not write. Skipped, saying why, where the machine forbids one."""

import os
import shutil
import subprocess
import sys
import tempfile
from pathlib import Path

import pytest
from helpers import ROOT, TINY_RUN, TINY_TEXT, one_error_line, save_checkpoint

from tinygpt.cli import commands
from tinygpt.cli import train as train_cli

NOBODY = ["setpriv", "--reuid=65534", "--regid=65534", "--clear-groups"]
REASONS = {
    "read-only": "Read-only file system",
    "immutable": "Operation not permitted",
    "no permission": "Permission denied",
}


def _run(*command: str) -> str | None:
    """None if the command succeeded, else why not."""
    if shutil.which(command[0]) is None:
        return f"no {command[0]} here"
    done = subprocess.run(command, capture_output=True, text=True)
    return None if done.returncode == 0 else f"{' '.join(command)}: {done.stderr.strip()}"


# As an unprivileged user, each case is a process of its own (~5 s): slow.
@pytest.fixture(
    params=["read-only", "immutable", pytest.param("no permission", marks=pytest.mark.slow)]
)
def unwritable(request):
    """A directory holding tiny.txt that cannot be written, and the OS's reason."""
    # Under /tmp, readable by all: pytest's tmp_path is private to root.
    bad = Path(tempfile.mkdtemp(prefix="tinygpt-unwritable-"))
    bad.chmod(0o755)
    (bad / "tiny.txt").write_text(TINY_TEXT)
    undo = None
    if request.param == "read-only":
        refused = _run("mount", "-t", "tmpfs", "-o", "size=1m", "tmpfs", str(bad))
        if refused is None:
            undo = ("umount", str(bad))
            (bad / "tiny.txt").write_text(TINY_TEXT)
            refused = _run("mount", "-o", "remount,ro", str(bad))
    elif request.param == "immutable":
        refused = _run("chattr", "+i", str(bad))
        undo = ("chattr", "-i", str(bad)) if refused is None else None
    else:
        refused = _run(*NOBODY, "true")
    try:
        if refused is not None:
            pytest.skip(f"the machine refuses to make a {request.param} directory: {refused}")
        yield bad, REASONS[request.param]
    finally:
        if undo:
            _run(*undo)
        shutil.rmtree(bad, ignore_errors=True)


# Each place the tools write, as (the command, where it writes: under the unwritable BAD).
PLACES = {
    "run directory": ("train", ["hydra.run.dir=BAD/run"], "BAD/run"),
    "TINYGPT_ROOT": ("train", ["TINYGPT_ROOT=BAD/root"], "BAD/root"),
    "paths.data_dir": ("train", ["paths.data_dir=BAD/data", "data.path=null"], "BAD/data"),
    "token cache": ("train", ["data.path=BAD/tiny.txt", "data.cache_dir=BAD/cache"], "BAD"),
    "TensorBoard": ("train", ["logger.tensorboard.save_dir=BAD/tb"], "BAD/tb"),
    "export": ("export", ["BAD/exported"], "BAD/exported"),
}


@pytest.mark.parametrize("place", list(PLACES))
def test_an_unwritable_place_is_one_line_exit_1_and_nothing_written(
    unwritable, place, tiny_text_file, tmp_path, capsys
):
    bad, reason = unwritable
    command, settings, target = PLACES[place]
    settings = [s.replace("BAD", str(bad)) for s in settings]
    env = dict(s.split("=", 1) for s in settings if s.startswith("TINYGPT_ROOT="))
    if command == "export":
        argv = ["export", str(save_checkpoint(tmp_path / "model.ckpt")), *settings]
    else:
        run_dir = [] if env else [f"hydra.run.dir={tmp_path}/run"]
        argv = [*TINY_RUN, f"data.path={tiny_text_file}", *run_dir]
        argv += [s for s in settings if not s.startswith("TINYGPT_ROOT=")]
    if reason == "Permission denied":
        code, stderr = _as_nobody(command, argv, env, tmp_path)
    else:
        code, stderr = _in_process(command, argv, env, capsys)
    assert code == 1, stderr[-3000:]
    line = one_error_line(stderr)
    assert line.startswith(f"error: cannot write {target.replace('BAD', str(bad))}: {reason}")
    assert [p.name for p in bad.iterdir()] == ["tiny.txt"]  # nothing written, not even a part


def _in_process(command: str, argv: list[str], env: dict, capsys) -> tuple[int, str]:
    main = commands.main if command == "export" else train_cli.main
    with pytest.MonkeyPatch.context() as patch:
        for key, value in env.items():
            patch.setenv(key, value)
        with pytest.raises(SystemExit) as exit_info:
            main(argv)
    return exit_info.value.code, capsys.readouterr().err


def _as_nobody(command: str, argv: list[str], env: dict, tmp_path: Path) -> tuple[int, str]:
    """The command as an unprivileged user, its files copied into a directory it may write
    (pytest's tmp_path is private to root)."""
    home = Path(tempfile.mkdtemp(prefix="tinygpt-nobody-"))
    home.chmod(0o777)
    for path in tmp_path.iterdir():
        if path.is_file():
            shutil.copy(path, home / path.name)
            (home / path.name).chmod(0o644)
    argv = [a.replace(str(tmp_path), str(home)) for a in argv]
    script = [str(ROOT / "train.py")] if command == "train" else ["-m", "tinygpt"]
    try:
        done = subprocess.run(
            [*NOBODY, sys.executable, *script, *argv],
            cwd=home,
            env={**os.environ, "HOME": str(home), "TINYGPT_CACHE_DIR": str(home), **env},
            capture_output=True,
            text=True,
            timeout=300,
        )
    finally:
        shutil.rmtree(home, ignore_errors=True)
    return done.returncode, done.stderr
