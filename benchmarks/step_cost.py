"""The sampler's own cost per step, against diffusers' DDIMScheduler.step, side by side in one run.

A network that costs nothing (it returns one fixed tensor) isolates the sampler: float32, one
torch thread, 50 steps of Stable Diffusion's schedule, latents 1x4x64x64 and 8x4x64x64. Modes
'stable' and 'bits' run twice: with their compiled kernels (linmultistep[fast], the default when
numba is installed; mode 'stable' uses its kernel from 256 KiB) and with them switched off (the
array operations every other backend runs). The last
two rows are inversion steps (no target; mode 'bits' also writes the quantised increment and its
per-row checksum, which the latent records). Every
row is timed in the same process (CPU time of its one thread, time.thread_time, so that other jobs on
a shared machine do not add theirs), interleaved over rounds, median of rounds; ratios are per step
against ``DDIMScheduler.step`` in a plain diffusers loop. Default checks are on everywhere (the
core's deferred finite checks; mode 'bits' also its per-step digests). The last table runs the
shipped digits UNet (1x1x8x8) for the sampler's share of the time.

Run:  python benchmarks/step_cost.py [--rounds 7]
"""

from __future__ import annotations

import argparse
import contextlib
import statistics
import time

import torch

torch.set_num_threads(1)

import linmultistep as lm  # noqa: E402
from linmultistep import fixedkernels  # noqa: E402
from linmultistep.backends.diffusers import BELMScheduler, grid_from_config  # noqa: E402

STEPS = 50
SHAPES = [(1, 4, 64, 64), (8, 4, 64, 64)]
CONFIG = dict(num_train_timesteps=1000, beta_start=0.00085, beta_end=0.012, beta_schedule="scaled_linear",
              set_alpha_to_one=False, steps_offset=1, timestep_spacing="leading", clip_sample=False)


def diffusers_ddim(eps: torch.Tensor, x: torch.Tensor) -> torch.Tensor:
    from diffusers import DDIMScheduler

    s = DDIMScheduler(**CONFIG)
    s.set_timesteps(STEPS)
    for t in s.timesteps:
        x = s.step(eps, t, x).prev_sample
    return x


def belm_scheduler(eps: torch.Tensor, x: torch.Tensor) -> torch.Tensor:
    s = BELMScheduler(**{k: v for k, v in CONFIG.items() if k != "clip_sample"})
    s.set_timesteps(STEPS)
    for t in s.timesteps:
        x = s.step(eps, t, x).prev_sample
    return x


def core(method: str, mode: str | None = None, kernels: bool = True, check_finite: bool = True):
    from diffusers import DDIMScheduler

    grid = grid_from_config(DDIMScheduler(**CONFIG).config, STEPS)

    def run(eps: torch.Tensor, x: torch.Tensor) -> torch.Tensor:
        with contextlib.nullcontext() if kernels else fixedkernels.disabled():
            return lm.sample(lambda y, i: eps, x, grid, method, mode=mode, check_finite=check_finite)

    return run


