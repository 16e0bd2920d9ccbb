"""diffusers-native schedulers running the core's BELM steps, with DDIM's contract.

``pipe.scheduler = BELMScheduler.from_config(pipe.scheduler.config)`` turns any standard
pipeline's denoising loop into O-BELM (or BDIA / DDIM) sampling, and ``BELMInverseScheduler``
replaces ``DDIMInverseScheduler`` in an inversion loop. Both take every ``DDIMScheduler`` /
``DDIMInverseScheduler`` config key and argument; what stays exact is supported, what cannot be
inverted exactly (``clip_sample``, ``thresholding``, ``eta > 0``) is refused with the reason, or
allowed with ``method='ddim'``, where the step then is diffusers' own (docs/diffusers.md, "Scheduler
swap", lists every key).

Each exact step is one call of the core's :func:`linmultistep.stepping.step` on a
:class:`~linmultistep.stepping.Run` the scheduler keeps between calls, on the grid of
:func:`grid_from_config`; so for equal model outputs the scheduler agrees with
:func:`linmultistep.sample` to the last bit in every mode ('recurrence', 'stable', 'bits'; config
``mode``, None = :func:`linmultistep.default_mode`, and ``mode_options`` such as
``{"eps_bound": 256}``). The run's window entries are the multistep state; ``prev_sample =
entry.x``. A 2-step run continues only from its own output in the order of ``timesteps``: an
off-grid timestep, a step out of order or a changed sample is refused with what was expected
(``set_timesteps`` starts a new run, at any timestep, e.g. img2img). ``method='ddim'`` is
memoryless like ``DDIMScheduler``: any sample, any order.
"""

from __future__ import annotations

import inspect
import math
import warnings
from typing import Any

import numpy as np
import torch
from diffusers.configuration_utils import ConfigMixin, register_to_config
from diffusers.schedulers.scheduling_ddim import DDIMScheduler, DDIMSchedulerOutput
from diffusers.schedulers.scheduling_ddim_inverse import DDIMInverseScheduler
from diffusers.schedulers.scheduling_utils import KarrasDiffusionSchedulers, SchedulerMixin

from linmultistep import (
    Grid, LatentMismatchError, LinearMultistep, Method, MethodError, Point, State, get_method, resolve_mode,
)
from linmultistep.caller import outside_stacklevel
from linmultistep.context import StepContext
from linmultistep.stepping import Run, finish, records, start_on, step

from ..torch import TorchBackend
from .adapters import to_epsilon
from .grid import betas_from_config, grid_from_config, grid_points

__all__ = ["BELMScheduler", "BELMInverseScheduler", "PREDICTION_TYPES", "TIMESTEP_SPACINGS", "TIMESTEP_CONVENTIONS"]

_BACKEND = TorchBackend()
PREDICTION_TYPES = ("epsilon", "v_prediction", "sample")
TIMESTEP_SPACINGS = ("leading", "trailing", "linspace")
#: BELMInverseScheduler: 'ddim' = DDIMInverseScheduler's timesteps; 'lagged' = the model at each step's own lower point
TIMESTEP_CONVENTIONS = ("ddim", "lagged")

# why a config key or argument has no exact inverse (the refusals quote these)
_NOT_INVERTIBLE = {
    "clip_sample": "clip_sample=True clamps the predicted x0 to [-clip_sample_range, clip_sample_range] at every step, "
                   "which maps many samples to one, so no step can be undone exactly",
    "thresholding": "thresholding=True rescales the predicted x0 by a per-sample quantile at every step (dynamic "
                    "thresholding), which maps many samples to one, so no step can be undone exactly",
    "eta": "eta > 0 adds fresh random noise at every step (DDPM-like sampling), so a step cannot be undone exactly",
}


def _refusal(key: str, method: str, fix: str) -> str:
    return (f"{_NOT_INVERTIBLE[key]}; method {method!r} exists to be inverted exactly. {fix}, or use method='ddim', "
            f"whose step with {key} is diffusers' DDIMScheduler step itself")


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
    value = timestep.item() if isinstance(timestep, torch.Tensor) and timestep.numel() == 1 else timestep
    if (isinstance(value, bool) or not isinstance(value, (int, float, np.integer, np.floating))
            or not np.isfinite(value) or value != int(value)):
        raise ValueError(f"timestep must be one of scheduler.timesteps (an integer), got {value!r}")
    return int(value)


_GRIDS: "dict[tuple[tuple, int], Grid]" = {}


def _cached_grid(config: Any, num_steps: Any) -> Grid:
    """grid_from_config, kept for the last few (config, num_steps): a pipeline makes a scheduler and sets
    its timesteps for every call, and a grid (read-only arrays) is a pure function of the two. The key is
    the whole config, value for value (lists of scalars as tuples), so any key the grid may read is part of
    it; a config holding anything else (an array of trained_betas, a mode_options dict) is not cached."""
    items = [(k, tuple(v) if type(v) in (list, tuple) else v) for k, v in sorted(config.items())]
    if type(num_steps) is not int or not all(_plain(v) for _, v in items):
        return grid_from_config(config, num_steps)
    key = (tuple(items), num_steps)
    grid = _GRIDS.get(key)
    if grid is None:
        grid = grid_from_config(config, num_steps)
        if len(_GRIDS) >= 16:
            _GRIDS.pop(next(iter(_GRIDS)))
        _GRIDS[key] = grid
    return grid


