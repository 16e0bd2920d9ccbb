"""O-BELM against the non-exact samplers users pick instead, driven by the same network.

The samplers (:data:`SAMPLERS`): diffusers' ``DDIMScheduler``, ``DPMSolverMultistepScheduler``
(``algorithm_type='dpmsolver++'``, ``solver_order=2``: "DPM-Solver++ 2M", Lu et al. 2022),
``UniPCMultistepScheduler`` (its defaults: ``bh2``, order 2 predictor plus the UniC corrector,
Zhao et al. 2023) and ``EulerDiscreteScheduler`` (Karras et al. 2022, Euler in sigma), each run
by diffusers' own loop (``set_timesteps``, ``scale_model_input``, ``step``); and the library's
DDIM and O-BELM (default mode) on the grid of the same config. All use one network evaluation
per step, so N steps = N network evaluations for every sampler.

A *network* here is ``net(x, t) -> eps``: the noise prediction at the variance-preserving state
x = alpha_t x0 + sigma_t eps and diffusers timestep t (a float). Every sampler reads its noise
levels from its own copy of the schedule; the comparison is made in the scaled coordinates
xbar = x / alpha (sigmabar = sigma / alpha, the sigma of ``EulerDiscreteScheduler``), where the
probability-flow ODE is d xbar / d sigmabar = eps (BELM paper eq. 11).

Aligned start and end (:func:`aligned_config`): every sampler starts from the same state x_N at
the same first timestep ('trailing' spacing: t = T - 1 whatever N), converted exactly into the
sampler's own coordinates (``EulerDiscreteScheduler`` works in xbar: its sample is x_N / alpha_N,
which its ``scale_model_input`` turns back into x_N); and ends at the same noise level:

- ``end='clean'`` (sigmabar = 0): ``set_alpha_to_one=True`` for DDIM and the library's grid,
  ``final_sigmas_type='zero'`` (diffusers' default) for the others;
- ``end='sigma_min'`` (the schedule's t = 0, sigmabar_0 = sqrt((1 - abar_0) / abar_0)):
  ``set_alpha_to_one=False`` and ``final_sigmas_type='sigma_min'``. A trained network is only
  defined down to t = 0, so the probability-flow ODE of a trained model ends there.

Each run reports the noise levels it actually started and ended at (read from the scheduler
after the run), and the error is measured against the exact flow between exactly those levels.
"""

from __future__ import annotations

import inspect
import math
from dataclasses import dataclass, field
from typing import Any, Callable, Mapping, Sequence

import numpy as np
import torch

import linmultistep as lms
from linmultistep.grid import Grid

from .problems import GaussianMixture
from .study import fit_order

__all__ = [
    "SAMPLERS",
    "FLOW_SAMPLERS",
    "nominal_order",
    "ENDS",
    "SCHEDULER_COORDS",
    "SamplerSpec",
    "SamplerRun",
    "Net",
    "ClosedFormEps",
    "CountingNet",
    "aligned_config",
    "make_scheduler",
    "run_scheduler",
    "run_library",
    "library_grid",
    "run_sampler",
    "noise_levels",
    "ComparisonResult",
    "ground_truth_comparison",
    "pipeline_net",
    "ModelComparison",
    "model_comparison",
    "rms",
    "SD_CONFIG",
    "STUDY_STEPS",
    "SMOOTH_SCHEDULE",
    "schedule_config",
    "StudyComparison",
    "study_comparisons",
    "comparison_rows",
    "where_obelm_loses",
]

#: net(x, t): noise prediction at the VP state x (torch tensor) and diffusers timestep t
Net = Callable[[torch.Tensor, float], torch.Tensor]

ENDS = ("clean", "sigma_min")


@dataclass(frozen=True)
class SamplerSpec:
    """One sampler: a diffusers scheduler class with its options, or a library method.

    ``order``: the nominal global order in the step size.
    """

    name: str
    label: str
    order: int
    scheduler: str | None = None  # diffusers class name; None: the library's method ``method``
    options: Mapping[str, Any] = field(default_factory=dict)
    method: str | None = None


