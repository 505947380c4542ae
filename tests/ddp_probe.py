"""A callback the DDP test adds by config: each rank records its first training batch."""

import json
from pathlib import Path

import lightning as L


class FirstBatchProbe(L.Callback):
    def __init__(self, out_dir: str) -> None:
        self.out_dir = Path(out_dir)

    def on_train_batch_start(self, trainer, pl_module, batch, batch_idx) -> None:
        if batch_idx == 0:
            path = self.out_dir / f"rank{trainer.global_rank}.json"
            path.write_text(json.dumps({"world": trainer.world_size, "batch": batch[0].tolist()}))
