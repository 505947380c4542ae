"""The commands and Python snippets that README.md and docs/*.md show, run as shown.

Every ```bash and ```python block of the pages runs, in page order, unless an HTML comment on the
line before it says otherwise:

    <!-- not run: REASON -->        never started (installs, the test suite, benchmarks, GPUs)
    <!-- composed only: REASON -->  each job's config composed and resolved by Hydra, nothing run

bash itself reads each block, with every external program replaced by a recorder (PATH points
nowhere and ``command_not_found_handle`` records the words), so each command gets exactly the
shell's words: quotes, ``$'...'``, line continuations; builtins such as ``echo ... > file`` run.
Placeholders stand for what a reader pastes: ``<run>`` the last single training run that logged,
``<date_time>`` the last training sweep, ``<same overrides>`` that run's own overrides; in a
snippet, ``data/tinyshakespeare.txt`` is the tiny text the runs trained on.

One process then runs the recorded commands in a scratch project (TINYGPT_ROOT) on a tiny text,
each in a child forked after the heavy imports (a fresh process state, without paying ~6 s of
imports per command), with tiny overrides appended: 2 training steps, 2 Optuna trials, short
decoding reports; `tensorboard` is started for real, asked for its runs and stopped. The tables
that promise commands are composed too: the README's config table (each example override, each
option) and generation.md's decoders and quoting table (each bash form gives its prompt).

Run this file as a script (``python tests/test_docs_commands.py PLAN RESULTS``) to run a plan.
"""

from __future__ import annotations

import contextlib
import importlib
import json
import os
import re
import runpy
import shlex
import shutil
import signal
import socket
import subprocess
import sys
import time
import traceback
import urllib.request
from dataclasses import asdict, dataclass, field
from pathlib import Path

import pytest

REPO = Path(__file__).resolve().parents[1]
PAGES = [REPO / "README.md", *sorted((REPO / "docs").glob("*.md"))]
MARKER = re.compile(r"^<!--\s*(not run|composed only)\s*:\s*(.*?)\s*-->$")
FENCE = re.compile(r"^```(\w*)\s*$")
PLACEHOLDERS = {"<run>": "@run@", "<date_time>": "@date_time@", "<same overrides>": "@same@"}
UNKNOWN_PLACEHOLDER = re.compile(r"<[a-z][a-z_ ]*>")
SCRIPTS = {"train.py": "train", "generate.py": "generate", "eval.py": "eval"}  # -> its config
MODULES = {"tinygpt"}  # python -m tinygpt report|decoding-report|export ... (tinygpt.cli.commands)
# What each script writes into its run directory (each job's, for a multirun).
RECORDS = {"train.py": "summary.json", "generate.py": "samples.json", "eval.py": "eval.json"}

# A few lines holding every character the pages' prompts use (and the decoding report's).
TINY_TEXT = (
    "ROMEO:\nBut soft, what light through yonder window breaks?\n\n"
    "JULIET:\nO Romeo, Romeo! wherefore art thou Romeo?\n\n"
    "HAMLET:\nTo be, or not to be, that is the question.\n\n"
    "KING RICHARD III:\nNow is the winter of our discontent.\n\n"
    "First Citizen:\nPeace! Peace; away. It's True.\n\n"
) * 30
# Appended to every training command: later values win, so these cut any documented length (a
# resumed run keeps them too: a resume with another trainer.max_steps is refused).
TRAIN_ALWAYS = [
    "trainer.max_steps=2",
    "trainer.val_check_interval=2",
    "trainer.log_every_n_steps=1",
]
# Appended unless the command sets the key itself: pictures cost more than two steps of training.
TRAIN_UNLESS_SET = [
    "callbacks.attention_heatmap=null",
    "callbacks.sample_text=null",
    "callbacks.metric_plots=null",
    "callbacks.moe_dashboard=null",
]
OPTUNA_TRIALS = "hydra.sweeper.n_trials=2"
REPORT_TOKENS = ["--max-new-tokens", "30"]
COMMAND_TIMEOUT_S = 300