#: the compared samplers, in table order; nominal orders from their papers
SAMPLERS: dict[str, SamplerSpec] = {
    s.name: s
    for s in (
        SamplerSpec("ddim-diffusers", "DDIMScheduler", 1, "DDIMScheduler"),
        SamplerSpec("euler", "Euler", 1, "EulerDiscreteScheduler"),
        SamplerSpec("dpm++2m", "DPM-Solver++ 2M", 2, "DPMSolverMultistepScheduler",
                    {"algorithm_type": "dpmsolver++", "solver_order": 2}),
        # UniPC-p with the corrector UniC has order p + 1 (Zhao et al. 2023, Theorem 3.3)
        SamplerSpec("unipc", "UniPC (bh2, 2 + UniC)", 3, "UniPCMultistepScheduler", {"solver_order": 2}),
        SamplerSpec("ddim", "DDIM (linmultistep)", 1, method="ddim"),
        SamplerSpec("obelm", "O-BELM (linmultistep)", 2, method="obelm"),
    )
}


#: the samplers of a flow-matching model (velocity prediction on the rectified-flow path), in table order:
#: diffusers' flow variants of DPM-Solver++ 2M and UniPC, its FlowMatchEulerDiscreteScheduler, and the
#: library's Euler (the core's DDIM on a flow grid) and O-BELM; run by :mod:`.flow_sampler_comparison`
FLOW_SAMPLERS: dict[str, SamplerSpec] = {
    s.name: s
    for s in (
        SamplerSpec("flow-dpm++2m", "DPM-Solver++ 2M (flow)", 2, "DPMSolverMultistepScheduler",
                    {"algorithm_type": "dpmsolver++", "solver_order": 2, "prediction_type": "flow_prediction",
                     "use_flow_sigmas": True, "final_sigmas_type": "zero"}),
        SamplerSpec("flow-unipc", "UniPC (flow, bh2, 2 + UniC)", 3, "UniPCMultistepScheduler",
                    {"solver_order": 2, "prediction_type": "flow_prediction", "use_flow_sigmas": True,
                     "final_sigmas_type": "zero"}),
        SamplerSpec("flow-euler", "FlowMatchEulerDiscreteScheduler", 1, "FlowMatchEulerDiscreteScheduler"),
        SamplerSpec("ddim", "Euler (linmultistep)", 1, method="ddim"),
        SamplerSpec("obelm", "O-BELM (linmultistep)", 2, method="obelm"),
    )
}


def nominal_order(name: str) -> "int | None":
    """The nominal order of a sampler of :data:`SAMPLERS` or :data:`FLOW_SAMPLERS` (None if neither)."""
    spec = SAMPLERS.get(name) or FLOW_SAMPLERS.get(name)
    return None if spec is None else spec.order


#: the scheduler classes the wrapper knows, and whether their sample is xbar itself ('ve', sigma-scaled)
#: rather than the variance-preserving x = xbar / sqrt(1 + sigmabar^2)
SCHEDULER_COORDS = {"DDIMScheduler": "vp", "EulerDiscreteScheduler": "ve", "DPMSolverMultistepScheduler": "vp",
                    "UniPCMultistepScheduler": "vp"}


def _spec(name: Any, table: Mapping[str, SamplerSpec] = SAMPLERS, what: str = "sampler") -> SamplerSpec:
    """The spec of ``name`` in ``table`` (:data:`SAMPLERS`, or :data:`FLOW_SAMPLERS` with what='flow sampler')."""
    if not isinstance(name, str) or name not in table:
        raise ValueError(f"{what} must be one of {list(table)}, got {name!r}")
    return table[name]


def _sampler_names(samplers: Any, table: Mapping[str, SamplerSpec] = SAMPLERS, what: str = "sampler",
                   example: str = "('obelm', 'dpm++2m')") -> list[str]:
    """The names of ``samplers`` (a sequence of names of ``table``), refused when empty or a bare string."""
    if isinstance(samplers, str):
        raise TypeError(f"samplers must be a sequence of names such as {example}, got {samplers!r}")
    names = [_spec(s, table, what).name for s in samplers]
    if not names:
        raise ValueError("samplers must name at least one sampler")
    return names


def _steps(value: Any) -> list[int]:
    """A sorted list of distinct positive step counts, refused when empty or not integers."""
    if isinstance(value, (str, bytes)) or not hasattr(value, "__iter__"):
        raise TypeError(f"steps must be a sequence of positive integers such as (5, 10, 20), got {value!r}")
    out = sorted({_positive_int("steps", n) for n in value})
    if not out:
        raise ValueError("steps must name at least one number of steps")
    return out


