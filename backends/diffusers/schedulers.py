"""diffusers-native schedulers running the core's BELM steps.

``pipe.scheduler = BELMScheduler.from_config(pipe.scheduler.config)`` turns any standard
pipeline's denoising loop into O-BELM (or BDIA / DDIM) sampling. Each ``step`` is one call of the
core's :func:`linmultistep.stepping.step` on a :class:`~linmultistep.stepping.Run` the scheduler
keeps between calls, on the grid of :func:`grid_from_config`; so the scheduler agrees with
:func:`linmultistep.sample` to the last bit for equal model outputs, in every mode ('recurrence',
'stable', 'bits'; config ``mode``, None = :func:`linmultistep.default_mode`, and ``mode_options``
such as ``{"eps_bound": 256}`` for 'bits'). The run's window ENTRIES (for 'stable' and 'bits' the
form's own variables, not just x) are the multistep state; ``prev_sample = entry.x``. A call
whose ``sample`` is bitwise the x of the run's newest entry continues the run; any other sample
starts a new run there (with the method's starter, at the noise end or mid-way, e.g. img2img).
Timesteps are read from the grid's timestep array (never t - T//N).

:class:`BELMInverseScheduler` is the inverse for pipelines that take an ``inverse_scheduler``
(e.g. ``StableDiffusionDiffEditPipeline``): its ``timesteps`` say where the pipeline must
evaluate the model so that every step after the first is exact.
"""

from __future__ import annotations

from typing import Any

import numpy as np
import torch
from diffusers.configuration_utils import ConfigMixin, register_to_config
from diffusers.schedulers.scheduling_ddim import DDIMSchedulerOutput
from diffusers.schedulers.scheduling_utils import KarrasDiffusionSchedulers, SchedulerMixin

from linmultistep import Grid, LatentMismatchError, LinearMultistep, Method, MethodError, State, get_method, resolve_mode
from linmultistep.context import StepContext
from linmultistep.modes import base_method
from linmultistep.stepping import Run, records, start_on, step

from ..torch import TorchBackend
from .adapters import to_epsilon
from .grid import alphas_cumprod_from_config, grid_from_config

__all__ = ["BELMScheduler", "BELMInverseScheduler"]

_BACKEND = TorchBackend()


def _scheduler_method(method: str, gamma: float, mode: "str | None" = None, options: "dict | None" = None) -> Method:
    """The core method in the configured mode (:func:`linmultistep.resolve_mode`)."""
    m = get_method(method, gamma=gamma) if method == "bdia" else get_method(method)
    if not isinstance(m, LinearMultistep) or m.k > 2:
        raise MethodError(f"{method!r} is not a single-state linear multistep method; a scheduler supports "
                          "'obelm', 'bdia', 'ddim' and 2-step 'belm' (EDICT needs coupled states: use invert/reconstruct)")
    return resolve_mode(m, mode, options=options)


def _timestep_value(timestep: Any) -> int:
    """An integer timestep from what a pipeline passes (a 0-d tensor or a number); 10.5 is refused,
    not truncated onto another grid point."""
    value = timestep.item() if isinstance(timestep, torch.Tensor) else timestep
    if (isinstance(value, bool) or not isinstance(value, (int, float, np.integer, np.floating))
            or not np.isfinite(value) or value != int(value)):
        raise ValueError(f"timestep must be one of scheduler.timesteps (an integer), got {value!r}")
    return int(value)


def _same(a: Any, b: Any) -> bool:
    if a is b:  # a pipeline passes prev_sample back as it is
        return isinstance(a, torch.Tensor)
    return isinstance(a, torch.Tensor) and isinstance(b, torch.Tensor) and a.shape == b.shape and torch.equal(a, b)


class _ModelOutput:
    """The field of a scheduler's run: the model output the pipeline gave for one grid point."""

    def __init__(self, method: Method) -> None:
        self.method = method
        self.index: int | None = None
        self.eps: torch.Tensor | None = None

    def give(self, index: int, eps: torch.Tensor) -> None:
        self.index, self.eps = index, eps

    def __call__(self, x: torch.Tensor, m: int) -> torch.Tensor:
        if m != self.index or self.eps is None:
            raise MethodError(f"{self.method.spec} asked for a model output at grid index {m}; the pipeline gave "
                              f"one at {self.index} (iterate over scheduler.timesteps)")
        return self.eps