@dataclass
class Block:
    page: str  # relative to the repository
    line: int  # of the opening fence
    lang: str
    text: str
    mode: str = "run"  # run, not run, composed only
    reason: str = ""

    @property
    def where(self) -> str:
        return f"{self.page}:{self.line}"


@dataclass
class Item:
    """One thing to run: a recorded command or a Python snippet."""

    where: str
    mode: str  # run, composed only, snippet
    words: list[str] = field(default_factory=list)
    source: str = ""
    env_root: str = ""


# --- reading the pages ------------------------------------------------------------------------


def read_blocks(page: Path) -> tuple[list[Block], list[str]]:
    """The fenced blocks of ``page`` with their markers, and any misplaced or empty marker."""
    name = str(page.relative_to(REPO))
    lines = page.read_text(encoding="utf-8").splitlines()
    blocks, problems, pending = [], [], None
    i = 0
    while i < len(lines):
        line = lines[i].strip()
        marker = MARKER.match(line)
        fence = FENCE.match(line)
        if marker:
            if pending:
                problems.append(f"{name}:{pending[0]}: a marker not followed by a code block")
            pending = (i + 1, marker.group(1), marker.group(2))
            if not marker.group(2):
                problems.append(f"{name}:{i + 1}: '{marker.group(1)}' without a reason")
        elif fence:
            end = next((j for j in range(i + 1, len(lines)) if lines[j].strip() == "```"), None)
            if end is None:
                problems.append(f"{name}:{i + 1}: code block never closed")
                break
            block = Block(name, i + 1, fence.group(1), "\n".join(lines[i + 1 : end]) + "\n")
            if pending:
                block.mode, block.reason = pending[1], pending[2]
                if block.lang != "bash" and (block.lang, block.mode) != ("python", "not run"):
                    problems.append(f"{name}:{pending[0]}: '{block.mode}' before a ```{block.lang}")
                pending = None
            blocks.append(block)
            i = end
        elif line and pending:
            problems.append(f"{name}:{pending[0]}: a marker not directly before a code block")
            pending = None
        i += 1
    if pending:
        problems.append(f"{name}:{pending[0]}: a marker not followed by a code block")
    return blocks, problems


def config_table_blocks() -> list[Block]:
    """The README's config table as commands to compose: each example override, each option."""
    blocks = []
    lines = (REPO / "README.md").read_text(encoding="utf-8").splitlines()
    header = next(i for i, ln in enumerate(lines) if ln.startswith("| group | options |"))
    for number, row in enumerate(lines[header + 2 :], start=header + 3):
        if not row.startswith("|"):
            break
        group, options, examples = (cell.strip() for cell in row.strip("|").split("|"))
        group = group.strip("`")
        words = [f"python train.py {example}" for example in re.findall(r"`([^`]+)`", examples)]
        for option in re.findall(r"`([a-z_0-9]+)`", options):
            words.append(f"python train.py -m {group}={option}")
        text = "".join(f"{command}\n" for command in words)
        blocks.append(Block("README.md", number, "bash", text, "composed only", "config table"))
    return blocks


def quoting_table() -> list[tuple[int, str, list[str]]]:
    """docs/generation.md's quoting table: (line, the prompt, the bash forms said to give it)."""
    lines = (REPO / "docs" / "generation.md").read_text(encoding="utf-8").splitlines()
    header = next(i for i, ln in enumerate(lines) if ln.startswith("| prompt | bash |"))
    rows = []
    for number, row in enumerate(lines[header + 2 :], start=header + 3):
        if not row.startswith("|"):
            break
        prompt_cell, bash_cell = (cell.strip() for cell in row.strip("|").split("|"))
        prompts = re.findall(r"`([^`]+)`", prompt_cell)
        prompt = "\n".join(prompts) if "two lines" in prompt_cell else prompts[0]
        forms = [f for f in re.findall(r"`([^`]+)`", bash_cell) if re.match(r"\W?prompt=", f)]
        rows.append((number, prompt, forms))
    return rows