def _positive_int(name: str, value: Any) -> int:
    if isinstance(value, bool) or not isinstance(value, (int, np.integer)) or value < 1:
        raise ValueError(f"{name} must be a positive integer, got {value!r}")
    return int(value)


# --- configs and schedulers -----------------------------------------------------------------
def aligned_config(config: Mapping[str, Any], end: str = "sigma_min", spacing: str = "trailing") -> dict[str, Any]:
    """A copy of a scheduler config (a model's, say) that every compared scheduler reads alike.

    Overrides ``timestep_spacing`` (default 'trailing': the first timestep is T - 1 for every N,
    so one x_N serves every N), ``steps_offset`` = 0 and the end (module docstring): for
    ``end='clean'`` ``set_alpha_to_one=True`` and ``final_sigmas_type='zero'``, for
    ``end='sigma_min'`` ``set_alpha_to_one=False`` and ``final_sigmas_type='sigma_min'``. Keys
    a scheduler class does not know are ignored by its ``from_config``.
    """
    if not isinstance(config, Mapping):
        raise TypeError(f"config must be a scheduler config (a mapping), got {type(config).__name__}")
    if end not in ENDS:
        raise ValueError(f"end must be one of {ENDS}, got {end!r}")
    if spacing not in ("trailing", "leading", "linspace"):
        raise ValueError(f"spacing must be 'trailing', 'leading' or 'linspace', got {spacing!r}")
    if config.get("prediction_type", "epsilon") != "epsilon":
        raise ValueError(f"prediction_type must be 'epsilon' (the networks here predict noise), "
                         f"got {config.get('prediction_type')!r}")
    out = {k: v for k, v in dict(config).items() if not k.startswith("_")}
    out.update(timestep_spacing=spacing, steps_offset=0, set_alpha_to_one=end == "clean",
               final_sigmas_type="zero" if end == "clean" else "sigma_min", prediction_type="epsilon")
    return out


def make_scheduler(name: str, config: Mapping[str, Any]) -> Any:
    """The diffusers scheduler of sampler ``name`` from ``config`` (with the sampler's options)."""
    spec = _spec(name)
    if spec.scheduler is None:
        raise ValueError(f"sampler {name!r} is the library's {spec.method}, not a diffusers scheduler")
    import diffusers

    cls = getattr(diffusers, spec.scheduler)
    keys = set(inspect.signature(cls.__init__).parameters)  # from_config would only log the unknown ones
    return cls.from_config({**{k: v for k, v in dict(config).items() if k in keys}, **spec.options})


# --- one run ----------------------------------------------------------------------------------
@dataclass(frozen=True)
class SamplerRun:
    """The end of one sampling run, in scaled coordinates xbar = x / alpha at its end level."""

    xbar: torch.Tensor  # float64
    sigmabar_start: float
    sigmabar_end: float
    timestep_start: float
    nfe: int


class CountingNet:
    """A network that counts its calls (the NFE of a run)."""

    def __init__(self, net: Net) -> None:
        if not callable(net):
            raise TypeError(f"net must be a callable net(x, t) -> eps, got {type(net).__name__}")
        self.net = net
        self.calls = 0

    def __call__(self, x: torch.Tensor, t: float) -> torch.Tensor:
        self.calls += 1
        out = self.net(x, t)
        if not isinstance(out, torch.Tensor) or out.shape != x.shape:
            raise ValueError(f"the network returned {getattr(out, 'shape', type(out).__name__)} for a state of "
                             f"shape {tuple(x.shape)} at timestep {t}")
        return out


def noise_levels(config: Mapping[str, Any]) -> np.ndarray:
    """sigmabar_t = sqrt((1 - abar_t) / abar_t) of the config's schedule at t = 0..T-1, float64."""
    from linmultistep.backends.diffusers.grid import alphas_cumprod_from_config

    ac = alphas_cumprod_from_config(config)
    return np.sqrt((1.0 - ac) / ac)


