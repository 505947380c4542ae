"""The TinyGPT notebook's claims, measured: one command trains the runs and writes the page.

    python -m tinygpt.claims                 # train what is missing, then write docs/results.md
    python -m tinygpt.claims --pages-only    # rewrite the page from the runs already there

Two sweeps of train.py, run in this process, each dense and MoE with three seeds:

* ``full``: all of TinyShakespeare with the defaults (the notebook's size, 2000 steps);
* ``notebook_100k``: ``experiment=notebook_100k``, the notebook's own setting: the first
  100,000 characters, loss per epoch, ``--epochs`` epochs.

A sweep whose every job finished already (a ``summary.json`` from the same overrides) is kept
as it is; one that was started continues with ``ckpt_path=last`` (finished jobs are kept,
interrupted ones resume, missing ones start), so an interrupted regeneration picks up where it
stopped. ``--smoke`` walks the whole pipeline in about a minute (2 epochs, 20 steps, 2 short
samples): a check of the code, never numbers for the page. Then each claim is measured on the runs
(:func:`~tinygpt.analysis.notebook_claims.measure_claims`), given a verdict
by one rule (:mod:`tinygpt.analysis.verdicts`), and written out: the results page between its
markers, and in ``--out`` the pictures (``epochs.png``, ``val_loss.png``, ``attention.png``,
``decoding.png``), ``decoding.md``, ``decoding_samples.json`` and every number in
``claims.json``.
"""

from __future__ import annotations

import argparse
import json
import math
import os
import shlex
import sys
import time
from collections.abc import Sequence
from pathlib import Path

import yaml

from tinygpt.analysis.decoding_report import (
    DEFAULT_MAX_NEW_TOKENS,
    DEFAULT_NUM_SAMPLES,
    compare_decoding,
    write_decoding_report,
)
from tinygpt.analysis.notebook_claims import (
    KINDS,
    ClaimsError,
    decoding_verdicts,
    load_setting,
    measure_claims,
    measure_setting,
    run_text,
)
from tinygpt.analysis.report import START_MARKER, best_checkpoint
from tinygpt.analysis.results_page import COMMAND, draw, numbers, page_body, write_page
from tinygpt.checkpoint import load_model
from tinygpt.cli.errors import user_errors
from tinygpt.cli.paths import root_dir
from tinygpt.cli.quoting import hydra_value
from tinygpt.files import write_text_atomic

DEFAULT_OUT = Path("docs/results")
DEFAULT_PAGE = Path("docs/results.md")
DEFAULT_SEEDS = (1, 2, 3)
DEFAULT_EPOCHS = 100
SWEEP_TIME_FILE = "claims_training_seconds.json"  # written into each sweep by the command
# Cheap runs: the per-validation pictures and samples are TensorBoard's, not the page's.
QUIET = (
    "callbacks.attention_heatmap=null",
    "callbacks.sample_text=null",
    "callbacks.moe_dashboard=null",
    "callbacks.progress_bar.refresh_rate=0",
)
# Each setting's own overrides.
SETTING_OVERRIDES = {"full": (), "notebook_100k": ("experiment=notebook_100k",)}
# --smoke: the defaults it changes.
SMOKE = {"epochs": 2, "steps": 20, "num_samples": 2, "max_new_tokens": 40}
# --steps N validates the full setting this many times, as the config's 2000 steps (every 250).
VALIDATIONS = 8


# --- training -------------------------------------------------------------------------------


def setting_overrides(name: str, args: argparse.Namespace) -> list[str]:
    """The train.py overrides that every job of one setting's sweep shares: ``--epochs`` of the
    100k setting, ``--steps`` of the full one (None: the config's), then ``--overrides``."""
    overrides = [*SETTING_OVERRIDES[name], *QUIET]
    if name == "notebook_100k":
        overrides.append(f"epochs={args.epochs}")
    elif args.steps is not None:
        every = math.ceil(args.steps / VALIDATIONS)
        overrides += [f"trainer.max_steps={args.steps}", f"trainer.val_check_interval={every}"]
    return overrides + list(args.overrides)


def job_overrides(shared: Sequence[str], seeds: Sequence[int]) -> list[frozenset[str]]:
    """The overrides of each job of the sweep, as each job's ``.hydra/overrides.yaml`` records
    them (order aside): ``shared`` plus one model kind and one seed."""
    return [
        frozenset([*shared, f"model={kind}", f"seed={seed}"]) for kind in KINDS for seed in seeds
    ]


