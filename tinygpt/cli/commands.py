"""``python -m tinygpt report|claims|decoding-report|export ...``: one argparse parser with a
subcommand each; bad arguments and user errors are one ``error:`` line and exit 2.

The reports themselves are :mod:`tinygpt.analysis` functions over finished runs and checkpoints.
What trains first (``report --run``, ``claims``) runs train.py's sweeps in this process through
:func:`train_sweep`, so it needs a checkout's conf/. ``claims`` keeps a sweep whose every job
finished (a ``summary.json`` from the same overrides) and reruns a started one with
``ckpt_path=last``: finished jobs kept, interrupted ones resumed, missing ones started.
"""

import argparse
import json
import math
import shlex
import sys
import time
from collections.abc import Sequence
from pathlib import Path
from typing import NoReturn

from hydra.core.override_parser.overrides_parser import OverridesParser
from omegaconf import OmegaConf

from tinygpt.analysis.claims import KINDS, write_results
from tinygpt.analysis.decoding import (
    DEFAULT_MAX_NEW_TOKENS,
    DEFAULT_NUM_SAMPLES,
    compare_decoding,
    decoding_table,
    write_decoding_report,
)
from tinygpt.analysis.report import write_report
from tinygpt.analysis.runs import load_run, training_text
from tinygpt.analysis.writing import START_MARKER
from tinygpt.checkpoint import load_model, run_config_of
from tinygpt.cli.errors import exit_with_user_error, user_errors
from tinygpt.cli.paths import config_dir, root_dir
from tinygpt.cli.quoting import hydra_value
from tinygpt.errors import ConfigError, DataError
from tinygpt.export import export
from tinygpt.files import write_text_atomic

PROG = "python -m tinygpt"
DEFAULT_REPORT = Path("report")
# claims: each setting's own overrides, and cheap runs (the per-validation pictures and samples
# are TensorBoard's, not the page's).
SETTINGS = {"full": (), "notebook_100k": ("experiment=notebook_100k",)}
QUIET = (
    "callbacks.attention_heatmap=null",
    "callbacks.sample_text=null",
    "callbacks.moe_dashboard=null",
    "callbacks.progress_bar.refresh_rate=0",
)
CLAIMS_DEFAULTS = {
    "epochs": 100,
    "num_samples": DEFAULT_NUM_SAMPLES,
    "max_new_tokens": DEFAULT_MAX_NEW_TOKENS,
}
SMOKE = {"epochs": 2, "steps": 20, "num_samples": 2, "max_new_tokens": 40}
VALIDATIONS = 8  # --steps N validates the full setting this often, as the config's 2000 (250)
SWEEP_TIME_FILE = "claims_training_seconds.json"  # written into each sweep by claims


class _Parser(argparse.ArgumentParser):
    def error(self, message: str) -> NoReturn:
        exit_with_user_error(f"{message} (usage: {' '.join(self.format_usage().split()[1:])})")


def train_sweep(sweep: Path, overrides: Sequence[str]) -> float:
    """``python train.py -m OVERRIDES hydra.sweep.dir=SWEEP``, in this process; its seconds. A
    user error in the sweep is train.py's one ``error:`` line and exit 2."""
    from tinygpt.cli.train import main as train  # Lightning is imported only to train

    # Job directories named after the swept keys only (0_model-moe+seed-1): the settings every
    # job shares join Hydra's keys left out of override_dirname.
    dirname = OmegaConf.load(config_dir() / "hydra" / "default.yaml").job.config.override_dirname
    parsed = OverridesParser.create().parse_overrides(list(overrides))
    shared = [o.key_or_group for o in parsed if not o.is_sweep_override()]
    exclude = ",".join(dict.fromkeys([*dirname.exclude_keys, *shared]))
    # Absolute, and quoted for Hydra where the path needs it: the sweep lands where it is read.
    argv = [
        "-m",
        *overrides,
        f"hydra.sweep.dir={hydra_value(str(sweep.absolute()))}",
        f"hydra.job.config.override_dirname.exclude_keys=[{exclude}]",
    ]
    print("running: python train.py", shlex.join(argv), flush=True)
    started = time.time()
    train(argv)
    return time.time() - started


def report(args: argparse.Namespace) -> dict[str, Path]:
    paths = [*args.runs, *([args.sweep] if args.sweep else [])]
    if not paths:
        raise ConfigError("give run directories or --sweep DIR")
    if args.run:
        if not args.sweep:
            raise ConfigError("--run needs --sweep DIR (where the sweep's runs go)")
        train_sweep(Path(args.sweep), shlex.split(args.run))
    command = f"{PROG} report " + (f"--sweep {args.sweep}" if args.sweep else " ".join(args.runs))
    command += "" if Path(args.out) == DEFAULT_REPORT else f" --out {args.out}"
    options = ("results", "readme", "train_text", "max_new_tokens", "decoding", "tb_dir")
    return write_report(paths, args.out, command, **{key: getattr(args, key) for key in options})


