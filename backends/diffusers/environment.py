"""Where a mode-'bits' latent is exact: the numerics environment that produced it.

A latent of mode 'bits' reconstructs its images to the last bit only if the network returns the
same bits for the same inputs when reconstructing as when inverting. That holds on the machine
and set-up of the inversion; elsewhere it may not: CPU kernels are chosen by the CPU's
capability (``torch.backends.cpu.get_cpu_capability()``: AVX-512, AVX2 or the portable default
kernels round differently, and ``ATEN_CPU_CAPABILITY`` can force one), by the torch build,
the thread count (kernels split their sums by threads), MKL's conditional-numerical-reproducibility
setting (``MKL_CBWR``), and on a GPU by the GPU model and the CUDA/cuDNN versions.

So a 'bits' latent records :func:`describe` of its inversion run: those settings, plus a digest of
the network's output on a fixed *probe* input (and a few of its values). Before reconstructing,
:func:`check` computes the same here. Equal probe outputs: the network computes the same bits, the
reconstruction proceeds (with a warning if the recorded settings differ: the per-step checks of
mode 'bits' still confirm every step). Different probe outputs: the reconstruction cannot be exact,
and :class:`EnvironmentMismatchError` says so before any step, naming both environments and the
approximate alternative (``reconstruct(..., exact=False)``), whose expected error it states.

Expected error of the approximate reconstruction (first order): the latent's integer state is
exact, and every sampling step adds the network's output times the step's coefficient, so a
per-call output difference of at most d moves x_0 by about d * sum_i |c_i w_i| (the increments of
docs/precision.md section 2; for O-BELM c_i w_i = h_i (h_i + h_(i+1)) / h_(i+1), about 2 sigmabar_N
in total). d is measured here on the probe (this environment's output against the values the latent
recorded), so the estimate is d * sum_i |c_i w_i| * s_0, s_0 = alpha_0 (model space).
"""

from __future__ import annotations

import hashlib
import math
import os
import warnings
from typing import Any, Mapping

import torch

from linmultistep import Grid, LatentMismatchError
from linmultistep.caller import outside_stacklevel

__all__ = ["ENVIRONMENT_KEY", "EnvironmentMismatchError", "EnvironmentWarning", "ApproximateReconstructionWarning",
           "describe", "probe", "check", "format_environment", "expected_error", "validate_record"]

#: latent metadata key of the record (inside the latent file's ``info``)
ENVIRONMENT_KEY = "environment"
#: how many probe output values the record keeps, to measure the output difference elsewhere
PROBE_VALUES = 32
#: environment variables that change CPU kernels' results (recorded when set)
NUMERICS_VARIABLES = ("ATEN_CPU_CAPABILITY", "MKL_CBWR", "OMP_NUM_THREADS", "CUBLAS_WORKSPACE_CONFIG")
#: the fields compared besides the probe, in the order they are reported
FIELDS = ("torch", "device", "cpu_capability", "gpu", "cuda", "cudnn", "dtype", "threads", "deterministic",
          "variables")


class EnvironmentMismatchError(LatentMismatchError):
    """A mode-'bits' latent is reconstructed where the network computes other bits than where it was
    inverted: the exact reconstruction is impossible here (``exact=False`` gives the approximate one)."""


class EnvironmentWarning(UserWarning):
    """A mode-'bits' latent comes from another set-up whose network outputs agree with this one's on the
    probe input: the reconstruction is expected to be exact (every step is still checked)."""


class ApproximateReconstructionWarning(UserWarning):
    """``exact=False`` sampled a mode-'bits' latent with this environment's network outputs: the images
    come back to within the stated expected error, not bit for bit."""


def _probe_input(shape: tuple[int, ...], dtype: torch.dtype) -> torch.Tensor:
    """Fixed values in [-1, 1) from integer arithmetic only (a multiplicative hash of the element index),
    so that every CPU and torch build makes the same input bits (torch.randn and sin do not promise that)."""
    k = torch.arange(math.prod(shape), dtype=torch.int64)
    v = (k * 2654435761) % 65536  # exact in int64
    return (v.to(torch.float64) / 32768.0 - 1.0).reshape(shape).to(dtype)


