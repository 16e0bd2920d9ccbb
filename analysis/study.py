"""Convergence study of the samplers against exact solutions, as plain functions returning data.

For a problem with known flow (:mod:`linmultistep.analysis.problems`), a family of grids
(one per number of steps N) and a list of methods, :func:`run_study` measures

- the global error at the data end: RMS over samples and coordinates of
  xbar_0(sampler) - xbar_0(exact flow), both started from the same exact draw x_N of the
  noise-end marginal (each grid gets its own reference, so grids whose noise end moves with N,
  like 'leading', are handled);
- distribution-level errors of the sampled set against the exact flow of the same noise:
  sliced Wasserstein-2 distance, and the errors of the sample mean and covariance;
- the round-trip error sample(invert(x0)) - x0 (relative RMS) of exact draws x0 of the data end,
  per floating-point dtype, in the LM recurrence itself and, for the methods that have it, in
  the bit-exact fixed-point mode 'bits' (docs/precision.md), the answer for float16;

:func:`run_flow_study` does the same for the flow-matching problem of issue 21 (rectified flow,
:mod:`linmultistep.analysis.flow_problems`, exact velocity and flow; SD3-style shifted grids in the
core's flow coordinates), and :func:`fit_order` fits the observed order p in error ~ C N^-p (least squares on log-log,
with the slope's standard error).

Grids (:func:`make_grid`): diffusers' uniform-timestep spacings 'linspace', 'leading',
'trailing' (clean data end, alpha_0 = 1, as DDIMScheduler's set_alpha_to_one=True), and two
grids that are smooth in sigmabar: 'karras' (Karras et al. 2022, rho = 7, between the
schedule's smallest and largest sigmabar) and 'uniform' (uniform in sigmabar from 0). On the
diffusers grids sigmabar ~ sqrt(t) near the data end, so the last step shrinks only like
N^-1/2 and the observed order in N drops (see docs/study.md).
"""

from __future__ import annotations

import math
import warnings
from dataclasses import dataclass, field
from typing import Any, Callable, Iterable, Sequence

import numpy as np

from linmultistep.diffusion import invert, sample
from linmultistep.errors import LinmultistepError, PrecisionWarning
from linmultistep.grid import Grid
from linmultistep.methods import Edict, LinearMultistep, Method, get_method
from linmultistep.modes import in_mode
from linmultistep.schedules import alphas_cumprod_for

from .problems import GaussianMixture, eps_fn_for

__all__ = [
    "SPACINGS",
    "SMOOTH_SPACINGS",
    "karras_sigmabar",
    "make_grid",
    "parse_method",
    "Record",
    "StudyResult",
    "run_study",
    "fit_order",
    "sliced_wasserstein",
    "coefficients_along",
    "inversion_growth",
    "theoretical_order",
    "FlowStudyRow",
    "run_flow_study",
    "flow_table",
]

SPACINGS = ("trailing", "linspace", "leading", "karras", "uniform")
#: grids whose sigmabar is a smooth function of i/N (the full order is observed on them)
SMOOTH_SPACINGS = ("karras", "uniform")


# --- grids ------------------------------------------------------------------------------
def karras_sigmabar(num_steps: int, sb_min: float, sb_max: float, rho: float = 7.0) -> np.ndarray:
    """Karras et al. (2022, eq. 5) noise levels in sigmabar, ascending (index 0 = data end).

    sigmabar_i = (sb_min^(1/rho) + i/N (sb_max^(1/rho) - sb_min^(1/rho)))^rho, i = 0..N.
    """
    if num_steps < 1:
        raise ValueError(f"num_steps must be at least 1, got {num_steps}")
    if not 0 <= sb_min < sb_max:
        raise ValueError(f"need 0 <= sb_min < sb_max, got {sb_min}, {sb_max}")
    r = np.arange(num_steps + 1) / num_steps
    lo, hi = sb_min ** (1 / rho), sb_max ** (1 / rho)
    return (lo + r * (hi - lo)) ** rho