def generation_table_blocks() -> list[Block]:
    """docs/generation.md's quoting table and decoders, as generate.py commands to compose."""
    page = "docs/generation.md"
    blocks = [
        Block(page, line, "bash", "".join(f"python generate.py {f}\n" for f in forms))
        for line, _, forms in quoting_table()
    ]
    text = (REPO / page).read_text(encoding="utf-8")
    row = re.search(r"^\| `decoder` \|(.*)\|$", text, re.M)
    decoders = re.findall(r"`(\w+)`", row.group(1))
    line = text[: row.start()].count("\n") + 1
    blocks.append(
        Block(page, line, "bash", "".join(f"python generate.py decoder={d}\n" for d in decoders))
    )
    for block in blocks:
        block.mode, block.reason = "composed only", "the tables of generation.md"
    return blocks


def all_blocks() -> tuple[list[Block], list[str]]:
    blocks, problems = [], []
    for page in PAGES:
        found, wrong = read_blocks(page)
        blocks += found
        problems += wrong
    return blocks + config_table_blocks() + generation_table_blocks(), problems


def with_placeholders(block: Block) -> tuple[str, list[str]]:
    """The block's text with its placeholders marked for late substitution, and unknown ones."""
    text = block.text
    for placeholder, token in PLACEHOLDERS.items():
        text = text.replace(placeholder, token)
    return text, [
        f"{block.where}: unknown placeholder {p}" for p in UNKNOWN_PLACEHOLDER.findall(text)
    ]


RECORDER = """unset TINYGPT_ROOT
__record() { printf '%s\\0' "$__block" "${TINYGPT_ROOT-}" "$#" "$@" >> "$__out"; }
command_not_found_handle() { __record "$@"; return 0; }
PATH=/nonexistent-docs-test
"""


def record_commands(blocks: list[Block], workdir: Path) -> tuple[list[Item], list[str]]:
    """Each bash block's commands, with the words bash gives them; blocks run in ``workdir``."""
    script_dir = workdir / ".docs_blocks"
    script_dir.mkdir(exist_ok=True)
    out = script_dir / "recorded"
    lines, problems = [RECORDER, f"__out={shlex.quote(str(out))}\n"], []
    shell_blocks = [b for b in blocks if b.lang == "bash" and b.mode != "not run"]
    for index, block in enumerate(shell_blocks):
        text, unknown = with_placeholders(block)
        problems += unknown
        path = script_dir / f"{index}.sh"
        path.write_text(text)
        lines.append(
            f"__block={index}; ( source {shlex.quote(str(path))} ) || echo failed {index}\n"
        )
    result = subprocess.run(
        ["bash", "-c", "".join(lines)], cwd=workdir, capture_output=True, text=True, timeout=60
    )
    for failed in re.findall(r"^failed (\d+)$", result.stdout, re.M):
        problems.append(f"{shell_blocks[int(failed)].where}: bash cannot read the block")
    if result.stderr.strip():
        problems.append(f"bash: {result.stderr.strip()}")
    fields_ = out.read_bytes().split(b"\0")[:-1] if out.exists() else []
    items, i = [], 0
    while i < len(fields_):
        index, root, count = int(fields_[i]), fields_[i + 1].decode(), int(fields_[i + 2])
        words = [w.decode() for w in fields_[i + 3 : i + 3 + count]]
        block = shell_blocks[index]
        items.append(Item(block.where, block.mode, words, env_root=root))
        i += 3 + count
    return items, problems


def plan(blocks: list[Block], workdir: Path) -> tuple[list[Item], list[str]]:
    """Commands and snippets in page order (a snippet follows the commands before it)."""
    commands, problems = record_commands(blocks, workdir)
    by_block: dict[str, list[Item]] = {}
    for item in commands:
        by_block.setdefault(item.where, []).append(item)
    items = []
    for block in blocks:
        if block.lang == "bash":
            items += by_block.get(block.where, [])
            if block.mode != "not run" and block.where not in by_block:
                problems.append(f"{block.where}: a bash block without a command")
        elif block.lang == "python" and block.mode == "run":
            source, unknown = with_placeholders(block)
            problems += unknown
            items.append(Item(block.where, "snippet", source=source))
    for item in items:
        problems += [f"{item.where}: {p}" for p in command_problems(item)]
    return items, problems


