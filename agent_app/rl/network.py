"""The torch side of the Q-network: the module, its flat parameter storage and optimiser, and
its export to named float32 arrays (the NumPy twin that serves requests is in inference.py)."""

from __future__ import annotations

from collections.abc import Sequence

import numpy as np
import torch
import torch.nn.functional as F
from torch import nn

from agent_app.rl.inference import (  # noqa: F401  (re-exported for convenience)
    DUELING_KEY,
    NumpyQNetwork,
    weights_from_bytes,
    weights_to_bytes,
)


class QNetwork(nn.Module):
    """MLP Q(s, .) with ReLU; the dueling head is V(s) + A(s, a) - mean_a A(s, a)."""

    def __init__(
        self,
        state_dim: int,
        n_actions: int,
        hidden_sizes: Sequence[int] = (128, 128, 128),
        dueling: bool = False,
    ) -> None:
        super().__init__()
        self.state_dim = state_dim
        self.n_actions = n_actions
        self.dueling = dueling
        layers: list[nn.Module] = []
        width = state_dim
        for size in hidden_sizes:
            layers += [nn.Linear(width, size), nn.ReLU(inplace=True)]
            width = size
        # Kept as a Sequential so state_dict names are stable ("hidden.0.weight", ...).
        self.hidden = nn.Sequential(*layers)
        self._hidden_linears = [layer for layer in layers if isinstance(layer, nn.Linear)]
        if dueling:
            self.value = nn.Linear(width, 1)
            self.advantage = nn.Linear(width, n_actions)
        else:
            self.out = nn.Linear(width, n_actions)

    def forward(self, states: torch.Tensor) -> torch.Tensor:
        # F.linear on the layers' own parameters instead of calling each module: module
        # __call__ costs a few microseconds, a visible share of a step on 64-row batches.
        # In-place ReLU is safe: Linear's backward needs its input, not its output.
        x = states
        for layer in self._hidden_linears:
            x = torch.relu_(F.linear(x, layer.weight, layer.bias))
        if not self.dueling:
            return F.linear(x, self.out.weight, self.out.bias)
        advantage = F.linear(x, self.advantage.weight, self.advantage.bias)
        value = F.linear(x, self.value.weight, self.value.bias)
        # Subtracting the mean makes V and A identifiable (Wang et al. 2016).
        return value + advantage - advantage.mean(dim=-1, keepdim=True)


def export_numpy(net: QNetwork) -> dict[str, np.ndarray]:
    """Named float32 copies of every weight, plus a flag that says whether the head is dueling."""
    weights = {
        name: tensor.detach().to("cpu", torch.float32).numpy().copy()
        for name, tensor in net.state_dict().items()
    }
    weights[DUELING_KEY] = np.array(1 if net.dueling else 0, dtype=np.int8)
    return weights


# --- flat parameters and optimiser ---------------------------------------------------------
# With every weight a view into one flat tensor, zeroing gradients, clipping them by global
# norm and the Adam update each become one or two kernels instead of one per tensor; for a
# tiny MLP trained on batches of 64 those per-tensor launches are a large share of a step.
# Same technique as apex's flat master weights and the `contiguous_params` package.


class FlatParameters:
    """Rebinds `module`'s parameters (and their .grad) as views of two flat buffers.

    Call after the module is on its final device: `module.to(...)` would allocate new
    storage and silently detach the parameters from the buffers. `load_state_dict` is safe
    (it copies in place). Autograd accumulates into the existing .grad views in place, so
    gradients must be zeroed with `zero_grad()` here, never set to None.
    """

    def __init__(self, module: nn.Module) -> None:
        params = [p for p in module.parameters() if p.requires_grad]
        if not params:
            raise ValueError("module has no trainable parameters")
        first = params[0]
        total = sum(p.numel() for p in params)
        data = torch.empty(total, dtype=first.dtype, device=first.device)
        grad = torch.zeros(total, dtype=first.dtype, device=first.device)
        offset = 0
        for p in params:
            n = p.numel()
            view = data[offset : offset + n].view_as(p)
            view.copy_(p.detach())
            p.data = view
            p.grad = grad[offset : offset + n].view_as(p)
            offset += n
        # The optimiser sees this single leaf; it shares storage with every module parameter.
        self.param = nn.Parameter(data)
        self.param.grad = grad
        self.grad = grad
        self.params = params

    def zero_grad(self) -> None:
        self.grad.zero_()

    def clip_grad_norm(self, max_norm: float) -> torch.Tensor:
        """Scale gradients so their global L2 norm is at most max_norm; returns the norm before
        clipping (same rule as torch.nn.utils.clip_grad_norm_, without a host sync)."""
        norm = torch.linalg.vector_norm(self.grad)
        coefficient = (max_norm / (norm + 1e-6)).clamp_(max=1.0)
        self.grad.mul_(coefficient)
        return norm

    def grad_norm(self) -> torch.Tensor:
        return torch.linalg.vector_norm(self.grad)


def make_adam(params: list[torch.nn.Parameter], lr: float) -> torch.optim.Adam:
    """Fused Adam (one kernel for all tensors; CUDA, and CPU since torch 2.4), else foreach."""
    try:
        return torch.optim.Adam(params, lr=lr, fused=True)
    except (RuntimeError, TypeError, ValueError):
        return torch.optim.Adam(params, lr=lr, foreach=True)
