"""Anti-collapse regularisers for JEPA embeddings: VICReg variance/covariance and SIGReg.

Without one of these the JEPA prediction loss can be driven to ~0 by mapping every hit
to the same point (see DESIGN.md: the encoder then ends worse than random).
"""
from __future__ import annotations

from typing import Dict, Optional, Tuple

import torch
from torch import Tensor, nn

ANTI_COLLAPSE_KINDS = ("vicreg", "sigreg", "none")


def _check_2d(z: Tensor, name: str, min_rows: int = 2) -> None:
    if z.dim() != 2:
        raise ValueError(f"{name}: z must be [N, D], got shape {tuple(z.shape)}")
    if z.size(0) < min_rows:
        raise ValueError(f"{name}: needs at least {min_rows} rows, got N={z.size(0)}")


def vicreg_variance_covariance(
    z: Tensor, gamma: float = 1.0, eps: float = 1e-4
) -> Tuple[Tensor, Tensor]:
    """VICReg variance and covariance terms (Bardes et al. 2022).

    With per-dimension variance :math:`\\sigma_d^2` (unbiased) and covariance matrix
    :math:`C = \\frac{1}{N-1}(z-\\bar z)^\\top(z-\\bar z)`:

    .. math::

        v(z) = \\frac{1}{D}\\sum_d \\max\\big(0, \\gamma - \\sqrt{\\sigma_d^2 + \\epsilon}\\big),
        \\qquad
        c(z) = \\frac{1}{D}\\sum_{i \\ne j} C_{ij}^2 .

    Args:
        z: Embeddings [N, D], N >= 2.
        gamma: Target standard deviation of every dimension.
        eps: Keeps the square root differentiable at zero variance.

    Returns:
        ``(var_loss, cov_loss)``, two scalar tensors (computed in at least float32).
    """
    _check_2d(z, "vicreg_variance_covariance")
    # Under autocast the covariance of bf16 values loses too many digits: upcast.
    z = z.float() if z.dtype in (torch.float16, torch.bfloat16) else z
    n, d = z.shape
    zc = z - z.mean(dim=0, keepdim=True)
    cov = zc.T @ zc / (n - 1)
    var = torch.diagonal(cov)
    var_loss = torch.relu(gamma - torch.sqrt(var + eps)).mean()
    off = cov - torch.diag_embed(var)
    cov_loss = off.pow(2).sum() / d
    return var_loss, cov_loss


def sigreg(
    z: Tensor,
    num_projections: int = 256,
    generator: Optional[torch.Generator] = None,
    num_points: int = 17,
    t_max: float = 5.0,
) -> Tensor:
    """Sketched isotropic Gaussian regularisation (SIGReg, LeJEPA, arXiv 2511.08544).

    Draws ``num_projections`` directions :math:`a_m` uniformly on the unit sphere and, for
    each 1D sample :math:`x^{(m)}_n = a_m^\\top z_n`, measures its distance to
    :math:`\\mathcal N(0, 1)` with the Epps-Pulley characteristic-function statistic

    .. math::

        \\mathrm{EP}_m = \\int_{-T}^{T} \\big|\\hat\\varphi_m(t) - e^{-t^2/2}\\big|^2\\, e^{-t^2/2}\\, dt,
        \\qquad \\hat\\varphi_m(t) = \\frac1N\\sum_n e^{\\,i t x^{(m)}_n},

    and returns :math:`\\frac1M\\sum_m \\mathrm{EP}_m`. The integrand is even in t
    (:math:`\\hat\\varphi(-t) = \\overline{\\hat\\varphi(t)}`), so it is evaluated on
    ``num_points`` trapezoid nodes over :math:`[0, T]` and doubled, using
    :math:`|\\hat\\varphi - \\varphi|^2 = (\\overline{\\cos} - \\varphi)^2 + \\overline{\\sin}^2`
    in real arithmetic.

    Note:
        LeJEPA's test statistic is ``N * EP``; this function returns the unscaled
        distance so that the loss weight does not depend on the batch size. Its
        expectation for a true standard normal sample is O(1/N) (about 1/N for T=5), not 0.
        Memory is O(N * num_projections * num_points) for backward: subsample z for
        very large N.

    Args:
        z: Embeddings [N, D], N >= 2.
        num_projections: Number of random directions M.
        generator: RNG for the directions (on z's device); None uses the global RNG.
            Pass a generator seeded identically on every rank for the same directions.
        num_points: Trapezoid nodes on [0, t_max], >= 2.
        t_max: Integration limit T.

    Returns:
        Scalar loss tensor, differentiable w.r.t. z.
    """
    _check_2d(z, "sigreg")
    if num_projections < 1:
        raise ValueError(f"sigreg: num_projections must be >= 1, got {num_projections}")
    if num_points < 2:
        raise ValueError(f"sigreg: num_points must be >= 2, got {num_points}")
    if not t_max > 0:
        raise ValueError(f"sigreg: t_max must be > 0, got {t_max}")
    z = z.float() if z.dtype in (torch.float16, torch.bfloat16) else z
    d = z.size(1)
    directions = torch.randn(d, num_projections, generator=generator, device=z.device, dtype=z.dtype)
    directions = directions / directions.norm(dim=0, keepdim=True)
    proj = z @ directions  # [N, M]
    t = torch.linspace(0.0, t_max, num_points, device=z.device, dtype=z.dtype)
    gauss = torch.exp(-0.5 * t * t)  # N(0,1) characteristic function, also the weight
    xt = proj.unsqueeze(-1) * t  # [N, M, T]
    ecf_re = torch.cos(xt).mean(dim=0)  # [M, T]
    ecf_im = torch.sin(xt).mean(dim=0)
    err = ((ecf_re - gauss).pow(2) + ecf_im.pow(2)) * gauss
    half = torch.trapezoid(err, t, dim=-1)  # integral over [0, T] per direction
    return 2.0 * half.mean()


