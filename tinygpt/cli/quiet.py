"""Lightning's messages that every run prints and no user can act on, silenced on import.

Lightning's own use of a deprecated torch API; its notice that TinyGPTModule moves batches
itself (on purpose: Lightning's generic walk over the batch is a noticeable share of a small
model's step); its advertisement for its cloud logger. train.py and eval.py import this.
"""

import logging
import warnings

warnings.filterwarnings("ignore", message=r"`isinstance\(treespec, LeafSpec\)` is deprecated")
warnings.filterwarnings("ignore", message=r"You have overridden `transfer_batch_to_device`")
logging.getLogger("lightning.pytorch.utilities.rank_zero").addFilter(
    lambda record: not record.getMessage().startswith("💡 Tip")
)