def probe(unet: Any, grid: Grid, shape: tuple[int, ...], eval_batch: int | None, eval_threads: int | None) -> torch.Tensor:
    """The network's raw output (CPU, its own dtype) on the fixed probe input of ``shape`` (one image of the
    run's size; ``eval_batch`` rows when the run evaluates in fixed chunks) at the middle grid index, run
    as the mode 'bits' run does: deterministic kernels, the run's thread count and chunking."""
    from linmultistep.backends.torch import deterministic

    from .adapters import Conditioning, UNetEps, is_class_conditional, is_conditional

    p = next(unet.parameters())
    rows = eval_batch or 1
    x = _probe_input((rows, *shape[1:]), p.dtype).to(p.device)
    if is_conditional(unet):  # fixed token embeddings of the UNet's width
        width = int(unet.config.cross_attention_dim)
        cond = Conditioning(_probe_input((rows, 4, width), p.dtype).to(p.device))
    elif is_class_conditional(unet):
        cond = Conditioning(torch.zeros(rows, dtype=torch.long))
    else:
        cond = None
    net = UNetEps(unet, grid, "epsilon", cond, eval_batch=eval_batch, eval_threads=eval_threads)
    with deterministic(), torch.no_grad():
        out = net(x, max(1, grid.N // 2))
    return out.detach().to("cpu").contiguous()


def describe(unet: Any, grid: Grid, shape: tuple[int, ...], eval_batch: int | None = None,
             eval_threads: int | None = None) -> dict[str, Any]:
    """The numerics environment of a run of ``unet`` here (JSON-able): torch version, device, CPU
    capability or GPU model with CUDA/cuDNN versions, the network's dtype, the thread count the run
    uses, the deterministic-kernel setting of mode 'bits', the kernel-changing environment variables
    that are set, and the probe: a digest of the network's output on the fixed input and some of its values."""
    p = next(unet.parameters())
    out = probe(unet, grid, shape, eval_batch, eval_threads)
    flat = out.reshape(-1)
    step = max(1, flat.numel() // PROBE_VALUES)
    env: dict[str, Any] = {
        "torch": torch.__version__,
        "device": p.device.type,
        "dtype": str(p.dtype).replace("torch.", ""),
        "threads": int(eval_threads) if eval_threads is not None else int(torch.get_num_threads()),
        "deterministic": True,  # mode 'bits' always runs with deterministic kernels (backends.torch.deterministic)
        "variables": {k: os.environ[k] for k in NUMERICS_VARIABLES if k in os.environ},
    }
    if p.device.type == "cuda":
        env.update(gpu=torch.cuda.get_device_name(p.device), cuda=str(torch.version.cuda),
                   cudnn=str(torch.backends.cudnn.version()))
    else:
        env["cpu_capability"] = str(torch.backends.cpu.get_cpu_capability())
    env["probe"] = {
        "digest": hashlib.sha256(flat.view(torch.uint8).numpy().tobytes()).hexdigest()[:16],
        "values": [float(v) for v in flat[::step][:PROBE_VALUES].double().tolist()],
        "max_abs": float(flat.double().abs().max()),
    }
    return env


def format_environment(env: Mapping[str, Any] | None) -> str:
    """One line naming an environment, e.g. 'torch 2.13.0+cpu, cpu AVX2, float32, 1 thread(s), MKL_CBWR=COMPATIBLE'."""
    if not env:
        return "an unrecorded environment (a latent from before environment records)"
    where = (f"{env.get('device')} {env.get('gpu')} (CUDA {env.get('cuda')}, cuDNN {env.get('cudnn')})"
             if env.get("device") == "cuda" else f"{env.get('device', 'cpu')} {env.get('cpu_capability')}")
    parts = [f"torch {env.get('torch')}", where, str(env.get("dtype")), f"{env.get('threads')} thread(s)"]
    if not env.get("deterministic", True):
        parts.append("non-deterministic kernels")
    parts += [f"{k}={v}" for k, v in sorted(dict(env.get("variables") or {}).items())]
    return ", ".join(parts)


def differences(recorded: Mapping[str, Any], here: Mapping[str, Any]) -> list[str]:
    """The fields (of :data:`FIELDS`) whose values differ, as 'name recorded -> here'."""
    return [f"{k} {recorded.get(k)!r} -> {here.get(k)!r}" for k in FIELDS if recorded.get(k) != here.get(k)]


def increment_sum(grid: Grid, method: Any) -> float:
    """sum_i |c_i w_i| over a sampling run: how far x_0 moves (in xbar units) per unit of network
    output difference at every step, from the method's float64 coefficients (b_(i,1) h_i of its
    relation; the starter step's h_N)."""
    method = getattr(method, "base", method)  # a method in a mode: the coefficient rule is its base's
    h, k = grid.h, int(getattr(method, "k", 0))
    if not hasattr(method, "coefficients") or k < 1:
        return float(2 * grid.sigmabar[grid.N])  # methods without a coefficient rule: O-BELM's total
    total = float(h[grid.N])  # the starter: one DDIM step from the noise end
    for i in range(1, grid.N - k + 2):
        _, b = method.coefficients(h[i: i + k])
        total += abs(float(b[1])) * float(h[i])
    return total


def expected_error(recorded: Mapping[str, Any] | None, here: Mapping[str, Any], grid: Grid, method: Any) -> float | None:
    """First-order estimate of max |x_0(approximate) - x_0(exact)| in model space (module docstring):
    the probe's output difference d (recorded values vs here) times sum_i |c_i w_i| times alpha_0. None
    without recorded probe values."""
    if not recorded or not isinstance(recorded.get("probe"), Mapping):
        return None
    then, now = recorded["probe"].get("values"), here["probe"]["values"]
    if not then or len(then) != len(now):
        return None
    d = max(abs(a - b) for a, b in zip(then, now))
    if d == 0:  # equal sampled values, other digest: at least one unit in the last place of the output
        d = float(here["probe"]["max_abs"]) * float(torch.finfo(getattr(torch, str(here["dtype"]))).eps)
    return d * increment_sum(grid, method) * float(grid.alpha[0])


def check(recorded: Mapping[str, Any] | None, here: Mapping[str, Any], grid: Grid, method: Any,
          exact: bool) -> None:
    """Compare the environment a 'bits' latent records with this one, before the run.

    Same probe output: proceed (warn when other settings differ). Other probe output: raise
    :class:`EnvironmentMismatchError` naming both, or with ``exact=False`` warn with the expected error."""
    if recorded is None:
        return  # a latent from before environment records: the per-step checks are all there is
    diff = differences(recorded, here)
    same_probe = dict(recorded.get("probe") or {}).get("digest") == here["probe"]["digest"]
    if same_probe:
        if diff:
            warnings.warn(
                f"this mode-'bits' latent was inverted in another environment ({format_environment(recorded)}; "
                f"here: {format_environment(here)}; differs: {'; '.join(diff)}). The network's output on the probe "
                "input is bit-identical here, so the reconstruction is expected to be exact; every step is checked",
                EnvironmentWarning, stacklevel=outside_stacklevel())
        return
    err = expected_error(recorded, here, grid, method)
    estimate = f"below about {err:.1e} (a first-order bound on max |error| in model space)" if err is not None else "unknown (no probe values recorded)"
    if exact:
        raise EnvironmentMismatchError(
            f"this mode-'bits' latent cannot be reconstructed exactly here: the network computes other bits in this "
            f"environment. Inverted in: {format_environment(recorded)}. Here: {format_environment(here)}"
            + (f" (differs: {'; '.join(diff)})" if diff else " (same recorded settings: another CPU or build)")
            + ". Reconstruct where it was inverted for an exact result, or pass exact=False for an approximate "
            f"reconstruction in float arithmetic (expected error {estimate})")
    warnings.warn(
        f"approximate reconstruction (exact=False): this latent was inverted in {format_environment(recorded)}, "
        f"here the network computes other bits ({format_environment(here)}); expected error {estimate}",
        ApproximateReconstructionWarning, stacklevel=outside_stacklevel())


def validate_record(env: Any) -> str | None:
    """Why a crafted environment record is unusable (None if it is well formed): checked when a latent
    file is read, so that a bad record is reported as the file's field, not as a failure later."""
    if not isinstance(env, dict):
        return f"must be a JSON object, got {type(env).__name__}"
    probe_ = env.get("probe")
    if not isinstance(probe_, dict) or not isinstance(probe_.get("digest"), str):
        return "lacks its probe digest ('probe': {'digest': ...})"
    values = probe_.get("values", [])
    if not isinstance(values, list) or len(values) > PROBE_VALUES or not all(
            isinstance(v, (int, float)) and not isinstance(v, bool) and math.isfinite(v) for v in values):
        return f"'probe.values' must be a list of at most {PROBE_VALUES} finite numbers"
    m = probe_.get("max_abs", 0.0)
    if isinstance(m, bool) or not isinstance(m, (int, float)) or not math.isfinite(m) or m < 0:
        return "'probe.max_abs' must be a finite non-negative number"
    for k in ("torch", "device", "dtype", "cpu_capability", "gpu", "cuda", "cudnn"):
        if k in env and not isinstance(env[k], str):
            return f"'{k}' must be a string, got {env[k]!r:.40}"
    t = env.get("threads")
    if t is not None and (isinstance(t, bool) or not isinstance(t, int) or t < 1):
        return f"'threads' must be a positive integer, got {t!r:.40}"
    if not isinstance(env.get("variables", {}), dict):
        return "'variables' must be a JSON object"
    return None


# --- the hooks of pipeline.invert / pipeline.reconstruct ------------------------------------
def record(unet: Any, grid: Grid, shape: tuple[int, ...], mode: str, eval_batch: int | None,
           eval_threads: int | None) -> dict[str, Any]:
    """``{ENVIRONMENT_KEY: describe(...)}`` for a mode-'bits' inversion (one extra network call), else {}."""
    if not str(mode).startswith("bits"):
        return {}
    return {ENVIRONMENT_KEY: describe(unet, grid, tuple(shape), eval_batch, eval_threads)}


def is_checked_reconstruction(latent: Any) -> bool:
    """A mode-'bits' latent that still carries its reconstruction checks (not turned into an edit)."""
    from linmultistep.fixedpoint import DIGESTS_KEY

    return str(latent.mode).startswith("bits") and (
        DIGESTS_KEY in latent.metadata or any(getattr(e, "dV", None) is not None for e in latent.window.values()))


def before_reconstruction(unet: Any, latent: Any, grid: Grid, method: Any, eval_batch: int | None,
                          eval_threads: int | None, exact: bool) -> dict[str, Any] | None:
    """Run :func:`check` for a mode-'bits' reconstruction before its first step; returns this environment
    (None when there is nothing to compare: another mode, an edit, a latent without a record)."""
    if isinstance(exact, bool) is False:
        raise TypeError(f"exact must be True (bit-exact reconstruction) or False (approximate), got {exact!r}")
    recorded = latent.metadata.get(ENVIRONMENT_KEY)
    if recorded is None or not is_checked_reconstruction(latent):
        return None
    here = describe(unet, grid, tuple(latent.x.shape), eval_batch, eval_threads)
    check(recorded, here, grid, method, exact)
    return here


def explain(exc: BaseException, recorded: Mapping[str, Any] | None, here: Mapping[str, Any] | None) -> str:
    """The message of a failed per-step check, with both environments named and the way out."""
    if recorded is None:
        origin = "The latent records no environment (written before environment records)"
    else:
        origin = f"The latent was inverted in: {format_environment(recorded)}"
    now = f"; this reconstruction runs in: {format_environment(here)}" if here is not None else ""
    return (f"{exc}. {origin}{now}. Reconstruct in the inversion's environment for an exact result, or pass "
            "exact=False for an approximate reconstruction in float arithmetic")
