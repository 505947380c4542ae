"""Analysis, a library with matplotlib and TensorBoard's reader: attention pictures, text
metrics, the model's likelihood, run plots, MoE routing, finished runs read back (:mod:`.runs`),
the dense-vs-MoE report (:mod:`.report`), the decoding comparison (:mod:`.decoding`) and the
TinyGPT notebook's claims measured and written as the results page (:mod:`.claims`, the verdict
rule in :mod:`.verdicts`). The commands are ``python -m tinygpt
report|claims|decoding-report`` (:mod:`tinygpt.cli.commands`)."""

from tinygpt.analysis.attention import save_attention_heatmaps
from tinygpt.analysis.likelihood import mean_nll
from tinygpt.analysis.plots import plot_run, plot_val_curves, read_scalars
from tinygpt.analysis.text_metrics import (
    distinct_n,
    known_word_share,
    mean_distinct_n,
    repeated_ngram_share,
    word_set,
)

__all__ = [
    "distinct_n",
    "known_word_share",
    "mean_distinct_n",
    "mean_nll",
    "plot_run",
    "plot_val_curves",
    "read_scalars",
    "repeated_ngram_share",
    "save_attention_heatmaps",
    "word_set",
]