def floor_scheduler(eps: torch.Tensor, x: torch.Tensor) -> torch.Tensor:
    """What any O-BELM scheduler step must do, written out by hand, for scale: find the timestep's index,
    check the model output and the sample, pred_original_sample = xbar - sigmabar eps, the shear in place
    (mode 'stable''s arithmetic with the grid's coefficients), x = s xbar, diffusers' output object. No
    run, no window, no finite checks, no starter: not a sampler (its numbers are not checked), a floor."""
    from diffusers import DDIMScheduler
    from diffusers.schedulers.scheduling_ddim import DDIMSchedulerOutput

    from linmultistep.context import StepContext
    from linmultistep.forms import two_step_tables
    from linmultistep.methods import get_method

    grid = grid_from_config(DDIMScheduler(**CONFIG).config, STEPS)
    t = two_step_tables(get_method("obelm"), StepContext(grid.h, grid.alpha, None, None))
    timesteps = torch.from_numpy(grid.timesteps[1:][::-1].astype("int64").copy())
    index = {int(ts): grid.N - k for k, ts in enumerate(timesteps)}
    host = timesteps.tolist()
    v, xbar = None, x / float(t.s[grid.N])
    with torch.no_grad():
        for ts in timesteps:
            i = index[host[(ts.data_ptr() - timesteps.data_ptr()) // 8]]
            if eps.shape != x.shape or eps.dtype != x.dtype:
                raise ValueError("model output")
            x0 = torch.add(xbar, eps, alpha=-float(grid.sigmabar[i]))
            if v is None:
                v = torch.mul(eps, float(t.c_start[i]))
                xbar = torch.add(xbar, v, alpha=-float(t.w[i]))
            else:
                v.neg_().add_(eps, alpha=float(t.c[i]))
                xbar.add_(v, alpha=-float(t.w[i]))
            x = DDIMSchedulerOutput(prev_sample=torch.mul(xbar, float(t.s[i - 1])), pred_original_sample=x0).prev_sample
    return x


def core_invert(method: str, mode: str | None = None):
    from diffusers import DDIMScheduler

    grid = grid_from_config(DDIMScheduler(**CONFIG).config, STEPS)

    def run(eps: torch.Tensor, x: torch.Tensor) -> torch.Tensor:
        # x in the data_bound of mode 'bits' (a standard normal sample stays far inside it)
        return lm.invert(lambda y, i: eps, x, grid, method, mode=mode)

    return run


ROWS = {
    "diffusers DDIMScheduler.step": diffusers_ddim,
    "lms.sample ddim": core("ddim"),
    "lms.sample obelm (stable)": core("obelm"),
    "  stable without kernels": core("obelm", kernels=False),
    "  stable, check_finite=False": core("obelm", check_finite=False),
    "lms.sample obelm recurrence": core("obelm", "recurrence"),
    "lms.sample bdia (stable)": core("bdia"),
    "lms.sample edict": core("edict"),
    "lms.sample obelm bits": core("obelm", "bits"),
    "  bits without kernels": core("obelm", "bits", kernels=False),
    "BELMScheduler.step (stable)": belm_scheduler,
    "  floor: the step by hand": floor_scheduler,
    "lms.invert obelm (stable)": core_invert("obelm"),
    "lms.invert obelm bits": core_invert("obelm", "bits"),
}
# issue 23's targets for O-BELM's default mode and the scheduler; issue 9's for the others
TARGETS = {"lms.sample ddim": 1.0, "lms.sample obelm (stable)": 0.5, "lms.sample obelm recurrence": 1.0,
           "lms.sample bdia (stable)": 1.0, "lms.sample edict": 2.0, "lms.sample obelm bits": 1.5,
           "BELMScheduler.step (stable)": 0.5}


def per_step_us(fn, eps: torch.Tensor, x: torch.Tensor) -> float:
    t0 = time.thread_time()
    fn(eps, x)
    return (time.thread_time() - t0) / STEPS * 1e6


def network_free(rounds: int) -> None:
    print(f"network-free, float32, 1 thread, {STEPS} steps; microseconds per step (median of {rounds} rounds), "
          "ratio to diffusers' DDIMScheduler.step, target")
    print("mode 'bits' kernels (linmultistep[fast]): " + ("compiled with numba" if fixedkernels.available() else
                                                          "NOT available, both bits rows run array operations"))
    for shape in SHAPES:
        g = torch.Generator().manual_seed(0)
        x = torch.randn(shape, generator=g)
        eps = 0.1 * torch.randn(shape, generator=g)
        times: dict[str, list[float]] = {k: [] for k in ROWS}
        for name, fn in ROWS.items():  # warm-up
            fn(eps, x)
        for _ in range(rounds):
            for name, fn in ROWS.items():
                times[name].append(per_step_us(fn, eps, x))
        base = statistics.median(times["diffusers DDIMScheduler.step"])
        print(f"\nshape {'x'.join(map(str, shape))}")
        print(f"{'':<32}{'us/step':>10}{'ratio':>8}{'target':>8}")
        for name in ROWS:
            med = statistics.median(times[name])
            target = TARGETS.get(name)
            mark = "" if target is None else (f"{target:>7.1f}x" + ("" if med / base <= target else "  MISSED"))
            print(f"{name:<32}{med:>10.0f}{med / base:>7.2f}x{mark}")


def with_unet(rounds: int) -> None:
    from diffusers.utils import logging as dlogging

    from linmultistep.backends.diffusers import UNetEps
    from linmultistep.backends.diffusers.adapters import encode_classes
    from linmultistep.backends.digits import load_pipeline

    dlogging.set_verbosity_error()
    pipe = load_pipeline()
    pipe.set_progress_bar_config(disable=True)
    grid = grid_from_config(pipe.scheduler.config, STEPS)
    f = UNetEps(pipe.unet, grid, "epsilon", encode_classes(pipe.unet, 3, 1))
    x = torch.randn(1, 1, 8, 8, generator=torch.Generator().manual_seed(0))
    calls = {"t": 0.0}

    def timed(y, i):
        t0 = time.thread_time()
        out = f(y, i)
        calls["t"] += time.thread_time() - t0
        return out

    print(f"\nthe shipped digits UNet (1x1x8x8, {STEPS} steps): sampler's share of the time (CPU)")
    print(f"{'':<32}{'total ms':>10}{'network ms':>12}{'sampler share':>15}")
    for name, method, mode in [("ddim", "ddim", None), ("obelm (stable)", "obelm", None),
                               ("obelm bits", "obelm", "bits"), ("edict", "edict", None)]:
        walls, nets = [], []
        for _ in range(rounds):
            calls["t"] = 0.0
            t0 = time.thread_time()
            lm.sample(timed, x, grid, method, mode=mode)
            walls.append(time.thread_time() - t0)
            nets.append(calls["t"])
        w, n = statistics.median(walls), statistics.median(nets)
        print(f"{name:<32}{w * 1e3:>10.1f}{n * 1e3:>12.1f}{(w - n) / w:>14.1%}")


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--rounds", type=int, default=7)
    args = p.parse_args()
    network_free(args.rounds)
    with_unet(max(3, args.rounds // 2))


if __name__ == "__main__":
    main()
