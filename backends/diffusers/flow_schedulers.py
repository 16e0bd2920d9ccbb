"""Drop-in schedulers for ``FlowMatchEulerDiscreteScheduler`` configs (SD3, SD3.5, FLUX, ...).

The grid is the one diffusers' own scheduler samples on: :func:`flow_grid_from_config` asks a
``FlowMatchEulerDiscreteScheduler`` built from the config for its ``sigmas`` and ``timesteps``
(``shift``, ``use_dynamic_shifting`` with ``mu``, custom ``sigmas``, ``shift_terminal``, Karras /
exponential / beta sigmas: whatever that version computes), in the float32 values it uses, and
lays them out as a :func:`linmultistep.paths.flow_grid` (t_0 = 0 < t_1 < ... < t_N, sigma = t, in the
projective coordinates of ``blend`` b: alpha = 1 - b t; the model output is the velocity v). On it the
core's DDIM method is Euler, x_{i-1} = x_i + (t_{i-1} - t_i) v_i, diffusers' step, for every b
(linmultistep/paths.py derives it); b sets only where the 2-step methods' coefficients put their weight.

:class:`FlowBELMScheduler` is a :class:`~.schedulers.BELMScheduler` on that grid:
``pipe.scheduler = FlowBELMScheduler.from_config(pipe.scheduler.config)`` makes an SD3 or FLUX
pipeline sample with O-BELM (``method='obelm'``, default), BDIA or Euler (``method='ddim'``), in
every mode, and :meth:`~.schedulers.BELMScheduler.load_state` continues an inverted latent exactly.
:class:`FlowBELMInverseScheduler` is its exact inverse (one core step per call).

Refused with a clear error (they change the ODE, so no exact or Euler-equal method exists for
them here): ``stochastic_sampling``, ``invert_sigmas``, per-token timesteps, custom ``timesteps``
without ``sigmas``.
"""

from __future__ import annotations

import math
from typing import Any, Mapping

import numpy as np
import torch
from diffusers.configuration_utils import register_to_config
from diffusers.schedulers.scheduling_flow_match_euler_discrete import (
    FlowMatchEulerDiscreteScheduler,
    FlowMatchEulerDiscreteSchedulerOutput,
)

from linmultistep import Grid, GridError, LatentMismatchError, State
from linmultistep.context import StepContext
from linmultistep.paths import FLOW_BLEND, flow_grid, shift_sigmas

from linmultistep.stepping import records, start_on
from linmultistep.stepping import step as core_step

from .schedulers import _BACKEND, BELMInverseScheduler, BELMScheduler, _ModelOutput, _same, _scheduler_method

__all__ = ["FLOW_DEFAULTS", "flow_config", "flow_grid_from_config", "FlowBELMScheduler", "FlowBELMInverseScheduler"]

#: FlowMatchEulerDiscreteScheduler's config keys and defaults (diffusers 0.3x)
FLOW_DEFAULTS: dict[str, Any] = {
    "num_train_timesteps": 1000, "shift": 1.0, "use_dynamic_shifting": False, "base_shift": 0.5,
    "max_shift": 1.15, "base_image_seq_len": 256, "max_image_seq_len": 4096, "invert_sigmas": False,
    "shift_terminal": None, "use_karras_sigmas": False, "use_exponential_sigmas": False, "use_beta_sigmas": False,
    "time_shift_type": "exponential", "stochastic_sampling": False,
}


_OWN_KEYS = ("method", "gamma", "mode", "mode_options", "blend")


def flow_config(scheduler_or_config: Any) -> dict[str, Any]:
    """The flow-matching keys of a scheduler, its config or a mapping (defaults filled in), checked:
    shift > 0, and none of the options that change the ODE."""
    cfg = getattr(scheduler_or_config, "config", scheduler_or_config)
    if not isinstance(cfg, Mapping):
        raise TypeError(f"expected a diffusers scheduler or its config, got {type(scheduler_or_config).__name__}")
    out = dict(FLOW_DEFAULTS)
    out.update({k: cfg[k] for k in FLOW_DEFAULTS if k in cfg})
    shift_sigmas(0.5, out["shift"])  # shift <= 0 (or not a number): a GridError naming it
    for key, why in (("stochastic_sampling", "re-noises every step (an SDE, not the probability-flow ODE)"),
                     ("invert_sigmas", "runs the schedule from data to noise (another model convention)")):
        if out[key]:
            raise GridError(f"{key}=True is not supported: it {why}; exact inversion needs the deterministic flow")
    return out


