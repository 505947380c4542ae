"""Muon for the transformer blocks' weight matrices and AdamW for everything else, as one
optimizer object.

Muon (torch.optim.Muon) orthogonalises each 2-D update, which only suits hidden-layer matrices;
the embeddings (and the output head tied to them), norms, biases and MoE expert stacks stay on
AdamW, as Muon's authors prescribe. Lightning's automatic optimization, its learning-rate
schedulers, gradient clipping, GradScaler and checkpoints all expect a single
``torch.optim.Optimizer``: this one owns both optimizers' parameter groups and their state, and
steps each in turn.
"""

from __future__ import annotations

from typing import Any

import torch


class MuonWithAdamW(torch.optim.Optimizer):
    """``muon_groups`` through Muon, ``adamw_groups`` through AdamW; ``param_groups`` lists the
    Muon groups first. Each group keeps its own optimizer's hyperparameters (a scheduler scales
    every group's ``lr``), and ``state_dict`` is one optimizer's, so checkpoints resume as any
    other's."""

    def __init__(
        self,
        muon_groups: list[dict[str, Any]],
        adamw_groups: list[dict[str, Any]],
        muon: dict[str, Any],
        adamw: dict[str, Any],
    ) -> None:
        self.muon = torch.optim.Muon(muon_groups, **muon)
        self.adamw = torch.optim.AdamW(adamw_groups, **adamw)
        # The same group dicts, with each optimizer's defaults filled in, become this
        # optimizer's groups: a change to one (the scheduler's lr) is seen by both.
        super().__init__(self.muon.param_groups + self.adamw.param_groups, defaults={})
        self._share_groups_and_state()

    def _share_groups_and_state(self) -> None:
        split = len(self.muon.param_groups)
        self.muon.param_groups = self.param_groups[:split]
        self.adamw.param_groups = self.param_groups[split:]
        # State is keyed by parameter, and the two optimizers' parameters are disjoint.
        self.muon.state = self.adamw.state = self.state

    def __setstate__(self, state: dict[str, Any]) -> None:
        # load_state_dict (and unpickling) replace the groups and the state with new objects.
        super().__setstate__(state)
        if "muon" in self.__dict__:
            self._share_groups_and_state()

    @torch.no_grad()
    def step(self, closure=None):
        loss = None
        if closure is not None:
            with torch.enable_grad():
                loss = closure()
        self.muon.step()
        self.adamw.step()
        return loss