class AntiCollapse(nn.Module):
    """Configurable anti-collapse term on a batch of embeddings.

    ``"vicreg"``: ``weight * (var_weight * v + cov_weight * c)`` with
    :func:`vicreg_variance_covariance`; ``"sigreg"``: ``weight * sigreg(z)``;
    ``"none"``: zero.

    Args:
        kind: One of ``"vicreg"``, ``"sigreg"``, ``"none"``.
        weight: Overall multiplier.
        var_weight: VICReg variance-term weight.
        cov_weight: VICReg covariance-term weight.
        num_projections: SIGReg random directions.
        gamma: VICReg target standard deviation.
    """

    def __init__(
        self,
        kind: str = "vicreg",
        weight: float = 1.0,
        var_weight: float = 1.0,
        cov_weight: float = 1.0,
        num_projections: int = 256,
        gamma: float = 1.0,
    ) -> None:
        super().__init__()
        if kind not in ANTI_COLLAPSE_KINDS:
            raise ValueError(f"AntiCollapse: kind={kind!r}; choose from {ANTI_COLLAPSE_KINDS}")
        self.kind = kind
        self.weight = float(weight)
        self.var_weight = float(var_weight)
        self.cov_weight = float(cov_weight)
        self.num_projections = int(num_projections)
        self.gamma = float(gamma)

    def forward(
        self, z: Tensor, generator: Optional[torch.Generator] = None
    ) -> Tuple[Tensor, Dict[str, Tensor]]:
        """Return ``(weighted loss, unweighted components detached for logging)``.

        Components: ``{"var_loss", "cov_loss"}`` for VICReg, ``{"sigreg"}`` for SIGReg,
        ``{}`` for ``"none"``. ``generator`` only affects SIGReg's directions.
        """
        if self.kind == "none":
            return z.new_zeros(()), {}
        if self.kind == "vicreg":
            var_loss, cov_loss = vicreg_variance_covariance(z, gamma=self.gamma)
            loss = self.weight * (self.var_weight * var_loss + self.cov_weight * cov_loss)
            return loss, {"var_loss": var_loss.detach(), "cov_loss": cov_loss.detach()}
        s = sigreg(z, num_projections=self.num_projections, generator=generator)
        return self.weight * s, {"sigreg": s.detach()}

    def extra_repr(self) -> str:
        if self.kind == "vicreg":
            return (
                f"kind='vicreg', weight={self.weight}, var_weight={self.var_weight}, "
                f"cov_weight={self.cov_weight}, gamma={self.gamma}"
            )
        if self.kind == "sigreg":
            return f"kind='sigreg', weight={self.weight}, num_projections={self.num_projections}"
        return "kind='none'"