def _plain(v: Any) -> bool:
    """A config value that is its own exact key: None, a bool, int, float or str, or a tuple of them."""
    if type(v) is tuple:
        return all(_plain(e) for e in v)
    return v is None or type(v) in (bool, int, float, str)


def _same(a: Any, b: Any) -> bool:
    if a is b:  # a pipeline passes prev_sample back as it is
        return isinstance(a, torch.Tensor)
    return isinstance(a, torch.Tensor) and isinstance(b, torch.Tensor) and a.shape == b.shape and torch.equal(a, b)


def _listed(ts: "list[int]") -> str:
    return str(ts) if len(ts) <= 8 else f"[{ts[0]}, {ts[1]}, {ts[2]}, ..., {ts[-2]}, {ts[-1]}]"


def _output(prev: torch.Tensor, x0: "torch.Tensor | None", return_dict: bool) -> "DDIMSchedulerOutput | tuple":
    return DDIMSchedulerOutput(prev_sample=prev, pred_original_sample=x0) if return_dict else (prev, x0)


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
    """Shared config checks, schedule, grid, the kept core run, and noise handling."""

    _compatibles = [e.name for e in KarrasDiffusionSchedulers]
    order = 1
    _direction = "forward"
    _reference_class: Any = DDIMScheduler

    def _setup(self) -> None:
        cfg = self.config
        if cfg.prediction_type not in PREDICTION_TYPES:
            raise ValueError(f"prediction_type {cfg.prediction_type!r} is not one of {PREDICTION_TYPES}")
        if cfg.timestep_spacing not in TIMESTEP_SPACINGS:
            raise ValueError(f"timestep_spacing {cfg.timestep_spacing!r} is not one of {TIMESTEP_SPACINGS}")
        self.method = _scheduler_method(cfg.method, cfg.gamma, cfg.mode, cfg.mode_options)
        self._prediction_type = cfg.prediction_type
        if self.memoryless:
            self._uses_reference = any(cfg.get(k) for k in ("clip_sample", "thresholding"))
        else:
            for key in ("clip_sample", "thresholding"):
                if cfg.get(key):
                    raise ValueError(_refusal(key, cfg.method, f"Pass {key}=False (e.g. "
                                     f"{type(self).__name__}.from_config(config, {key}=False); latent-diffusion "
                                     "configs such as Stable Diffusion's have it off)"))
            self._uses_reference = False
        betas = betas_from_config(cfg)  # diffusers' formulas in float64; unknown schedules are refused here
        self.betas = torch.from_numpy(betas)
        self.alphas = 1.0 - self.betas
        self.alphas_cumprod = torch.cumprod(self.alphas, dim=0)
        self.init_noise_sigma = 1.0
        self.num_inference_steps: int | None = None
        self.grid: Grid | None = None
        self._ctx: StepContext | None = None
        self._output = _ModelOutput(self.method)
        self._reference: Any = None  # diffusers' DDIM scheduler, for method='ddim' with non-invertible features
        self._eta_reference: Any = None  # the same for single steps with eta > 0 (method 'ddim')
        self.run: Run | None = None  # the core run the calls advance
        self._calls: list[int] = []  # grid index of each call, in order
        self._index: dict[int, int] = {}

    # --- properties ---------------------------------------------------------------------
    @property
    def memoryless(self) -> bool:
        """True for method 'ddim': each step depends on its own sample only (any order, any sample)."""
        return self.method.k == 1

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

    # --- grid -----------------------------------------------------------------------------
    def _reference_scheduler(self, num_inference_steps: int, device: Any) -> Any:
        cls = self._reference_class
        keys = set(inspect.signature(cls.__init__).parameters) - {"self", "kwargs"}
        ref = cls(**{k: v for k, v in self.config.items() if k in keys})
        ref.set_timesteps(num_inference_steps, device=device)
        return ref

    def _make_grid(self, num_inference_steps: int, device: Any) -> "Grid | None":
        """The core grid (None when method 'ddim' runs diffusers' own step instead: clip_sample,
        thresholding, or a zero-SNR point the core cannot hold)."""
        self.run, self._calls, self._reference, self._eta_reference, self.grid = None, [], None, None, None
        self._host_timesteps = None  # set with self.timesteps by _set_calls
        if self.memoryless and not self._uses_reference:
            ts, acs = grid_points(self.config, num_inference_steps)
            if (acs == 0).any() and self.config.rescale_betas_zero_snr:
                self._uses_reference = True
        if self.memoryless and self._uses_reference:
            self._reference = self._reference_scheduler(num_inference_steps, device)
            self.num_inference_steps = int(num_inference_steps)
            return None
        grid = self.grid = _cached_grid(self.config, num_inference_steps)  # refuses 10.7, "10", 10**9
        self.num_inference_steps = int(num_inference_steps)
        # one context per grid: the steps' float64 coefficient plans are computed once and reused
        self._ctx = StepContext(grid.h, grid.alpha, self._output, _BACKEND, check_finite=True,
                                describe=lambda i: "clean point" if math.isnan(grid.timestep(i))
                                else f"timestep {grid.timestep(i):g}")
        return grid

    def _zero_step(self) -> bool:
        """diffusers schedules timestep 0 itself (set_alpha_to_one=False, 'linspace' or 'leading' without
        offset) and then steps from alphas_cumprod[0] to alphas_cumprod[0]: a step of zero length, which
        the grid has no room for (index 0 is that timestep); the scheduler takes it as the identity."""
        return self.grid is not None and self.grid.N == self.num_inference_steps - 1

    def _set_calls(self, indices: "list[int]", device: Any) -> None:
        ts = [int(self.grid.timesteps[i]) for i in indices]
        self._call_indices = indices
        self._index = dict(zip(ts, indices))
        self.timesteps = torch.tensor(ts, dtype=torch.int64, device=device)
        self._host_timesteps = ts  # self.timesteps on the host, for _listed_timestep

    def _start(self, window: "dict[int, Any]", stop: int, metadata: "dict | None" = None) -> Run:
        """A new core run from ``window`` on the scheduler's context (its cached plans are kept)."""
        self._ctx.nfe = 0
        self._ctx.forget_outside(0, -1)
        run = start_on(self._ctx, self.method, window, self._direction, stop, metadata)
        run.private = True  # the steps' entries stay inside the scheduler: a step may update them in place
        return run

    def _require_timesteps(self, what: str = "step()") -> None:
        if self.num_inference_steps is None:
            raise ValueError(f"call set_timesteps(num_inference_steps) before {what}")

    def _grid_index(self, timestep: Any) -> int:
        self._require_timesteps()
        t = self._timestep_int(timestep)
        if t not in self._index:
            raise ValueError(
                f"timestep {t} is not on this scheduler's grid of {self.num_inference_steps} steps: "
                f"scheduler.timesteps = {_listed([int(s) for s in self.timesteps])}; step() takes those timesteps, "
                "in that order (for t in scheduler.timesteps: ...)")
        return self._index[t]

    def _timestep_int(self, timestep: Any) -> int:
        """The integer timestep a pipeline passed (an element of ``timesteps`` without reading the device)."""
        t = self._listed_timestep(timestep)
        return _timestep_value(timestep) if t is None else t

    def _listed_timestep(self, timestep: Any) -> "int | None":
        """The value of an element of ``self.timesteps``, read from the host copy by its place in the tensor
        (a pipeline's ``for t in scheduler.timesteps`` yields such elements), so that a step on a GPU does not
        wait for the device to read it; None for anything else (then read as given). The place is the
        element's address: a live tensor whose data lies inside ``timesteps``' memory is a view of it."""
        ts, host = self.timesteps, getattr(self, "_host_timesteps", None)
        if (host is None or type(timestep) is not torch.Tensor or not isinstance(ts, torch.Tensor)
                or timestep.dim() != 0 or timestep.dtype != ts.dtype or timestep.device != ts.device
                or ts.dim() != 1 or ts.numel() != len(host)):
            return None
        k, r = divmod(timestep.data_ptr() - ts.data_ptr(), ts.element_size() * (ts.stride(0) or 1))
        return host[k] if r == 0 and 0 <= k < len(host) else None

    def _timestep(self, i: int) -> int:
        return int(self.grid.timesteps[i])

    def _eps(self, model_output: torch.Tensor, sample: torch.Tensor, m: int) -> torch.Tensor:
        """The noise prediction of ``model_output`` for ``sample`` taken at grid index m's noise level."""
        if not isinstance(model_output, torch.Tensor) or not isinstance(sample, torch.Tensor):
            raise TypeError(f"model_output and sample must be torch tensors, got {type(model_output).__name__} and "
                            f"{type(sample).__name__}")
        out = model_output if model_output.dtype == sample.dtype else model_output.to(sample.dtype)
        if out.shape != sample.shape:
            raise ValueError(f"model_output has shape {tuple(out.shape)}, the sample {tuple(sample.shape)}")
        if self._prediction_type == "epsilon":  # (the config's, read once: a config lookup costs a microsecond)
            return out
        return to_epsilon(out, sample, float(self.grid.alpha[m]), float(self.grid.sigma[m]), self._prediction_type)

    def _pred_original(self, sample: torch.Tensor, eps: torch.Tensor, i: int, entry: Any = None) -> torch.Tensor:
        """x0 = (x_i - sigma_i eps) / alpha_i (float64 coefficients); in one pass, x0 = xbar_i - sigmabar_i eps,
        when the run's entry at i holds xbar_i = x_i / alpha_i (mode 'stable': the same value, rounded once
        instead of twice)."""
        xbar = getattr(entry, "xbar", None)
        if isinstance(xbar, torch.Tensor) and xbar.shape == eps.shape and xbar.dtype == eps.dtype:
            return torch.add(xbar, eps, alpha=-float(self.grid.sigmabar[i]))
        return torch.sub(sample, eps, alpha=float(self.grid.sigma[i])).div_(float(self.grid.alpha[i]))

    # --- diffusers' helpers ---------------------------------------------------------------
    def scale_model_input(self, sample: torch.Tensor, timestep: Any = None) -> torch.Tensor:
        """Identity: these schedulers work on x_t = alpha x0 + sigma eps directly."""
        return sample

    def add_noise(self, original_samples: torch.Tensor, noise: torch.Tensor, timesteps: torch.Tensor) -> torch.Tensor:
        """x_t = sqrt(alphas_cumprod[t]) x0 + sqrt(1 - alphas_cumprod[t]) noise (float64 coefficients)."""
        dev = original_samples.device
        t = torch.as_tensor(timesteps, device=dev).long().flatten()
        ac = self.alphas_cumprod.to(dev)[t]
        shape = (-1,) + (1,) * (original_samples.ndim - 1)
        a = ac.sqrt().to(original_samples.dtype).reshape(shape)
        s = (1 - ac).sqrt().to(original_samples.dtype).reshape(shape)
        return a * original_samples + s * noise

    def __len__(self) -> int:
        return self.config.num_train_timesteps


