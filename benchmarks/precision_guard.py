"""The precision guard on the shipped digits model: measured round-trip error next to the error the
guard expects (linmultistep.guards.RoundingMeter) and whether it warned, per guidance scale.

Usage: python benchmarks/precision_guard.py [--guidance 1 2 3 5 7.5 20 1e6] [--steps 20 50] [--images 8]

Held-out digits (the first --images), their own class labels, O-BELM in mode 'stable' with float32
states (the model's dtype), inverted and reconstructed with the core API on the model's grid. The
error is max |reconstruct(invert(x0)) - x0| in model space (pixels in [-1, 1], before any clipping);
'expected' is E of the guard's first warning (inversion), '-' where it stayed silent.
"""

from __future__ import annotations

import argparse
import re
import warnings

import torch

import linmultistep as lms
from linmultistep.backends.diffusers.adapters import UNetEps, encode_classes
from linmultistep.backends.diffusers.grid import grid_from_config
from linmultistep.backends.digits import load_heldout, load_pipeline


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--guidance", type=float, nargs="+", default=[1.0, 2.0, 3.0, 5.0, 7.5, 20.0, 1e6])
    parser.add_argument("--steps", type=int, nargs="+", default=[20, 50])
    parser.add_argument("--images", type=int, default=8)
    parser.add_argument("--dtype", default="float32", choices=["float32", "float64"])
    args = parser.parse_args()
    torch.set_num_threads(1)
    pipe = load_pipeline()
    images, labels = load_heldout()
    dtype = getattr(torch, args.dtype)
    pipe.unet.to(dtype)
    x0, lab = images[: args.images].to(dtype), labels[: args.images]
    print(f"# digits model, {args.images} held-out images, O-BELM mode 'stable', {args.dtype} states and network")
    print("| steps | guidance | round-trip error | expected (warning) | warned |")
    print("|---|---|---|---|---|")
    for steps in args.steps:
        grid = grid_from_config(pipe.scheduler, steps)
        for g in args.guidance:
            eps_fn = UNetEps(pipe.unet, grid, "epsilon", encode_classes(pipe.unet, lab, x0.shape[0], g))
            with warnings.catch_warnings(record=True) as caught:
                warnings.simplefilter("always", lms.PrecisionWarning)
                latent = lms.invert(eps_fn, x0, grid, "obelm", mode="stable")
                back = lms.sample(eps_fn, latent, grid)
            said = [str(w.message) for w in caught if issubclass(w.category, lms.PrecisionWarning)]
            found = re.search(r"off by up to about ([0-9.e+-]+)", said[0]) if said else None
            err = (back.double() - x0.double()).abs().max().item()
            print(f"| {steps} | {g:g} | {err:.2e} | {found.group(1) if found else '-'} | {'yes' if said else 'no'} |",
                  flush=True)


if __name__ == "__main__":
    main()