def flow_grid_from_config(scheduler_or_config: Any, num_steps: "int | None" = None, *, sigmas: Any = None,
                          mu: "float | None" = None, blend: "float | None" = None) -> Grid:
    """The flow grid of ``num_steps`` steps of a ``FlowMatchEulerDiscreteScheduler`` config, with the
    pipeline's ``sigmas`` and ``mu`` when it passes them (FLUX: ``sigmas=linspace(1, 1/n, n)`` and
    mu from the image size, see :func:`linmultistep.paths.dynamic_shift_mu`), in the coordinates of
    ``blend`` (default: the config's ``blend`` if it has one, else :data:`~linmultistep.paths.FLOW_BLEND`;
    0 = the flow's own (x, t)).

    Point i >= 1 holds diffusers' i-th smallest sigma (its float32 value, exactly) and its model
    timestep (1000 sigma in float32); point 0 is the data end t = 0, never evaluated (NaN timestep).
    """
    cfg = flow_config(scheduler_or_config)
    if num_steps is not None and (isinstance(num_steps, bool) or not hasattr(num_steps, "__index__")):
        raise GridError(f"num_steps must be an integer, got {num_steps!r} ({type(num_steps).__name__})")
    if num_steps is None and sigmas is None:
        raise GridError("give num_steps (or the pipeline's sigmas)")
    n = int(num_steps) if num_steps is not None else len(sigmas)
    if n < 1 or n > 4 * int(cfg["num_train_timesteps"]):
        raise GridError(f"num_steps must be in [1, {4 * int(cfg['num_train_timesteps'])}], got {n}")
    if cfg["use_dynamic_shifting"] and mu is None:
        raise GridError("this scheduler config uses dynamic shifting (use_dynamic_shifting=True): give mu "
                        "(linmultistep.paths.dynamic_shift_mu(image_seq_len, ...), as the pipeline computes it)")
    if mu is not None and (isinstance(mu, bool) or not isinstance(mu, (int, float)) or not math.isfinite(mu)):
        raise GridError(f"mu must be a finite number, got {mu!r}")
    if sigmas is not None:
        s = np.asarray(sigmas, dtype=np.float64)
        if s.ndim != 1 or s.shape[0] != n or not np.isfinite(s).all():
            raise GridError(f"sigmas must be {n} finite numbers (noise end first), got {s!r:.120}")
    raw = getattr(scheduler_or_config, "config", scheduler_or_config)
    # the whole config (options of a newer diffusers apply too), less this binding's own keys
    full = {k: v for k, v in {**dict(raw), **cfg}.items() if not k.startswith("_") and k not in _OWN_KEYS}
    ref = FlowMatchEulerDiscreteScheduler.from_config(full)
    ref.set_timesteps(n, sigmas=None if sigmas is None else list(map(float, sigmas)), mu=mu)
    sig = ref.sigmas.detach().to("cpu", torch.float64).numpy()  # descending, a trailing 0 appended
    ts = ref.timesteps.detach().to("cpu", torch.float64).numpy()
    if sig.shape[0] != ts.shape[0] + 1 or sig[-1] != 0.0:
        raise GridError(f"unexpected schedule from diffusers: {sig.shape[0]} sigmas for {ts.shape[0]} timesteps")
    if blend is None:
        blend = raw.get("blend", FLOW_BLEND) if isinstance(raw, Mapping) else FLOW_BLEND
    try:
        return flow_grid(sig[::-1].copy(), np.concatenate([[np.nan], ts[::-1]]), blend=blend)
    except GridError as exc:
        raise GridError(f"this scheduler config's sigmas are not a usable flow schedule: {exc}") from None


def _flow_timestep(timestep: Any) -> float:
    value = timestep.reshape(-1)[0].item() if isinstance(timestep, torch.Tensor) else timestep
    if isinstance(value, bool) or not isinstance(value, (int, float, np.integer, np.floating)) \
            or not math.isfinite(float(value)):
        raise ValueError(f"timestep must be one of scheduler.timesteps, got {timestep!r}")
    return float(np.float32(value))  # the pipelines pass scheduler.timesteps' float32 values