def command_problems(item: Item) -> list[str]:
    """What this test cannot run as documented; such a block needs a marker."""
    if item.mode == "snippet":
        return []
    if item.env_root:
        return ["TINYGPT_ROOT=... before a command is not run by this test: mark the block"]
    program, args = item.words[0], item.words[1:]
    if program == "tensorboard" and item.mode == "run":
        return []
    if program != "python" or not args:
        return [f"`{' '.join(item.words)}` is no command this test runs: mark the block"]
    if args[0] in SCRIPTS or (args[0] == "-m" and len(args) > 2 and args[1] in MODULES):
        if args[0] == "-m" and item.mode != "run":
            return ["only train.py, generate.py and eval.py commands can be composed"]
        return []
    return [f"`python {args[0]}` is no command this test runs: mark the block"]


# --- running one command (in the runner process) ---------------------------------------------


def sets(args: list[str], key: str) -> bool:
    """Whether an override in ``args`` sets ``key``, a key inside it, or a node holding it."""
    for arg in args:
        name = arg.split("=", 1)[0].lstrip("+~")
        if name == key or name.startswith(key + ".") or key.startswith(name + "."):
            return True
    return False


def train_overrides(args: list[str], data: str) -> list[str]:
    extra = list(TRAIN_ALWAYS)
    extra += [o for o in TRAIN_UNLESS_SET if not sets(args, o.split("=")[0])]
    if not sets(args, "data.path"):
        extra.append(f"data.path={data}")
    if "hparams_search=optuna" in args:
        extra.append(OPTUNA_TRIALS)
    return extra


def option(args: list[str], name: str, assigned: bool = False) -> str | None:
    """The value of ``--name VALUE`` (or, with ``assigned``, of the last ``name=VALUE``)."""
    if assigned:
        values = [a.split("=", 1)[1] for a in args if a.startswith(name + "=")]
        return values[-1] if values else None
    return args[args.index(name) + 1] if name in args else None