def make_grid(
    num_steps: int,
    schedule: str = "scaled_linear",
    spacing: str = "trailing",
    *,
    rho: float = 7.0,
    steps_offset: int = 0,
    final_alpha_one: bool = True,
) -> Grid:
    """The grid of ``num_steps`` steps for a named schedule and spacing (see module docstring).

    'karras' runs between the schedule's sigmabar at t = 0 and t = T-1 (its data end is
    sigmabar_0 = sqrt((1 - abar_0) / abar_0), not 0: an appended step to 0 would not shrink with
    N); 'uniform' is uniform in sigmabar from 0 to the schedule's largest sigmabar.
    """
    ac = alphas_cumprod_for(schedule)
    if spacing in ("linspace", "leading", "trailing"):
        return Grid.from_alphas_cumprod(ac, num_steps, spacing, steps_offset, final_alpha_one)
    sb = np.sqrt((1.0 - ac) / ac)
    if spacing == "karras":
        return Grid.from_sigmabar(karras_sigmabar(num_steps, float(sb[0]), float(sb[-1]), rho))
    if spacing == "uniform":
        return Grid.from_sigmabar(np.linspace(0.0, float(sb[-1]), num_steps + 1))
    raise ValueError(f"unknown spacing {spacing!r}; expected one of {SPACINGS}")


# --- methods ----------------------------------------------------------------------------
def parse_method(text: str) -> Method:
    """'name' or 'name:key=value,key=value' -> a method (e.g. 'bdia:gamma=0.5', 'edict:p=0.93')."""
    name, _, rest = text.partition(":")
    params: dict[str, Any] = {}
    for item in filter(None, rest.split(",")):
        key, eq, value = item.partition("=")
        if not eq:
            raise ValueError(f"method parameter {item!r} in {text!r} is not key=value")
        num = float(value)
        params[key.strip()] = int(num) if key.strip() == "k" else num
    return get_method(name.strip(), **params)


def theoretical_order(method: Method) -> float | None:
    """Global order the method claims (its ``order`` attribute; EDICT and unknown: None)."""
    return getattr(method, "order", None)


# --- measures ---------------------------------------------------------------------------
def sliced_wasserstein(a: np.ndarray, b: np.ndarray, num_projections: int = 64, seed: int = 0) -> float:
    """Sliced Wasserstein-2 distance between two equally sized point sets (rows).

    SW_2^2 = E_theta W_2^2(theta.a, theta.b) over random unit directions theta; in 1-D, W_2
    between empirical measures of equal size pairs the sorted values.
    """
    a, b = np.asarray(a, dtype=np.float64), np.asarray(b, dtype=np.float64)
    if a.shape != b.shape or a.ndim != 2:
        raise ValueError(f"need two (n, d) arrays of the same shape, got {a.shape} and {b.shape}")
    theta = np.random.default_rng(seed).standard_normal((a.shape[1], num_projections))
    theta /= np.linalg.norm(theta, axis=0)
    pa, pb = np.sort(a @ theta, axis=0), np.sort(b @ theta, axis=0)
    return float(np.sqrt(np.mean((pa - pb) ** 2)))


def fit_order(steps: Sequence[float], errors: Sequence[float]) -> tuple[float, float]:
    """Observed order p and its standard error from log(error) = log(C) - p log(N).

    Least squares on the points with a finite positive error; the standard error is the usual
    one of an OLS slope, sqrt(RSS / (n - 2) / sum (log N - mean)^2) (NaN with two points).
    """
    n = np.asarray(steps, dtype=np.float64)
    e = np.asarray(errors, dtype=np.float64)
    ok = np.isfinite(e) & (e > 0)
    x, y = np.log(n[ok]), np.log(e[ok])
    if x.size < 2:
        return math.nan, math.nan
    xm = x - x.mean()
    sxx = float(xm @ xm)
    slope = float(xm @ (y - y.mean())) / sxx
    if x.size < 3:
        return -slope, math.nan
    resid = y - y.mean() - slope * xm
    return -slope, math.sqrt(float(resid @ resid) / (x.size - 2) / sxx)


# --- results ----------------------------------------------------------------------------
@dataclass(frozen=True)
class Record:
    """One (grid kind, method, N) measurement."""

    spacing: str
    method: str
    steps: int
    nfe: int
    error: float  # RMS of xbar_0 - exact xbar_0 over samples and coordinates
    sw: float  # sliced Wasserstein-2 to the exact flow of the same noise
    mean_error: float  # |mean(samples) - mean(exact)|_2
    cov_error: float  # Frobenius norm of cov(samples) - cov(exact)
    # dtype name (the recurrence) or 'dtype/mode' (another mode, e.g. 'float16/bits') -> relative RMS error
    roundtrip: dict[str, float] = field(default_factory=dict)