class _FlowGridMixin:
    """What the flow schedulers change in the BELM schedulers: config, grid, timestep lookup, the
    model output (a velocity, used as it is) and the noising of the flow path."""

    _compatibles = ["FlowMatchEulerDiscreteScheduler"]

    def _setup(self) -> None:
        flow_config(self.config)
        self.method = _scheduler_method(self.config.method, self.config.gamma, self.config.mode,
                                        self.config.mode_options)
        self.num_inference_steps = None
        self.grid = None
        self._output = _ModelOutput(self.method)
        self._ctx = None
        self.run = None
        self._begin_index = None
        ts = np.linspace(1, self.config.num_train_timesteps, self.config.num_train_timesteps, dtype=np.float32)[::-1]
        self.timesteps = torch.from_numpy(ts.copy())
        self.sigmas = self.timesteps / self.config.num_train_timesteps

    def _make_flow_grid(self, num_inference_steps: "int | None", sigmas: Any, mu: Any, timesteps: Any) -> Grid:
        if timesteps is not None and sigmas is None:
            raise ValueError("custom timesteps without sigmas are not supported (diffusers' own scheduler warns that "
                             "they may be inconsistent with its sigmas); pass sigmas")
        self.grid = flow_grid_from_config(self.config, num_inference_steps, sigmas=sigmas, mu=mu, blend=self.config.blend)
        if timesteps is not None:  # the model timesteps as given, one per sigma
            ts = np.asarray(timesteps, dtype=np.float32).astype(np.float64)
            if ts.shape != (self.grid.N,):
                raise ValueError(f"timesteps has {ts.shape} entries, sigmas {self.grid.N}")
            self.grid = flow_grid(self.grid.sigma, np.concatenate([[np.nan], ts[::-1]]), blend=self.config.blend)
        self.num_inference_steps = self.grid.N
        self._index = {float(t): i for i, t in enumerate(self.grid.timesteps) if np.isfinite(t)}
        self._ctx = StepContext(self.grid.h, self.grid.alpha, self._output, _BACKEND, check_finite=True,
                                describe=lambda i: f"timestep {self.grid.timestep(i):g}")
        self.run = None
        t = self.grid.sigma
        self.sigmas = torch.from_numpy(np.append(t[1:][::-1], 0.0).astype(np.float32))
        return self.grid

    def _start(self, window: "dict[int, Any]", stop: int, metadata: "dict | None" = None) -> Any:
        """A new core run from ``window`` on this scheduler's own context (its float64 plans are kept)."""
        self._ctx.nfe = 0
        self._ctx.forget_outside(0, -1)
        run = start_on(self._ctx, self.method, window, self._direction, stop, metadata)
        run.private = True  # the steps' entries stay inside the scheduler: a step may update them in place
        return run

    def _grid_index(self, timestep: Any) -> int:
        if self.grid is None:
            raise RuntimeError("call set_timesteps(num_inference_steps) before step()")
        t = _flow_timestep(timestep)
        if t not in self._index:
            raise ValueError(f"timestep {t:g} is not on this scheduler's grid of {self.num_inference_steps} steps")
        return self._index[t]

    def _eps(self, model_output: torch.Tensor, sample: torch.Tensor, m: int) -> torch.Tensor:
        """The field of a flow grid is the velocity itself (cast to the state's dtype)."""
        out = model_output.to(sample.dtype)
        if out.shape != sample.shape:
            raise ValueError(f"model_output has shape {tuple(out.shape)}, the sample {tuple(sample.shape)}")
        return out

    def _pred_original(self, entry: Any, sample: torch.Tensor, v: torch.Tensor, i: int) -> torch.Tensor:
        """x0 = x_t - t v."""
        return torch.sub(sample, v, alpha=float(self.grid.sigma[i]))

    # diffusers' FlowMatchEulerDiscreteScheduler API that the pipelines call
    @property
    def step_index(self) -> "int | None":
        return None

    @property
    def begin_index(self) -> "int | None":
        return self._begin_index

    def set_begin_index(self, begin_index: int = 0) -> None:
        self._begin_index = begin_index

    def scale_noise(self, sample: torch.Tensor, timestep: Any, noise: torch.Tensor) -> torch.Tensor:
        """The flow path x_t = t noise + (1 - t) x0 at the grid's t for ``timestep`` (img2img)."""
        ts = timestep.reshape(-1) if isinstance(timestep, torch.Tensor) else torch.tensor([timestep])
        t = torch.tensor([float(self.grid.sigma[self._grid_index(v)]) for v in ts], dtype=sample.dtype,
                         device=sample.device).reshape((-1,) + (1,) * (sample.ndim - 1))
        return t * noise + (1.0 - t) * sample

    def add_noise(self, original_samples: torch.Tensor, noise: torch.Tensor, timesteps: torch.Tensor) -> torch.Tensor:
        return self.scale_noise(original_samples, timesteps, noise)

    def _step_output(self, out: Any, return_dict: bool) -> Any:
        prev = out.prev_sample if hasattr(out, "prev_sample") else out[0]
        return FlowMatchEulerDiscreteSchedulerOutput(prev_sample=prev) if return_dict else (prev,)


