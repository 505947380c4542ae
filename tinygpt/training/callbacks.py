"""Lightning callbacks that TinyGPT adds to the Trainer."""

from __future__ import annotations

import time
from collections.abc import Sequence
from pathlib import Path

import lightning as L
import numpy as np
from lightning.pytorch.callbacks import Callback
from lightning.pytorch.loggers import CSVLogger, TensorBoardLogger
from omegaconf import OmegaConf

from tinygpt.analysis.attention import (
    attended_distance,
    attention_entropy,
    attention_figure,
    attention_weights,
)
from tinygpt.analysis.moe import (
    expert_load,
    expert_load_figure,
    specialisation,
    specialisation_figure,
    text_windows,
)
from tinygpt.analysis.plots import plot_run
from tinygpt.analysis.writing import code_block, save_figure
from tinygpt.errors import require
from tinygpt.generation import generate
from tinygpt.generation.sampling import MAX_NEW_TOKENS_LIMIT, check_float, check_int


class TokenThroughput(Callback):
    """Logs training tokens per second, the time spent in validation left out.

    Each step is timed from the previous step's end to its own, so fetching the batch counts.
    The one interval that holds a validation (with its checkpoint and pictures, whose callbacks
    may run after this one) is left out whole, step and tokens both. ``tokens`` and
    ``train_seconds`` accumulate over the whole fit for the run summary.

    Kept instead of Lightning's ``ThroughputMonitor``, which (Lightning 2.6) logs a rate only
    once a window of ``window_size`` batches (100) has filled, so a run of fewer steps shows
    none; logs past ``self.log``, so the rate reaches neither the progress bar nor the values
    summary.json reads; and logs validation throughput with validation-batch counts as steps,
    into the same TensorBoard step axis as training. Its FLOPs/MFU would also need a
    ``flops_per_batch`` that TinyGPTModule does not compute.
    """

    def __init__(self, log_every_n_steps: int = 50) -> None:
        self.log_every_n_steps = log_every_n_steps
        self.tokens = 0
        self.train_seconds = 0.0
        self._window_tokens = 0
        self._window_seconds = 0.0
        self._last = 0.0
        self._validated = False

    def on_train_start(self, trainer: L.Trainer, pl_module: L.LightningModule) -> None:
        self._last = time.perf_counter()

    def on_validation_start(self, trainer: L.Trainer, pl_module: L.LightningModule) -> None:
        self._validated = True

    def on_train_batch_end(self, trainer, pl_module, outputs, batch, batch_idx) -> None:
        now = time.perf_counter()
        elapsed, self._last = now - self._last, now
        if self._validated:
            self._validated = False
            return
        tokens = batch[0].numel() * trainer.world_size
        self.tokens += tokens
        self.train_seconds += elapsed
        self._window_tokens += tokens
        self._window_seconds += elapsed
        if trainer.global_step % self.log_every_n_steps == 0 and self._window_seconds > 0:
            rate = self._window_tokens / self._window_seconds
            pl_module.log("train/tokens_per_second", rate, prog_bar=True)
            self._window_tokens, self._window_seconds = 0, 0.0


def _tensorboard_writers(trainer: L.Trainer) -> list:
    """The SummaryWriters of the trainer's TensorBoard loggers (none without such a logger)."""
    return [lg.experiment for lg in trainer.loggers if isinstance(lg, TensorBoardLogger)]


def tensorboard_dir(trainer: L.Trainer) -> Path | None:
    """The event directory of the trainer's first TensorBoard logger, if it has one."""
    dirs = [lg.log_dir for lg in trainer.loggers if isinstance(lg, TensorBoardLogger)]
    return Path(dirs[0]) if dirs else None


def prompt_in_vocabulary(prompt: str, trainer: L.Trainer, pl_module: L.LightningModule) -> str:
    """``prompt`` if the model's vocabulary covers it, else as many characters from the start
    of the validation text (a model trained on another text than the configured prompt's)."""
    tokenizer = pl_module.model.tokenizer
    if set(prompt) <= set(tokenizer.chars):
        return prompt
    return tokenizer.decode(trainer.datamodule.val_data[: len(prompt)])


class RunConfigText(Callback):
    """Logs the run's resolved config as text at the start of training, for TensorBoard's Text tab.

    The config is ``pl_module.run_config``, the dict that checkpoints store too. TensorBoard lists
    it as ``config/text_summary``.
    """

    TAG = "config"  # torch's SummaryWriter.add_text appends "/text_summary"

    def on_fit_start(self, trainer: L.Trainer, pl_module: L.LightningModule) -> None:
        if not trainer.is_global_zero:
            return
        text = code_block(OmegaConf.to_yaml(pl_module.run_config))
        for writer in _tensorboard_writers(trainer):
            writer.add_text(self.TAG, text, global_step=trainer.global_step)