@dataclass
class StudyResult:
    """All records of a study plus what is needed to redraw and report it."""

    problem: str
    schedule: str
    dim: int
    samples: int
    seed: int
    steps: list[int]
    spacings: list[str]
    methods: list[str]
    dtypes: list[str]
    records: list[Record]
    theory: dict[str, float | None]
    method_objects: dict[str, Method] = field(default_factory=dict, repr=False)
    roundtrip_modes: list[str] = field(default_factory=lambda: ["recurrence"])

    def roundtrip_key(self, dtype: str, mode: str = "recurrence") -> str:
        """Key of a round-trip measurement in Record.roundtrip ('float16' or 'float16/bits')."""
        return dtype if mode == "recurrence" else f"{dtype}/{mode}"

    def select(self, spacing: str, method: str) -> list[Record]:
        """Records of one grid kind and method, by increasing N."""
        return sorted((r for r in self.records if r.spacing == spacing and r.method == method), key=lambda r: r.steps)

    def series(self, spacing: str, method: str, attr: str = "error") -> tuple[np.ndarray, np.ndarray]:
        """(steps, values) of one measure; attr may be 'error', 'sw', 'nfe', 'roundtrip:float32', ..."""
        recs = self.select(spacing, method)
        if attr.startswith("roundtrip:"):
            key = attr.split(":", 1)[1]
            vals = [r.roundtrip.get(key, math.nan) for r in recs]
        else:
            vals = [getattr(r, attr) for r in recs]
        return np.array([r.steps for r in recs]), np.array(vals, dtype=np.float64)

    def order(self, spacing: str, method: str, min_steps: int = 0, attr: str = "error") -> tuple[float, float]:
        """Fitted order (and standard error) of a measure over the runs with N >= min_steps."""
        n, e = self.series(spacing, method, attr)
        keep = n >= min_steps
        return fit_order(n[keep], e[keep])

    def value(self, spacing: str, method: str, steps: int, attr: str = "error") -> float:
        n, e = self.series(spacing, method, attr)
        hit = np.flatnonzero(n == steps)
        return float(e[hit[0]]) if hit.size else math.nan


# --- the study --------------------------------------------------------------------------
def has_mode(method: Method, mode: str) -> bool:
    """Whether the method can run in ``mode`` ('bits' exists for 2-step BELMs only)."""
    try:
        in_mode(method, mode)
    except LinmultistepError:
        return False
    return True


def _roundtrip(problem: GaussianMixture, grid: Grid, method: Method, x0bar: np.ndarray, dtype,
               mode: str = "recurrence") -> float:
    """Relative RMS of sample(invert(x0)) - x0 with states and network outputs in ``dtype``."""
    x0 = (grid.alpha[0] * x0bar).astype(dtype)
    eps_fn = eps_fn_for(problem, grid)
    try:
        with np.errstate(all="ignore"), warnings.catch_warnings():
            warnings.simplefilter("ignore", PrecisionWarning)  # the growth it warns of is what is measured here
            # the study measures the LM recurrence itself (docs/study.md); the library's default for
            # O-BELM and BDIA(1) is the 'stable' form since the precision work (docs/precision.md)
            back = sample(eps_fn, invert(eps_fn, x0, grid, method, mode=mode), grid, method)
    except LinmultistepError:  # NaN/inf on the way: the round trip failed
        return math.inf
    ref = x0.astype(np.float64)
    err = math.sqrt(float(np.mean((back.astype(np.float64) - ref) ** 2)) / float(np.mean(ref**2)))
    return err if math.isfinite(err) else math.inf