def finished_jobs(sweep: Path) -> set[frozenset[str]]:
    """The overrides of the sweep's jobs that finished (wrote ``summary.json``), ``ckpt_path``
    left out: a resumed job is the same job."""
    finished = set()
    if not sweep.is_dir():
        return finished
    for job in sweep.iterdir():
        recorded = job / ".hydra" / "overrides.yaml"
        if (job / "summary.json").is_file() and recorded.is_file():
            overrides = yaml.safe_load(recorded.read_text()) or []
            finished.add(frozenset(o for o in overrides if not o.startswith("ckpt_path=")))
    return finished


def sweep_command(shared: Sequence[str], seeds: Sequence[int], resume: bool) -> list[str]:
    """The overrides of ``train.py -m`` for the sweep (its directory aside)."""
    sweep = [f"model={','.join(KINDS)}", f"seed={','.join(map(str, seeds))}", *shared]
    return sweep + ["ckpt_path=last"] if resume else sweep


def train_sweep(sweep: Path, overrides: Sequence[str]) -> float:
    """``python train.py -m OVERRIDES hydra.sweep.dir=SWEEP``, in this process; its seconds."""
    from tinygpt.cli.train import main as train  # Lightning is imported only to train

    argv = ["-m", *overrides, f"hydra.sweep.dir={hydra_value(str(sweep.absolute()))}"]
    print("running: python train.py", " ".join(shlex.quote(a) for a in argv), flush=True)
    started = time.time()
    train(argv)
    return time.time() - started


# --- the command ---------------------------------------------------------------------------


def regenerate(args: argparse.Namespace) -> dict[str, Path]:
    """Train what is missing, measure every claim, write the pictures, JSON and the page."""
    started = time.time()
    sweeps, out, page = Path(args.sweeps), Path(args.out), Path(args.results)
    if page.is_file() and START_MARKER not in page.read_text():
        raise ClaimsError(f"{page} has no {START_MARKER} line to write below")
    timings: dict[str, float | None] = {}
    jobs = {}
    for name in SETTING_OVERRIDES:
        sweep = sweeps / name
        record = sweep / SWEEP_TIME_FILE
        shared = setting_overrides(name, args)
        jobs[name] = job_overrides(shared, args.seeds)
        if args.pages_only:
            pass
        elif set(jobs[name]) <= finished_jobs(sweep):
            print(f"{sweep}: all {len(jobs[name])} runs finished, kept", flush=True)
        else:
            # ckpt_path=last: finished jobs kept, interrupted ones resumed, new ones started.
            resume = sweep.is_dir() and any(sweep.iterdir())
            seconds = train_sweep(sweep, sweep_command(shared, args.seeds, resume))
            timing = {"seconds": round(seconds, 1), "resumed": resume}
            write_text_atomic(record, json.dumps(timing) + "\n")
        # The sweep's own time, as the command that trained it measured it (a --pages-only
        # page keeps stating it).
        if record.is_file():
            sweep_time = json.loads(record.read_text())
            resumed = " (resumed)" if sweep_time.get("resumed") else ""
            timings[f"training: the {name} sweep{resumed}, imports included"] = sweep_time[
                "seconds"
            ]

    measuring = time.time()
    settings = {name: load_setting(name, sweeps / name, jobs[name]) for name in SETTING_OVERRIDES}
    for setting in settings.values():
        measure_setting(setting)
    timings["measuring: attention and loss curves"] = time.time() - measuring

    decoding_started = time.time()
    dense = settings["full"].runs["dense"]
    models = [(f"seed {r.seed}", load_model(best_checkpoint(r))) for r in dense]
    text, _ = run_text(dense[0])
    decoding = compare_decoding(
        models, text, num_samples=args.num_samples, max_new_tokens=args.max_new_tokens
    )
    decoding_rows = decoding_verdicts(decoding)
    timings["decoding comparison"] = time.time() - decoding_started

    claims = measure_claims(settings)
    writing = time.time()
    out.mkdir(parents=True, exist_ok=True)
    written = draw(settings, out)
    written.update(write_decoding_report(decoding, out))
    timings["pictures and pages"] = None  # measured below, once they are written
    timings["this command, in all"] = None
    link = os.path.relpath(out.resolve(), page.resolve().parent)
    body = page_body(claims, decoding_rows, decoding, settings, timings, link, command_line(args))
    timings["pictures and pages"] = time.time() - writing
    timings["this command, in all"] = time.time() - started
    # The page states the times of this command, so it is written last, with them.
    body = page_body(claims, decoding_rows, decoding, settings, timings, link, command_line(args))
    write_page(page, body)
    written["results"] = page
    written["numbers"] = out / "claims.json"
    write_text_atomic(
        written["numbers"],
        json.dumps(numbers(claims, decoding_rows, settings, timings), indent=1) + "\n",
    )
    return written


