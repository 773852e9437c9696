"""The per-replica Q-network (Deep Sets): Q(s, i) = f(g(x_i), pool_j g(x_j), c) with shared g and
f, so one set of weights scores any number of replicas and permuting them permutes the scores."""

from __future__ import annotations

from collections.abc import Sequence

import numpy as np
import torch
import torch.nn.functional as F
from torch import nn

from agent_app.rl.set_inference import ABSENT_Q, SET_DIMS_KEY


def _mlp(widths: Sequence[int]) -> nn.Sequential:
    layers: list[nn.Module] = []
    for fan_in, fan_out in zip(widths[:-1], widths[1:], strict=True):
        layers += [nn.Linear(fan_in, fan_out), nn.ReLU(inplace=True)]
    return nn.Sequential(*layers)


class SetQNetwork(nn.Module):
    """Input: flat observations (replica rows, mask, context; see replica_features). Output: one
    Q-value per replica slot, ABSENT_Q where the mask says no replica is there.

    g embeds each replica (two layers of hidden_sizes[0]); the pool is the masked mean and max of
    the embeddings (mean alone cannot tell "one idle replica" from "all half busy"); f scores each
    replica from its embedding, the pool and the context (layers hidden_sizes[1:], then 1).
    """

    dueling = False

    def __init__(self, replica_dim: int, context_dim: int, max_replicas: int,
                 hidden_sizes: Sequence[int] = (128, 128, 128)) -> None:
        super().__init__()
        self.replica_dim, self.context_dim, self.max_replicas = replica_dim, context_dim, max_replicas
        self.state_dim = max_replicas * (replica_dim + 1) + context_dim
        self.n_actions = max_replicas
        width = hidden_sizes[0]
        self.g = _mlp([replica_dim, width, width])
        self.f = _mlp([3 * width + context_dim, *(hidden_sizes[1:] or (width,))])
        self.out = nn.Linear((hidden_sizes[1:] or (width,))[-1], 1)
        self._g = [m for m in self.g if isinstance(m, nn.Linear)]
        self._f = [m for m in self.f if isinstance(m, nn.Linear)]

    def split(self, states: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
        n, d = self.max_replicas, self.replica_dim
        rows = states[:, : n * d].reshape(-1, n, d)
        return rows, states[:, n * d : n * d + n], states[:, n * d + n :]

    def forward(self, states: torch.Tensor) -> torch.Tensor:
        rows, mask, context = self.split(states)
        # Compute only up to the last slot any row of the batch uses: replicas fill the leading
        # slots, so a 3-replica cluster costs 3 slots, not max_replicas (padding was most of the work).
        occupied = (mask > 0.5).any(dim=0).nonzero()
        used = int(occupied.max().item()) + 1 if occupied.numel() else 1
        rows, mask = rows[:, :used], mask[:, :used]
        h = rows
        for layer in self._g:
            h = torch.relu(F.linear(h, layer.weight, layer.bias))
        present = mask.unsqueeze(-1)
        h = h * present  # absent slots contribute nothing (ReLU outputs are >= 0, so max is safe too)
        count = present.sum(dim=1).clamp_(min=1.0)
        pooled = torch.cat([h.sum(dim=1) / count, h.amax(dim=1), context], dim=-1)
        x = torch.cat([h, pooled.unsqueeze(1).expand(-1, used, -1)], dim=-1)
        for layer in self._f:
            x = torch.relu(F.linear(x, layer.weight, layer.bias))
        q = F.linear(x, self.out.weight, self.out.bias).squeeze(-1).masked_fill(mask < 0.5, ABSENT_Q)
        return F.pad(q, (0, self.max_replicas - used), value=ABSENT_Q)


def export_set_numpy(net: SetQNetwork) -> dict[str, np.ndarray]:
    """Named float32 weights plus the dimensions the NumPy twin needs."""
    weights = {name: t.detach().to("cpu", torch.float32).numpy().copy()
               for name, t in net.state_dict().items()}
    weights[SET_DIMS_KEY] = np.array([net.replica_dim, net.context_dim, net.max_replicas], dtype=np.int64)
    return weights