class _GridSchedulerBase(SchedulerMixin, ConfigMixin):
    """Shared config, grid, the kept core run, and noise handling."""

    _compatibles = [e.name for e in KarrasDiffusionSchedulers]
    order = 1
    init_noise_sigma = 1.0
    _direction = "forward"

    # one config signature for both schedulers: diffusers reads it from __init__
    @register_to_config
    def __init__(
        self,
        num_train_timesteps: int = 1000,
        beta_start: float = 0.0001,
        beta_end: float = 0.02,
        beta_schedule: str = "linear",
        trained_betas: Any = None,
        set_alpha_to_one: bool = True,
        steps_offset: int = 0,
        prediction_type: str = "epsilon",
        timestep_spacing: str = "leading",
        method: str = "obelm",
        gamma: float = 1.0,
        mode: "str | None" = None,
        mode_options: "dict | None" = None,
    ) -> None:
        self.method = _scheduler_method(self.config.method, self.config.gamma, self.config.mode, self.config.mode_options)
        self._alphas_cumprod = alphas_cumprod_from_config(self.config)
        self.alphas_cumprod = torch.from_numpy(self._alphas_cumprod)
        self.num_inference_steps: int | None = None
        self.grid: Grid | None = None
        self.timesteps = torch.from_numpy(np.arange(0, self.config.num_train_timesteps)[::-1].copy())
        self._output = _ModelOutput(self.method)
        self._ctx: StepContext | None = None
        self.run: Run | None = None  # the core run the calls advance

    @property
    def mode(self) -> str:
        """The core mode this scheduler runs ('recurrence', 'stable', 'bits' or 'bits(...)')."""
        return self.method.mode

    @property
    def previous_sample(self) -> torch.Tensor | None:
        """x of the newest point of the run (what the next call should get as ``sample``)."""
        if self.run is None:
            return None
        w = self.run.window
        return w[min(w) if self._direction == "forward" else max(w)].x

    def _make_grid(self, num_inference_steps: int) -> Grid:
        self.grid = grid_from_config(self.config, num_inference_steps)  # refuses 10.7, "10", 10**9
        self.num_inference_steps = int(num_inference_steps)
        self._index = {int(t): i for i, t in enumerate(self.grid.timesteps) if np.isfinite(t)}
        # one context per grid: the steps' float64 coefficient plans are computed once and reused
        self._ctx = StepContext(self.grid.h, self.grid.alpha, self._output, _BACKEND, check_finite=True,
                                describe=lambda i: f"timestep {self.grid.timestep(i):g}")
        self.run = None
        return self.grid

    def _start(self, window: dict[int, Any], stop: int, metadata: "dict | None" = None) -> Run:
        """A new core run from ``window`` on the scheduler's context (its cached plans are kept)."""
        self._ctx.nfe = 0
        self._ctx.forget_outside(0, -1)
        return start_on(self._ctx, self.method, window, self._direction, stop, metadata)

    def _grid_index(self, timestep: Any) -> int:
        if self.grid is None:
            raise RuntimeError("call set_timesteps(num_inference_steps) before step()")
        t = _timestep_value(timestep)
        if t not in self._index:
            raise ValueError(f"timestep {t} is not on this scheduler's grid of {self.num_inference_steps} steps")
        return self._index[t]

    def _eps(self, model_output: torch.Tensor, sample: torch.Tensor, m: int) -> torch.Tensor:
        out = model_output.to(sample.dtype)
        if out.shape != sample.shape:
            raise ValueError(f"model_output has shape {tuple(out.shape)}, the sample {tuple(sample.shape)}")
        return to_epsilon(out, sample, float(self.grid.alpha[m]), float(self.grid.sigma[m]), self.config.prediction_type)

    def _pred_original(self, entry: Any, sample: torch.Tensor, eps: torch.Tensor, i: int) -> torch.Tensor:
        """x0 = (x_i - sigma_i eps) / alpha_i; in mode 'stable' xbar_i = x_i / alpha_i is at hand and
        x0 = xbar_i - (sigma_i / alpha_i) eps is one pass instead of two."""
        alpha, sigma = float(self.grid.alpha[i]), float(self.grid.sigma[i])
        xbar = getattr(entry, "xbar", None)
        if xbar is not None:
            return torch.add(xbar, eps, alpha=-sigma / alpha)
        return torch.sub(sample, eps, alpha=sigma).div_(alpha)

    def scale_model_input(self, sample: torch.Tensor, timestep: Any = None) -> torch.Tensor:
        """Identity: these schedulers work on x_t = alpha x0 + sigma eps directly."""
        return sample

    def add_noise(self, original_samples: torch.Tensor, noise: torch.Tensor, timesteps: torch.Tensor) -> torch.Tensor:
        """x_t = sqrt(alphas_cumprod[t]) x0 + sqrt(1 - alphas_cumprod[t]) noise (float64 coefficients)."""
        ac = torch.from_numpy(self._alphas_cumprod).to(original_samples.device)[timesteps.long().to(original_samples.device)]
        shape = (-1,) + (1,) * (original_samples.ndim - 1)
        a = ac.sqrt().to(original_samples.dtype).reshape(shape)
        s = (1 - ac).sqrt().to(original_samples.dtype).reshape(shape)
        return a * original_samples + s * noise

    def __len__(self) -> int:
        return self.config.num_train_timesteps