def decoding_report(args: argparse.Namespace) -> dict[str, Path]:
    model = load_model(args.checkpoint)
    text = training_text(run_config_of(args.checkpoint), args.train_text)
    results = compare_decoding(
        model, text, num_samples=args.num_samples, max_new_tokens=args.max_new_tokens
    )
    print(decoding_table(results), end="")
    return write_decoding_report(results, args.out, args.tb_dir)


def export_model(args: argparse.Namespace) -> dict[str, Path]:
    out_dir = export(args.checkpoint, args.out_dir, force=args.force)
    print(f"exported {args.checkpoint} to {out_dir}")
    return {}


def claims_args(args: argparse.Namespace) -> argparse.Namespace:
    """The claims' defaults where not given: with ``--smoke`` tiny ones, and the sweeps, pictures
    and page in a scratch folder, never over docs/results.md or the real sweeps."""
    sweeps = Path(root_dir()) / "outputs" / ("claims-smoke" if args.smoke else "claims")
    paths = {"sweeps": sweeps, "out": sweeps / "results", "results": sweeps / "results.md"}
    if not args.smoke:
        paths.update(out=Path("docs/results"), results=Path("docs/results.md"))
    for key, value in {**paths, **(SMOKE if args.smoke else CLAIMS_DEFAULTS)}.items():
        if getattr(args, key) is None:
            setattr(args, key, value)
    return args


def setting_overrides(name: str, args: argparse.Namespace) -> list[str]:
    """The train.py overrides that every job of one setting's sweep shares: ``--epochs`` of the
    100k setting, ``--steps`` of the full one (None: the config's), then ``--overrides``."""
    overrides = [*SETTINGS[name], *QUIET]
    if name == "notebook_100k":
        overrides.append(f"epochs={args.epochs}")
    elif args.steps is not None:
        every = math.ceil(args.steps / VALIDATIONS)
        overrides += [f"trainer.max_steps={args.steps}", f"trainer.val_check_interval={every}"]
    return overrides + list(args.overrides)


def claims(args: argparse.Namespace) -> dict[str, Path]:
    """Train what is missing of both sweeps, then measure every claim and write the page."""
    started = time.time()
    args = claims_args(args)
    sweeps, page = Path(args.sweeps), Path(args.results)
    if page.is_file() and START_MARKER not in page.read_text():
        raise DataError(f"{page} has no {START_MARKER} line to write below")
    timings, jobs = {}, {}
    for name in SETTINGS:
        sweep, shared = sweeps / name, setting_overrides(name, args)
        jobs[name] = {
            frozenset([*shared, f"model={k}", f"seed={s}"]) for k in KINDS for s in args.seeds
        }
        finished = {load_run(summary.parent).job for summary in sweep.glob("*/summary.json")}
        if jobs[name] <= finished:
            print(f"{sweep}: all {len(jobs[name])} runs finished, kept", flush=True)
        elif not args.pages_only:
            resume = sweep.is_dir() and any(sweep.iterdir())
            seeds = ",".join(map(str, args.seeds))
            overrides = [f"model={','.join(KINDS)}", f"seed={seeds}", *shared]
            seconds = train_sweep(sweep, overrides + (["ckpt_path=last"] if resume else []))
            timing = json.dumps({"seconds": round(seconds, 1), "resumed": resume})
            write_text_atomic(sweep / SWEEP_TIME_FILE, timing + "\n")
        # The sweep's own time, as the command that trained it measured it.
        if (sweep / SWEEP_TIME_FILE).is_file():
            record = json.loads((sweep / SWEEP_TIME_FILE).read_text())
            resumed = " (resumed)" if record.get("resumed") else ""
            timings[f"training: the {name} sweep{resumed}, imports included"] = record["seconds"]
    # The command that regenerates the page, as the user gave it.
    command = shlex.join([*PROG.split(), "claims", *(a for a in args.given if a != "--pages-only")])
    settings = {name: (sweeps / name, jobs[name]) for name in SETTINGS}
    out, samples = Path(args.out), (args.num_samples, args.max_new_tokens)
    return write_results(settings, out, page, command, timings, started, *samples)


