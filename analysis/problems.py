"""Diffusion problems whose exact answer is known: Gaussian data and Gaussian mixtures.

Data x0 ~ sum_k w_k N(m_k, C_k). In scaled coordinates (xbar = x / alpha, sigmabar = sigma / alpha)
the marginal at noise level s is sum_k w_k N(m_k, C_k + s^2 I), and the noise prediction of an
ideal network is epsbar(xbar, s) = -s * grad log p_s(xbar) (Tweedie), i.e.

    epsbar(xbar, s) = s * sum_k r_k(xbar, s) (C_k + s^2 I)^{-1} (xbar - m_k),

with r_k the posterior responsibilities of the components. The probability-flow ODE is
d xbar / d s = epsbar(xbar, s) (BELM paper eq. 11). For one Gaussian it has the closed-form
solution along the eigen-directions u_j of C (eigenvalues c_j):

    u_j . (xbar(s) - m) = u_j . (xbar(S) - m) * sqrt((c_j + s^2) / (c_j + S^2)),

because d/ds sqrt(c + s^2) = s / (c + s^2) * sqrt(c + s^2). For a mixture the reference
trajectory comes from :func:`scipy.integrate.solve_ivp` (DOP853) at rtol 1e-12.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Callable, Sequence

import numpy as np

from linmultistep.grid import Grid

__all__ = ["GaussianMixture", "gaussian", "default_mixture", "default_gaussian", "eps_fn_for", "PROBLEMS", "make_problem"]


def _as_cov(c, dim: int) -> np.ndarray:
    c = np.asarray(c, dtype=np.float64)
    if c.ndim == 0:
        c = np.full(dim, float(c))
    if c.ndim == 1:
        c = np.diag(c)
    if c.shape != (dim, dim):
        raise ValueError(f"covariance has shape {c.shape}, expected ({dim}, {dim}) or a diagonal of length {dim}")
    if not np.allclose(c, c.T, rtol=1e-12, atol=1e-12):
        raise ValueError("covariance must be symmetric")
    return 0.5 * (c + c.T)


@dataclass(frozen=True)
class GaussianMixture:
    """Data distribution sum_k w_k N(m_k, C_k) in R^d, with exact noise prediction and flow.

    Build with :meth:`create` (weights, means, covariances given as full matrices, diagonals
    or scalars). Arrays passed in are copied, never aliased.
    """

    weights: np.ndarray  # (K,)
    means: np.ndarray  # (K, d)
    eigvals: np.ndarray  # (K, d) eigenvalues c_kj of C_k (>= 0)
    eigvecs: np.ndarray  # (K, d, d) columns are eigenvectors u_kj
    name: str = "mixture"

    @classmethod
    def create(cls, weights: Sequence[float], means, covs, name: str = "mixture") -> "GaussianMixture":
        w = np.array(weights, dtype=np.float64, copy=True)
        m = np.array(means, dtype=np.float64, copy=True)
        if m.ndim != 2 or w.shape != (m.shape[0],):
            raise ValueError(f"need K weights and a (K, d) array of means; got {w.shape} and {m.shape}")
        if (w <= 0).any() or not np.isfinite(w).all():
            raise ValueError(f"mixture weights must be positive, got {w}")
        K, d = m.shape
        covs = [covs] * K if np.ndim(covs) == 0 else list(covs)  # a scalar: c I for every component
        if len(covs) != K:
            raise ValueError(f"need {K} covariances, got {len(covs)}")
        vals, vecs = [], []
        for k, c in enumerate(covs):
            lam, u = np.linalg.eigh(_as_cov(c, d))
            if lam.min() < -1e-12 * max(1.0, lam.max()):
                raise ValueError(f"covariance {k} is not positive semi-definite (eigenvalue {lam.min():.3g})")
            vals.append(np.clip(lam, 0.0, None))
            vecs.append(u)
        return cls(w / w.sum(), m, np.array(vals), np.array(vecs), name)

    @property
    def dim(self) -> int:
        return self.means.shape[1]

    @property
    def K(self) -> int:
        return self.means.shape[0]

    @property
    def covs(self) -> np.ndarray:
        """C_k = U_k diag(c_k) U_k^T, shape (K, d, d)."""
        return np.einsum("kij,kj,klj->kil", self.eigvecs, self.eigvals, self.eigvecs)

    def mean(self) -> np.ndarray:
        """Mean of the data distribution, sum_k w_k m_k."""
        return self.weights @ self.means

    def cov(self, s: float = 0.0) -> np.ndarray:
        """Covariance of the marginal at noise level s (s = 0: the data)."""
        mu = self.mean()
        dm = self.means - mu
        c = np.einsum("k,kij->ij", self.weights, self.covs) + np.einsum("k,ki,kj->ij", self.weights, dm, dm)
        return c + s**2 * np.eye(self.dim)

    # --- the marginal at noise level s ------------------------------------------------
    def _whitened(self, xbar: np.ndarray, s: float):
        """Per component: coordinates of xbar - m_k in the eigenbasis, and c_kj + s^2."""
        diff = xbar[..., None, :] - self.means  # (..., K, d)
        proj = np.einsum("...kd,kdj->...kj", diff, self.eigvecs)  # u_kj . (xbar - m_k)
        var = self.eigvals + s * s  # (K, d)
        return proj, var

    def log_density(self, xbar: np.ndarray, s: float) -> np.ndarray:
        """log p_s(xbar) of the marginal sum_k w_k N(m_k, C_k + s^2 I)."""
        xbar = np.asarray(xbar, dtype=np.float64)
        proj, var = self._whitened(xbar, s)
        logc = (
            np.log(self.weights)
            - 0.5 * np.log(2 * np.pi * var).sum(-1)
            - 0.5 * (proj**2 / var).sum(-1)
        )
        top = logc.max(-1, keepdims=True)
        return (top + np.log(np.exp(logc - top).sum(-1, keepdims=True)))[..., 0]

    def responsibilities(self, xbar: np.ndarray, s: float) -> np.ndarray:
        """Posterior weights r_k(xbar, s) of the components, shape (..., K)."""
        proj, var = self._whitened(np.asarray(xbar, dtype=np.float64), s)
        logc = np.log(self.weights) - 0.5 * np.log(var).sum(-1) - 0.5 * (proj**2 / var).sum(-1)
        logc = logc - logc.max(-1, keepdims=True)
        r = np.exp(logc)
        return r / r.sum(-1, keepdims=True)

    def epsbar(self, xbar: np.ndarray, s: float) -> np.ndarray:
        """epsbar(xbar, s) = s sum_k r_k (C_k + s^2 I)^{-1} (xbar - m_k), in float64."""
        xbar = np.asarray(xbar, dtype=np.float64)
        proj, var = self._whitened(xbar, s)
        logc = np.log(self.weights) - 0.5 * np.log(var).sum(-1) - 0.5 * (proj**2 / var).sum(-1)
        logc = logc - logc.max(-1, keepdims=True)
        r = np.exp(logc)
        r /= r.sum(-1, keepdims=True)
        per = np.einsum("kdj,...kj->...kd", self.eigvecs, proj / var)  # (C_k + s^2)^{-1} (xbar - m_k)
        return s * np.einsum("...k,...kd->...d", r, per)

    def sample(self, rng: np.random.Generator, n: int, s: float = 0.0) -> np.ndarray:
        """n independent draws of xbar from the marginal at noise level s (s = 0: data)."""
        return self.transport_noise(*self.draw_noise(rng, n), s)

    def draw_noise(self, rng: np.random.Generator, n: int) -> tuple[np.ndarray, np.ndarray]:
        """(component labels, standard normals): the randomness behind :meth:`transport_noise`."""
        labels = rng.choice(self.K, size=n, p=self.weights)
        return labels, rng.standard_normal((n, self.dim))

    def transport_noise(self, labels: np.ndarray, z: np.ndarray, s: float) -> np.ndarray:
        """xbar = m_k + U_k diag(sqrt(c_k + s^2)) z: an exact draw from the marginal at s."""
        scale = np.sqrt(self.eigvals[labels] + s * s)  # (n, d)
        return self.means[labels] + np.einsum("nij,nj->ni", self.eigvecs[labels], scale * z)

    # --- the probability-flow ODE -----------------------------------------------------
    def flow_closed_form(self, xbar: np.ndarray, s_from: float, s_to: float) -> np.ndarray:
        """Exact probability-flow map from noise level s_from to s_to; single Gaussian only."""
        if self.K != 1:
            raise ValueError("the closed-form flow exists for a single Gaussian only; use flow_reference")
        u, c, m = self.eigvecs[0], self.eigvals[0], self.means[0]
        factor = np.sqrt((c + s_to**2) / (c + s_from**2))
        proj = (np.asarray(xbar, dtype=np.float64) - m) @ u
        return m + (proj * factor) @ u.T

    def flow_reference(
        self, xbar: np.ndarray, s_from: float, s_to: float, rtol: float = 1e-12, atol: float = 1e-13
    ) -> np.ndarray:
        """The probability-flow map s_from -> s_to by scipy's DOP853 at tight tolerances.

        All rows of xbar are integrated together as one system (the rows do not interact).
        """
        from scipy.integrate import solve_ivp

        x = np.asarray(xbar, dtype=np.float64)
        shape = x.shape
        if s_from == s_to:
            return x.copy()

        def rhs(s: float, y: np.ndarray) -> np.ndarray:
            return self.epsbar(y.reshape(shape), s).ravel()

        sol = solve_ivp(rhs, (s_from, s_to), x.ravel(), method="DOP853", rtol=rtol, atol=atol)
        if not sol.success:  # pragma: no cover - scipy reports its own reason
            raise RuntimeError(f"reference solve failed: {sol.message}")
        return sol.y[:, -1].reshape(shape)

    def flow(self, xbar: np.ndarray, s_from: float, s_to: float) -> np.ndarray:
        """Exact flow: closed form for one Gaussian, the scipy reference for a mixture."""
        if self.K == 1:
            return self.flow_closed_form(xbar, s_from, s_to)
        return self.flow_reference(xbar, s_from, s_to)


def gaussian(mean, cov, name: str = "gaussian") -> GaussianMixture:
    """Single Gaussian N(mean, cov): cov may be a full matrix, a diagonal or a scalar."""
    mean = np.atleast_1d(np.asarray(mean, dtype=np.float64))
    return GaussianMixture.create([1.0], mean[None, :], [cov], name=name)


def _random_rotation(rng: np.random.Generator, d: int) -> np.ndarray:
    q, r = np.linalg.qr(rng.standard_normal((d, d)))
    return q * np.sign(np.diag(r))


def default_mixture(dim: int = 2, seed: int = 0) -> GaussianMixture:
    """The study's embedded default: three anisotropic Gaussians around a ring of radius 1.5.

    Roughly unit scale like Stable Diffusion latents; the narrowest direction has variance
    0.02, so the flow bends sharply near the data end (a realistic, non-trivial test).
    """
    if dim < 1:
        raise ValueError(f"dimension must be at least 1, got {dim}")
    rng = np.random.default_rng(seed)
    K = 3
    means = np.zeros((K, dim))
    angles = 2 * np.pi * np.arange(K) / K + 0.3
    means[:, 0] = 1.5 * np.cos(angles)
    if dim > 1:
        means[:, 1] = 1.5 * np.sin(angles)
    else:
        means[:, 0] = 1.5 * np.array([-1.0, 0.2, 1.2])
    covs = []
    for _ in range(K):
        u = _random_rotation(rng, dim)
        lam = np.geomspace(0.02, 0.4, dim) if dim > 1 else np.array([0.1])
        covs.append((u * rng.permutation(lam)) @ u.T)
    return GaussianMixture.create([0.5, 0.3, 0.2], means, covs, name="mixture")


def default_gaussian(dim: int = 2, seed: int = 0) -> GaussianMixture:
    """A single anisotropic Gaussian (closed-form flow): variances 0.02..0.4, mean (0.5, ...)."""
    rng = np.random.default_rng(seed)
    u = _random_rotation(rng, dim)
    lam = np.geomspace(0.02, 0.4, dim) if dim > 1 else np.array([0.1])
    return gaussian(np.full(dim, 0.5), (u * lam) @ u.T, name="gaussian")


PROBLEMS: dict[str, Callable[..., GaussianMixture]] = {"mixture": default_mixture, "gaussian": default_gaussian}


def make_problem(name: str, dim: int = 2, seed: int = 0) -> GaussianMixture:
    """A named built-in problem: 'mixture' (default) or 'gaussian'."""
    if name not in PROBLEMS:
        raise ValueError(f"unknown problem {name!r}; expected one of {sorted(PROBLEMS)}")
    return PROBLEMS[name](dim=dim, seed=seed)


def eps_fn_for(problem: GaussianMixture, grid: Grid) -> Callable[[np.ndarray, int], np.ndarray]:
    """The ideal network on ``grid``: eps_fn(x, i) = epsbar(x / alpha_i, sigmabar_i).

    Computed in float64 and returned in x's dtype, like a network run in that precision.
    """
    alpha, sbar = grid.alpha, grid.sigmabar

    def eps_fn(x: np.ndarray, i: int) -> np.ndarray:
        e = problem.epsbar(np.asarray(x, dtype=np.float64) / alpha[i], float(sbar[i]))
        return e.astype(x.dtype, copy=False)

    return eps_fn
