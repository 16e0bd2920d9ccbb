"""linmultistep: exact-inversion diffusion sampling with variable-step linear multistep methods.

Core (numpy only): :class:`Grid`, methods as coefficient rules (:func:`get_method`), one
integrator behind :func:`solve` (general ODEs), :func:`sample` and :func:`invert` (diffusion).
Paper indexing throughout: grid index 0 = data end, N = noise end.
"""

from .arrays import ArrayBackend, get_backend, register_backend
from .diffusion import invert, sample
from .entries import Coupled, Entry, Point
from .errors import (
    FixedPointRangeError,
    GridError,
    LatentMismatchError,
    LinmultistepError,
    MethodError,
    NondeterministicNetworkError,
    NonFiniteError,
    PrecisionWarning,
)
from .grid import Grid, scheduled_timesteps
from .paths import flow_grid, flow_sigmas, gaussian_grid
from .modes import default_mode, in_mode, resolve_mode
from .methods import (
    Edict,
    LinearMultistep,
    Method,
    MethodSpec,
    adams_bashforth,
    available_methods,
    bdia,
    belm,
    ddim,
    edict,
    get_method,
    obelm,
)
from .schedules import alphas_cumprod_for, betas_for
from .solve import Solution, solve
from .state import Latent, State
from .stepping import Run, StepInfo, finish, start, step

__version__ = "0.2.0"

__all__ = [
    "ArrayBackend", "get_backend", "register_backend",
    "sample", "invert", "solve", "Solution",
    "default_mode", "in_mode", "resolve_mode",
    "Run", "start", "step", "finish",
    "Entry", "Point", "Coupled",
    "Grid", "scheduled_timesteps", "alphas_cumprod_for", "betas_for", "flow_grid", "flow_sigmas", "gaussian_grid",
    "Method", "LinearMultistep", "Edict", "MethodSpec", "get_method", "available_methods",
    "ddim", "obelm", "bdia", "edict", "belm", "adams_bashforth",
    "State", "Latent", "StepInfo",
    "LinmultistepError", "GridError", "MethodError", "LatentMismatchError", "NonFiniteError",
    "FixedPointRangeError", "NondeterministicNetworkError", "PrecisionWarning",
]