def run_study(
    problem: GaussianMixture,
    methods: Iterable[Method | str],
    steps: Sequence[int] = (5, 10, 20, 40, 80, 160),
    spacings: Sequence[str] = ("trailing", "karras"),
    *,
    schedule: str = "scaled_linear",
    samples: int = 256,
    seed: int = 0,
    dtypes: Sequence[str] = ("float64", "float32", "float16"),
    roundtrip_spacings: Sequence[str] | None = None,
    roundtrip_modes: Sequence[str] = ("recurrence", "bits"),
    grid_factory: Callable[[int, str], Grid] | None = None,
    progress: bool = False,
) -> StudyResult:
    """Measure every method on every grid kind and number of steps (see module docstring).

    The same noise (component labels and standard normals drawn from ``seed``) is used on all
    grids; x_N is its exact transport to each grid's noise end, and the data x0 of the round
    trip its transport to the grid's data end. ``grid_factory(N, spacing)`` replaces
    :func:`make_grid` (e.g. for another schedule object). Round trips run on
    ``roundtrip_spacings`` (default: all), in each of ``roundtrip_modes`` the method has (the
    recurrence always). Returns a :class:`StudyResult`.
    """
    meths = [m if isinstance(m, Method) else parse_method(m) for m in methods]
    labels = [str(m.spec) for m in meths]
    if len(set(labels)) != len(labels):
        raise ValueError(f"methods must be distinct, got {labels}")
    steps = sorted(int(n) for n in steps)
    factory = grid_factory or (lambda n, sp: make_grid(n, schedule, sp))
    rt_spacings = list(spacings) if roundtrip_spacings is None else list(roundtrip_spacings)
    rt_modes = ["recurrence"] + [md for md in roundtrip_modes if md != "recurrence"]
    rng = np.random.default_rng(seed)
    comp, z = problem.draw_noise(rng, samples)
    comp_d, z_d = problem.draw_noise(rng, samples)  # independent data for the round trip

    tasks = [(sp, n) for sp in spacings for n in steps]
    bar = None
    if progress:
        from tqdm.auto import tqdm

        bar = tqdm(total=len(tasks) * len(meths), desc="study", unit="run")
    refs: dict[tuple[float, float], np.ndarray] = {}
    records: list[Record] = []
    try:
        for sp, n in tasks:
            grid = factory(n, sp)
            sN, s0 = float(grid.sigmabar[-1]), float(grid.sigmabar[0])
            xbarN = problem.transport_noise(comp, z, sN)
            if (sN, s0) not in refs:  # exact flow of the same noise to this grid's data end
                refs[(sN, s0)] = problem.flow(xbarN, sN, s0)
            ref = refs[(sN, s0)]
            x0bar = problem.transport_noise(comp_d, z_d, s0)
            eps_fn = eps_fn_for(problem, grid)
            for m, label in zip(meths, labels):
                with warnings.catch_warnings():
                    # the sampler warnings advise against what the study measures on purpose
                    warnings.simplefilter("ignore", PrecisionWarning)
                    state = sample(eps_fn, grid.alpha[-1] * xbarN, grid, m, mode="recurrence", return_state=True)
                out = m.array_from_entry(state.window[0]) / grid.alpha[0]
                diff = out - ref
                rts = {}
                if sp in rt_spacings:
                    rts = {(dt if mode == "recurrence" else f"{dt}/{mode}"): _roundtrip(problem, grid, m, x0bar,
                                                                                         np.dtype(dt), mode)
                           for mode in rt_modes if mode == "recurrence" or has_mode(m, mode) for dt in dtypes}
                records.append(
                    Record(
                        spacing=sp,
                        method=label,
                        steps=n,
                        nfe=int(state.nfe),
                        error=float(np.sqrt(np.mean(diff**2))),
                        sw=sliced_wasserstein(out, ref, seed=seed),
                        mean_error=float(np.linalg.norm(out.mean(0) - ref.mean(0))),
                        cov_error=float(np.linalg.norm(np.cov(out.T) - np.cov(ref.T))),
                        roundtrip=rts,
                    )
                )
                if bar is not None:
                    bar.update(1)
    finally:
        if bar is not None:
            bar.close()
    return StudyResult(
        problem=problem.name,
        schedule=schedule,
        dim=problem.dim,
        samples=samples,
        seed=seed,
        steps=steps,
        spacings=list(spacings),
        methods=labels,
        dtypes=list(dtypes),
        records=records,
        theory={lab: theoretical_order(m) for lab, m in zip(labels, meths)},
        method_objects=dict(zip(labels, meths)),
        roundtrip_modes=rt_modes,
    )


# --- coefficients and growth along a grid -------------------------------------------------
def coefficients_along(method: LinearMultistep, grid: Grid) -> dict[str, np.ndarray]:
    """The coefficients a_{i,j}, b_{i,j} of the full k-step relation at every i where it is used.

    Returns {'i': indices i = 1..N-k+1, 'a1'..'ak', 'b0'..'bk'}: the relation producing point
    i-1 from points i..i-1+k (paper eq. 12), with h = (h_i..h_{i+k-1}) of the grid.
    """
    if not isinstance(method, LinearMultistep):
        raise TypeError(f"coefficients exist for linear multistep methods, not {method!r}")
    k = method.k
    idx = np.arange(1, grid.N - k + 2)
    rows = [method.coefficients(grid.h[i : i + k]) for i in idx]
    out: dict[str, np.ndarray] = {"i": idx}
    for j in range(k):
        out[f"a{j + 1}"] = np.array([a[j] for a, _ in rows])
    for j in range(k + 1):
        out[f"b{j}"] = np.array([b[j] for _, b in rows])
    return out


