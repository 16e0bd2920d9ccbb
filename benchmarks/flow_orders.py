"""Convergence orders on the rectified-flow problem, in the core's default flow coordinates
(projective, blend b = linmultistep.paths.FLOW_BLEND) and in the flow's own (x, t) (b = 0).

Problems (linmultistep.analysis.flow_problems): 'gaussian' (2-D anisotropic Gaussian data,
variances 0.02..0.4, exact flow in closed form) and 'mixture' (the study's three-component 2-D
mixture, DOP853 reference at rtol 1e-12). Grids: t_i = shift(i / N), shift 1 (uniform) and 3
(SD3's shift), N = 10..320. Error: RMS over 256 noise samples (seed 0) of the sampled x_0 against
the exact flow of the same noise. Order: least-squares slope of log error against log N.

Round trips (``--roundtrip``): max |sample(invert(x0)) - x0| / max |x0| on the mixture problem
(N = 20 and 50 steps, shift 3, 64 samples) per method and mode in float64 and float32, and on the
tiny SD3 and FLUX pipelines built from configs (random weights; 2 images of 16x16, 28 steps, FLUX
with embedded guidance 3.5, SD3 with classifier-free guidance 2) through invert / reconstruct.

Run:  python benchmarks/flow_orders.py [--roundtrip]
"""

from __future__ import annotations

import argparse

import numpy as np
import torch

import linmultistep as lm
from linmultistep.analysis.flow_problems import flow_orders, flow_problem, v_fn_for
from linmultistep.paths import FLOW_BLEND

METHODS = ("ddim", "obelm", "bdia")
STEPS = (10, 20, 40, 80, 160, 320)


def main(argv: "list[str] | None" = None) -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--samples", type=int, default=256)
    ap.add_argument("--roundtrip", action="store_true", help="also print the round-trip tables")
    args = ap.parse_args(argv)
    torch.set_num_threads(1)
    orders(args.samples)
    if args.roundtrip:
        roundtrip_core()
        roundtrip_pipelines()


ROUNDTRIP = [("ddim (Euler)", "ddim", "recurrence"), ("obelm", "obelm", "stable"), ("obelm", "obelm", "bits"),
             ("bdia(1)", "bdia", "stable"), ("bdia(0.9)", lm.bdia(0.9), "recurrence"), ("edict(0.93)", "edict", "recurrence")]


def _rel(a, b) -> float:
    return float(np.abs(np.asarray(a, np.float64) - np.asarray(b, np.float64)).max() / np.abs(np.asarray(b)).max())


def roundtrip_core() -> None:
    prob = flow_problem("mixture")
    print()
    print("Round trip on the flow problem (mixture, shift 3, 64 samples): max relative error")
    print(f"{'method':<14}{'mode':<12}" + "".join(f"{f'N={n} {d}':>14}" for n in (20, 50) for d in ("f64", "f32")))
    for label, method, mode in ROUNDTRIP:
        cells = []
        for n in (20, 50):
            grid = lm.flow_grid(lm.flow_sigmas(n, shift=3.0))  # the default coordinates
            v = v_fn_for(prob, grid)
            for dtype in (np.float64, np.float32):
                x0 = prob.sample(np.random.default_rng(1), 64).astype(dtype)
                back = lm.sample(v, lm.invert(v, x0, grid, method, mode=mode), grid)
                cells.append(f"{_rel(back, x0):>14.2e}")
        print(f"{label:<14}{mode:<12}" + "".join(cells))
    print("(mode bits: float64 data has bits below the fixed-point grid, 2^-Sx; the round trip returns x0 rounded "
          "onto it, exactly)")


def roundtrip_pipelines() -> None:
    from linmultistep.backends.diffusers import flow_pipeline as fp
    from linmultistep.backends.diffusers.flow_testing import tiny_flux_pipeline, tiny_sd3_pipeline
    from linmultistep.backends.diffusers.testing import sample_images

    print()
    print("Round trip through invert / reconstruct on tiny pipelines (28 steps): max relative error of the latent z0")
    print(f"{'pipeline':<30}{'method':<14}{'mode':<12}{'state':<9}{'error':>10}")
    images = sample_images(2, 16)
    for label, build, kw in (("SD3 (cfg 2)", tiny_sd3_pipeline, dict(guidance_scale=2.0)),
                             ("FLUX (embedded guidance 3.5)", tiny_flux_pipeline, {})):
        pipe = build()
        z0 = fp.encode_images(fp.flow_parts_of(pipe), images)
        for method, mode, dtype in (("ddim", "recurrence", torch.float64), ("obelm", "stable", torch.float64),
                                    ("obelm", "bits", torch.float32), ("bdia", "stable", torch.float64)):
            latent = fp.invert(pipe, images, "a cat", num_steps=28, method=method, mode=mode, state_dtype=dtype,
                               max_sequence_length=16, **kw)
            rec = fp.reconstruct(pipe, latent, output_type="pt").latents
            err = _rel(rec.double().numpy(), z0.to(dtype).double().numpy())
            name = "Euler" if method == "ddim" else method
            print(f"{label:<30}{name:<14}{mode:<12}{str(dtype).replace('torch.', ''):<9}{err:>10.2e}")


def orders(samples: int) -> None:
    print("Euler ('ddim' on a flow grid) vs O-BELM and BDIA(1), RMS error at the data end; fitted order over N = "
          + ", ".join(map(str, STEPS)) + f"; coordinates b = {FLOW_BLEND:g} (default) and b = 0 (x, t)")
    print(f"{'problem':<10}{'shift':>6}{'b':>6}{'method':>8}" + "".join(f"{f'N={n}':>11}" for n in STEPS) + f"{'order':>8}")
    for name in ("gaussian", "mixture"):
        prob = flow_problem(name)
        for shift in (1.0, 3.0):
            for blend in (FLOW_BLEND, 0.0):
                methods = METHODS if blend == FLOW_BLEND else METHODS[1:]  # Euler is the same in both
                res = flow_orders(prob, methods, STEPS, shift=shift, samples=samples, blend=blend)
                for m in methods:
                    cells = "".join(f"{e:>11.2e}" for e in res.errors[m])
                    print(f"{name:<10}{shift:>6g}{blend:>6g}{m:>8}{cells}{res.orders[m]:>8.2f}")
                if blend == FLOW_BLEND:
                    euler = res.errors["ddim"]
                ratio = [d / o for d, o in zip(euler, res.errors["obelm"])]
                print(f"{'':<10}{'':>6}{'':>6}{'E/O':>8}" + "".join(f"{r:>11.1f}" for r in ratio))


if __name__ == "__main__":
    main()