def _check_start(x_start: Any) -> torch.Tensor:
    if not isinstance(x_start, torch.Tensor) or not x_start.dtype.is_floating_point:
        raise TypeError(f"x_start must be a floating-point torch tensor, got "
                        f"{getattr(x_start, 'dtype', type(x_start).__name__)}")
    if x_start.ndim < 1 or x_start.numel() == 0:
        raise ValueError(f"x_start must be a non-empty batch, got shape {tuple(x_start.shape)}")
    return x_start


@torch.no_grad()
def run_scheduler(scheduler: Any, net: Net, x_start: torch.Tensor, num_steps: int, sigmabar: np.ndarray) -> SamplerRun:
    """Sample with a diffusers scheduler's own loop from the VP state ``x_start`` at its first timestep.

    The state is converted into the scheduler's coordinates by its own input scaling c_in
    (``scale_model_input`` of ones: 1 for VP schedulers, 1 / sqrt(1 + sigma^2) for Euler), so that
    the network sees x_start at the first step. ``sigmabar``: the network's noise level per
    training timestep (:func:`noise_levels`), which gives the start level. The end level is the
    scheduler's own (its final ``sigmas`` entry, or DDIM's ``final_alpha_cumprod``).
    """
    name = type(scheduler).__name__
    if name not in SCHEDULER_COORDS:
        raise ValueError(f"scheduler must be one of {sorted(SCHEDULER_COORDS)}, got {name}")
    num_steps = _positive_int("num_steps", num_steps)
    x_start = _check_start(x_start)
    counting = net if isinstance(net, CountingNet) else CountingNet(net)
    calls0 = counting.calls
    scheduler.set_timesteps(num_steps)
    timesteps = scheduler.timesteps
    t0 = timesteps[0]
    c_in = float(scheduler.scale_model_input(torch.ones(1, dtype=torch.float64), t0)[0])
    sample = x_start.to(torch.float64) / c_in
    for t in timesteps:
        model_in = scheduler.scale_model_input(sample, t)
        eps = counting(model_in, float(t))
        sample = scheduler.step(eps, t, sample, return_dict=False)[0].to(torch.float64)
    if name == "DDIMScheduler":
        prev = int(timesteps[-1]) - scheduler.config.num_train_timesteps // scheduler.num_inference_steps
        ac_end = float(scheduler.alphas_cumprod[prev] if prev >= 0 else scheduler.final_alpha_cumprod)
        s_end = math.sqrt((1.0 - ac_end) / ac_end)
    else:
        s_end = float(scheduler.sigmas[-1])
    xbar = sample if SCHEDULER_COORDS[name] == "ve" else sample * math.sqrt(1.0 + s_end**2)  # VP: x = xbar / sqrt(1 + sigmabar^2)
    t0 = float(t0)
    return SamplerRun(xbar, _level(sigmabar, t0), s_end, t0, counting.calls - calls0)


def _level(sigmabar: np.ndarray, t: float) -> float:
    """The network's sigmabar at a (possibly fractional) timestep: linear in t, as EulerDiscrete interpolates."""
    return float(np.interp(t, np.arange(sigmabar.shape[0]), sigmabar))


def library_grid(config: Mapping[str, Any], num_steps: int) -> Grid:
    """The library's grid of ``num_steps`` steps of a DDIM-like config (diffusers' timesteps)."""
    from linmultistep.backends.diffusers.grid import grid_from_config

    return grid_from_config(config, _positive_int("num_steps", num_steps))


@torch.no_grad()
def run_library(method: str, net: Net, x_start: torch.Tensor, grid: Grid) -> SamplerRun:
    """Sample with the library's ``method`` (default mode) on ``grid`` from the VP state x_start at index N."""
    x_start = _check_start(x_start)
    counting = net if isinstance(net, CountingNet) else CountingNet(net)
    calls0 = counting.calls
    x0 = lms.sample(lambda x, i: counting(x, grid.timestep(i)), x_start.to(torch.float64), grid, method)
    s = grid.sigmabar
    return SamplerRun(x0 / float(grid.alpha[0]), float(s[-1]), float(s[0]), float(grid.timestep(grid.N)),
                      counting.calls - calls0)


def run_sampler(name: str, net: Net, x_start: torch.Tensor, num_steps: int, config: Mapping[str, Any]) -> SamplerRun:
    """One run of sampler ``name`` (a key of :data:`SAMPLERS`) with ``num_steps`` network evaluations."""
    spec = _spec(name)
    num_steps = _positive_int("num_steps", num_steps)
    if spec.scheduler is None:
        return run_library(spec.method, net, x_start, library_grid(config, num_steps))
    return run_scheduler(make_scheduler(name, config), net, x_start, num_steps, noise_levels(config))