class FlowBELMScheduler(_FlowGridMixin, BELMScheduler):
    """O-BELM / BDIA / Euler sampling of a flow-matching model as a diffusers scheduler.

    Config: ``FlowMatchEulerDiscreteScheduler``'s keys plus ``method`` ('obelm' | 'bdia' | 'ddim' |
    'belm' 2-step; 'ddim' is Euler, equal to diffusers' scheduler), ``gamma`` (BDIA), ``mode`` and
    ``mode_options`` as for :class:`~.schedulers.BELMScheduler`, ``blend`` the coordinates' blend
    (:func:`linmultistep.paths.flow_grid`; 0 = (x, t)). ``set_timesteps`` takes the
    pipelines' ``sigmas`` and ``mu``.
    """

    @register_to_config
    def __init__(self, num_train_timesteps: int = 1000, shift: float = 1.0, use_dynamic_shifting: bool = False,
                 base_shift: float = 0.5, max_shift: float = 1.15, base_image_seq_len: int = 256,
                 max_image_seq_len: int = 4096, invert_sigmas: bool = False, shift_terminal: "float | None" = None,
                 use_karras_sigmas: bool = False, use_exponential_sigmas: bool = False, use_beta_sigmas: bool = False,
                 time_shift_type: str = "exponential", stochastic_sampling: bool = False, method: str = "obelm",
                 gamma: float = 1.0, mode: "str | None" = None, mode_options: "dict | None" = None,
                 blend: float = FLOW_BLEND) -> None:
        self._setup()

    def set_timesteps(self, num_inference_steps: "int | None" = None, device: Any = None, sigmas: Any = None,
                      mu: "float | None" = None, timesteps: Any = None) -> None:
        """Timesteps t_N > ... > t_1 (float32, as diffusers'); the model is evaluated at each once."""
        grid = self._make_flow_grid(num_inference_steps, sigmas, mu, timesteps)
        self.timesteps = torch.from_numpy(grid.timesteps[1:][::-1].astype(np.float32)).to(device)
        self._pending = getattr(self, "_pending", None)

    def step(self, model_output: torch.Tensor, timestep: Any, sample: torch.Tensor, *args: Any,
             return_dict: bool = True, **kwargs: Any) -> Any:
        """x_{i-1} from x_i = ``sample`` and the velocity at t_i: one core step of the kept run.
        Returns diffusers' ``FlowMatchEulerDiscreteSchedulerOutput`` (or the tuple (prev_sample,))."""
        if kwargs.get("per_token_timesteps") is not None:
            raise ValueError("per-token timesteps are not supported (each token would follow its own ODE)")
        if kwargs.get("s_churn"):
            raise ValueError("s_churn > 0 adds noise; this scheduler is deterministic")
        i = self._grid_index(timestep)
        pending, self._pending = getattr(self, "_pending", None), None
        if pending is not None:  # continue an inverted latent (BELMScheduler.load_state)
            pending.check_compatible(self.method, self.grid.fingerprint, self.grid.N)
            if not (i == pending.hi and _same(sample, pending.x)):
                raise LatentMismatchError(
                    f"load_state() was given a latent whose run starts at grid index {pending.hi} from its x_N, but "
                    f"the first step got timestep {self.grid.timestep(i):g} and a different sample: pass "
                    "latents=state.x to the pipeline (and the latent's number of steps), or load no state")
            self.run = self._start(dict(pending.window), 0, pending.metadata)
            return self._step_output((self.run.window[i - 1].x,), return_dict)
        v = self._eps(model_output, sample, i)
        run = self.run
        if run is None or run.done or run.next_index != i - 1 or i not in run.window \
                or not _same(sample, run.window[i].x):
            run = self.run = self._start({i: sample}, 0)  # a new run here (the method's starter)
        self._output.give(i, v)
        with torch.no_grad():
            core_step(run)
        if run.done:
            self._ctx.check()
        return self._step_output((run.window[i - 1].x,), return_dict)