class BELMScheduler(_GridSchedulerBase):
    """O-BELM / BDIA / DDIM sampling as a diffusers scheduler (see module docstring).

    Config: every ``DDIMScheduler`` key (``num_train_timesteps``, ``beta_*``, ``trained_betas``,
    ``set_alpha_to_one``, ``steps_offset``, ``prediction_type``, ``timestep_spacing``,
    ``rescale_betas_zero_snr``, and ``clip_sample``, ``clip_sample_range``, ``thresholding``,
    ``dynamic_thresholding_ratio``, ``sample_max_value``, which only method 'ddim' accepts on:
    its step then is ``DDIMScheduler.step``) plus ``method`` ('obelm' | 'bdia' | 'ddim' | 'belm'),
    ``gamma`` (BDIA), ``mode`` (None = the core's default: 'stable' for O-BELM and BDIA(gamma=1),
    'recurrence' otherwise; or 'recurrence', 'stable', 'bits', or a latent's recorded mode such as
    'bits(data_bound=64.0, eps_bound=256.0)') and ``mode_options`` (e.g. ``{"eps_bound": 256}``).
    ``clip_sample`` defaults to False (DDIMScheduler: True), so that the default is exact.
    """

    _direction = "forward"
    _reference_class = DDIMScheduler

    @register_to_config
    def __init__(
        self,
        num_train_timesteps: int = 1000,
        beta_start: float = 0.0001,
        beta_end: float = 0.02,
        beta_schedule: str = "linear",
        trained_betas: Any = None,
        clip_sample: bool = False,
        set_alpha_to_one: bool = True,
        steps_offset: int = 0,
        prediction_type: str = "epsilon",
        thresholding: bool = False,
        dynamic_thresholding_ratio: float = 0.995,
        clip_sample_range: float = 1.0,
        sample_max_value: float = 1.0,
        timestep_spacing: str = "leading",
        rescale_betas_zero_snr: bool = False,
        method: str = "obelm",
        gamma: float = 1.0,
        mode: "str | None" = None,
        mode_options: "dict | None" = None,
    ) -> None:
        self._setup()
        self.final_alpha_cumprod = torch.tensor(1.0, dtype=torch.float64) if set_alpha_to_one else self.alphas_cumprod[0]
        self.timesteps = torch.from_numpy(np.arange(0, num_train_timesteps)[::-1].copy().astype(np.int64))
        self._pending: State | None = None

    def set_timesteps(self, num_inference_steps: int, device: "str | torch.device | None" = None) -> None:
        """Timesteps t_N > ... > t_1 of the grid (the model is evaluated at each once), equal to
        DDIMScheduler's; plus timestep 0 last when diffusers schedules it (its zero-length step)."""
        grid = self._make_grid(num_inference_steps, device)
        if grid is None:
            self.timesteps = self._reference.timesteps
            self._index = {int(t): -1 for t in self.timesteps}
            return
        self._set_calls(list(range(grid.N, 0, -1)) + ([0] if self._zero_step() else []), device)

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

    def _check_continues(self, i: int, sample: torch.Tensor) -> None:
        """A call inside a run: at the run's newest point, with the sample this scheduler returned."""
        run, prev_i = self.run, self._calls[-1]
        want = min(run.window)
        if i == want and want > run.stop and sample is run.window[i].x:
            return  # the usual call (not done: the run's next point is at or above its stop): nothing to word
        t = self._timestep(i)
        if run.done:
            raise ValueError(
                f"step() got timestep {t} after this run reached the data end at the previous step; iterate over "
                "scheduler.timesteps once per run (call set_timesteps again to start a new run)")
        want = min(run.window)
        if i != want:
            raise ValueError(
                f"step() got timestep {t}, but the run's next step is at timestep {self._timestep(want)} (the one "
                f"after {self._timestep(prev_i)} in scheduler.timesteps): a {self.method.spec} step continues "
                "the previous ones. Iterate over scheduler.timesteps in order; call set_timesteps again to start "
                "a new run at another timestep (e.g. img2img)")
        if not _same(sample, run.window[i].x):
            raise ValueError(
                f"step() at timestep {t} got a sample that is not the prev_sample this scheduler returned at "
                f"timestep {self._timestep(prev_i)}: {self.method.spec} continues from its own output (its state "
                f"also holds the point at timestep {self._timestep(i + 1)}), so a changed sample would silently "
                "give another method. Pass prev_sample back unchanged; to start afresh from a changed sample call "
                "set_timesteps again (method='ddim' is memoryless and takes any sample)")

    def _from_pending(self, i: int, sample: torch.Tensor) -> "torch.Tensor | None":
        """The first step after load_state: the latent's run (and its stored x_{i-1} when it has one)."""
        pending, self._pending = self._pending, None
        pending.check_compatible(self.method, self.grid.fingerprint, self.grid.N)
        if not (i == pending.hi and _same(sample, pending.x)):
            raise LatentMismatchError(
                f"load_state() was given a latent whose run starts at grid index {pending.hi} from its x_N, but the "
                f"first step got timestep {self._timestep(i)} and a different sample: pass "
                "latents=state.x to the pipeline (and the latent's number of steps), or load no state"
            )
        self.run = self._start(dict(pending.window), 0, pending.metadata)
        return self.run.window[i - 1].x if i - 1 in self.run.window else None

    def step(
        self,
        model_output: torch.Tensor,
        timestep: Any,
        sample: torch.Tensor,
        eta: float = 0.0,
        use_clipped_model_output: bool = False,
        generator: Any = None,
        variance_noise: "torch.Tensor | None" = None,
        return_dict: bool = True,
    ) -> "DDIMSchedulerOutput | tuple":
        """x at the next timestep of ``timesteps`` from ``sample`` at ``timestep`` (model output there):
        one core step of the kept run. ``eta`` > 0 (and with it ``variance_noise``, ``generator``) only
        with method 'ddim', whose step is then DDIMScheduler's; ``use_clipped_model_output`` changes
        nothing without clipping."""
        if not isinstance(eta, (int, float, np.integer, np.floating)) or isinstance(eta, bool) or not eta >= 0:
            raise ValueError(f"eta must be a number >= 0 (0 = deterministic DDIM), got {eta!r}")
        if self.memoryless and (self._reference is not None or eta > 0):
            self._grid_index(timestep)  # one of self.timesteps, or the off-grid error
            if self._pending is not None:
                self._pending = None
                raise LatentMismatchError(
                    "this step is DDIMScheduler's own (method 'ddim' with clip_sample, thresholding, eta > 0 or a "
                    "zero-SNR grid), which cannot continue a linmultistep latent: load it into a scheduler without "
                    "those, or sample it with linmultistep.backends.diffusers.reconstruct")
            ref = self._reference
            if ref is None:  # eta > 0 on a core grid: this one (memoryless) step is diffusers'
                if self._eta_reference is None:
                    self._eta_reference = self._reference_scheduler(self.num_inference_steps, sample.device)
                ref = self._eta_reference
            return ref.step(model_output, timestep, sample, eta=eta, use_clipped_model_output=use_clipped_model_output,
                            generator=generator, variance_noise=variance_noise, return_dict=return_dict)
        if eta > 0:
            raise ValueError(_refusal("eta", self.config.method, "Pass eta=0 (pipelines: eta=0.0, their default)"))
        i = self._grid_index(timestep)
        eps = self._eps(model_output, sample, i)
        if i == 0:  # diffusers' zero-length last step (alphas_cumprod[0] to itself): the identity
            if not self.memoryless and self.run is not None and not self.run.done:
                self._check_continues(0, sample)  # before the run's end: out of order
            self._calls.append(0)
            return _output(sample, self._pred_original(sample, eps, 0), return_dict)
        if self._pending is not None:
            prev = self._from_pending(i, sample)
            if prev is not None:  # the latent's stored x_{i-1}
                self._calls.append(i)
                return _output(prev, self._pred_original(sample, eps, i), return_dict)
            # a latent with one point (method 'ddim'): its run steps below
        elif self.memoryless:
            self.run = self._start({i: sample}, i - 1)
        elif not self._calls or i == self._call_indices[0]:
            self.run = self._start({i: sample}, 0)  # a new run: the first call after set_timesteps, or the noise end
        else:
            self._check_continues(i, sample)
        self._output.give(i, eps)
        run = self.run
        x0 = self._pred_original(sample, eps, i, run.window.get(i))  # before the step, which may reuse entry i
        if torch.is_grad_enabled():  # pipelines call step under no_grad already: no second switch per step
            with torch.no_grad():
                step(run)
        else:
            step(run)
        if run.done:
            finish(run)
        self._calls.append(i)
        return _output(run.window[i - 1].x, x0, return_dict)


