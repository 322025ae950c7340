"""Tests of gnn_jepa.nn.losses (VICReg terms, SIGReg, AntiCollapse)."""
from __future__ import annotations

import math

import numpy as np
import pytest
import torch

from gnn_jepa.nn.losses import AntiCollapse, sigreg, vicreg_variance_covariance


def whitened(n: int, d: int, seed: int = 0) -> torch.Tensor:
    """z with column means 0 and sample covariance exactly the identity."""
    g = torch.Generator().manual_seed(seed)
    a = torch.randn(n, d, generator=g, dtype=torch.float64)
    a = a - a.mean(0)
    q, _ = torch.linalg.qr(a)  # orthonormal columns, still zero-mean (span of centred a)
    return q * math.sqrt(n - 1)


def test_vicreg_constant_z():
    z = torch.full((100, 8), 3.0)
    var, cov = vicreg_variance_covariance(z, gamma=1.0, eps=1e-4)
    assert var.item() == pytest.approx(1.0 - math.sqrt(1e-4), abs=1e-6)  # = 0.99
    assert cov.item() == 0.0
    var2, _ = vicreg_variance_covariance(z, gamma=2.5, eps=1e-4)
    assert var2.item() == pytest.approx(2.5 - 0.01, abs=1e-6)


def test_vicreg_whitened_z_is_zero():
    var, cov = vicreg_variance_covariance(whitened(500, 6))
    assert var.item() == 0.0  # every std is sqrt(1 + eps) >= gamma
    assert cov.item() == pytest.approx(0.0, abs=1e-20)


def test_vicreg_known_values_against_numpy():
    z = whitened(400, 2, seed=1).clone()
    z[:, 1] = z[:, 0]  # perfectly correlated pair, unit variance: C = [[1, 1], [1, 1]]
    var, cov = vicreg_variance_covariance(z)
    assert var.item() == 0.0
    assert cov.item() == pytest.approx((1.0**2 + 1.0**2) / 2, rel=1e-9)

    rng = np.random.default_rng(2)
    zn = rng.normal(size=(50, 5)) * np.array([0.1, 0.5, 1.0, 2.0, 0.3])
    zn[:, 4] += 0.7 * zn[:, 3]
    c = np.cov(zn, rowvar=False)
    exp_var = np.mean(np.maximum(0.0, 1.0 - np.sqrt(np.diag(c) + 1e-4)))
    exp_cov = (np.sum(c**2) - np.sum(np.diag(c) ** 2)) / 5
    var, cov = vicreg_variance_covariance(torch.from_numpy(zn))
    assert var.item() == pytest.approx(exp_var, rel=1e-10)
    assert cov.item() == pytest.approx(exp_cov, rel=1e-10)


def test_sigreg_near_zero_for_standard_normal_and_large_otherwise():
    g = torch.Generator().manual_seed(0)
    n, d = 20000, 8
    z = torch.randn(n, d, generator=g, dtype=torch.float64)
    kw = dict(num_projections=32)
    ok = sigreg(z, generator=torch.Generator().manual_seed(1), **kw).item()
    # E[EP] = (1/N) * int_{-5}^{5} (1 - e^{-t^2}) e^{-t^2/2} dt ~= 1.06 / N for a true N(0, I).
    assert 0.0 < ok < 5.0 / n
    collapsed = sigreg(torch.zeros(n, d, dtype=torch.float64), **kw)
    # phi_N = 1: int (1 - e^{-t^2/2})^2 e^{-t^2/2} dt = sqrt(2 pi) (1 - sqrt(2) + 1/sqrt(3)).
    exact = math.sqrt(2 * math.pi) * (1 - math.sqrt(2) + 1 / math.sqrt(3))
    assert collapsed.item() == pytest.approx(exact, rel=2e-2)  # trapezoid, 17 nodes
    shifted = sigreg(z + 2.0, generator=torch.Generator().manual_seed(1), **kw).item()
    squeezed = sigreg(0.2 * z, generator=torch.Generator().manual_seed(1), **kw).item()
    assert shifted > 100 * ok and squeezed > 100 * ok


def test_sigreg_quadrature_converges_to_closed_form():
    # Collapsed sample at x = c on one direction: EP = int |e^{itc} - phi(t)|^2 phi(t) dt
    # = int (1 - 2 cos(tc) phi(t) + phi(t)^2) phi(t) dt (closed form below, T -> inf).
    c = 0.8
    z = torch.full((10, 1), c, dtype=torch.float64)
    s2pi = math.sqrt(2 * math.pi)
    exact = s2pi - 2 * math.sqrt(2 * math.pi / 2) * math.exp(-c * c / 4) + math.sqrt(2 * math.pi / 3)
    got = sigreg(z, num_projections=4, num_points=401, t_max=10.0).item()
    assert got == pytest.approx(exact, rel=1e-6)


def test_sigreg_is_differentiable_and_descends():
    g = torch.Generator().manual_seed(3)
    z = (0.1 * torch.randn(256, 4, generator=g)).requires_grad_()
    opt = torch.optim.Adam([z], lr=0.05)
    first = None
    for step in range(40):
        opt.zero_grad()
        loss = sigreg(z, num_projections=32, generator=torch.Generator().manual_seed(step))
        loss.backward()
        assert torch.isfinite(z.grad).all() and z.grad.abs().sum() > 0
        first = loss.item() if first is None else first
        opt.step()
    assert loss.item() < 0.1 * first
    assert z.detach().std(0).mean().item() == pytest.approx(1.0, abs=0.2)


def test_sigreg_generator_reproducible():
    z = torch.randn(300, 5)
    a = sigreg(z, generator=torch.Generator().manual_seed(7))
    b = sigreg(z, generator=torch.Generator().manual_seed(7))
    assert torch.equal(a, b)


def test_anti_collapse_module():
    z = torch.full((64, 4), 1.0)
    loss, parts = AntiCollapse("vicreg", weight=2.0, var_weight=3.0, cov_weight=5.0)(z)
    assert set(parts) == {"var_loss", "cov_loss"}
    assert loss.item() == pytest.approx(2.0 * 3.0 * 0.99, rel=1e-6)
    loss, parts = AntiCollapse("sigreg", weight=0.5, num_projections=8)(z, generator=torch.Generator().manual_seed(0))
    assert set(parts) == {"sigreg"}
    assert loss.item() == pytest.approx(0.5 * parts["sigreg"].item())
    loss, parts = AntiCollapse("none")(z)
    assert loss.item() == 0.0 and parts == {}
    with pytest.raises(ValueError, match="kind='barlow'"):
        AntiCollapse("barlow")


def test_bad_shapes_raise():
    with pytest.raises(ValueError, match="at least 2 rows"):
        vicreg_variance_covariance(torch.zeros(1, 3))
    with pytest.raises(ValueError, match=r"\[N, D\]"):
        sigreg(torch.zeros(10))
