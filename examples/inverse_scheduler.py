"""Exact inversion in a hand-written diffusers loop: BELMInverseScheduler on the shipped digits model,
then BELMScheduler reconstructs the digits from the latent it leaves.

    python examples/inverse_scheduler.py [--steps 50] [--images 8] [--threads 1]

The inverse scheduler is driven like diffusers' DDIMInverseScheduler: iterate over its
``timesteps``, evaluate the UNet on the current latent, call ``step``. With the default
``timestep_convention='ddim'`` its timesteps are DDIMInverseScheduler's own [t_1, ..., t_N], so
a loop written for DDIM inversion runs unchanged and inverts exactly: the call at t_n returns
x_{n+1}, where the loop evaluates the model next at that point's own timestep (the data are taken
as x_0 = x_1). With ``'lagged'`` the timesteps are [t_1, t_1, t_2, ..., t_{N-1}]: a
DDIM-inversion first step, then the model at each step's own lower point, the call at position n
returning x_n. ``inv.state`` is the latent (x_N, x_{N-1}); ``BELMScheduler.load_state``
continues it inside a plain sampling loop started from ``latents = state.x``, so the loop returns
the digits: to float32 rounding in the default mode 'stable', to the last bit in mode 'bits'.
diffusers' own DDIMInverseScheduler + DDIMScheduler pair, for contrast, does not come back.
"""

from __future__ import annotations

import argparse

import torch


def invert(unet, inv, images: torch.Tensor, labels: torch.Tensor) -> torch.Tensor:
    """The inversion loop, as a pipeline writes it: one model call and one step per timestep."""
    x = images
    for t in inv.timesteps:
        x = inv.step(unet(x, t, class_labels=labels).sample, t, x).prev_sample
    return x


def sample(unet, sched, x: torch.Tensor, labels: torch.Tensor) -> torch.Tensor:
    """The plain sampling loop (what DDIMPipeline does, without guidance)."""
    for t in sched.timesteps:
        x = sched.step(unet(x, t, class_labels=labels).sample, t, x).prev_sample
    return x


@torch.no_grad()
def main() -> dict:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--steps", type=int, default=50)
    p.add_argument("--images", type=int, default=8)
    p.add_argument("--threads", type=int, default=1)  # an 8x8 UNet gains nothing from more
    a = p.parse_args()
    torch.set_num_threads(a.threads)

    from diffusers import DDIMInverseScheduler, DDIMScheduler

    from linmultistep.backends.diffusers import BELMInverseScheduler, BELMScheduler
    from linmultistep.backends.digits import load_heldout, load_pipeline

    pipe = load_pipeline()
    images, labels = load_heldout()
    images, labels = images[: a.images], labels[: a.images]
    config = pipe.scheduler.config
    errors = {}
    for mode in (None, "bits"):
        for convention in ("ddim", "lagged"):
            inv = BELMInverseScheduler.from_config(config, mode=mode, timestep_convention=convention)
            inv.set_timesteps(a.steps)
            data = inv.fixed_point_data(images)  # mode 'bits': the data on its fixed-point grid (8-bit digits are)
            invert(pipe.unet, inv, data, labels)
            latent = inv.state
            sched = BELMScheduler.from_config(config, mode=mode)
            sched.set_timesteps(a.steps)
            sched.load_state(latent)  # the first step returns the stored x_{N-1}, the rest continue exactly
            back = sample(pipe.unet, sched, latent.x, labels)
            err = errors[inv.mode if convention == "ddim" else f"{inv.mode} lagged"] = float((back - images).abs().max())
            print(f"BELM mode {inv.mode!r:8} timestep_convention {convention!r:8}: timesteps "
                  f"{[int(t) for t in inv.timesteps[:4]]}..., latent {latent}")
            print(f"   reconstruction max |error| {err:.2e}, bit for bit: {torch.equal(back, images)}")

    ddim_inv = DDIMInverseScheduler.from_config(config)
    ddim_inv.set_timesteps(a.steps)
    ddim = DDIMScheduler.from_config(config)
    ddim.set_timesteps(a.steps)
    back = sample(pipe.unet, ddim, invert(pipe.unet, ddim_inv, images, labels), labels)
    errors["ddim"] = float((back - images).abs().max())
    print(f"diffusers DDIMInverseScheduler + DDIMScheduler: reconstruction max |error| {errors['ddim']:.2e}")
    print(f"\n{a.images} held-out digits (pixels in [-1, 1]), {a.steps} steps")
    return errors


if __name__ == "__main__":
    err = main()
    assert err["bits"] == err["bits lagged"] == 0.0 and err["ddim"] > 1e-2  # exact versus approximate
    assert err["stable"] < 1e-4 and err["stable lagged"] < 1e-4