class Runner:
    """Runs a plan's items in order, in ``workdir``, remembering the runs they made."""

    def __init__(self, workdir: Path, data: Path) -> None:
        self.workdir, self.data = workdir, data
        self.last_run: tuple[str, list[str]] | None = None  # name, documented overrides
        self.last_sweep: str | None = None

    # placeholders ----------------------------------------------------------------------------
    def substitute(self, words: list[str]) -> list[str]:
        out = []
        for word in words:
            if word == "@same@":
                out += self.last_run[1] if self.last_run else []
                continue
            if "@run@" in word and self.last_run:
                word = word.replace("@run@", self.last_run[0])
            if "@date_time@" in word and self.last_sweep:
                word = word.replace("@date_time@", self.last_sweep)
            out.append(word)
        return out

    # one item --------------------------------------------------------------------------------
    def run(self, index: int, item: Item) -> dict:
        log = self.workdir / ".docs_logs" / f"{index:03d}.log"
        log.parent.mkdir(exist_ok=True)
        started = time.monotonic()
        result = {"where": item.where, "mode": item.mode, "problems": []}
        try:
            if item.mode == "snippet":
                source = item.source.replace("@run@", self.last_run[0] if self.last_run else "")
                source = source.replace("@date_time@", self.last_sweep or "")
                source = source.replace("data/tinyshakespeare.txt", str(self.data))
                result["command"] = item.source.strip().splitlines()[0] + " ..."
                result["exit"] = self.forked(log, lambda: exec_snippet(source, item.where))
            else:
                words = self.substitute(item.words)
                result["command"] = shlex.join(words)
                if words[0] == "tensorboard":
                    result.update(self.tensorboard(words[1:], log))
                else:
                    result.update(self.python(index, words[1:], log))
        except Exception:  # the runner's own failure, reported against the item
            result["exit"] = -1
            result["problems"].append(traceback.format_exc())
        result["seconds"] = round(time.monotonic() - started, 1)
        if result.get("exit") != 0 or result["problems"]:
            result["log_tail"] = log.read_text(errors="replace")[-3000:] if log.exists() else ""
        return result

    def compose(self, batch: list[tuple[int, Item]]) -> list[dict]:
        """Compose consecutive ``composed only`` commands, all in one child process."""
        logs = self.workdir / ".docs_logs"
        logs.mkdir(exist_ok=True)
        commands = [(self.substitute(item.words), logs / f"{i:03d}.json") for i, item in batch]
        log = logs / f"{batch[0][0]:03d}-compose.log"
        started = time.monotonic()
        code = self.forked(log, lambda: compose_each(commands))
        seconds = round((time.monotonic() - started) / len(batch), 1)
        results = []
        for (_, item), (words, out) in zip(batch, commands, strict=True):
            outcome = json.loads(out.read_text()) if out.exists() else {"error": f"exit {code}"}
            result = {"where": item.where, "mode": item.mode, "command": shlex.join(words)}
            result.update(exit=0 if "composed" in outcome else 1, problems=[], seconds=seconds)
            if "composed" in outcome:
                result["composed"] = outcome["composed"]
            else:
                result["log_tail"] = outcome["error"] + log.read_text(errors="replace")[-2000:]
            results.append(result)
        return results

    def python(self, index: int, args: list[str], log: Path) -> dict:
        if args[0] in SCRIPTS:
            return self.script(index, args[0], args[1:], log)
        module, command, args = args[1], args[2], args[3:]
        if command == "export":  # CKPT OUT_DIR: the directory transformers loads
            code = self.forked(log, lambda: run_module(module, [command, *args]))
            wanted = Path(args[1]) / "config.json"
            problems = [f"exit 0 but no {wanted}"] if code == 0 and not wanted.is_file() else []
            return {"exit": code, "problems": problems, "ran": shlex.join(args)}
        if "--max-new-tokens" not in args:
            args += REPORT_TOKENS
        if "--run" in args:  # the sweep the report trains first gets the tiny overrides too
            at = args.index("--run") + 1
            sweep = shlex.split(args[at])
            args[at] = shlex.join(sweep + train_overrides(sweep, str(self.data)))
        out = Path(
            option(args, "--out") or ("report" if command == "report" else "decoding_report")
        )
        code = self.forked(log, lambda: run_module(module, [command, *args]))
        problems = []
        if code == 0:
            wanted = out / ("report.md" if command == "report" else "decoding.md")
            if not wanted.is_file():
                problems.append(f"exit 0 but no {wanted}")
            page = option(args, "--results") or option(args, "--readme")
            sweep = option(args, "--sweep")
            if page and f"--sweep {sweep}" not in Path(page).read_text(encoding="utf-8"):
                problems.append(f"{page} does not say it was written from --sweep {sweep}")
        return {"exit": code, "problems": problems, "ran": shlex.join(args)}

    def script(self, index: int, script: str, documented: list[str], log: Path) -> dict:
        """``python train.py|generate.py|eval.py ...``: it exits 0 and writes each run's record."""
        multirun = "-m" in documented or "--multirun" in documented
        args = list(documented)
        if script == "train.py":
            args += train_overrides(documented, str(self.data))
        dir_key = "hydra.sweep.dir" if multirun else "hydra.run.dir"
        if not sets(args, dir_key):
            kind = {
                ("train.py", False): "runs",
                ("train.py", True): "multirun",
                ("generate.py", False): "generate",
                ("generate.py", True): "generate-multirun",
                ("eval.py", False): "eval",
                ("eval.py", True): "eval-multirun",
            }[script, multirun]
            args.append(f"{dir_key}=outputs/{kind}/docs-{index}")
        directory = Path(option(args, dir_key, assigned=True))
        code = self.forked(log, lambda: run_script(script, args))
        problems = []
        if code == 0:
            record = RECORDS[script]
            runs = [p.parent for p in directory.glob("*/.hydra")] if multirun else [directory]
            if not runs:
                problems.append(f"exit 0 but no job directories in {directory}")
            problems += [
                f"exit 0 but no {run / record}" for run in runs if not (run / record).is_file()
            ]
        if code == 0 and script == "train.py":
            if multirun and directory.parent.name == "multirun":
                self.last_sweep = directory.name
            elif not multirun and directory.parent.name == "runs" and "logger=none" not in args:
                # <run> stands for a run with metrics to report: a logger=none run has none.
                own = [a for a in documented if not a.startswith(("hydra.run.dir=", "ckpt_path="))]
                self.last_run = (directory.name, own)
        return {"exit": code, "problems": problems, "ran": shlex.join(args)}

    def tensorboard(self, args: list[str], log: Path) -> dict:
        program = Path(sys.executable).with_name("tensorboard")
        with socket.socket() as sock:
            sock.bind(("127.0.0.1", 0))
            port = sock.getsockname()[1]
        extra = ["--host", "127.0.0.1", "--port", str(port), "--load_fast=false"]
        with log.open("w") as out:
            server = subprocess.Popen(
                [str(program), *args, *extra], stdout=out, stderr=subprocess.STDOUT
            )
        try:
            deadline, runs = time.monotonic() + 90, []
            while time.monotonic() < deadline and server.poll() is None and not runs:
                time.sleep(1)
                try:
                    url = f"http://127.0.0.1:{port}/data/runs"
                    with urllib.request.urlopen(url, timeout=5) as response:
                        runs = json.loads(response.read())
                except OSError:
                    continue
        finally:
            server.terminate()
            try:
                server.wait(timeout=10)
            except subprocess.TimeoutExpired:
                server.kill()
                server.wait()
        problems = [] if runs else ["tensorboard served no runs"]
        return {"exit": 0 if runs else 1, "problems": problems, "runs": len(runs)}

    def forked(self, log: Path, work) -> int:
        """Run ``work`` in a child process (output to ``log``); its exit status."""
        sys.stdout.flush()
        sys.stderr.flush()
        pid = os.fork()
        if pid == 0:  # the child: never returns
            code = 1
            try:
                os.setpgid(0, 0)  # its own group, so that whatever it leaves behind can be ended
                fd = os.open(log, os.O_WRONLY | os.O_CREAT | os.O_APPEND)
                os.dup2(fd, 1)
                os.dup2(fd, 2)
                os.dup2(os.open(os.devnull, os.O_RDONLY), 0)
                work()
                code = 0
            except SystemExit as exc:
                code = exc.code if isinstance(exc.code, int) else (0 if exc.code is None else 1)
                if isinstance(exc.code, str):
                    print(exc.code, file=sys.stderr)
            except BaseException:
                traceback.print_exc()
            finally:
                sys.stdout.flush()
                sys.stderr.flush()
                os._exit(code)
        deadline, code = time.monotonic() + COMMAND_TIMEOUT_S, 124
        while time.monotonic() < deadline:
            done, status = os.waitpid(pid, os.WNOHANG)
            if done:
                code = os.waitstatus_to_exitcode(status)
                break
            time.sleep(0.05)
        # The child's group: the child itself on a timeout, and the worker processes a launcher
        # (joblib's loky) keeps alive for reuse, which would outlive the child otherwise.
        with contextlib.suppress(ProcessLookupError):
            os.killpg(pid, signal.SIGKILL)
        if code == 124:
            os.waitpid(pid, 0)
        return code


