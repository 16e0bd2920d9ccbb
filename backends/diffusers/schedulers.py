"""diffusers-native schedulers running the core's BELM steps.

``pipe.scheduler = BELMScheduler.from_config(pipe.scheduler.config)`` turns any standard
pipeline's denoising loop into O-BELM (or BDIA / DDIM) sampling. The step is the core's own
:meth:`LinearMultistep.forward` on the grid of :func:`grid_from_config`, so the scheduler agrees
with :func:`linmultistep.sample` to the last bit for equal model outputs, in every mode
('recurrence', 'stable', 'bits'; config ``mode``, None = the core's :func:`default_mode`, and
``mode_options`` such as ``{"eps_bound": 256}`` for 'bits'). The multistep state is explicit:
the scheduler keeps the last window ENTRIES of the core (for 'stable' and 'bits' they carry the
form's own variables, not just x) and returns ``prev_sample = entry.x``. A call whose ``sample``
is bitwise the x of the kept entry continues from the entry; any other sample starts afresh
(at the noise end with the method's starter, as the core does; mid-way, e.g. img2img, with one
DDIM step from which the form's state is read off the two points). Timesteps are read from the
grid's timestep array (never t - T//N).

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

from linmultistep import Grid, LatentMismatchError, LinearMultistep, Method, MethodError, State, default_mode, get_method
from linmultistep.integrator import StepContext

from ..torch import TorchBackend
from .adapters import to_epsilon
from .grid import alphas_cumprod_from_config, grid_from_config

__all__ = ["BELMScheduler", "BELMInverseScheduler"]

_BACKEND = TorchBackend()


def _scheduler_method(method: str, gamma: float, mode: "str | None" = None, options: "dict | None" = None) -> Method:
    """The core method in the configured mode (None: :func:`linmultistep.default_mode`)."""
    m = get_method(method, gamma=gamma) if method == "bdia" else get_method(method)
    if not isinstance(m, LinearMultistep) or m.k > 2:
        raise MethodError(f"{method!r} is not a single-state linear multistep method; a scheduler supports "
                          "'obelm', 'bdia', 'ddim' and 2-step 'belm' (EDICT needs coupled states: use invert/reconstruct)")
    if options and not isinstance(options, dict):
        raise MethodError(f"mode_options must be a dict such as {{'eps_bound': 256}}, got {options!r}")
    return m.with_mode(default_mode(m) if mode is None else mode, **dict(options or {}))


def _recurrence(method: Method) -> LinearMultistep:
    """The plain LM method underneath a mode's form."""
    return getattr(method, "base", method)


def _pick(method: Method, have: int) -> Method:
    return next(m for m in method.chain() if m.k <= have)


def _same(a: Any, b: Any) -> bool:
    return isinstance(a, torch.Tensor) and isinstance(b, torch.Tensor) and a.shape == b.shape and torch.equal(a, b)


class _NeedsModel(Exception):
    """Raised by the inverse scheduler's field when the core asks for a model output at a point
    the pipeline has not evaluated yet (the 'stable' / 'bits' inversions evaluate the new point
    at the end of a step; the pipeline gives that output with the next call)."""

    def __init__(self, x: torch.Tensor, m: int) -> None:
        super().__init__(m)
        self.x, self.m = x, m


