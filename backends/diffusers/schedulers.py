"""diffusers-native schedulers running the core's BELM steps.

``pipe.scheduler = BELMScheduler.from_config(pipe.scheduler.config)`` turns any standard
pipeline's denoising loop into O-BELM (or BDIA / DDIM) sampling. The step is the core's own
:meth:`LinearMultistep.forward` on the grid of :func:`grid_from_config`, so the scheduler agrees
with :func:`linmultistep.sample` to the last bit for equal model outputs. The multistep state is
explicit: ``previous_sample`` / ``previous_index`` hold x_{i+1} between calls; the first step
(or any step not preceded by its neighbour, e.g. img2img starting mid-way) is a DDIM step, as
in the core. Timesteps are read from the grid's timestep array (never t - T//N).

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

from linmultistep import Grid, LinearMultistep, MethodError, State, get_method
from linmultistep.integrator import StepContext

from ..torch import TorchBackend
from .adapters import to_epsilon
from .grid import alphas_cumprod_from_config, grid_from_config

__all__ = ["BELMScheduler", "BELMInverseScheduler"]

_BACKEND = TorchBackend()


def _scheduler_method(method: str, gamma: float) -> LinearMultistep:
    m = get_method(method, gamma=gamma) if method == "bdia" else get_method(method)
    if not isinstance(m, LinearMultistep) or m.k > 2:
        raise MethodError(f"{method!r} is not a single-state linear multistep method; a scheduler supports "
                          "'obelm', 'bdia', 'ddim' and 2-step 'belm' (EDICT needs coupled states: use invert/reconstruct)")
    return m


class _GridSchedulerBase(SchedulerMixin, ConfigMixin):
    """Shared config, grid and noise handling."""

    _compatibles = [e.name for e in KarrasDiffusionSchedulers]
    order = 1
    init_noise_sigma = 1.0

    def _setup(self) -> None:
        self.method = _scheduler_method(self.config.method, self.config.gamma)
        self._alphas_cumprod = alphas_cumprod_from_config(self.config)
        self.alphas_cumprod = torch.from_numpy(self._alphas_cumprod)
        self.num_inference_steps: int | None = None
        self.grid: Grid | None = None
        self.timesteps = torch.from_numpy(np.arange(0, self.config.num_train_timesteps)[::-1].copy())
        self.previous_sample: torch.Tensor | None = None
        self.previous_index: int | None = None

    def _make_grid(self, num_inference_steps: int) -> Grid:
        self.num_inference_steps = int(num_inference_steps)
        self.grid = grid_from_config(self.config, self.num_inference_steps)
        self._index = {int(t): i for i, t in enumerate(self.grid.timesteps) if np.isfinite(t)}
        self.previous_sample, self.previous_index = None, None
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
    ``method`` ('obelm' | 'bdia' | 'ddim' | 'belm') and ``gamma`` (BDIA). Other keys of a
    DDIM-like config are ignored.
    """

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
    ) -> None:
        self._setup()
        self._pending: State | None = None

    def set_timesteps(self, num_inference_steps: int, device: "str | torch.device | None" = None) -> None:
        """Timesteps t_N > ... > t_1 of the grid (the model is evaluated at each once)."""
        grid = self._make_grid(num_inference_steps)
        ts = grid.timesteps[1:][::-1].astype(np.int64)
        self.timesteps = torch.from_numpy(ts.copy()).to(device)

    def load_state(self, state: State) -> None:
        """Continue an inverted latent exactly inside a standard pipeline: pass
        ``latents=state.x`` to the pipeline with the same number of steps. The first step (at the
        window's top index, on exactly that sample) returns the stored x_{N-1} instead of a DDIM
        step; the state's method and grid are checked then (LatentMismatchError)."""
        if not isinstance(state, State):
            raise TypeError(f"expected a linmultistep State, got {type(state).__name__}")
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
        """x_{i-1} from x_i = ``sample`` (model output at t_i) and the stored x_{i+1}."""
        if eta:
            raise ValueError("BELMScheduler is deterministic (eta must be 0)")
        i = self._grid_index(timestep)
        if self._pending is not None:
            self._pending.check_compatible(self.method, self.grid.fingerprint)
        if self._pending is not None and i == self._pending.hi and i - 1 in self._pending.window:
            if torch.equal(sample, self._pending.window[i]):
                prev = self._pending.window[i - 1]
                self._pending = None
                self.previous_sample, self.previous_index = sample, i
                return (prev, None) if not return_dict else DDIMSchedulerOutput(prev_sample=prev, pred_original_sample=None)
            self._pending = None
        eps = self._eps(model_output, sample, i)
        window = {i: sample}
        if self.previous_index == i + 1 and self.previous_sample is not None:
            window[i + 1] = self.previous_sample
        step_method = next(m for m in self.method.chain() if m.k <= len(window))

        def field(x: torch.Tensor, m: int) -> torch.Tensor:
            if m != i:
                raise MethodError(f"{step_method.spec} asked for a model output at grid index {m}, have {i}")
            return eps

        with torch.no_grad():
            prev = step_method.forward(self._context(field), i - 1, window)
        self.previous_sample, self.previous_index = sample, i
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
    O-BELM. :attr:`state` is the core latent (x_N, x_{N-1}) after the last step, for exact
    reconstruction with :func:`..pipeline.reconstruct` or :meth:`BELMScheduler.load_state`.
    """

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
    ) -> None:
        self._setup()
        self.step_count = 0

    def _plan(self, n: int) -> tuple[LinearMultistep, int]:
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

    @property
    def state(self) -> State:
        """The core latent of the inversion so far (window of the last k points)."""
        if self.previous_sample is None:
            raise RuntimeError("no inversion step has been taken")
        window = dict(self._window)
        return State(window, self.method.spec, self.grid.fingerprint, self.method.mode, self.step_count)

    def step(self, model_output: torch.Tensor, timestep: Any, sample: torch.Tensor, return_dict: bool = True,
             **kwargs: Any) -> "DDIMSchedulerOutput | tuple":
        """x_n from x_{n-1} = ``sample`` (and the stored x_{n-2}); n counts the calls."""
        if self.grid is None:
            raise RuntimeError("call set_timesteps(num_inference_steps) before step()")
        n = self.step_count + 1
        if n > self.grid.N:
            raise ValueError(f"all {self.grid.N} inversion steps are done; call set_timesteps again")
        m, model_index = self._plan(n)
        t = int(timestep.item() if isinstance(timestep, torch.Tensor) else timestep)
        if t != int(self.grid.timesteps[model_index]):
            raise ValueError(f"inversion step {n} needs the model output at timestep "
                             f"{int(self.grid.timesteps[model_index])}, got {t} (iterate over scheduler.timesteps)")
        eps = self._eps(model_output, sample, model_index)
        window = {n - 1: sample}
        if n >= 2 and self.previous_index == n - 2:
            window[n - 2] = self.previous_sample
        with torch.no_grad():
            new = m.backward(self._context(lambda x, j: eps), n, window)
        self.previous_sample, self.previous_index = sample, n - 1
        self._window = {n - 1: sample, n: new} if self.method.k == 2 else {n: new}
        self.step_count = n
        if not return_dict:
            return (new, None)
        return DDIMSchedulerOutput(prev_sample=new, pred_original_sample=None)