def run_script(script: str, args: list[str]) -> None:
    sys.argv = [script, *args]
    runpy.run_path(str(REPO / script), run_name="__main__")


def run_module(module: str, args: list[str]) -> None:
    sys.argv = [f"python -m {module}", *args]
    runpy.run_module(module, run_name="__main__", alter_sys=True)


def exec_snippet(source: str, where: str) -> None:
    exec(compile(source, where, "exec"), {"__name__": "__docs__"})


def compose_each(commands: list[tuple[list[str], Path]]) -> None:
    """Compose each ``python SCRIPT ARGS`` command, writing its jobs' configs or its error."""
    for words, out in commands:
        try:
            composed = compose_jobs(words[1], words[2:])
        except BaseException:  # SystemExit too: a composition error, reported as the user sees it
            out.write_text(json.dumps({"error": traceback.format_exc()}))
        else:
            out.write_text(json.dumps({"composed": composed}, default=str))


def compose_jobs(script: str, args: list[str]) -> list[dict]:
    """Each job of ``python SCRIPT ARGS``, composed and resolved by the script itself.

    Each job's overrides (a sweep expanded as Hydra's basic sweeper expands it) go to the script
    with ``--cfg all --resolve``: its Hydra app composes and prints the job's whole config,
    launcher included, and runs nothing.
    """
    import io

    import yaml
    from hydra._internal.core_plugins.basic_sweeper import BasicSweeper
    from hydra.core.global_hydra import GlobalHydra
    from hydra.core.override_parser.overrides_parser import OverridesParser

    overrides = [a for a in args if a not in ("-m", "--multirun")]
    parsed = OverridesParser.create().parse_overrides(overrides)
    jobs = [list(job) for batch in BasicSweeper.split_arguments(parsed, None) for job in batch]
    composed = []
    for job in jobs:
        GlobalHydra.instance().clear()
        printed, errors = io.StringIO(), io.StringIO()
        try:
            with contextlib.redirect_stdout(printed), contextlib.redirect_stderr(errors):
                run_script(script, [*job, "--cfg", "all", "--resolve"])
        except SystemExit as exc:
            if exc.code not in (None, 0):
                raise RuntimeError(f"{job}: exit {exc.code}: {errors.getvalue()}") from None
        config = yaml.safe_load(printed.getvalue())
        launcher = config.pop("hydra")["launcher"]
        composed.append({"overrides": job, "config": config, "launcher": launcher})
    return composed


