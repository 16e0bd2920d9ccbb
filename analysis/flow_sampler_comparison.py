"""O-BELM against the samplers users pick for flow-matching models, driven by the same velocity network.

The samplers (:data:`~.sampler_comparison.FLOW_SAMPLERS`): diffusers' ``FlowMatchEulerDiscreteScheduler``
(the scheduler SD3 / FLUX pipelines ship), and the flow variants of ``DPMSolverMultistepScheduler``
(``algorithm_type='dpmsolver++'``, ``solver_order=2``: DPM-Solver++ 2M, Lu et al. 2022) and
``UniPCMultistepScheduler`` (``bh2``, order 2 + the corrector UniC, Zhao et al. 2023), both with
``prediction_type='flow_prediction'`` and ``use_flow_sigmas=True``: on the rectified-flow path
x_s = (1 - s) x0 + s eps they read alpha_s = 1 - s, sigma_s = s and the data prediction
x0 = x - s v; each run by diffusers' own ``step``; and the library's Euler (the core's DDIM on a flow
grid) and O-BELM on the same grid. One network evaluation per step for every sampler.

A *field* here is the core's ``eps_fn`` on a flow grid, ``field(x, i) -> v``: the velocity at grid
index i (i = N: noise end, s = 1; i = 0: data end, never evaluated), e.g. the pipeline's
``velocity_for`` or :func:`~.flow_problems.v_fn_for`. ``field_for(N) -> (field, grid)`` gives the
field and grid of N steps: the model's own grid (``flow_grid_for``: its shift, dynamic shifting, ...).

Alignment (:func:`make_flow_scheduler`): every sampler walks the sigmas of that grid, s_N = 1 > ... >
s_1 > s_0 = 0, from the same x_N, and calls the field at the grid index of its sigma, so the network
sees the timestep the pipeline's own scheduler gives it (1000 s in float32):

- ``FlowMatchEulerDiscreteScheduler(shift=1)`` takes them as ``sigmas`` (shift 1 leaves float32 values
  unchanged): the model scheduler's own sigmas and timesteps;
- ``UniPCMultistepScheduler(flow_shift=1)`` takes them as ``sigmas`` too; it lowers s_N = 1 to 1 - 1e-6
  (diffusers' guard against log(alpha = 0)), while the field is evaluated at s = 1: an O(1e-6) start offset;
- ``DPMSolverMultistepScheduler.set_timesteps`` takes no ``sigmas`` (diffusers 0.42), and its own
  ``use_flow_sigmas`` grid differs from the model's (it starts at shift(0.999), not 1, and its last step
  is 1/N long rather than the model's fixed sigma_min); its ``sigmas`` are set to the grid's after
  ``set_timesteps`` (its step reads nothing else of the schedule). At s = 1 (alpha = 0, lambda = -inf)
  its first step is the exact limit, x_1 = s_1 x_N + (1 - s_1) x0_pred, and its second falls back
  to first order (the multistep difference vanishes with r = inf), as the formulas give.

Two grid families matter (:func:`flow_model_comparisons` runs both): the model's own, which SD3's
``FlowMatchEulerDiscreteScheduler.set_timesteps(N)`` makes shift(linspace(1, sigma_min, N)) -- its last
step runs from the fixed sigma_min (0.0089 at shift 3) to 0 whatever N, after a long one -- and the
uniform one shift(k / N), k = N..1 (:func:`uniform_flow_sigmas`; DPM-Solver's and UniPC's own
``use_flow_sigmas`` grid is shift(0.999 k / N), FLUX pipelines pass these sigmas). The multistep
extrapolation of DPM-Solver++ 2M and UniPC across the long-then-tiny end of the first is what costs
them there (docs/samplers.md).

Their integer ``timesteps`` (int(1000 s)) are not used to call the network: the field gets the grid's.
diffusers' DPM-Solver and UniPC (and FlowMatchEuler) steps round the state to float32 at every step,
whatever its dtype: a float64 run of theirs carries about N float32 roundings of |x| (a floor near
N * 6e-8 * |x|, far below the errors compared at N <= 200).
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any, Callable, Mapping, Sequence

import numpy as np
import torch

import linmultistep as lms
from linmultistep.grid import Grid
from linmultistep.paths import require_flow

from .sampler_comparison import (FLOW_SAMPLERS, ComparisonResult, CountingNet, ModelComparison, SamplerSpec,
                                 _check_start, _positive_int, _sampler_names, _spec, _steps, rms)

__all__ = ["FlowField", "FieldFor", "FlowRun", "flow_sigmas_of", "make_flow_scheduler", "run_flow_scheduler",
           "run_flow_sampler", "flow_model_comparison", "flow_model_comparisons", "uniform_flow_sigmas", "flow_ground_truth_comparison", "problem_field_for",
           "UNIPC_START_GUARD", "FLOW_LABELS", "SD3_FLOW_CONFIG", "FlowStudyComparison", "flow_study_comparisons"]

#: field(x, i): the velocity at grid index i (the core's eps_fn on a flow grid)
FlowField = Callable[[torch.Tensor, int], torch.Tensor]
#: field_for(N) -> (field, grid) of N steps
FieldFor = Callable[[int], "tuple[FlowField, Grid]"]

#: UniPCMultistepScheduler lowers a first sigma of 1 by this much (its set_timesteps, use_flow_sigmas)
UNIPC_START_GUARD = 1e-6


def _flow_spec(name: Any) -> SamplerSpec:
    return _spec(name, FLOW_SAMPLERS, "flow sampler")


def _flow_names(samplers: Any) -> list[str]:
    return _sampler_names(samplers, FLOW_SAMPLERS, "flow sampler", "('obelm', 'flow-dpm++2m')")


def flow_sigmas_of(grid: Grid) -> np.ndarray:
    """The sigmas s_N > ... > s_1 of a flow grid (noise end first, the data end's 0 left out), float64."""
    if not isinstance(grid, Grid):
        raise TypeError(f"grid must be a linmultistep Grid, got {type(grid).__name__}")
    s = np.asarray(require_flow(grid, "the flow sampler comparison").sigma, dtype=np.float64)
    if s[0] != 0.0:
        raise ValueError(f"the flow grid must end at the data end s = 0, got s_0 = {s[0]}")
    return s[1:][::-1].copy()


def make_flow_scheduler(name: str, grid: Grid, num_train_timesteps: int = 1000) -> Any:
    """The diffusers scheduler of flow sampler ``name``, set to walk ``grid``'s sigmas (module docstring).

    Refused when the scheduler's sigmas after setting are not the grid's (float32 values; UniPC's first
    one within :data:`UNIPC_START_GUARD`) followed by 0: a sampler off the grid would be compared wrongly.
    """
    spec = _flow_spec(name)
    if spec.scheduler is None:
        raise ValueError(f"flow sampler {name!r} is the library's {spec.method}, not a diffusers scheduler")
    num_train_timesteps = _positive_int("num_train_timesteps", num_train_timesteps)
    import diffusers

    sig = flow_sigmas_of(grid)
    sig32 = sig.astype(np.float32)
    cls = getattr(diffusers, spec.scheduler)
    if spec.scheduler == "FlowMatchEulerDiscreteScheduler":
        sched = cls(num_train_timesteps=num_train_timesteps, shift=1.0, **spec.options)
        sched.set_timesteps(sigmas=sig32.tolist())
    elif spec.scheduler == "UniPCMultistepScheduler":
        sched = cls(num_train_timesteps=num_train_timesteps, flow_shift=1.0, **spec.options)
        sched.set_timesteps(sigmas=sig32.copy())
    else:  # DPMSolverMultistepScheduler: no sigmas argument; its schedule is replaced by the grid's
        sched = cls(num_train_timesteps=num_train_timesteps, flow_shift=1.0, **spec.options)
        sched.set_timesteps(len(sig))
        sched.sigmas = torch.from_numpy(np.concatenate([sig32, [0.0]]).astype(np.float32))
        sched.timesteps = torch.from_numpy(sig32 * np.float32(num_train_timesteps))
    if hasattr(sched, "set_begin_index"):  # its step k is the k-th sigma, whatever duplicate timesteps it holds
        sched.set_begin_index(0)
    got = sched.sigmas.detach().to("cpu", torch.float64).numpy()
    want = np.concatenate([sig32.astype(np.float64), [0.0]])
    tol = np.zeros_like(want)
    if spec.scheduler == "UniPCMultistepScheduler":
        tol[0] = 2 * UNIPC_START_GUARD
    if got.shape != want.shape or len(sched.timesteps) != len(sig) or np.any(np.abs(got - want) > tol):
        raise ValueError(f"{spec.scheduler} did not take the grid's {len(sig)} sigmas (got {got[:4]}... for "
                         f"{want[:4]}...): this diffusers version sets flow sigmas another way")
    return sched


@dataclass(frozen=True)
class FlowRun:
    """The end x_0 of one flow sampling run (float64) and its network evaluations."""

    x: torch.Tensor
    nfe: int


@torch.no_grad()
def run_flow_scheduler(scheduler: Any, field: FlowField, grid: Grid, x_start: torch.Tensor) -> FlowRun:
    """diffusers' loop of an aligned scheduler (:func:`make_flow_scheduler`) from x_start at s_N = 1:
    at step k the field is evaluated at grid index N - k, and ``scheduler.step`` moves to s_{N-k-1}."""
    x_start = _check_start(x_start)
    counting = field if isinstance(field, CountingNet) else CountingNet(field)
    calls0 = counting.calls
    n = len(flow_sigmas_of(grid))
    if len(scheduler.timesteps) != n:
        raise ValueError(f"the scheduler holds {len(scheduler.timesteps)} steps and the grid {n}: set it on this grid")
    sample = x_start.to(torch.float64)
    for k, t in enumerate(scheduler.timesteps):
        v = counting(sample, n - k)
        sample = scheduler.step(v, t, sample, return_dict=False)[0].to(torch.float64)
    return FlowRun(sample, counting.calls - calls0)


def run_flow_sampler(name: str, field: FlowField, grid: Grid, x_start: torch.Tensor,
                     num_train_timesteps: int = 1000) -> FlowRun:
    """One run of flow sampler ``name`` (a key of :data:`FLOW_SAMPLERS`) on ``grid`` from x_start at s = 1."""
    spec = _flow_spec(name)
    if spec.scheduler is not None:
        return run_flow_scheduler(make_flow_scheduler(name, grid, num_train_timesteps), field, grid, x_start)
    x_start = _check_start(x_start)
    flow_sigmas_of(grid)  # a flow grid ending at s = 0
    counting = field if isinstance(field, CountingNet) else CountingNet(field)
    calls0 = counting.calls
    x0 = lms.sample(counting, x_start.to(torch.float64), grid, spec.method)
    return FlowRun(x0, counting.calls - calls0)


def _field_and_grid(field_for: FieldFor, n: int) -> "tuple[FlowField, Grid]":
    out = field_for(n)
    if not (isinstance(out, tuple) and len(out) == 2 and callable(out[0]) and isinstance(out[1], Grid)):
        raise TypeError(f"field_for({n}) must return (field, grid), got {type(out).__name__}")
    if out[1].N != n:
        raise ValueError(f"field_for({n}) returned a grid of {out[1].N} steps")
    return out


def flow_model_comparison(
    field_for: FieldFor,
    noise: torch.Tensor,
    steps: Sequence[int] = (5, 10, 20),
    samplers: Sequence[str] = tuple(FLOW_SAMPLERS),
    *,
    reference_steps: int = 400,
    reference_method: str = "ddim",
    num_train_timesteps: int = 1000,
    score: "Callable[[torch.Tensor], float] | None" = None,
) -> ModelComparison:
    """Every flow sampler from the same noise x_N (at s = 1) against a high-step solve of the same ODE.

    The reference is the library's ``reference_method`` ('ddim': Euler; 'obelm') with
    ``reference_steps`` steps of the model's grid; its own error is its distance to the same solve at
    half the steps. ``score(x_0)`` (e.g. a judge's accuracy of the decoded samples) is recorded for
    every run. Errors: RMS of x_0 against the reference's.
    """
    if not callable(field_for):
        raise TypeError(f"field_for must be a callable N -> (field, grid), got {type(field_for).__name__}")
    return flow_model_comparisons({"model": field_for}, noise, steps, samplers, reference_steps=reference_steps,
                                  reference_method=reference_method, num_train_timesteps=num_train_timesteps,
                                  score=score)["model"]


def flow_model_comparisons(
    field_fors: Mapping[str, FieldFor],
    noise: torch.Tensor,
    steps: Sequence[int] = (5, 10, 20),
    samplers: Sequence[str] = tuple(FLOW_SAMPLERS),
    *,
    reference_steps: int = 400,
    reference_method: str = "ddim",
    num_train_timesteps: int = 1000,
    score: "Callable[[torch.Tensor], float] | None" = None,
    cross_check: bool = True,
) -> dict[str, ModelComparison]:
    """:func:`flow_model_comparison` on several grid families (``field_fors``: name -> field_for, the
    first one the model's own), against one reference: ``reference_method`` with ``reference_steps``
    steps of the first family. Its own error is measured twice: against the same solve at half the
    steps, and with ``cross_check`` (``reference_cross``) against the same steps on the second family, if
    any (NaN otherwise; two grids
    that share a step, such as the model's fixed last step sigma_min -> 0, share its error; two
    families do not)."""
    if not isinstance(field_fors, Mapping) or not field_fors:
        raise TypeError(f"field_fors must be a non-empty mapping name -> field_for, got {field_fors!r:.80}")
    for name, ff in field_fors.items():
        if not callable(ff):
            raise TypeError(f"field_fors[{name!r}] must be a callable N -> (field, grid), got {type(ff).__name__}")
    noise = _check_start(noise)
    steps = _steps(steps)
    names = _flow_names(samplers)
    reference_steps = _positive_int("reference_steps", reference_steps)
    if reference_steps % 2:
        raise ValueError(f"reference_steps must be even (its error is measured at half the steps), got {reference_steps}")
    if reference_method not in ("ddim", "obelm"):
        raise ValueError(f"reference_method must be 'ddim' (Euler) or 'obelm', got {reference_method!r}")
    if score is not None and not callable(score):
        raise TypeError(f"score must be a callable score(x0) -> float or None, got {type(score).__name__}")
    families = list(field_fors)
    first = field_fors[families[0]]
    ref = run_flow_sampler(reference_method, *_field_and_grid(first, reference_steps), noise)
    half = run_flow_sampler(reference_method, *_field_and_grid(first, reference_steps // 2), noise)
    cross = (rms(ref.x, run_flow_sampler(reference_method, *_field_and_grid(field_fors[families[1]], reference_steps),
                                         noise).x) if cross_check and len(families) > 1 else float("nan"))
    label = f"{'Euler' if reference_method == 'ddim' else 'O-BELM'}, {reference_steps} steps"
    ref_accuracy = float(score(ref.x)) if score is not None else float("nan")
    out = {}
    for family in families:
        cmp = ModelComparison(
            ComparisonResult(steps, names, {s: {} for s in names}, {s: {} for s in names}, {s: {} for s in names},
                             note=f"reference {label}"),
            label, rms(ref.x, half.x), cross, reference_accuracy=ref_accuracy)
        for n in steps:
            field, grid = _field_and_grid(field_fors[family], n)
            for s in names:
                run = run_flow_sampler(s, field, grid, noise, num_train_timesteps)
                cmp.result.error[s][n] = rms(run.x, ref.x)
                cmp.result.nfe[s][n] = run.nfe
                cmp.result.ends[s][n] = 0.0
                if score is not None:
                    cmp.accuracy.setdefault(s, {})[n] = float(score(run.x))
        out[family] = cmp
    return out


def uniform_flow_sigmas(num_steps: int) -> np.ndarray:
    """linspace(1, 1/N, N): the unshifted sigmas of the 'uniform' grid family, shift(k / N) for k = N..1
    once a ``FlowMatchEulerDiscreteScheduler`` config shifts them (pass them as ``sigmas``, as FLUX
    pipelines do); diffusers' ``use_flow_sigmas`` grid of DPM-Solver and UniPC is shift(0.999 k / N)."""
    n = _positive_int("num_steps", num_steps)
    return np.linspace(1.0, 1.0 / n, n)


def problem_field_for(problem: Any, config: "dict | None" = None, uniform: bool = False) -> FieldFor:
    """field_for of a :class:`~.flow_problems.FlowProblem`'s exact velocity on the grids of a
    ``FlowMatchEulerDiscreteScheduler`` config (default SD3's: shift 3), torch in and out: the
    config's own (``set_timesteps(N)``), or with ``uniform`` those of :func:`uniform_flow_sigmas`."""
    from linmultistep.backends.diffusers.flow_schedulers import flow_grid_from_config

    from .flow_problems import FlowProblem

    if not isinstance(problem, FlowProblem):
        raise TypeError(f"problem must be a FlowProblem, got {type(problem).__name__}")
    cfg = dict(config) if config is not None else {"num_train_timesteps": 1000, "shift": 3.0}

    def field_for(n: int) -> "tuple[FlowField, Grid]":
        grid = flow_grid_from_config(cfg, n, sigmas=uniform_flow_sigmas(n) if uniform else None)
        s = np.asarray(grid.sigma, dtype=np.float64)

        def field(x: torch.Tensor, i: int) -> torch.Tensor:
            return torch.from_numpy(problem.velocity(x.detach().to(torch.float64).numpy(), float(s[i]))).to(x.dtype)

        return field, grid

    return field_for


def flow_ground_truth_comparison(problem: Any, steps: Sequence[int] = (5, 10, 20, 40, 100, 200),
                                 samplers: Sequence[str] = tuple(FLOW_SAMPLERS), *, config: "dict | None" = None,
                                 uniform: bool = False, samples: int = 256, seed: int = 0) -> ComparisonResult:
    """Every flow sampler against the exact flow of ``problem`` (s = 1 -> 0) from the same standard-normal
    x_N, on the grids of ``config`` (:func:`problem_field_for`, ``uniform`` as there)."""
    steps = _steps(steps)
    names = _flow_names(samplers)
    samples = _positive_int("samples", samples)
    field_for = problem_field_for(problem, config, uniform)
    noise = np.random.default_rng(seed).standard_normal((samples, problem.dim))
    exact = problem.flow(noise, 1.0, 0.0)
    x_start = torch.from_numpy(noise)
    res = ComparisonResult(steps, names, {s: {} for s in names}, {s: {} for s in names}, {s: {} for s in names})
    for n in steps:
        field, grid = field_for(n)
        for s in names:
            run = run_flow_sampler(s, field, grid, x_start)
            res.error[s][n] = rms(run.x, exact)
            res.nfe[s][n] = run.nfe
            res.ends[s][n] = 0.0
    return res


#: the display names of the flow samplers (the library's 'ddim' is Euler on a flow grid)
FLOW_LABELS: dict[str, str] = {s: spec.label for s, spec in FLOW_SAMPLERS.items()}
#: SD3's FlowMatchEulerDiscreteScheduler config (shift 3; mnist-flow's): the grids of the study's flow tables
SD3_FLOW_CONFIG: dict[str, Any] = {"num_train_timesteps": 1000, "shift": 3.0}


@dataclass
class FlowStudyComparison:
    """One flow comparison of ``linmultistep study``: what was compared (``title``), on which grids
    (``shift`` of the config, ``grid``: 'model' = the pipeline's own sigmas, 'uniform' = shift(k / N))."""

    title: str
    problem: str
    shift: float
    grid: str
    result: ComparisonResult


def flow_study_comparisons(problem: Any, steps: Sequence[int] = (5, 10, 20), *, samples: int = 256,
                           seed: int = 0) -> list[FlowStudyComparison]:
    """The flow comparisons ``linmultistep study`` prints, each :func:`flow_ground_truth_comparison` of every
    flow sampler against the exact flow of the same standard-normal x_N (s = 1 -> 0):

    1. ``problem`` (a :class:`~.flow_problems.FlowProblem`) on SD3's config (shift 3) with the pipeline's
       own sigmas (``FlowMatchEulerDiscreteScheduler.set_timesteps(N)``), whose last step sigma_min -> 0
       (0.0089 -> 0) is the same for every N;
    2. the same with the uniform sigmas shift(k / N), k = N..1 (what FLUX pipelines pass);
    3. the closed-form Gaussian of the problem's dimension with shift 1 and uniform sigmas k / N: equal
       steps in s on a velocity smooth on [0, 1], where the nominal orders show at few steps (at shift 3
       the steps near the data end are three times longer, ds/du = 3 at u = 0, and N = 5..20 is
       pre-asymptotic there).
    """
    from .flow_problems import FlowProblem, flow_problem

    if not isinstance(problem, FlowProblem):
        raise TypeError(f"problem must be a FlowProblem (e.g. flow_problem('mixture')), got {type(problem).__name__}")
    steps = _steps(steps)
    dim = problem.dim
    sigma_min = float(problem_field_for(problem, SD3_FLOW_CONFIG)(steps[0])[1].sigma[1])
    out = [FlowStudyComparison(f"{problem.name} (d = {dim}), shift 3 (SD3's), the pipeline's own sigmas "
                               f"(set_timesteps(N), last step {sigma_min:.2g} -> 0 for every N)", problem.name, 3.0,
                               "model", flow_ground_truth_comparison(problem, steps, config=SD3_FLOW_CONFIG,
                                                                     samples=samples, seed=seed)),
           FlowStudyComparison(f"{problem.name} (d = {dim}), shift 3 (SD3's), uniform sigmas shift(k / N), k = N..1",
                               problem.name, 3.0, "uniform",
                               flow_ground_truth_comparison(problem, steps, config=SD3_FLOW_CONFIG, uniform=True,
                                                            samples=samples, seed=seed))]
    smooth = flow_problem("gaussian", dim=dim, seed=seed)
    out.append(FlowStudyComparison(f"{smooth.name} (d = {dim}, closed-form flow), shift 1, uniform sigmas k / N "
                                   "(equal steps in s)", smooth.name, 1.0, "uniform",
                                   flow_ground_truth_comparison(smooth, steps, config=dict(SD3_FLOW_CONFIG, shift=1.0),
                                                                uniform=True, samples=samples, seed=seed)))
    return out