def rms(a: torch.Tensor | np.ndarray, b: torch.Tensor | np.ndarray) -> float:
    """Root mean square of a - b over every entry, in float64."""
    a = torch.as_tensor(a, dtype=torch.float64)
    b = torch.as_tensor(b, dtype=torch.float64)
    if a.shape != b.shape:
        raise ValueError(f"cannot compare shapes {tuple(a.shape)} and {tuple(b.shape)}")
    return float((a - b).pow(2).mean().sqrt())


# --- ground truth -------------------------------------------------------------------------------
class ClosedFormEps:
    """The ideal network of a :class:`GaussianMixture` as ``net(x, t)``: epsbar(x / alpha_t, sigmabar_t).

    sigmabar_t is the schedule's at integer t, linear in t in between (EulerDiscrete's rule), and
    alpha_t = 1 / sqrt(1 + sigmabar_t^2); computed in float64, returned in x's dtype.
    """

    def __init__(self, problem: GaussianMixture, sigmabar: np.ndarray) -> None:
        if not isinstance(problem, GaussianMixture):
            raise TypeError(f"problem must be a GaussianMixture, got {type(problem).__name__}")
        self.problem = problem
        self.sigmabar = np.asarray(sigmabar, dtype=np.float64)

    def __call__(self, x: torch.Tensor, t: float) -> torch.Tensor:
        s = _level(self.sigmabar, float(t))
        xbar = x.detach().to(torch.float64).numpy() * math.sqrt(1.0 + s * s)
        return torch.from_numpy(self.problem.epsbar(xbar, s)).to(x.dtype)


@dataclass
class ComparisonResult:
    """Errors of every sampler at every N against a reference, with the fitted orders."""

    steps: list[int]
    samplers: list[str]
    error: dict[str, dict[int, float]]  # sampler -> N -> RMS error of xbar at the end
    nfe: dict[str, dict[int, int]]
    ends: dict[str, dict[int, float]]  # sampler -> N -> end sigmabar actually reached
    note: str = ""

    def order(self, sampler: str, min_steps: int = 0) -> tuple[float, float]:
        """Least-squares order (and standard error) of error ~ N^-p over N >= min_steps."""
        n = [k for k in self.steps if k >= min_steps]
        return fit_order(n, [self.error[sampler][k] for k in n])


def ground_truth_comparison(
    problem: GaussianMixture,
    steps: Sequence[int] = (5, 10, 20, 40, 100, 200),
    samplers: Sequence[str] = tuple(SAMPLERS),
    *,
    config: Mapping[str, Any] | None = None,
    end: str = "sigma_min",
    samples: int = 256,
    seed: int = 0,
) -> ComparisonResult:
    """Every sampler against the exact flow of ``problem`` from the same x_N, at each N.

    ``config``: a scheduler config (default Stable Diffusion v1's: scaled_linear betas 0.00085 ..
    0.012, 1000 steps), aligned by :func:`aligned_config` with ``end``. x_N is an exact draw of
    the marginal at the first timestep (the study's noise, :meth:`GaussianMixture.transport_noise`);
    the reference is :meth:`GaussianMixture.flow` (closed form for one Gaussian, DOP853 at rtol
    1e-12 for a mixture) from that level to the end level each run reports.
    """
    if not isinstance(problem, GaussianMixture):
        raise TypeError(f"problem must be a GaussianMixture, got {type(problem).__name__}")
    steps = _steps(steps)
    names = _sampler_names(samplers)
    samples = _positive_int("samples", samples)
    cfg = aligned_config(config if config is not None else SD_CONFIG, end)
    sigmabar = noise_levels(cfg)
    net = CountingNet(ClosedFormEps(problem, sigmabar))
    labels, z = problem.draw_noise(np.random.default_rng(seed), samples)
    refs: dict[tuple[float, float], np.ndarray] = {}
    res = ComparisonResult(steps, names, {s: {} for s in names}, {s: {} for s in names}, {s: {} for s in names})
    starts: dict[float, torch.Tensor] = {}
    for n in steps:
        for s in names:
            s_start = _level(sigmabar, _first_timestep(s, cfg, n))
            if s_start not in starts:
                xbar_n = problem.transport_noise(labels, z, s_start)
                starts[s_start] = torch.from_numpy(xbar_n / math.sqrt(1.0 + s_start**2))
            run = run_sampler(s, net, starts[s_start], n, cfg)
            key = (run.sigmabar_start, run.sigmabar_end)
            if key not in refs:
                xbar_n = problem.transport_noise(labels, z, run.sigmabar_start)
                refs[key] = problem.flow(xbar_n, run.sigmabar_start, run.sigmabar_end)
            res.error[s][n] = rms(run.xbar, refs[key])
            res.nfe[s][n] = run.nfe
            res.ends[s][n] = run.sigmabar_end
    return res


