"""The shipped mnist-flow model (Stable Diffusion 3 architecture, rectified flow): O-BELM against Euler.

Printed side by side, from one run:

1. Generation at N = 10 / 20 / 50 steps from the same seeded noise, guided (w = 3): the error of the
   final latent against a high-accuracy solution of the same probability-flow ODE dz/dt = v(z, t)
   (classical RK4 with 400 uniform steps in t, written here on the transformer itself, so it shares no
   code with the library's samplers; its own error is estimated against RK4 with 200 steps), and the
   judge's accuracy for the prompt's digit (mnist-sd's judge: same data, same split). O-BELM runs in the
   default coordinates (blend b = linmultistep.paths.FLOW_BLEND), at b = 0.99 and in the flow's own (x, t) (b = 0);
   Euler is the same method in both (linmultistep/paths.py); max |a_{i,2}| is O-BELM's largest
   parasitic factor on the grid in those coordinates.
2. Round trips of the held-out images' latents (the autoencoder's posterior means) at N = 10 / 28 / 50:
   Euler inversion (inexact) against O-BELM in float64 (mode 'stable') and in mode 'bits' (float32),
   max |z - z_back| / max |z|.

``python benchmarks/mnist_flow_figures.py [--samples 50] [--threads 2] [--ref-steps 400] [--no-roundtrip]``
"""

from __future__ import annotations

import argparse
import math

import numpy as np
import torch

import linmultistep as lms
from linmultistep.paths import FLOW_BLEND, flow_grid
from linmultistep.backends.diffusers.flow_pipeline import (
    decode_latents, encode_flow_prompts, encode_images, flow_parts_of, velocity_for,
)
from linmultistep.backends.diffusers.models import load_pipeline
from linmultistep.backends.mnist_flow import MAX_SEQUENCE_LENGTH
from linmultistep.backends.mnist_sd import load_heldout, load_judge
from linmultistep.backends.mnist_sd.evaluate import prompts_for


def rk4_reference(parts, cond, z1: torch.Tensor, steps: int) -> torch.Tensor:
    """z(0) from z(1) = z1 by classical RK4 on dz/dt = v(z, t), uniform in t, float64 states."""
    tr = parts.transformer

    @torch.no_grad()
    def v(z: torch.Tensor, t: float) -> torch.Tensor:
        x = z.float()
        tt = torch.full([2 * x.shape[0]], 1000.0 * t)
        out = tr(hidden_states=torch.cat([x, x]), timestep=tt, encoder_hidden_states=torch.cat([cond.neg_embeds, cond.embeds]),
                 pooled_projections=torch.cat([cond.neg_pooled, cond.pooled]), return_dict=False)[0]
        u, c = out.double().chunk(2)
        return u + cond.guidance_scale * (c - u)

    z, h = z1.double(), -1.0 / steps
    for k in range(steps):
        t = 1.0 - k / steps
        k1 = v(z, t)
        k2 = v(z + 0.5 * h * k1, t + 0.5 * h)
        k3 = v(z + 0.5 * h * k2, t + 0.5 * h)
        k4 = v(z + h * k3, t + h)
        z = z + h / 6 * (k1 + 2 * k2 + 2 * k3 + k4)
    return z


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--samples", type=int, default=50)
    ap.add_argument("--threads", type=int, default=2)
    ap.add_argument("--guidance", type=float, default=3.0)
    ap.add_argument("--ref-steps", type=int, default=400, help="RK4 steps of the reference (its error: against half)")
    ap.add_argument("--no-roundtrip", action="store_true", help="only the generation table")
    a = ap.parse_args()
    torch.set_num_threads(a.threads)
    pipe = load_pipeline("mnist-flow", quiet=True)
    parts = flow_parts_of(pipe)
    judge = load_judge()
    prompts, targets = prompts_for(a.samples, seed=0)
    z1 = torch.randn((a.samples, 4, 8, 8), generator=torch.Generator().manual_seed(0), dtype=torch.float64)
    cond = encode_flow_prompts(parts, prompts, a.samples, a.guidance, max_sequence_length=MAX_SEQUENCE_LENGTH)
    ref = rk4_reference(parts, cond, z1, a.ref_steps)
    ref_err = float((rk4_reference(parts, cond, z1, a.ref_steps // 2) - ref).abs().max() / ref.abs().max())
    print(f"# mnist-flow, {a.samples} prompts, guidance {a.guidance}, seed 0; reference RK4 {a.ref_steps} steps "
          f"(its distance to RK4 {a.ref_steps // 2} steps: {ref_err:.1e} relative)")
    print(f"| steps | coordinates | max a_(i,2) | Euler error | O-BELM error | Euler / O-BELM | judge digit Euler | "
          "judge digit O-BELM |")
    print("|---|---|---|---|---|---|---|---|")
    scale = float(ref.abs().max())
    for n in (10, 20, 50):
        field, grid = velocity_for(pipe, prompts, tuple(z1.shape), n, guidance_scale=a.guidance,
                                   max_sequence_length=MAX_SEQUENCE_LENGTH)
        euler = None  # Euler is the same method in every blend (linmultistep/paths.py): run once
        for blend in (FLOW_BLEND, 0.99, 0.0):
            g = flow_grid(grid.sigma, grid.timesteps, blend=blend)
            a2 = max((g.h[i] / g.h[i + 1]) ** 2 for i in range(1, g.N))
            row = {}
            for name, method in (("euler", "ddim"), ("obelm", "obelm")):
                if name == "euler" and euler is not None:
                    row[name] = euler
                    continue
                z0 = lms.sample(field, z1.clone(), g, method)
                err = float((z0 - ref).abs().max()) / scale
                pred = judge.predict(decode_latents(parts, z0))["digit"]
                acc = float((np.asarray(pred) == targets["digit"]).mean())
                row[name] = (err, acc)
            euler = row["euler"]
            label = f"b = {blend:g}" + (" (x, t)" if blend == 0 else " (default)" if blend == FLOW_BLEND else "")
            print(f"| {n} | {label} | {a2:.2f} | {row['euler'][0]:.2e} | {row['obelm'][0]:.2e} | "
                  f"{row['euler'][0] / row['obelm'][0]:.2g} | {row['euler'][1]:.2f} | {row['obelm'][1]:.2f} |",
                  flush=True)

    if a.no_roundtrip:
        return
    images, _, caps = load_heldout()
    x = images[: a.samples]
    z = encode_images(parts, x).double()
    print(f"\n# round trips of {a.samples} held-out latents with their captions, guidance {a.guidance}: "
          "max |z - z_back| / max |z|")
    print("| steps | Euler inversion (float64) | O-BELM stable (float64) | O-BELM bits (float32) |")
    print("|---|---|---|---|")
    for n in (10, 28, 50):
        out = []
        for method, mode, dtype in (("ddim", None, torch.float64), ("obelm", "stable", torch.float64),
                                    ("obelm", "bits", torch.float32)):
            field, grid = velocity_for(pipe, caps[: a.samples], tuple(z.shape), n, guidance_scale=a.guidance,
                                       max_sequence_length=MAX_SEQUENCE_LENGTH)
            zz = z.to(dtype)
            latent = lms.invert(field, zz, grid, method, mode=mode)
            back = lms.sample(field, latent, grid, method, mode=mode)
            out.append(float((back.double() - zz.double()).abs().max() / zz.double().abs().max()))
        print(f"| {n} | {out[0]:.2e} | {out[1]:.2e} | {out[2]:.2e} |")


if __name__ == "__main__":
    main()