class BELMInverseScheduler(_GridSchedulerBase):
    """Exact BELM inversion as a diffusers inverse scheduler (config: DDIMInverseScheduler's keys,
    ``clip_sample`` only with method 'ddim', plus ``method``, ``gamma``, ``mode``, ``mode_options``
    and ``timestep_convention``).

    ``timestep_convention='ddim'`` (default): ``timesteps`` are DDIMInverseScheduler's, t_1 < ... <
    t_N, so an inversion loop written for it runs unchanged, and exactly. Exactness needs the model
    at every point's own timestep, eps(x_n, t_n); the loop evaluates the model on what the previous
    call returned at the next timestep of the list, so the call at t_n returns x_{n+1} (one point
    ahead of DDIMInverseScheduler, whose x_n would meet t_{n+1}). The first call takes the data as
    x_1 as well as x_0 (the starting pair (x_0, x_1) = (x_0, x_0), so its model output is exactly
    eps(x_1, t_1)); the last call, at t_N, finds x_N done and returns it unchanged (its model output
    is not needed). Any starting pair gives an exact round trip: sampling from (x_N, x_{N-1})
    retraces every point down to x_0. In mode 'bits' the data must be on the fixed-point grid at
    t_1 (:meth:`fixed_point_data`).

    ``timestep_convention='lagged'``: timesteps [t_1, t_1, t_2, ..., t_{N-1}], the call at position
    n returns x_n (where DDIMInverseScheduler's n-th call returns its x_n): the first step is a
    DDIM-inversion step (the core's starter, :func:`linmultistep.invert` bit for bit), the later
    ones use the model at their own lower point. For loops that pair each output with its
    position (DiffEdit's per-step latents with ``inpaint_strength`` < 1).

    :attr:`state` is the core latent (x_N, x_{N-1}) once x_N is made, for exact reconstruction
    with :func:`..pipeline.reconstruct` or :meth:`BELMScheduler.load_state`. The scheduler cannot
    run the network twice, so mode 'bits' skips the core's determinism self-check of the first
    input (the per-step digests are recorded as usual).
    """

    _direction = "backward"
    _reference_class = DDIMInverseScheduler
    _compatibles: list = []  # as DDIMInverseScheduler's
    ignore_for_config = ["kwargs"]
    _deprecated_kwargs = ["set_alpha_to_zero"]

    @register_to_config
    def __init__(
        self,
        num_train_timesteps: int = 1000,
        beta_start: float = 0.0001,
        beta_end: float = 0.02,
        beta_schedule: str = "linear",
        trained_betas: Any = None,
        clip_sample: bool = False,
        set_alpha_to_one: bool = True,
        steps_offset: int = 0,
        prediction_type: str = "epsilon",
        clip_sample_range: float = 1.0,
        timestep_spacing: str = "leading",
        rescale_betas_zero_snr: bool = False,
        method: str = "obelm",
        gamma: float = 1.0,
        mode: "str | None" = None,
        mode_options: "dict | None" = None,
        timestep_convention: str = "ddim",
        **kwargs: Any,
    ) -> None:
        # DDIMInverseScheduler swallows any keyword; DDIMScheduler's thresholding keys are taken (a DDIM config
        # passed as keywords) and refused only where they would act, anything else is a typo
        unknown = set(kwargs) - {"set_alpha_to_zero", "thresholding", "dynamic_thresholding_ratio", "sample_max_value"}
        if unknown:
            raise TypeError(f"BELMInverseScheduler got unexpected keyword arguments {sorted(unknown)}")
        if kwargs.get("thresholding"):
            raise ValueError("thresholding=True: " + _NOT_INVERTIBLE["thresholding"].split("=True ", 1)[1] + "; "
                             "DDIMInverseScheduler has no thresholding (it ignores the key), and no inversion can "
                             "undo a thresholded sampling run: pass thresholding=False")
        if kwargs.get("set_alpha_to_zero") is not None:  # DDIMInverseScheduler's deprecated name, same meaning
            warnings.warn("set_alpha_to_zero is deprecated (as in DDIMInverseScheduler): use set_alpha_to_one",
                          FutureWarning, stacklevel=outside_stacklevel())
            set_alpha_to_one = bool(kwargs["set_alpha_to_zero"])
            self.register_to_config(set_alpha_to_one=set_alpha_to_one)
        if timestep_convention not in TIMESTEP_CONVENTIONS:
            raise ValueError(f"timestep_convention {timestep_convention!r} is not one of {TIMESTEP_CONVENTIONS}")
        self._setup()
        self.initial_alpha_cumprod = torch.tensor(1.0, dtype=torch.float64) if set_alpha_to_one else self.alphas_cumprod[0]
        self.timesteps = torch.from_numpy(np.arange(0, num_train_timesteps).copy().astype(np.int64))
        self._returned: torch.Tensor | None = None
        self._ddim_last: "tuple[int, torch.Tensor] | None" = None

    @property
    def step_count(self) -> int:
        """Calls of ``step`` since ``set_timesteps``."""
        return len(self._calls)

    def _lagged_model_index(self, n: int) -> int:
        """The grid index whose model output step n (producing point n from 0..n-1) consumes."""
        m = next(m for m in self.method.chain() if m.k <= n)
        return n - 1 if m.exact_backward(self._ctx, n) else n

    def step_model_index(self, n: int) -> int:
        """Public hook (used by subclasses such as the flow inverse scheduler, which keep their own run):
        the grid index whose model output inversion step n (producing point n from points 0..n-1)
        consumes -- n - 1 for an exact step of the method, n for an approximate one (the DDIM-inversion
        starter). Needs set_timesteps first."""
        return self._lagged_model_index(n)

    def set_timesteps(self, num_inference_steps: int, device: "str | torch.device | None" = None) -> None:
        """DDIMInverseScheduler's timesteps t_1 < ... < t_N (convention 'ddim', and method 'ddim'
        always), or [t_1, t_1, t_2, ..., t_{N-1}] (convention 'lagged'); timestep 0 first when
        diffusers schedules it (its zero-length first step, the identity)."""
        grid = self._make_grid(num_inference_steps, device)
        self._returned, self._ddim_last = None, None
        if grid is None:
            self.timesteps = self._reference.timesteps
            self._index = {int(t): -1 for t in self.timesteps}
            return
        zero = [0] if self._zero_step() else []
        if self.memoryless or self.config.timestep_convention == "ddim":
            self._set_calls(zero + list(range(1, grid.N + 1)), device)
        else:
            self._lagged = [self._lagged_model_index(n) for n in range(1, grid.N + 1)]
            self._set_calls(zero + self._lagged, device)
            self._index = {int(grid.timesteps[i]): i for i in zero + self._lagged}

    def fixed_point_data(self, x0: torch.Tensor) -> torch.Tensor:
        """x0 as the configured mode holds it at the point where the model first sees it (mode 'bits':
        rounded onto the fixed-point grid, at t_1 for convention 'ddim', at the data end for 'lagged';
        otherwise x0 itself). Needs set_timesteps first."""
        self._require_timesteps("fixed_point_data()")
        if self.grid is None or self.method.mode == "recurrence" or self.method.mode == "stable":
            return x0
        ctx = StepContext(self.grid.h, self.grid.alpha, self._output, _BACKEND, check_finite=False)
        if self.config.timestep_convention == "lagged":
            return start_on(ctx, self.method, {0: x0}, "backward", self.grid.N).window[0].x
        x = x0
        for _ in range(3):  # the rounding is idempotent once on the grid (one pass unless a value sits on a tie)
            y = start_on(ctx, self.method, {0: x, 1: x}, "backward", self.grid.N).window[1].x
            if torch.equal(y, x):
                break
            x = y
        return x

    @property
    def state(self) -> State:
        """The core latent of the inversion once x_N is made: the window (x_N, x_{N-1}) with the run's
        records (method 'ddim': x_N). Before that only in mode 'recurrence' (a partial latent), whose
        points are complete after each step."""
        if self.memoryless:
            if self._reference is not None:
                raise RuntimeError("method 'ddim' with clip_sample or a zero-SNR grid runs diffusers' "
                                   "DDIMInverseScheduler, which leaves no core latent")
            if self._ddim_last is None or self._ddim_last[0] != self.grid.N:
                raise RuntimeError("the DDIM inversion has not reached the noise end (take every step)")
            i, x = self._ddim_last
            return State({i: Point(x)}, self.method.spec, self.grid.fingerprint, self.method.mode, len(self._calls))
        if self.run is None:
            raise RuntimeError("no inversion step has been taken")
        if not self.run.done and self.method.mode != "recurrence":
            raise RuntimeError(
                f"the inversion is at grid index {max(self.run.window)} of {self.grid.N}: in mode {self.method.mode!r} "
                "its newest point is complete only with the next model output; take every step (or use "
                "linmultistep.invert with stop=...) for a partial latent"
            )
        return State(dict(self.run.window), self.method.spec, self.grid.fingerprint, self.method.mode,
                     len(self._calls), records(self.run))

    def _expect(self, m: int, t: int, sample: torch.Tensor, want: int, have: "torch.Tensor | None") -> None:
        """Refuse a call out of order or on a sample other than the one this scheduler returned."""
        if self.run is not None and self.run.done and self._calls and self._calls[-1] == self.grid.N:
            raise ValueError(f"all {len(self.timesteps)} inversion steps are done; call set_timesteps again "
                             "for a new inversion")
        if m != want:
            raise ValueError(
                f"inversion step {len(self._calls) + 1} got timestep {t}, expected timestep {self._timestep(want)} "
                f"(the next of scheduler.timesteps = {_listed([int(s) for s in self.timesteps])}): an exact "
                "inversion continues its previous steps. Iterate over scheduler.timesteps in order; call "
                "set_timesteps again for a new inversion")
        if have is not None and not _same(sample, have):
            raise ValueError(
                f"inversion step {len(self._calls) + 1} (timestep {t}) got a sample that is not the one this scheduler "
                f"returned at step {len(self._calls)} (the pipeline changed the latent between steps); an exact "
                "inversion continues only its own output: pass prev_sample back unchanged")

    def step(self, model_output: torch.Tensor, timestep: Any, sample: torch.Tensor, return_dict: bool = True,
             **kwargs: Any) -> "DDIMSchedulerOutput | tuple":
        """The next point of the inversion from ``sample`` (the model output at ``timestep`` on it)."""
        self._require_timesteps()
        unknown = set(kwargs) - {"eta", "generator"}
        if unknown:
            raise TypeError(f"step() got unexpected keyword arguments {sorted(unknown)}")
        if kwargs.get("eta"):
            raise ValueError(f"{_NOT_INVERTIBLE['eta']}; an inversion is deterministic (DDIMInverseScheduler has no "
                             "eta): pass eta=0 or leave it out")
        if self._reference is not None:
            self._grid_index(timestep)  # one of self.timesteps, or the off-grid error
            return self._reference.step(model_output, timestep, sample, return_dict=return_dict)
        if self.memoryless:
            return self._ddim_step(model_output, timestep, sample, return_dict)
        if self.config.timestep_convention == "lagged":
            return self._lagged_step(model_output, timestep, sample, return_dict)
        return self._exact_step(model_output, timestep, sample, return_dict)

    def _identity(self, model_output: torch.Tensor, sample: torch.Tensor, return_dict: bool) -> Any:
        """diffusers' zero-length first step (alphas_cumprod[0] to itself)."""
        eps = self._eps(model_output, sample, 0)
        self._calls.append(0)
        self._returned = sample
        return _output(sample, self._pred_original(sample, eps, 0), return_dict)

    def _ddim_step(self, model_output: torch.Tensor, timestep: Any, sample: torch.Tensor, return_dict: bool) -> Any:
        """DDIM inversion x_{m-1} -> x_m with the model at t_m on x_{m-1}, converted at x_{m-1}'s own
        noise level as DDIMInverseScheduler does (at t_m's where that level is the clean point and the
        output is a 'sample' prediction, which has no noise to read there)."""
        m = self._grid_index(timestep)
        if m == 0:
            return self._identity(model_output, sample, return_dict)
        level = m if (m == 1 and self.grid.sigma[0] == 0 and self.config.prediction_type == "sample") else m - 1
        eps = self._eps(model_output, sample, level)
        run = self.run = self._start({m - 1: sample}, m)
        self._output.give(m, eps)
        with torch.no_grad():
            step(run)
        finish(run)
        self._calls.append(m)
        x = run.window[m].x
        self._ddim_last = (m, x)
        return _output(x, self._pred_original(sample, eps, level), return_dict)

    def _exact_step(self, model_output: torch.Tensor, timestep: Any, sample: torch.Tensor, return_dict: bool) -> Any:
        """Convention 'ddim': the call at t_m gets eps(x_m, t_m) and returns x_{m+1} (x_N at t_N)."""
        m = self._grid_index(timestep)
        t = self._timestep_int(timestep)
        if not self._calls:
            self._expect(m, t, sample, self._call_indices[0], None)
            if m == 0:
                return self._identity(model_output, sample, return_dict)
        if self.run is None:  # the data: x_0 = x_1 = sample
            self._expect(m, t, sample, 1, self._returned)
            eps = self._eps(model_output, sample, 1)
            self.run = self._start({0: sample, 1: sample}, self.grid.N)
            if not torch.equal(self.run.window[1].x, sample) and self.method.mode.startswith("bits"):
                self.run = None
                raise ValueError(
                    "mode 'bits' evaluates the network at the data itself as the point at t_1, but these data are "
                    "not on the fixed-point grid there, so the round trip could not be exact to the last bit: start "
                    "the loop from inverse_scheduler.fixed_point_data(x0), or use timestep_convention='lagged'")
        else:
            top = max(self.run.window)
            self._expect(m, t, sample, top, self.run.window[top].x)
            eps = self._eps(model_output, sample, m)
        run = self.run
        if not run.done:
            self._output.give(m, eps)
            with torch.no_grad():
                step(run)
            if run.done:
                finish(run)
        self._calls.append(m)
        x = run.window[max(run.window)].x
        self._returned = x
        return _output(x, self._pred_original(sample, eps, m), return_dict)

    def _lagged_step(self, model_output: torch.Tensor, timestep: Any, sample: torch.Tensor, return_dict: bool) -> Any:
        """Convention 'lagged': call n makes x_n from x_{n-1} with the model at t_1 (n = 1, DDIM
        inversion) or t_{n-1} (the exact relation at its own lower point)."""
        t = self._timestep_int(timestep)
        self._grid_index(timestep)  # off the grid: the general error first
        k = len(self._calls)
        zero = self._call_indices[0] == 0 and len(self._call_indices) > len(self._lagged)
        if k >= len(self._call_indices):
            raise ValueError(f"all {len(self._call_indices)} inversion steps are done; call set_timesteps again "
                             "for a new inversion")
        want = self._call_indices[k]
        self._expect(self._index[t], t, sample, want, self._returned if k > 0 else None)
        if zero and k == 0:
            return self._identity(model_output, sample, return_dict)
        n = k + (0 if zero else 1)  # the point this call makes
        eps = self._eps(model_output, sample, want)
        if n == 1:
            self.run = self._start({0: sample}, self.grid.N)
        self._output.give(want, eps)
        with torch.no_grad():
            info = step(self.run)
        if self.run.done:
            finish(self.run)
        self._calls.append(want)
        self._returned = info.entry.x
        return _output(info.entry.x, None, return_dict)