def inversion_growth(method: Method, grid: Grid) -> tuple[np.ndarray, np.ndarray]:
    """Cumulative growth factor of the inversion direction along the grid.

    Running the relation backwards solves for the oldest point and multiplies it by
    1/a_{i,k} (paper eq. 13); the running product prod_{i' <= i} |1/a_{i',k}| bounds how a
    perturbation of the newest points is amplified on its way to the noise end. For O-BELM it
    telescopes to (h_{i+1} / h_1)^2. For EDICT the factor per step is the spectral radius of
    the inverse of its mixing map (x', y') -> (x, y), M = [[p, 1-p], [p(1-p), p + (1-p)^2]]
    (eigenvalues 1 and p^2), i.e. 1/p^2; DDIM's is 1. Returns (grid index reached, cumulative factor).
    """
    if isinstance(method, Edict):
        p = float(method.p)
        mix = np.array([[p, 1 - p], [p * (1 - p), p + (1 - p) ** 2]])
        rho = float(np.abs(np.linalg.eigvals(np.linalg.inv(mix))).max())
        idx = np.arange(1, grid.N + 1)
        return idx, rho ** idx.astype(np.float64)
    if not isinstance(method, LinearMultistep):
        raise TypeError(f"no growth factor for {method!r}")
    if method.k == 1:
        idx = np.arange(1, grid.N + 1)
        return idx, np.ones(idx.size)
    c = coefficients_along(method, grid)
    factors = np.abs(1.0 / c[f"a{method.k}"])
    # relation i produces point i-1+k in the inversion direction
    return c["i"] + method.k - 1, np.cumprod(factors)


# --- the flow-matching problem (issue 21) ----------------------------------------------------
@dataclass(frozen=True)
class FlowStudyRow:
    """Errors of one method on the rectified-flow problem on grids t_i = shift(i / N), and the fit."""

    problem: str
    shift: float
    method: str
    steps: tuple[int, ...]
    errors: tuple[float, ...]
    order: float
    order_se: float


def run_flow_study(methods: Iterable[Method | str], steps: Sequence[int], *, problem: str = "mixture",
                   shifts: Sequence[float] = (1.0, 3.0), samples: int = 256, seed: int = 0, dim: int = 2,
                   fit_from: int = 0, blend: float | None = None) -> list[FlowStudyRow]:
    """Every method on the flow-matching problem of :mod:`linmultistep.analysis.flow_problems`
    (x_t = (1 - t) x0 + t eps, the exact velocity as the network, the exact flow of the same noise as
    truth), on SD3-style grids t_i = shift(i / N) in the core's flow coordinates
    (:func:`linmultistep.paths.flow_grid`, ``blend`` None: its default). Error: RMS at the data end;
    order: :func:`fit_order` over N >= ``fit_from``."""
    from linmultistep.paths import FLOW_BLEND, flow_grid, shift_sigmas

    from .flow_problems import flow_problem, v_fn_for

    prob = flow_problem(problem, dim=dim, seed=seed)
    meths = [m if isinstance(m, Method) else parse_method(m) for m in methods]
    noise = np.random.default_rng(seed).standard_normal((samples, prob.dim))
    exact = prob.flow(noise, 1.0, 0.0)  # every grid here runs from t = 1 to t = 0
    steps = sorted(int(n) for n in steps)
    rows = []
    for shift in shifts:
        errs: dict[str, list[float]] = {str(m.spec): [] for m in meths}
        for n in steps:
            grid = flow_grid(shift_sigmas(np.linspace(0.0, 1.0, n + 1), shift),
                             blend=FLOW_BLEND if blend is None else blend)
            v = v_fn_for(prob, grid)
            for m in meths:
                with np.errstate(all="ignore"), warnings.catch_warnings():
                    warnings.simplefilter("ignore", PrecisionWarning)  # sampling advice; the error is measured
                    got = sample(v, noise, grid, m, mode="recurrence")
                errs[str(m.spec)].append(float(np.sqrt(np.mean((got - exact) ** 2))))
        for m in meths:
            e = errs[str(m.spec)]
            keep = [i for i, n in enumerate(steps) if n >= fit_from]
            p, se = fit_order([steps[i] for i in keep], [e[i] for i in keep])
            rows.append(FlowStudyRow(prob.name, float(shift), str(m.spec), tuple(steps), tuple(e), p, se))
    return rows


def flow_table(rows: Sequence[FlowStudyRow]) -> tuple[list[str], list[list[str]]]:
    """(headers, rows) of the flow study for a text table: error per N and the fitted order."""
    steps = rows[0].steps if rows else ()
    head = ["problem", "shift", "method"] + [f"N={n}" for n in steps] + ["order"]
    body = [[r.problem, f"{r.shift:g}", r.method] + [f"{e:.2e}" for e in r.errors]
            + [f"{r.order:.2f} ± {r.order_se:.2f}"] for r in rows]
    return head, body