def command_line(args: argparse.Namespace) -> str:
    """The command that regenerates this page, as the user gave it (defaults left out)."""
    words = [COMMAND] + (["--smoke"] if args.smoke else [])
    defaults = parse_args(["--smoke"] if args.smoke else [])
    for name in ("sweeps", "out", "results", "epochs", "steps", "num_samples", "max_new_tokens"):
        value = getattr(args, name)
        if value != getattr(defaults, name):
            words += [f"--{name.replace('_', '-')}", shlex.quote(str(value))]
    if args.seeds != defaults.seeds:
        words += ["--seeds", ",".join(map(str, args.seeds))]
    if args.overrides:
        words += ["--overrides", shlex.quote(" ".join(args.overrides))]
    return " ".join(words)


class _Parser(argparse.ArgumentParser):
    """Bad arguments are one ``error:`` line and exit 2, as every other input of TinyGPT."""

    def error(self, message: str) -> None:  # type: ignore[override]
        raise ClaimsError(message)


def _seeds(text: str) -> tuple[int, ...]:
    try:
        seeds = tuple(int(s) for s in text.split(","))
    except ValueError:
        raise argparse.ArgumentTypeError(
            f"--seeds must be integers like 1,2,3, got {text!r}"
        ) from None
    if len(seeds) < 2 or len(set(seeds)) != len(seeds):
        raise argparse.ArgumentTypeError(
            f"--seeds needs at least two different seeds, got {text!r}"
        )
    return seeds


def _positive(text: str) -> int:
    try:
        value = int(text)
    except ValueError:
        value = 0
    if value < 1:
        raise argparse.ArgumentTypeError(f"must be an integer >= 1, got {text!r}")
    return value


def parser() -> argparse.ArgumentParser:
    p = _Parser(
        prog=COMMAND,
        description="Train the runs the TinyGPT notebook's claims need (what is missing) and "
        "write the results page that measures them.",
    )
    p.add_argument(
        "--sweeps",
        default=str(Path(root_dir()) / "outputs" / "claims"),
        help="where the two sweeps go (default: outputs/claims under the project root)",
    )
    p.add_argument(
        "--out", default=str(DEFAULT_OUT), help="pictures and JSON (default: %(default)s)"
    )
    p.add_argument("--results", default=str(DEFAULT_PAGE), help="the page (default: %(default)s)")
    p.add_argument("--seeds", type=_seeds, default=DEFAULT_SEEDS, help="default: 1,2,3")
    p.add_argument(
        "--epochs",
        type=_positive,
        default=DEFAULT_EPOCHS,
        help="of the 100k setting (default: %(default)s)",
    )
    p.add_argument(
        "--steps",
        type=_positive,
        help="of the full setting, validated 8 times (default: the config's 2000, every 250)",
    )
    p.add_argument(
        "--overrides",
        type=shlex.split,
        default=[],
        help='more train.py overrides for both sweeps, e.g. "data.path=/my/text.txt"',
    )
    p.add_argument("--num-samples", type=_positive, default=DEFAULT_NUM_SAMPLES)
    p.add_argument("--max-new-tokens", type=_positive, default=DEFAULT_MAX_NEW_TOKENS)
    p.add_argument(
        "--smoke",
        action="store_true",
        help="check the whole pipeline in about a minute: "
        + ", ".join(f"--{k.replace('_', '-')} {v}" for k, v in SMOKE.items())
        + " unless given; the sweeps, pictures and page go to outputs/claims-smoke unless given",
    )
    p.add_argument(
        "--pages-only",
        action="store_true",
        help="train nothing: write the page from the runs there are",
    )
    return p


def parse_args(argv: Sequence[str] | None = None) -> argparse.Namespace:
    """The command's arguments; with ``--smoke``, :data:`SMOKE`'s values where not given."""
    p = parser()
    args = p.parse_args(argv)
    if args.smoke:
        # A smoke run's numbers mean nothing: by default it writes to a scratch folder, never
        # over docs/results.md or into the real sweeps (whose checkpoints it would clash with).
        scratch = Path(root_dir()) / "outputs" / "claims-smoke"
        p.set_defaults(
            **SMOKE,
            sweeps=str(scratch),
            out=str(scratch / "results"),
            results=str(scratch / "results.md"),
        )
        args = p.parse_args(argv)
    return args


def main(argv: Sequence[str] | None = None) -> int:
    with user_errors():
        args = parse_args(argv)
        written = regenerate(args)
    for name, path in written.items():
        print(f"{name}: {path}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