class EveryNValidations(Callback):
    """Base for callbacks that show the model on ``prompt`` at the end of every
    ``every_n_validations``-th validation (sanity checks not counted), on the global-zero process
    only. ``key`` names the callback in conf/callbacks/, for error messages."""

    def __init__(self, key: str, prompt: str, every_n_validations: int) -> None:
        require(
            isinstance(prompt, str) and prompt != "",
            f"callbacks.{key}.prompt must be non-empty text, got {prompt!r}",
        )
        self.prompt = prompt
        n = check_int(f"callbacks.{key}.every_n_validations", every_n_validations, 1)
        self.every_n_validations = n
        self._validations = 0

    def due(self, trainer: L.Trainer) -> bool:
        """Count a finished validation; whether this one is the callback's to act on."""
        if trainer.sanity_checking:
            return False
        self._validations += 1
        return self._validations % self.every_n_validations == 0 and trainer.is_global_zero


class AttentionHeatmapCallback(EveryNValidations):
    """At the end of every ``every_n_validations``-th validation, logs the attention on ``prompt``.

    Logs the grid of heatmaps (layers x heads) as the image ``attention/heatmaps`` to TensorBoard,
    and through every logger the scalars ``attention/entropy/layer{l}_head{h}`` (nats) and
    ``attention/distance/layer{l}_head{h}`` (characters). A prompt with characters outside the
    vocabulary is replaced by the start of the validation text; any prompt is cut to the context.
    """

    IMAGE_TAG = "attention/heatmaps"

    def __init__(self, prompt: str = "First Citizen:\n", every_n_validations: int = 1) -> None:
        super().__init__("attention_heatmap", prompt, every_n_validations)

    def resolve_prompt(self, trainer: L.Trainer, pl_module: L.LightningModule) -> str:
        """The prompt to show: the configured one if the vocabulary covers it, else val text."""
        block_size = pl_module.model.config.block_size
        # The end of a long prompt: the context a model keeps.
        return prompt_in_vocabulary(self.prompt[-block_size:], trainer, pl_module)

    def on_validation_end(self, trainer: L.Trainer, pl_module: L.LightningModule) -> None:
        if not self.due(trainer):
            return
        prompt = self.resolve_prompt(trainer, pl_module)
        weights = attention_weights(pl_module.model, prompt)
        step = trainer.global_step
        metrics = {}
        for name, values in (
            ("entropy", attention_entropy(weights)),
            ("distance", attended_distance(weights)),
        ):
            for (layer, head), value in np.ndenumerate(values.numpy()):
                metrics[f"attention/{name}/layer{layer}_head{head}"] = float(value)
        for logger in trainer.loggers:
            logger.log_metrics(metrics, step=step)
        title = f"Attention at step {step} (H: entropy in nats, d: mean distance back)"
        for writer in _tensorboard_writers(trainer):
            writer.add_figure(self.IMAGE_TAG, attention_figure(weights, prompt, title), step)


class SampleText(EveryNValidations):
    """At the end of every ``every_n_validations``-th validation, logs a short sample as text.

    The model continues ``prompt`` by ``max_new_tokens`` characters at ``temperature``, with the
    KV cache and a generator of its own seeded with ``seed``: the same weights give the same
    text, and training's random state is left alone. TensorBoard's Text tab shows the samples
    under ``sample/text_summary``, one per step, so the model can be watched learning. A prompt
    with characters outside the vocabulary is replaced by the start of the validation text.
    ``last_text`` holds the latest sample (prompt included).
    """

    TAG = "sample"  # torch's SummaryWriter.add_text appends "/text_summary"

    def __init__(
        self,
        prompt: str = "First Citizen:\n",
        max_new_tokens: int = 200,
        temperature: float = 0.8,
        seed: int = 1,
        every_n_validations: int = 1,
    ) -> None:
        super().__init__("sample_text", prompt, every_n_validations)
        key = "callbacks.sample_text"
        self.max_new_tokens = check_int(
            f"{key}.max_new_tokens", max_new_tokens, 1, MAX_NEW_TOKENS_LIMIT
        )
        self.temperature = check_float(f"{key}.temperature", temperature, 0.0)
        self.seed = check_int(f"{key}.seed", seed, 0, 2**63 - 1)
        self.last_text: str | None = None

    def on_validation_end(self, trainer: L.Trainer, pl_module: L.LightningModule) -> None:
        if not self.due(trainer):
            return
        writers = _tensorboard_writers(trainer)
        if not writers:
            return
        prompt = prompt_in_vocabulary(self.prompt, trainer, pl_module)
        self.last_text = generate(
            pl_module.model,
            prompt,
            max_new_tokens=self.max_new_tokens,
            temperature=self.temperature,
            seed=self.seed,
        )
        step = trainer.global_step
        heading = f"step {step}, temperature {self.temperature:g}, seed {self.seed}:"
        for writer in writers:
            writer.add_text(self.TAG, f"{heading}\n\n{code_block(self.last_text)}", step)


Layout = dict[str, dict[str, list]]