class BELMScheduler(_GridSchedulerBase):
    """O-BELM / BDIA / DDIM sampling as a diffusers scheduler (see module docstring).

    Config: the DDIM keys (``num_train_timesteps``, ``beta_*``, ``trained_betas``,
    ``set_alpha_to_one``, ``steps_offset``, ``prediction_type``, ``timestep_spacing``) plus
    ``method`` ('obelm' | 'bdia' | 'ddim' | 'belm'), ``gamma`` (BDIA), ``mode`` (None = the core's
    default: 'stable' for O-BELM and BDIA(gamma=1), 'recurrence' otherwise; or 'recurrence',
    'stable', 'bits', or a latent's recorded mode such as 'bits(data_bound=64.0, eps_bound=256.0)')
    and ``mode_options`` (keyword options of the mode, e.g. ``{"eps_bound": 256}`` for 'bits').
    Other keys of a DDIM-like config are ignored.
    """

    _direction = "forward"

    def set_timesteps(self, num_inference_steps: int, device: "str | torch.device | None" = None) -> None:
        """Timesteps t_N > ... > t_1 of the grid (the model is evaluated at each once)."""
        grid = self._make_grid(num_inference_steps)
        ts = grid.timesteps[1:][::-1].astype(np.int64)
        self.timesteps = torch.from_numpy(ts.copy()).to(device)
        self._pending: State | None = getattr(self, "_pending", None)

    def load_state(self, state: State) -> None:
        """Continue an inverted latent exactly inside a standard pipeline: pass
        ``latents=state.x`` to the pipeline with the same number of steps. The first step (at the
        window's top index, on exactly that sample) returns the stored x_{N-1} instead of a DDIM
        step and continues the latent's run; a first step on any other sample is refused
        (LatentMismatchError). The mode is checked here, the method and grid at the first step."""
        if not isinstance(state, State):
            raise TypeError(f"expected a linmultistep State, got {type(state).__name__}")
        if state.mode != self.method.mode:
            raise LatentMismatchError(
                f"this latent was computed in mode {state.mode!r} but the scheduler runs mode {self.method.mode!r}; "
                f"create it with BELMScheduler.from_config(config, mode={state.mode!r}) to continue the latent exactly"
            )
        self._pending = state

    def step(
        self,
        model_output: torch.Tensor,
        timestep: Any,
        sample: torch.Tensor,
        eta: float = 0.0,
        generator: Any = None,
        return_dict: bool = True,
        **kwargs: Any,
    ) -> "DDIMSchedulerOutput | tuple":
        """x_{i-1} from x_i = ``sample`` (model output at t_i): one core step of the kept run."""
        if eta:
            raise ValueError("BELMScheduler is deterministic (eta must be 0)")
        i = self._grid_index(timestep)
        pending, self._pending = getattr(self, "_pending", None), None
        if pending is not None:
            pending.check_compatible(self.method, self.grid.fingerprint, self.grid.N)
            if not (i == pending.hi and _same(sample, pending.x)):
                raise LatentMismatchError(
                    f"load_state() was given a latent whose run starts at grid index {pending.hi} from its x_N, but the "
                    f"first step got timestep {int(self.grid.timesteps[i])} and a different sample: pass "
                    "latents=state.x to the pipeline (and the latent's number of steps), or load no state"
                )
            self.run = self._start(dict(pending.window), 0, pending.metadata)
            prev = self.run.window[i - 1].x
            return (prev, None) if not return_dict else DDIMSchedulerOutput(prev_sample=prev, pred_original_sample=None)
        eps = self._eps(model_output, sample, i)
        run = self.run
        if run is None or run.done or run.next_index != i - 1 or not _same(sample, run.window[i].x):
            run = self.run = self._start({i: sample}, 0)
        self._output.give(i, eps)
        with torch.no_grad():
            step(run)
        if run.done:
            self._ctx.check()
        prev = run.window[i - 1].x
        x0 = self._pred_original(run.window[i], sample, eps, i)
        if not return_dict:
            return (prev, x0)
        return DDIMSchedulerOutput(prev_sample=prev, pred_original_sample=x0)


