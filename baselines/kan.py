"""Kolmogorov-Arnold network layers (Liu et al. 2024) with B-spline edge functions.

`KANLinear(in, out)` puts one learnable univariate function on every edge (i -> o) and sums them:

    y_o = sum_i  w_b[o, i] * silu(x_i)  +  s[o, i] * sum_k c[o, i, k] * B_k(x_i)

The first term is the "base" path (a plain linear layer on SiLU, which keeps the layer useful
outside the spline's grid); the second is the spline path. `B_k` are the B-spline bases of degree
`spline_order` on a uniform grid over `grid_range` with `grid_size` intervals, extended by
`spline_order` knots on each side (`grid_size + 2 * spline_order + 1` knots, so
`grid_size + spline_order` bases whose sum is 1 everywhere inside `grid_range`). The bases are
computed by the Cox-de Boor recursion, vectorised over inputs. `c` are the spline coefficients and
`s` an optional per-edge scale (`standalone_scale=True`), both learned.

`KAN(widths)` stacks `KANLinear(widths[j], widths[j + 1])` layers; like `nn.Linear`, both act on
the last axis and keep any leading dims.
"""

from __future__ import annotations

import math
from typing import Sequence

import torch
import torch.nn.functional as F
from torch import nn


def uniform_knots(grid_size: int, spline_order: int, grid_range: tuple[float, float]) -> torch.Tensor:
    """`grid_size + 2 * spline_order + 1` equally spaced knots; the middle ones span `grid_range`."""
    lo, hi = float(grid_range[0]), float(grid_range[1])
    if not hi > lo:
        raise ValueError(f"grid_range must be increasing, got {grid_range}")
    if grid_size < 1 or spline_order < 0:
        raise ValueError(f"need grid_size >= 1 and spline_order >= 0, got {grid_size}, {spline_order}")
    h = (hi - lo) / grid_size
    steps = torch.arange(-spline_order, grid_size + spline_order + 1, dtype=torch.float64)
    return (lo + h * steps).to(torch.float32)


def bspline_bases(x: torch.Tensor, knots: torch.Tensor, order: int) -> torch.Tensor:
    """B-spline bases of degree `order` at `x` (any shape) -> `x.shape + (len(knots) - order - 1,)`.

    `knots` is 1-D (shared by every input) or `x.shape[-1] x n_knots` (one grid per input feature).
    Cox-de Boor: B_{j,0}(x) = [t_j <= x < t_{j+1}];
    B_{j,p}(x) = (x - t_j) / (t_{j+p} - t_j) B_{j,p-1}(x) + (t_{j+p+1} - x) / (t_{j+p+1} - t_{j+1}) B_{j+1,p-1}(x).
    """
    t = knots.to(x.dtype)
    if t.ndim == 1:
        t = t.expand(*x.shape, t.shape[0])
    else:
        t = t.expand(*x.shape, t.shape[-1])
    xe = x.unsqueeze(-1)
    bases = ((xe >= t[..., :-1]) & (xe < t[..., 1:])).to(x.dtype)
    for p in range(1, order + 1):
        left = (xe - t[..., :-(p + 1)]) / (t[..., p:-1] - t[..., :-(p + 1)])
        right = (t[..., p + 1:] - xe) / (t[..., p + 1:] - t[..., 1:-p])
        bases = left * bases[..., :-1] + right * bases[..., 1:]
    return bases