def run_plan(plan_path: Path, results_path: Path) -> None:
    """The runner process: preload the heavy modules once, then run every item."""
    import hydra  # noqa: F401
    import lightning  # noqa: F401
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot  # noqa: F401
    import torch  # noqa: F401

    # The scripts' and the reports' own imports too; each child runs its script afresh.
    for script in SCRIPTS:
        runpy.run_path(str(REPO / script), run_name="__docs_preload__")
    importlib.import_module("tinygpt.cli.commands")

    spec = json.loads(plan_path.read_text())
    runner = Runner(Path.cwd(), Path(spec["data"]))
    items = [Item(**item) for item in spec["items"]]
    results, index = [], 0
    while index < len(items):
        if items[index].mode == "composed only":
            end = next(
                (j for j in range(index, len(items)) if items[j].mode != "composed only"),
                len(items),
            )
            results += runner.compose(list(enumerate(items))[index:end])
            index = end
        else:
            results.append(runner.run(index, items[index]))
            index += 1
        results_path.write_text(json.dumps(results, indent=1))


# --- the tests --------------------------------------------------------------------------------


def scratch_project(root: Path) -> Path:
    """A directory holding copies of the pages and a tiny text; runs write here, not in REPO."""
    (root / "docs" / "results").mkdir(parents=True)
    for page in PAGES:
        shutil.copy(page, root / page.relative_to(REPO))
    data = root / "tiny.txt"
    data.write_text(TINY_TEXT, encoding="utf-8")
    return data


def test_every_block_runs_or_says_why_not(tmp_path):
    blocks, problems = all_blocks()
    assert problems == []
    assert {b.page for b in blocks if b.lang == "bash"} >= {"README.md"}
    for block in blocks:
        if block.mode != "run":
            assert block.lang in ("bash", "python") and block.reason, block.where
    items, problems = plan(blocks, tmp_path)
    assert problems == []
    assert sum(i.mode == "run" for i in items) >= 10  # the pages' commands are found and run