class _GridSchedulerBase(SchedulerMixin, ConfigMixin):
    """Shared config, grid and noise handling."""

    _compatibles = [e.name for e in KarrasDiffusionSchedulers]
    order = 1
    init_noise_sigma = 1.0

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
        self._setup()
        self._reset_run_state()

    def _reset_run_state(self) -> None:
        """Per-class state of a run, set once the config is registered."""
        raise NotImplementedError

    def _setup(self) -> None:
        self.method = _scheduler_method(self.config.method, self.config.gamma, self.config.mode, self.config.mode_options)
        self._alphas_cumprod = alphas_cumprod_from_config(self.config)
        self.alphas_cumprod = torch.from_numpy(self._alphas_cumprod)
        self.num_inference_steps: int | None = None
        self.grid: Grid | None = None
        self.timesteps = torch.from_numpy(np.arange(0, self.config.num_train_timesteps)[::-1].copy())
        self._window: dict[int, Any] = {}  # the core's window entries after the last step

    @property
    def mode(self) -> str:
        """The core mode this scheduler runs ('recurrence', 'stable', 'bits' or 'bits(...)')."""
        return self.method.mode

    @property
    def previous_sample(self) -> torch.Tensor | None:
        """x of the newest point of the kept window (what the next call should get as ``sample``)."""
        return self.method.array_from_entry(self._window[self._newest()]) if self._window else None

    def _newest(self) -> int:
        raise NotImplementedError

    def _run(self, field, window: dict[int, Any], direction: str, work):
        """Call ``work(ctx, window)`` between the method's begin/end hooks, as the integrator does."""
        ctx = self._context(field)
        try:
            window = self.method.begin(ctx, dict(window), direction)
            with torch.no_grad():
                return work(ctx, window)
        finally:
            self.method.end(ctx)

    def _make_grid(self, num_inference_steps: int) -> Grid:
        self.num_inference_steps = int(num_inference_steps)
        self.grid = grid_from_config(self.config, self.num_inference_steps)
        self._index = {int(t): i for i, t in enumerate(self.grid.timesteps) if np.isfinite(t)}
        self._window = {}
        return self.grid

    def _grid_index(self, timestep: Any) -> int:
        if self.grid is None:
            raise RuntimeError("call set_timesteps(num_inference_steps) before step()")
        t = int(timestep.item() if isinstance(timestep, torch.Tensor) else timestep)
        if t not in self._index:
            raise ValueError(f"timestep {t} is not on this scheduler's grid of {self.num_inference_steps} steps")
        return self._index[t]

    def _context(self, field) -> StepContext:
        return StepContext(self.grid.h, self.grid.alpha, field, _BACKEND, check_finite=False)

    def _eps(self, model_output: torch.Tensor, sample: torch.Tensor, m: int) -> torch.Tensor:
        out = model_output.to(sample.dtype)
        return to_epsilon(out, sample, float(self.grid.alpha[m]), float(self.grid.sigma[m]), self.config.prediction_type)

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

    def _reset_run_state(self) -> None:
        self._pending: State | None = None

    def _newest(self) -> int:
        return min(self._window)

    def set_timesteps(self, num_inference_steps: int, device: "str | torch.device | None" = None) -> None:
        """Timesteps t_N > ... > t_1 of the grid (the model is evaluated at each once)."""
        grid = self._make_grid(num_inference_steps)
        ts = grid.timesteps[1:][::-1].astype(np.int64)
        self.timesteps = torch.from_numpy(ts.copy()).to(device)

    def load_state(self, state: State) -> None:
        """Continue an inverted latent exactly inside a standard pipeline: pass
        ``latents=state.x`` to the pipeline with the same number of steps. The first step (at the
        window's top index, on exactly that sample) returns the stored x_{N-1} instead of a DDIM
        step and keeps the latent's window entries; later steps continue from them. The mode is
        checked here, the method and grid at the first step (LatentMismatchError)."""
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
        """x_{i-1} from x_i = ``sample`` (model output at t_i) and the kept window entries."""
        if eta:
            raise ValueError("BELMScheduler is deterministic (eta must be 0)")
        i = self._grid_index(timestep)
        pending, self._pending = self._pending, None
        if pending is not None:
            pending.check_compatible(self.method, self.grid.fingerprint)
            if i == pending.hi and i - 1 in pending.window and _same(sample, pending.x):
                self._window = dict(pending.window)
                prev = self.method.array_from_entry(self._window[i - 1])
                return (prev, None) if not return_dict else DDIMSchedulerOutput(prev_sample=prev, pred_original_sample=None)
        eps = self._eps(model_output, sample, i)
        kept = self._window.get(i)
        if kept is not None and _same(sample, self.method.array_from_entry(kept)):
            window = {j: e for j, e in self._window.items() if i <= j <= i + self.method.k - 1}
        else:
            window = {i: sample}

        def field(x: torch.Tensor, m: int) -> torch.Tensor:
            if m != i:
                raise MethodError(f"{self.method.spec} asked for a model output at grid index {m}, have {i}")
            return eps

        if len(window) == 1 and i != self.grid.N and self.method.mode != "recurrence":
            # a fresh start mid-way (img2img): the forms' starter runs only from the noise end, so one
            # DDIM step; the next call's begin() reads the form's state off the two points
            def work(ctx, w):
                return {i: sample, i - 1: _recurrence(self.method).starter.forward(ctx, i - 1, {i: sample})}

            with torch.no_grad():
                self._window = work(self._context(field), window)
        else:
            def work(ctx, w):
                have = next(j for j in range(self.method.k + 1) if i + j not in w)
                w[i - 1] = _pick(self.method, have).forward(ctx, i - 1, w)
                return {j: e for j, e in w.items() if i - 1 <= j <= i - 2 + self.method.k}

            self._window = self._run(field, window, "forward", work)
        prev = self.method.array_from_entry(self._window[i - 1])
        x0 = (sample - float(self.grid.sigma[i]) * eps) / float(self.grid.alpha[i])
        if not return_dict:
            return (prev, x0)
        return DDIMSchedulerOutput(prev_sample=prev, pred_original_sample=x0)