def _seeds(text: str) -> tuple[int, ...]:
    try:
        seeds = tuple(int(s) for s in text.split(","))
    except ValueError:
        raise argparse.ArgumentTypeError(f"must be integers like 1,2,3, got {text!r}") from None
    if len(seeds) < 2 or len(set(seeds)) != len(seeds):
        raise argparse.ArgumentTypeError(f"needs at least two different seeds, got {text!r}")
    return seeds


def _positive(text: str) -> int:
    if not text.isdigit() or int(text) < 1:
        raise argparse.ArgumentTypeError(f"must be an integer >= 1, got {text!r}")
    return int(text)


def parser() -> argparse.ArgumentParser:
    p = _Parser(prog=PROG, description="TinyGPT's reports and its Hugging Face export.")
    commands = p.add_subparsers(dest="command", required=True, metavar="COMMAND")

    r = commands.add_parser("report", help="dense vs MoE runs compared, and their decoding")
    r.set_defaults(handler=report)
    r.add_argument("runs", nargs="*", help="run directories or sweep directories")
    r.add_argument("--sweep", help="a sweep directory: its subdirectories holding summary.json")
    r.add_argument("--out", default=str(DEFAULT_REPORT), help="output folder (default: report)")
    r.add_argument("--results", help="write the results page here, e.g. docs/results.md")
    r.add_argument("--readme", help="rewrite this README's section between the results markers")
    r.add_argument("--train-text", help="the training text file (default: from the run config)")
    r.add_argument("--max-new-tokens", type=int, default=DEFAULT_MAX_NEW_TOKENS)
    r.add_argument(
        "--no-decoding", dest="decoding", action="store_false", help="skip the decoding comparison"
    )
    r.add_argument("--tb-dir", help="also log the decoding samples as text to this TensorBoard dir")
    r.add_argument(
        "--run",
        metavar="OVERRIDES",
        help='first train the sweep into --sweep: e.g. "model=dense,moe seed=1,2,3"',
    )

    c = commands.add_parser(
        "claims",
        help="train the runs the TinyGPT notebook's claims need (what is missing) and write the "
        "results page that measures them",
    )
    c.set_defaults(handler=claims)
    c.add_argument("--sweeps", help="where the two sweeps go (default: outputs/claims)")
    c.add_argument("--out", help="pictures and JSON (default: docs/results)")
    c.add_argument("--results", help="the page (default: docs/results.md)")
    c.add_argument("--seeds", type=_seeds, default=(1, 2, 3), help="default: 1,2,3")
    c.add_argument("--epochs", type=_positive, help="of the 100k setting (default: 100)")
    c.add_argument("--steps", type=_positive, help="of the full setting (default: 2000)")
    c.add_argument(
        "--overrides",
        type=shlex.split,
        default=[],
        help='more train.py overrides for both sweeps, e.g. "data.path=/my/text.txt"',
    )
    c.add_argument("--num-samples", type=_positive, help="per prompt and model (default: 8)")
    c.add_argument("--max-new-tokens", type=_positive, help="per sample (default: 400)")
    c.add_argument(
        "--smoke",
        action="store_true",
        help="check the whole pipeline in about a minute (2 epochs, 20 steps, 2 samples of 40 "
        "characters unless given), into outputs/claims-smoke unless given",
    )
    c.add_argument("--pages-only", action="store_true", help="train nothing: write the page")

    d = commands.add_parser("decoding-report", help="decoding strategies on one checkpoint")
    d.set_defaults(handler=decoding_report)
    d.add_argument("checkpoint")
    d.add_argument("--out", default="decoding_report", help="output folder (default: %(default)s)")
    d.add_argument("--train-text", help="the training text file (default: from the checkpoint)")
    d.add_argument("--max-new-tokens", type=int, default=DEFAULT_MAX_NEW_TOKENS)
    d.add_argument("--num-samples", type=int, default=DEFAULT_NUM_SAMPLES, help="per prompt")
    d.add_argument("--tb-dir", help="also log the samples as text to this TensorBoard dir")

    e = commands.add_parser("export", help="a dense checkpoint as a Hugging Face model")
    e.set_defaults(handler=export_model)
    e.add_argument("checkpoint", help="e.g. outputs/runs/<run>/checkpoints/best.ckpt")
    e.add_argument("out_dir", help="the directory to write (from_pretrained loads it)")
    e.add_argument("--force", action="store_true", help="replace out_dir if it holds files")
    return p


def main(argv: Sequence[str] | None = None) -> int:
    argv = list(sys.argv[1:] if argv is None else argv)
    args = parser().parse_args(argv)
    args.given = argv[1:]  # after the command's name
    with user_errors():
        written = args.handler(args)
    for name, path in written.items():
        print(f"{name}: {path}")
    return 0