class FlowBELMInverseScheduler(_FlowGridMixin, BELMInverseScheduler):
    """Exact inversion of a flow-matching model, one core step per call (see
    :class:`~.schedulers.BELMInverseScheduler`): ``timesteps`` lists where the caller evaluates the
    model on its current latent (point 1 for the first, approximate step; point n-1 for every exact
    step n after it); :attr:`state` is the latent (x_N, x_{N-1}) for :meth:`FlowBELMScheduler.load_state`.

    Of :class:`~.schedulers.BELMInverseScheduler` it uses the public API only: the documented hook
    :meth:`~.schedulers.BELMInverseScheduler.step_model_index` (which model output step n consumes), and it
    overrides the public ``state``, ``fixed_point_data`` and ``step_count`` on its own core run, context
    and grid (:class:`_FlowGridMixin`: ``run``, ``_ctx``, ``_start``), so a change of the DDPM inverse
    scheduler's internal step path cannot change it."""

    @register_to_config
    def __init__(self, num_train_timesteps: int = 1000, shift: float = 1.0, use_dynamic_shifting: bool = False,
                 base_shift: float = 0.5, max_shift: float = 1.15, base_image_seq_len: int = 256,
                 max_image_seq_len: int = 4096, invert_sigmas: bool = False, shift_terminal: "float | None" = None,
                 use_karras_sigmas: bool = False, use_exponential_sigmas: bool = False, use_beta_sigmas: bool = False,
                 time_shift_type: str = "exponential", stochastic_sampling: bool = False, method: str = "obelm",
                 gamma: float = 1.0, mode: "str | None" = None, mode_options: "dict | None" = None,
                 blend: float = FLOW_BLEND) -> None:
        self._setup()

    def fixed_point_data(self, x0: torch.Tensor) -> torch.Tensor:
        """x0 as the configured mode holds it at the data end (mode 'bits': rounded onto the fixed-point
        grid; otherwise x0 itself). Needs set_timesteps first."""
        if self.grid is None:
            raise RuntimeError("call set_timesteps(num_inference_steps) before fixed_point_data()")
        ctx = StepContext(self.grid.h, self.grid.alpha, self._output, _BACKEND, check_finite=False)
        return start_on(ctx, self.method, {0: x0}, "backward", self.grid.N).window[0].x

    @property
    def state(self) -> State:
        """The core latent of the inversion: after the last step, the window (x_N, x_{N-1}) with the
        run's records; before it only in mode 'recurrence' (its points are complete after each step)."""
        if self.run is None or self.run.count == 0:
            raise RuntimeError("no inversion step has been taken")
        if not self.run.done and self.method.mode != "recurrence":
            raise RuntimeError(
                f"the inversion is at step {self.run.count} of {self.grid.N}: in mode {self.method.mode!r} its newest "
                "point is complete only with the next model output; take every step (or use linmultistep.invert "
                "with stop=...) for a partial latent")
        return State(dict(self.run.window), self.method.spec, self.grid.fingerprint, self.method.mode,
                     self._ctx.nfe, records(self.run))

    @property
    def step_count(self) -> int:
        """Calls of ``step`` since ``set_timesteps`` (the core run's own count: this scheduler keeps the
        'lagged' timestep convention, in which step n reads the model output at point n - 1)."""
        return 0 if self.run is None else self.run.count

    def set_timesteps(self, num_inference_steps: "int | None" = None, device: Any = None, sigmas: Any = None,
                      mu: "float | None" = None, timesteps: Any = None) -> None:
        grid = self._make_flow_grid(num_inference_steps, sigmas, mu, timesteps)
        self._model_indices = [self.step_model_index(n) for n in range(1, grid.N + 1)]
        ts = np.array([grid.timesteps[m] for m in self._model_indices]).astype(np.float32)
        self.timesteps = torch.from_numpy(ts).to(device)

    def step(self, model_output: torch.Tensor, timestep: Any, sample: torch.Tensor, return_dict: bool = True,
             **kwargs: Any) -> Any:
        """x_n from x_{n-1} = ``sample`` and the velocity at ``timesteps[n-1]``; n counts the calls."""
        if self.grid is None:
            raise RuntimeError("call set_timesteps(num_inference_steps) before step()")
        n = self.step_count + 1
        if n > self.grid.N:
            raise ValueError(f"all {self.grid.N} inversion steps are done; call set_timesteps again")
        model_index = self._model_indices[n - 1]
        want = float(self.grid.timesteps[model_index])
        if _flow_timestep(timestep) != want:
            raise ValueError(f"inversion step {n} needs the model output at timestep {want:g}, got "
                             f"{_flow_timestep(timestep):g} (iterate over scheduler.timesteps)")
        v = self._eps(model_output, sample, model_index)
        if n == 1:
            self.run = self._start({0: sample}, self.grid.N)
        elif not _same(sample, self.previous_sample):
            raise ValueError(f"inversion step {n} got a sample that is not the x_{n - 1} this scheduler returned; an "
                             "exact inversion continues only its own output")
        self._output.give(model_index, v)
        with torch.no_grad():
            info = core_step(self.run)
        if self.run.done:
            self._ctx.check()
        return self._step_output((info.entry.x,), return_dict)