def scalar_layout(n_layer: int, moe_layers: Sequence[int] = (), attention: bool = True) -> Layout:
    """TensorBoard's Custom Scalars layout (as ``SummaryWriter.add_custom_scalars`` takes it):
    train and val loss in one chart; per layer, one chart of every head's attention entropy,
    one of their mean distance, and one of the MoE layer's expert loads.

    Each chart gathers the tags its regular expressions match (anchored at the start).
    """
    layout: Layout = {"loss": {"train and val loss": ["Multiline", ["train/loss$", "val/loss$"]]}}
    if attention:
        for name, unit in (("entropy", "nats"), ("distance", "characters back")):
            layout[f"attention {name} per head ({unit})"] = {
                f"layer {layer}": ["Multiline", [rf"attention/{name}/layer{layer}_head\d+$"]]
                for layer in range(n_layer)
            }
    if moe_layers:
        layout["MoE expert load (share of tokens)"] = {
            f"layer {layer}": ["Multiline", [rf"moe/layer{layer}/load/expert\d+$"]]
            for layer in moe_layers
        }
    return layout


class CustomScalarsLayout(Callback):
    """Writes :func:`scalar_layout` for the model at the start of training, so TensorBoard's
    Custom Scalars tab shows each layer's heads and experts in one chart instead of one card
    each. Attention charts only with an :class:`AttentionHeatmapCallback` (which logs them)."""

    def on_fit_start(self, trainer: L.Trainer, pl_module: L.LightningModule) -> None:
        if not trainer.is_global_zero:
            return
        config = pl_module.model.config
        layout = scalar_layout(
            config.n_layer,
            moe_layers=[i for i in range(config.n_layer) if config.is_moe_layer(i)],
            attention=any(isinstance(c, AttentionHeatmapCallback) for c in trainer.callbacks),
        )
        for writer in _tensorboard_writers(trainer):
            writer.add_custom_scalars(layout)


class MetricPlots(Callback):
    """At the end of training, writes PNG plots of the logged metrics (loss, val ppl, lr, ...).

    The plots are read back from the logger's files (the first TensorBoard logger's event
    directory, else the first CSV logger's directory, by :mod:`tinygpt.analysis.plots`), so they
    show exactly what TensorBoard, or the CSV file, shows. Nothing without such a logger.
    ``dirpath`` defaults to ``<default_root_dir>/plots``.
    """

    def __init__(self, dirpath: str | None = None) -> None:
        self.dirpath = dirpath

    def on_fit_end(self, trainer: L.Trainer, pl_module: L.LightningModule) -> None:
        if not trainer.is_global_zero:
            return
        csv = [Path(lg.root_dir) for lg in trainer.loggers if isinstance(lg, CSVLogger)]
        log_dir = tensorboard_dir(trainer) or (csv[0] if csv else None)
        if log_dir is None:
            return
        # Loggers buffer (TensorBoard's writer, the CSV logger's rows); the plots must see the
        # last values.
        for logger in trainer.loggers:
            logger.save()
        out_dir = Path(self.dirpath or Path(trainer.default_root_dir) / "plots")
        plot_run(log_dir, out_dir)


class MoEDashboard(Callback):
    """For MoE models: expert load per layer and character x expert specialisation.

    At each validation end the pictures go to TensorBoard (``moe/expert_load``,
    ``moe/specialisation``) for the first ``chars`` characters of the validation text; at the end
    of training they are also saved as PNGs in ``dirpath``. Dense models are left alone.
    """

    def __init__(self, dirpath: str | None = None, chars: int = 4096) -> None:
        self.dirpath = dirpath
        self.chars = chars

    def _figures(self, trainer: L.Trainer, pl_module: L.LightningModule):
        model = pl_module.model
        text = model.tokenizer.decode(trainer.datamodule.val_data[: self.chars])
        load = expert_load(model, text_windows(model, text))
        chars, counts = specialisation(model, text)
        return expert_load_figure(load), specialisation_figure(chars, counts)

    def on_validation_end(self, trainer: L.Trainer, pl_module: L.LightningModule) -> None:
        if pl_module.model.config.ffn != "moe" or not trainer.is_global_zero:
            return
        writers = _tensorboard_writers(trainer)
        if not writers:
            return
        load_fig, special_fig = self._figures(trainer, pl_module)
        for writer in writers:
            writer.add_figure("moe/expert_load", load_fig, trainer.global_step, close=False)
            writer.add_figure("moe/specialisation", special_fig, trainer.global_step, close=False)

    def on_fit_end(self, trainer: L.Trainer, pl_module: L.LightningModule) -> None:
        if pl_module.model.config.ffn != "moe" or not trainer.is_global_zero:
            return
        out_dir = Path(self.dirpath or Path(trainer.default_root_dir) / "plots")
        names = ("expert_load.png", "expert_specialisation.png")
        for name, fig in zip(names, self._figures(trainer, pl_module), strict=True):
            save_figure(fig, out_dir / name)