class KANLinear(nn.Module):
    """One KAN layer: `in_features -> out_features` with a B-spline function on every edge."""

    def __init__(self, in_features: int, out_features: int, grid_size: int = 5, spline_order: int = 3,
                 grid_range: tuple[float, float] = (-1.0, 1.0), scale_noise: float = 0.1,
                 scale_base: float = 1.0, scale_spline: float = 1.0, standalone_scale: bool = True,
                 base_activation: type[nn.Module] = nn.SiLU) -> None:
        super().__init__()
        self.in_features, self.out_features = in_features, out_features
        self.grid_size, self.spline_order = grid_size, spline_order
        self.grid_range = (float(grid_range[0]), float(grid_range[1]))
        knots = uniform_knots(grid_size, spline_order, grid_range)
        self.register_buffer("grid", knots.expand(in_features, -1).contiguous())  # in x n_knots
        self.num_bases = grid_size + spline_order
        self.base_weight = nn.Parameter(torch.empty(out_features, in_features))
        self.spline_weight = nn.Parameter(torch.empty(out_features, in_features, self.num_bases))
        self.spline_scaler = nn.Parameter(torch.empty(out_features, in_features)) if standalone_scale else None
        self.base_activation = base_activation()
        self.scale_noise, self.scale_base, self.scale_spline = scale_noise, scale_base, scale_spline
        self.reset_parameters()

    def reset_parameters(self) -> None:
        # Base path: nn.Linear's default init, times scale_base.
        nn.init.kaiming_uniform_(self.base_weight, a=math.sqrt(5))
        with torch.no_grad():
            self.base_weight.mul_(self.scale_base)
            # Spline path: small random coefficients. The bases sum to 1, so an edge function starts
            # as a gentle wiggle of amplitude ~scale_noise / sqrt(in); the layer starts near its base path.
            bound = self.scale_noise / math.sqrt(self.in_features)
            self.spline_weight.uniform_(-bound, bound)
            if self.spline_scaler is not None:
                self.spline_scaler.fill_(self.scale_spline)
            else:
                self.spline_weight.mul_(self.scale_spline)

    def bases(self, x: torch.Tensor) -> torch.Tensor:
        """`N x in` -> `N x in x num_bases`."""
        return bspline_bases(x, self.grid, self.spline_order)

    def scaled_spline_weight(self) -> torch.Tensor:
        if self.spline_scaler is None:
            return self.spline_weight
        return self.spline_weight * self.spline_scaler.unsqueeze(-1)

    def edge_functions(self, x: torch.Tensor) -> torch.Tensor:
        """Every edge's output before the sum: `N x in` -> `N x out x in` (for plots and tests)."""
        spline = torch.einsum("nik,oik->noi", self.bases(x), self.scaled_spline_weight())
        return spline + self.base_activation(x).unsqueeze(1) * self.base_weight.unsqueeze(0)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        if x.shape[-1] != self.in_features:
            raise ValueError(f"KANLinear expects {self.in_features} input features, got {x.shape[-1]}")
        lead = x.shape[:-1]
        flat = x.reshape(-1, self.in_features)
        base = F.linear(self.base_activation(flat), self.base_weight)
        spline = self.bases(flat).reshape(flat.shape[0], -1) @ self.scaled_spline_weight().reshape(
            self.out_features, -1).t()
        return (base + spline).reshape(*lead, self.out_features)

    def base_only(self, x: torch.Tensor) -> torch.Tensor:
        """The base path alone (what the layer is without its splines)."""
        return F.linear(self.base_activation(x), self.base_weight)

    def regularization_loss(self, activation: float = 1.0, entropy: float = 1.0) -> torch.Tensor:
        """Sparsity regulariser of the KAN paper on the mean |coefficient| of each edge (L1 + entropy)."""
        l1 = self.spline_weight.abs().mean(-1)
        total = l1.sum()
        p = l1 / (total + 1e-12)
        return activation * total + entropy * -(p * torch.log(p + 1e-12)).sum()

    def extra_repr(self) -> str:
        return (f"in_features={self.in_features}, out_features={self.out_features}, grid_size={self.grid_size}, "
                f"spline_order={self.spline_order}, grid_range={self.grid_range}")


class KAN(nn.Module):
    """A stack of KANLinear layers with the given widths, e.g. `KAN([68, 512, 68])`."""

    def __init__(self, widths: Sequence[int], **layer_kwargs) -> None:
        super().__init__()
        widths = [int(w) for w in widths]
        if len(widths) < 2:
            raise ValueError(f"KAN needs at least an input and an output width, got {widths}")
        self.widths = widths
        self.layers = nn.ModuleList(KANLinear(a, b, **layer_kwargs) for a, b in zip(widths[:-1], widths[1:]))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        for layer in self.layers:
            x = layer(x)
        return x

    def regularization_loss(self, activation: float = 1.0, entropy: float = 1.0) -> torch.Tensor:
        return sum(layer.regularization_loss(activation, entropy) for layer in self.layers)