def _first_timestep(name: str, config: Mapping[str, Any], num_steps: int) -> float:
    """The timestep a sampler starts at with ``num_steps`` steps of ``config``."""
    spec = _spec(name)
    if spec.scheduler is None:
        return float(library_grid(config, num_steps).timestep(num_steps))
    sched = make_scheduler(name, config)
    sched.set_timesteps(num_steps)
    return float(sched.timesteps[0])


#: Stable Diffusion v1's scheduler config (the schedule of the study and of mnist-sd)
SD_CONFIG: dict[str, Any] = {
    "num_train_timesteps": 1000,
    "beta_start": 0.00085,
    "beta_end": 0.012,
    "beta_schedule": "scaled_linear",
    "prediction_type": "epsilon",
    "clip_sample": False,
}


# --- trained models -----------------------------------------------------------------------------
def pipeline_net(pipe: Any, prompt: Any, batch: int, guidance_scale: float = 1.0) -> Net:
    """A diffusers pipeline's UNet as ``net(x, t)``, classifier-free guided as the library guides it.

    ``prompt``: text (text-conditioned UNet) or class labels (class-conditional UNet2DModel), one
    for all rows or one per row; eps = eps_u + w (eps_c - eps_u) in one batched call
    (:class:`linmultistep.backends.diffusers.adapters.UNetEps`). The network is evaluated at integer
    timesteps only (it was trained on them); a fractional t is refused.
    """
    from linmultistep.backends.diffusers.adapters import (
        UNetEps, encode_classes, encode_prompts, is_class_conditional, is_conditional,
    )
    from linmultistep.backends.diffusers.grid import alphas_cumprod_from_config
    from linmultistep.backends.diffusers.pipeline import parts_of

    batch = _positive_int("batch", batch)
    if isinstance(guidance_scale, bool) or not isinstance(guidance_scale, (int, float)) or not math.isfinite(guidance_scale):
        raise ValueError(f"guidance_scale must be a finite number, got {guidance_scale!r}")
    parts = parts_of(pipe)
    if parts.prediction_type != "epsilon":
        raise ValueError(f"the pipeline's scheduler predicts {parts.prediction_type!r}; this comparison needs 'epsilon'")
    if is_class_conditional(parts.unet):
        cond = encode_classes(parts.unet, prompt, batch, guidance_scale)
    elif is_conditional(parts.unet):
        cond = encode_prompts(parts.pipe, prompt, batch, guidance_scale, device=parts.device)
    else:
        cond = None
    ac = alphas_cumprod_from_config(parts.config)
    every_t = Grid(np.sqrt(ac), np.sqrt(1.0 - ac), np.arange(ac.shape[0], dtype=np.float64))
    eps = UNetEps(parts.unet, every_t, "epsilon", cond)

    def net(x: torch.Tensor, t: float) -> torch.Tensor:
        if not float(t).is_integer() or not 0 <= t < ac.shape[0]:
            raise ValueError(f"timestep {t} is not one of the model's training timesteps 0..{ac.shape[0] - 1}")
        return eps(x, int(t))

    return net


@dataclass
class ModelComparison:
    """A :class:`ComparisonResult` against a high-accuracy reference, with the reference's own error."""

    result: ComparisonResult
    reference: str  # e.g. 'O-BELM, 500 steps'
    reference_error: float  # RMS(reference - the same at half the steps)
    reference_cross: float  # RMS(reference - DPM-Solver++ 2M at the same steps); NaN if not run
    accuracy: dict[str, dict[int, float]] = field(default_factory=dict)
    reference_accuracy: float = math.nan


