"""The latents of BELMInverseScheduler's two timestep conventions, side by side, on the shipped digits UNet.

Both conventions invert exactly (the round trip is tested); they differ in the starting pair of
the 2-step recurrence, and so in how Gaussian the latent x_N looks (std 1 is the prior):
'ddim' (DDIMInverseScheduler's timesteps, pair (x_0, x_1) = (x_0, x_0)) and 'lagged' ([t_1, t_1,
t_2, ..., t_{N-1}], x_1 from a DDIM-inversion step). O-BELM's inverse divides by a_(i,2) =
h_i^2 / h_(i+1)^2, so a starting pair's error grows where a short step precedes a long one: the
first step from the clean point (set_alpha_to_one=True) to timestep 0 with 'leading' spacing.
Mode 'recurrence' in float64, 16 held-out digits with their class labels, one torch thread.

Run:  python benchmarks/inverse_conventions.py [--images 16]
"""

from __future__ import annotations

import argparse

import torch

torch.set_num_threads(1)


@torch.no_grad()
def main() -> None:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--images", type=int, default=16)
    a = p.parse_args()
    from linmultistep.backends.diffusers import BELMInverseScheduler
    from linmultistep.backends.digits import load_heldout, load_pipeline

    pipe = load_pipeline()
    unet = pipe.unet.double()
    images, labels = load_heldout()
    images, labels = images[: a.images].double(), labels[: a.images]
    print("| spacing | set_alpha_to_one | N | std x_N, 'ddim' | std x_N, 'lagged' | ratio ddim / lagged |")
    print("|---|---|---|---|---|---|")
    for spacing, alpha_one in (("leading", True), ("leading", False), ("trailing", True)):
        for n in (10, 20, 50):
            std = {}
            for convention in ("ddim", "lagged"):
                inv = BELMInverseScheduler.from_config(pipe.scheduler.config, mode="recurrence",
                                                       timestep_convention=convention, timestep_spacing=spacing,
                                                       set_alpha_to_one=alpha_one)
                inv.set_timesteps(n)
                x = images.clone()
                for t in inv.timesteps:
                    x = inv.step(unet(x, t, class_labels=labels).sample, t, x).prev_sample
                std[convention] = float(inv.state.x.std())
            print(f"| {spacing} | {alpha_one} | {n} | {std['ddim']:.3f} | {std['lagged']:.3f} | "
                  f"{std['ddim'] / std['lagged']:.2f} |")


if __name__ == "__main__":
    main()