def anchor(heading: str) -> str:
    """GitHub's anchor for a Markdown heading: lower case, punctuation dropped, spaces to -."""
    return re.sub(r"[^\w\- ]", "", heading.strip().lower()).replace(" ", "-")


def test_links_between_pages_lead_somewhere():
    """Every relative link of the pages names a file that exists, and a heading it holds."""
    broken = []
    for page in PAGES:
        for target in re.findall(r"\]\(([^)\s]+)\)", page.read_text(encoding="utf-8")):
            if re.match(r"[a-z]+:", target):
                continue  # http(s): not checked here
            path, _, fragment = target.partition("#")
            file = (page.parent / path).resolve() if path else page
            if not file.exists():
                broken.append(f"{page.name}: {target}: no such file")
            elif fragment:
                headings = re.findall(r"^#+ (.+)$", file.read_text(encoding="utf-8"), re.M)
                if fragment not in {anchor(h) for h in headings}:
                    broken.append(f"{page.name}: {target}: no such heading")
    assert broken == []


@pytest.fixture(scope="module")
def docs_run(tmp_path_factory) -> list[dict]:
    root = tmp_path_factory.mktemp("docs_project")
    data = scratch_project(root)
    blocks, problems = all_blocks()
    items, more = plan(blocks, root)
    assert problems + more == []
    plan_path, results_path = root / ".docs_plan.json", root / ".docs_results.json"
    plan_path.write_text(json.dumps({"data": str(data), "items": [asdict(i) for i in items]}))
    env = {
        **os.environ,
        "PYTHONPATH": str(REPO),
        "TINYGPT_ROOT": str(root),
        "PATH": f"{Path(sys.executable).parent}{os.pathsep}{os.environ.get('PATH', '')}",
        "MPLBACKEND": "Agg",
    }
    subprocess.run(
        [sys.executable, __file__, str(plan_path), str(results_path)],
        cwd=root,
        env=env,
        timeout=1200,
        check=True,
    )
    results = json.loads(results_path.read_text())
    assert len(results) == len(items)
    return results


def failures(results: list[dict]) -> str:
    return "\n\n".join(
        f"{r['where']}: `{r.get('command', '')}` exit {r.get('exit')} {r['problems']}\n"
        f"{r.get('log_tail', '')}"
        for r in results
        if r.get("exit") != 0 or r["problems"]
    )


@pytest.mark.slow
def test_documented_commands_run(docs_run):
    commands = [r for r in docs_run if r["mode"] != "snippet"]
    assert sum(r["mode"] == "run" for r in commands) >= 10
    assert not failures(commands), failures(commands)


@pytest.mark.slow
def test_documented_python_snippets_run(docs_run):
    snippets = [r for r in docs_run if r["mode"] == "snippet"]
    assert len(snippets) >= 3
    assert not failures(snippets), failures(snippets)


@pytest.mark.slow
def test_quoting_table_gives_each_prompt(docs_run):
    """Each bash form of docs/generation.md's quoting table gives its prompt, as a string."""
    rows = quoting_table()
    assert len(rows) >= 5
    for line, prompt, forms in rows:
        composed = [r for r in docs_run if r["where"] == f"docs/generation.md:{line}"]
        assert len(composed) == len(forms) >= 1, line
        for result in composed:
            assert result["exit"] == 0, failures([result])
            assert result["composed"][0]["config"]["prompt"] == prompt, result["command"]


@pytest.mark.slow
def test_documented_moe_defaults_are_the_config(docs_run):
    """docs/moe.md's table of keys and defaults against `model=moe` as Hydra composes it."""
    composed = next(
        r["composed"][0]["config"]["model"]
        for r in docs_run
        if r.get("command") == "python train.py -m model=moe" and "composed" in r
    )
    rows = re.findall(
        r"^\| `model\.(\w+)` \| ([^|]+) \|", (REPO / "docs" / "moe.md").read_text(), re.M
    )
    assert len(rows) == 7
    for key, default in rows:
        assert json.dumps(composed[key]) == default.strip(), key


if __name__ == "__main__":
    run_plan(Path(sys.argv[1]), Path(sys.argv[2]))