class BELMInverseScheduler(_GridSchedulerBase):
    """Exact BELM inversion as a diffusers inverse scheduler.

    ``timesteps`` (ascending, one per step n = 1..N) are where the pipeline evaluates the model on
    its current latent x_{n-1}: t_1 for the first step (a DDIM-inversion step, model at the
    target time, diffusers' DDIMInverseScheduler convention) and t_{n-1} for every later exact
    step (the BELM relation needs eps at its own point), e.g. [t_1, t_1, t_2, ..., t_{N-1}] for
    O-BELM, in every mode. :attr:`state` is the core latent (x_N, x_{N-1}) after the last step, for
    exact reconstruction with :func:`..pipeline.reconstruct` or :meth:`BELMScheduler.load_state`.

    Modes 'stable' and 'bits' (config ``mode`` / ``mode_options`` as in :class:`BELMScheduler`)
    evaluate the new point at the END of the core's step n (v_{n+1} = -v_n + c_n eps(x_n)); the
    pipeline gives that output with call n+1, so call n+1 first completes step n and then makes
    step n+1 up to the point where it needs the next output, returning x_{n+1}. Mode 'bits' puts
    the data onto the fixed-point grid first: the first call's model output (on the pipeline's
    unquantised x_0) stands for the core's eps at the quantised x_0. That step is the starter's
    guess, which the exact reconstruction undoes whatever its value; with data already on the
    grid (``sample`` of :meth:`fixed_point_data`) the result equals :func:`linmultistep.invert`
    bit for bit. The scheduler cannot run the network twice, so the core's determinism self-check
    of the first input is not made here (run the pipeline on a deterministic device setup).
    """

    def _reset_run_state(self) -> None:
        self.step_count = 0
        self._known: list[tuple[int, torch.Tensor, torch.Tensor]] = []
        self._expected: torch.Tensor | None = None

    def _newest(self) -> int:
        return max(self._window)

    def _plan(self, n: int) -> tuple[Method, int]:
        """Method for the step producing point n (given points 0..n-1) and its model grid index."""
        m = next(m for m in self.method.chain() if m.k <= n)
        exact = m.exact_backward(self._context(None), n)
        return m, (n - 1 if exact else n)

    def set_timesteps(self, num_inference_steps: int, device: "str | torch.device | None" = None) -> None:
        grid = self._make_grid(num_inference_steps)
        self._model_index = [self._plan(n)[1] for n in range(1, grid.N + 1)]
        ts = np.array([grid.timesteps[m] for m in self._model_index]).astype(np.int64)
        self.timesteps = torch.from_numpy(ts).to(device)
        self.step_count = 0
        self._known, self._expected = [], None

    def fixed_point_data(self, x0: torch.Tensor) -> torch.Tensor:
        """x0 as the configured mode holds it (mode 'bits': rounded onto the fixed-point grid;
        otherwise x0 itself). Needs set_timesteps first."""
        if self.grid is None:
            raise RuntimeError("call set_timesteps(num_inference_steps) before fixed_point_data()")
        w = self._run(None, {0: x0}, "backward", lambda ctx, w: w)
        return self.method.array_from_entry(w[0])

    @property
    def state(self) -> State:
        """The core latent of the inversion so far: the window of the last k COMPLETE points
        (in modes 'stable'/'bits' the newest point is complete once its model output arrived, or
        at the noise end)."""
        if not self._window or max(self._window) < 1:
            raise RuntimeError("no inversion step has been taken")
        return State(dict(self._window), self.method.spec, self.grid.fingerprint, self.method.mode, self.step_count)

    def step(self, model_output: torch.Tensor, timestep: Any, sample: torch.Tensor, return_dict: bool = True,
             **kwargs: Any) -> "DDIMSchedulerOutput | tuple":
        """x_n from x_{n-1} = ``sample`` (and the kept window entries); n counts the calls."""
        if self.grid is None:
            raise RuntimeError("call set_timesteps(num_inference_steps) before step()")
        n = self.step_count + 1
        if n > self.grid.N:
            raise ValueError(f"all {self.grid.N} inversion steps are done; call set_timesteps again")
        _, model_index = self._plan(n)
        t = int(timestep.item() if isinstance(timestep, torch.Tensor) else timestep)
        if t != int(self.grid.timesteps[model_index]):
            raise ValueError(f"inversion step {n} needs the model output at timestep "
                             f"{int(self.grid.timesteps[model_index])}, got {t} (iterate over scheduler.timesteps)")
        eps = self._eps(model_output, sample, model_index)
        if n > 1 and not _same(sample, self._expected):
            raise ValueError(
                f"inversion step {n} got a sample that is not the x_{n - 1} this scheduler returned (the pipeline "
                "changed the latent between steps); an exact inversion continues only its own output")
        if n == 1:
            self._window = self._run(None, {0: sample}, "backward", lambda ctx, w: w)
            # mode 'bits' moved x_0 onto the fixed-point grid: this output stands for that point
            self._known = [(model_index, self.method.array_from_entry(self._window[0]), eps)]
        else:
            self._known = self._known[-3:] + [(model_index, sample, eps)]
        new = self._advance(n)
        self.step_count = n
        self._expected = new
        if not return_dict:
            return (new, None)
        return DDIMSchedulerOutput(prev_sample=new, pred_original_sample=None)

    def _advance(self, n: int) -> torch.Tensor:
        """Run the core's steps from the kept complete window up to point n with the model outputs
        known so far; returns x_n (complete or waiting for its model output)."""
        known = self._known

        def field(x: torch.Tensor, m: int) -> torch.Tensor:
            for mi, xi, ei in known:
                if mi == m and _same(xi, x):
                    return ei
            raise _NeedsModel(x, m)

        def work(ctx, w):
            for j in range(max(w) + 1, n + 1):
                have = next(q for q in range(self.method.k + 1) if j - q - 1 not in w)
                try:
                    w[j] = _pick(self.method, have).backward(ctx, j, w)
                except _NeedsModel as need:
                    if j != n or need.m != n or self.method.mode == "recurrence":
                        raise MethodError(f"{self.method.spec} asked for a model output at grid index {need.m} "
                                          f"that the pipeline did not give (step {j})") from None
                    return need.x
                for q in [q for q in w if q <= j - self.method.k]:
                    del w[q]
                self._window = dict(w)
            return self.method.array_from_entry(w[n])

        return self._run(field, self._window, "backward", work)
