"""KAN layers: B-spline bases against an independent scalar Cox-de Boor, shapes, gradients, fitting."""

from __future__ import annotations

import numpy as np
import pytest
import torch

from baselines.kan import KAN, KANLinear, bspline_bases, uniform_knots


def cox_de_boor(j: int, p: int, x: float, t: list[float]) -> float:
    """Plain recursive B_{j,p}(x) on knots t (0/0 terms are 0), written independently of baselines.kan."""
    if p == 0:
        return 1.0 if t[j] <= x < t[j + 1] else 0.0
    out = 0.0
    if t[j + p] != t[j]:
        out += (x - t[j]) / (t[j + p] - t[j]) * cox_de_boor(j, p - 1, x, t)
    if t[j + p + 1] != t[j + 1]:
        out += (t[j + p + 1] - x) / (t[j + p + 1] - t[j + 1]) * cox_de_boor(j + 1, p - 1, x, t)
    return out


@pytest.mark.parametrize("grid_size,order,grid_range", [(5, 3, (-1, 1)), (4, 2, (0, 2)), (7, 1, (-3, 1))])
def test_bases_equal_scalar_cox_de_boor(grid_size, order, grid_range):
    knots = uniform_knots(grid_size, order, grid_range)
    assert len(knots) == grid_size + 2 * order + 1
    h = (grid_range[1] - grid_range[0]) / grid_size
    t = [grid_range[0] + h * i for i in range(-order, grid_size + order + 1)]
    np.testing.assert_allclose(knots.numpy(), t, atol=1e-6)
    xs = np.concatenate([np.linspace(t[0] - 0.5, t[-1] + 0.5, 257),
                         np.random.default_rng(0).uniform(t[0], t[-1], 200)])
    ours = bspline_bases(torch.tensor(xs, dtype=torch.float64), torch.tensor(t, dtype=torch.float64), order)
    assert ours.shape == (len(xs), grid_size + order)
    ref = np.array([[cox_de_boor(j, order, float(x), t) for j in range(grid_size + order)] for x in xs])
    np.testing.assert_allclose(ours.numpy(), ref, atol=1e-10)


def test_partition_of_unity_inside_the_grid_range():
    layer = KANLinear(3, 2, grid_size=5, spline_order=3, grid_range=(-1, 1))
    x = torch.linspace(-1, 1, 1001).reshape(-1, 1).expand(-1, 3).contiguous()
    sums = layer.bases(x).sum(-1)
    torch.testing.assert_close(sums, torch.ones_like(sums), atol=1e-5, rtol=0)
    assert (layer.bases(x) >= -1e-7).all()
    # outside the range, on the extended knots, the sum falls below 1
    assert layer.bases(torch.full((1, 3), 1.3)).sum() < 3 - 1e-3


def test_bases_vanish_outside_their_support():
    order, grid_size = 3, 5
    knots = uniform_knots(grid_size, order, (-1, 1)).double()
    x = torch.linspace(-3, 3, 2001, dtype=torch.float64)
    b = bspline_bases(x, knots, order)
    for j in range(grid_size + order):
        lo, hi = knots[j].item(), knots[j + order + 1].item()  # support of B_j is [t_j, t_{j+p+1})
        outside = (x < lo) | (x >= hi)
        assert torch.all(b[outside, j] == 0)
        inside = (x > lo + 1e-6) & (x < hi - 1e-6)
        assert torch.all(b[inside, j] > 0)
    assert torch.all(b[(x < knots[0]) | (x >= knots[-1])] == 0)


def test_shapes_and_gradients():
    torch.manual_seed(0)
    kan = KAN([6, 5, 4], grid_size=5, spline_order=3)
    x = (torch.randn(2, 3, 7, 6) * 0.5).requires_grad_()
    y = kan(x)
    assert y.shape == (2, 3, 7, 4)
    y.square().mean().backward()
    assert x.grad is not None and x.grad.abs().sum() > 0
    for name, p in kan.named_parameters():
        assert p.grad is not None and p.grad.abs().sum() > 0, name
    layer = kan.layers[0]
    assert layer.spline_weight.shape == (5, 6, 8) and layer.spline_scaler.shape == (5, 6)
    # forward == the sum of the per-edge functions
    flat = x.detach().reshape(-1, 6)
    torch.testing.assert_close(layer(flat), layer.edge_functions(flat).sum(-1), atol=1e-5, rtol=1e-5)
    assert kan.regularization_loss() > 0
    with pytest.raises(ValueError, match="expects 6 input features"):
        kan(torch.zeros(2, 5))
    no_scale = KANLinear(2, 3, standalone_scale=False)
    assert no_scale.spline_scaler is None and no_scale(torch.zeros(4, 2)).shape == (4, 3)


def _fit(model_fn, steps=400):
    torch.manual_seed(0)
    x = torch.linspace(-1, 1, 200).reshape(-1, 1)
    y = torch.sin(3 * x) + 0.3 * torch.cos(7 * x)
    layer = KANLinear(1, 1, grid_size=10, spline_order=3)
    opt = torch.optim.Adam(layer.parameters(), lr=0.03)
    for _ in range(steps):
        loss = torch.mean((model_fn(layer, x) - y) ** 2)
        opt.zero_grad()
        loss.backward()
        opt.step()
    with torch.no_grad():
        return float(torch.mean((model_fn(layer, x) - y) ** 2))


def test_kan_fits_a_nonlinear_function_better_than_its_base_path():
    kan_mse = _fit(lambda layer, x: layer(x))
    base_mse = _fit(lambda layer, x: layer.base_only(x))
    assert kan_mse < 1e-3, kan_mse
    assert kan_mse < 0.05 * base_mse, (kan_mse, base_mse)