def model_comparison(
    net: Net,
    noise: torch.Tensor,
    config: Mapping[str, Any],
    steps: Sequence[int] = (5, 10, 20),
    samplers: Sequence[str] = tuple(SAMPLERS),
    *,
    reference_steps: int = 500,
    cross_check: bool = True,
    score: Callable[[torch.Tensor], float] | None = None,
) -> ModelComparison:
    """Every sampler from the same noise x_N against a high-accuracy solution of the probability-flow ODE.

    The config is aligned with ``end='sigma_min'`` (the network exists down to t = 0 only) and
    'trailing' spacing, so every run starts at t = T - 1 from ``noise`` and ends at t = 0. The
    reference is the library's O-BELM with ``reference_steps`` steps (trailing: every
    T / reference_steps-th timestep); its own error is estimated by the same solve at half the
    steps and, with ``cross_check``, by DPM-Solver++ 2M at ``reference_steps``. ``score(xbar_end)``
    (e.g. a classifier's accuracy on the decoded samples) is recorded for every run.
    """
    if not callable(net):
        raise TypeError(f"net must be a callable net(x, t) -> eps, got {type(net).__name__}")
    noise = _check_start(noise)
    reference_steps = _positive_int("reference_steps", reference_steps)
    if reference_steps % 2:
        raise ValueError(f"reference_steps must be even (its error is measured at half the steps), got {reference_steps}")
    steps = _steps(steps)
    names = _sampler_names(samplers)
    if score is not None and not callable(score):
        raise TypeError(f"score must be a callable score(xbar) -> float or None, got {type(score).__name__}")
    cfg = aligned_config(config, "sigma_min")
    counting = CountingNet(net)
    ref = run_sampler("obelm", counting, noise, reference_steps, cfg)
    half = run_sampler("obelm", counting, noise, reference_steps // 2, cfg)
    cross = run_sampler("dpm++2m", counting, noise, reference_steps, cfg) if cross_check else None
    out = ModelComparison(
        ComparisonResult(steps, names, {s: {} for s in names}, {s: {} for s in names}, {s: {} for s in names},
                         note=f"reference O-BELM {reference_steps} steps"),
        f"O-BELM, {reference_steps} steps", rms(ref.xbar, half.xbar),
        math.nan if cross is None else rms(ref.xbar, cross.xbar),
    )
    if score is not None:
        out.reference_accuracy = float(score(ref.xbar))
    for n in steps:
        for s in names:
            run = run_sampler(s, counting, noise, n, cfg)
            out.result.error[s][n] = rms(run.xbar, ref.xbar)
            out.result.nfe[s][n] = run.nfe
            out.result.ends[s][n] = run.sigmabar_end
            if score is not None:
                out.accuracy.setdefault(s, {})[n] = float(score(run.xbar))
    return out


# --- the comparison in the study and the reports ------------------------------------------------
#: the step counts of the study's and the reports' comparison (issue 23: the few steps these samplers are chosen for)
STUDY_STEPS = (5, 10, 20)
#: a schedule smooth at the data end (sigmabar about linear in t there), where the nominal orders show
SMOOTH_SCHEDULE = "squaredcos_cap_v2"


def schedule_config(schedule: str) -> dict[str, Any]:
    """Stable Diffusion's scheduler config with another ``beta_schedule`` (the study's ``--schedule``)."""
    from linmultistep.schedules import SCHEDULES

    if schedule not in SCHEDULES:
        raise ValueError(f"schedule must be one of {SCHEDULES}, got {schedule!r}")
    return dict(SD_CONFIG, beta_schedule=schedule)


@dataclass
class StudyComparison:
    """One ground-truth comparison of the study: what was compared (``title``) and its result."""

    title: str
    problem: str
    schedule: str
    end: str
    result: ComparisonResult


def study_comparisons(problem: GaussianMixture, schedule: str = "scaled_linear", steps: Sequence[int] = STUDY_STEPS,
                      *, samples: int = 256, seed: int = 0) -> list[StudyComparison]:
    """The comparisons ``linmultistep study`` prints, each :func:`ground_truth_comparison` of every sampler:

    1. the study's problem and schedule, ending at t = 0 (``end='sigma_min'``, where a trained network ends);
    2. the same, ending at the clean point (``end='clean'``, diffusers' default ``final_sigmas_type='zero'``);
    3. the closed-form Gaussian of the problem's dimension under the cosine schedule, ending at t = 0: a
       schedule smooth at the data end, where the nominal orders can show (on Stable Diffusion's
       schedule sigmabar ~ sqrt(t) near the data end and every order drops, docs/study.md). Skipped when
       (1) already is that problem and schedule.
    """
    from .problems import default_gaussian

    cfg = schedule_config(schedule)
    out = [StudyComparison(f"{problem.name} (d = {problem.dim}), {schedule} schedule, end t = 0", problem.name,
                           schedule, "sigma_min",
                           ground_truth_comparison(problem, steps, config=cfg, end="sigma_min", samples=samples, seed=seed)),
           StudyComparison(f"{problem.name} (d = {problem.dim}), {schedule} schedule, end sigmabar = 0 (diffusers' "
                           "default final_sigmas_type='zero')", problem.name, schedule, "clean",
                           ground_truth_comparison(problem, steps, config=cfg, end="clean", samples=samples, seed=seed))]
    if (problem.name, schedule) != ("gaussian", SMOOTH_SCHEDULE):
        smooth = default_gaussian(dim=problem.dim, seed=seed)
        out.append(StudyComparison(f"gaussian (d = {problem.dim}, closed-form flow), {SMOOTH_SCHEDULE} schedule "
                                   "(smooth at the data end), end t = 0", smooth.name, SMOOTH_SCHEDULE, "sigma_min",
                                   ground_truth_comparison(smooth, steps, config=schedule_config(SMOOTH_SCHEDULE),
                                                           end="sigma_min", samples=samples, seed=seed)))
    return out


def _label(name: str, labels: Mapping[str, str] | None) -> str:
    spec = SAMPLERS.get(name) or FLOW_SAMPLERS.get(name)
    return (labels or {}).get(name, name if spec is None else spec.label)


def _fmt_order(p: float, se: float) -> str:
    if not math.isfinite(p):
        return "-"
    return f"{p:.2f} ± {se:.2f}" if math.isfinite(se) else f"{p:.2f}"


def comparison_rows(result: ComparisonResult, labels: Mapping[str, str] | None = None, against: str = "obelm"
                    ) -> tuple[list[str], list[list[str]]]:
    """(headers, rows) of a comparison: per sampler its nominal order, the error at each N, the fitted
    order over all N (± standard error, :func:`fit_order`) and its error divided by ``against``'s
    (O-BELM's) at each N (above 1: O-BELM is the more accurate). ``labels``: display names by sampler."""
    ref = against if against in result.samplers else None
    head = ["sampler", "nominal order"] + [f"N = {n}" for n in result.steps] + ["fitted order"]
    if ref:
        short = "O-BELM" if ref == "obelm" else _label(ref, labels)
        head += [f"÷ {short} N = {n}" for n in result.steps]
    rows = []
    for s in result.samplers:
        order = nominal_order(s)
        row = [_label(s, labels), "-" if order is None else str(order)]
        row += [f"{result.error[s][n]:.2e}" for n in result.steps] + [_fmt_order(*result.order(s))]
        if ref:
            row += [f"{result.error[s][n] / result.error[ref][n]:.2f}" for n in result.steps]
        rows.append(row)
    return head, rows


def where_obelm_loses(result: ComparisonResult, labels: Mapping[str, str] | None = None, against: str = "obelm") -> str:
    """One clause per N: the samplers more accurate than O-BELM and by how much, or that none is."""
    if against not in result.samplers:
        return ""
    others = [s for s in result.samplers if s != against]
    parts = []
    for n in result.steps:
        mine = result.error[against][n]
        better = sorted((result.error[s][n], s) for s in others if result.error[s][n] < mine)
        if better:
            parts.append(f"at N = {n} O-BELM's error is " + ", ".join(
                f"{mine / e - 1:.0%} above {_label(s, labels)}'s" for e, s in better))
        elif others:
            e, s = min((result.error[s][n], s) for s in others)
            parts.append(f"at N = {n} O-BELM is the most accurate (the next, {_label(s, labels)}, has {e / mine:.2f}x its error)")
    return "; ".join(parts) + "." if parts else ""
