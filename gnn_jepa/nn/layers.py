"""Small building blocks shared by the edge heads."""
from __future__ import annotations

from torch import Tensor, nn


def mlp(d_in: int, hidden: int, d_out: int) -> nn.Sequential:
    """``Linear(d_in, hidden) -> GELU -> Linear(hidden, d_out)``."""
    return nn.Sequential(nn.Linear(d_in, hidden), nn.GELU(), nn.Linear(hidden, d_out))


class MessagePassingHead(nn.Module):
    """Base of the message-passing edge heads: a final state of width ``hidden`` becomes one
    logit through ``LayerNorm -> Linear(hidden, 1)``; :meth:`reset_parameters` re-initialises
    every Linear and LayerNorm of the head."""

    def _add_output(self, hidden: int) -> None:
        self.out_norm = nn.LayerNorm(hidden)
        self.out = nn.Linear(hidden, 1)

    def logits(self, state: Tensor) -> Tensor:
        """[M, hidden] states -> [M] logits."""
        return self.out(self.out_norm(state)).squeeze(-1)

    def reset_parameters(self) -> None:
        for m in self.modules():
            if isinstance(m, (nn.Linear, nn.LayerNorm)):
                m.reset_parameters()