class BELMInverseScheduler(_GridSchedulerBase):
    """Exact BELM inversion as a diffusers inverse scheduler.

    ``timesteps`` (ascending, one per step n = 1..N) are where the pipeline evaluates the model on
    its current latent x_{n-1}: t_1 for the first step (a DDIM-inversion step, model at the
    target time, diffusers' DDIMInverseScheduler convention) and t_{n-1} for every later exact
    step (the BELM relation needs eps at its own point), e.g. [t_1, t_1, t_2, ..., t_{N-1}] for
    O-BELM, in every mode: each call is one core step, which in modes 'stable' and 'bits' first
    completes the previous point with the output it is given. :attr:`state` is the core latent
    (x_N, x_{N-1}) after the last step, for exact reconstruction with :func:`..pipeline.reconstruct`
    or :meth:`BELMScheduler.load_state`.

    Mode 'bits' puts the data onto the fixed-point grid first: the first call's model output (on
    the pipeline's unquantised x_0) stands for the core's eps at the quantised x_0. That step is
    the starter's guess, which the exact reconstruction undoes whatever its value; with data
    already on the grid (``sample`` of :meth:`fixed_point_data`) the result equals
    :func:`linmultistep.invert` bit for bit. The scheduler cannot run the network twice, so the
    core's determinism self-check of the first input compares the output with itself here (run
    the pipeline on a deterministic device setup); the per-step digests are recorded as usual.
    """

    _direction = "backward"

    @property
    def step_count(self) -> int:
        return 0 if self.run is None else self.run.count

    def _model_index(self, n: int) -> int:
        """The grid index whose model output step n (producing point n from 0..n-1) consumes."""
        m = next(m for m in self.method.chain() if m.k <= n)
        return n - 1 if m.exact_backward(self._ctx, n) else n

    def set_timesteps(self, num_inference_steps: int, device: "str | torch.device | None" = None) -> None:
        grid = self._make_grid(num_inference_steps)
        self._model_indices = [self._model_index(n) for n in range(1, grid.N + 1)]
        ts = np.array([grid.timesteps[m] for m in self._model_indices]).astype(np.int64)
        self.timesteps = torch.from_numpy(ts).to(device)

    def fixed_point_data(self, x0: torch.Tensor) -> torch.Tensor:
        """x0 as the configured mode holds it (mode 'bits': rounded onto the fixed-point grid;
        otherwise x0 itself). Needs set_timesteps first."""
        if self.grid is None:
            raise RuntimeError("call set_timesteps(num_inference_steps) before fixed_point_data()")
        ctx = StepContext(self.grid.h, self.grid.alpha, self._output, _BACKEND, check_finite=False)
        return start_on(ctx, self.method, {0: x0}, "backward", self.grid.N).window[0].x

    @property
    def state(self) -> State:
        """The core latent of the inversion: after the last step, the window (x_N, x_{N-1}) with the
        run's records. Before it (modes 'stable'/'bits': the newest point still awaits its model
        output) only in mode 'recurrence', whose points are complete after each step."""
        if self.run is None or self.run.count == 0:
            raise RuntimeError("no inversion step has been taken")
        if not self.run.done and self.method.mode != "recurrence":
            raise RuntimeError(
                f"the inversion is at step {self.run.count} of {self.grid.N}: in mode {self.method.mode!r} its newest "
                "point is complete only with the next model output; take every step (or use linmultistep.invert "
                "with stop=...) for a partial latent"
            )
        return State(dict(self.run.window), self.method.spec, self.grid.fingerprint, self.method.mode,
                     self._ctx.nfe, records(self.run))

    def step(self, model_output: torch.Tensor, timestep: Any, sample: torch.Tensor, return_dict: bool = True,
             **kwargs: Any) -> "DDIMSchedulerOutput | tuple":
        """x_n from x_{n-1} = ``sample`` (and the run's window entries); n counts the calls."""
        if self.grid is None:
            raise RuntimeError("call set_timesteps(num_inference_steps) before step()")
        n = self.step_count + 1
        if self.run is not None and self.run.done:
            raise ValueError(f"all {self.grid.N} inversion steps are done; call set_timesteps again")
        model_index = self._model_indices[n - 1]
        t = _timestep_value(timestep)
        if t != int(self.grid.timesteps[model_index]):
            raise ValueError(f"inversion step {n} needs the model output at timestep "
                             f"{int(self.grid.timesteps[model_index])}, got {t} (iterate over scheduler.timesteps)")
        eps = self._eps(model_output, sample, model_index)
        if n == 1:
            self.run = self._start({0: sample}, self.grid.N)
        elif not _same(sample, self.previous_sample):
            raise ValueError(
                f"inversion step {n} got a sample that is not the x_{n - 1} this scheduler returned (the pipeline "
                "changed the latent between steps); an exact inversion continues only its own output")
        self._output.give(model_index, eps)
        with torch.no_grad():
            info = step(self.run)
        if self.run.done:
            self._ctx.check()
        new = info.entry.x
        if not return_dict:
            return (new, None)
        return DDIMSchedulerOutput(prev_sample=new, pred_original_sample=None)
