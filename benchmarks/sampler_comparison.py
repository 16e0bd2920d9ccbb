"""O-BELM against the samplers users pick instead, at equal network evaluations (issue 23, item 4).

Printed side by side from one run:

1. Ground truth: the study's default problem (a 2-D mixture of three Gaussians, Stable Diffusion's
   schedule, 256 samples): RMS error at the data end against the exact flow of the same x_N, for
   diffusers' DDIMScheduler, EulerDiscreteScheduler, DPMSolverMultistepScheduler (dpmsolver++,
   order 2), UniPCMultistepScheduler and the library's DDIM and O-BELM, each driven by the same
   closed-form noise prediction, with fitted orders; ends aligned at t = 0 ('sigma_min') and at
   the clean point ('clean', diffusers' default final_sigmas_type='zero'). Plus the independent
   check of the exact flow (closed form against scipy's DOP853 at rtol 1e-12).
2. Trained models: the shipped digits model (guidance 2) and mnist-sd (guidance 3): RMS error of
   the final latent against a high-accuracy O-BELM solution of the probability-flow ODE from the
   same noise (its own error by halving its steps, and its distance to DPM-Solver++ 2M at the same
   steps), and the classifier's / judge's digit accuracy of the decoded samples.

``python benchmarks/sampler_comparison.py [--quick] [--threads 2]``
"""

from __future__ import annotations

import argparse
import time

import numpy as np
import torch

from linmultistep.analysis.problems import default_gaussian, default_mixture
from linmultistep.analysis.sampler_comparison import (
    SAMPLERS, SD_CONFIG, ground_truth_comparison, model_comparison, noise_levels, pipeline_net,
)


def _orders(res, min_steps: int) -> dict[str, str]:
    out = {}
    for s in res.samplers:
        p, se = res.order(s, min_steps)
        out[s] = f"{p:.2f} ± {se:.2f}" if np.isfinite(se) else f"{p:.2f}"
    return out


def ground_truth(quick: bool) -> None:
    samples = 64 if quick else 256
    steps = (5, 10, 20, 40) if quick else (5, 10, 20, 40, 100, 200)
    problem = default_mixture(dim=2)
    print(f"## Ground truth: {problem.name}, d = 2, {samples} samples, Stable Diffusion schedule, 'trailing' timesteps")
    print("RMS error of xbar at the end against the exact flow (DOP853, rtol 1e-12) of the same x_N;"
          " N steps = N network evaluations for every sampler.\n")
    results = {end: ground_truth_comparison(problem, steps, samples=samples, end=end) for end in ("sigma_min", "clean")}
    r = results["sigma_min"]
    fit_from = 20
    o_fit, o_all = _orders(r, fit_from), _orders(r, 0)
    head = " | ".join(f"N = {n}" for n in r.steps)
    print(f"### end = t 0 (sigmabar {r.ends['obelm'][steps[0]]:.4f}): 'sigma_min' / set_alpha_to_one=False\n")
    print(f"| sampler | nominal order | {head} | order (N >= {fit_from}) | order (all N) |")
    print("|---|---|" + "---|" * len(r.steps) + "---|---|")
    for s in r.samplers:
        errs = " | ".join(f"{r.error[s][n]:.2e}" for n in r.steps)
        print(f"| {SAMPLERS[s].label} | {SAMPLERS[s].order} | {errs} | {o_fit[s]} | {o_all[s]} |")
    c = results["clean"]
    o_c = _orders(c, fit_from)
    print("\n### end = clean point (sigmabar 0): final_sigmas_type='zero' (diffusers' default) / set_alpha_to_one=True\n")
    print(f"| sampler | {head} | order (N >= {fit_from}) |")
    print("|---|" + "---|" * len(c.steps) + "---|")
    for s in c.samplers:
        errs = " | ".join(f"{c.error[s][n]:.2e}" for n in c.steps)
        print(f"| {SAMPLERS[s].label} | {errs} | {o_c[s]} |")
    print("\nerror / error of O-BELM (same N, same NFE), end t = 0:\n")
    print(f"| sampler | {' | '.join(f'N = {n}' for n in r.steps if n <= 20)} |")
    print("|---|" + "---|" * len([n for n in r.steps if n <= 20]))
    for s in r.samplers:
        print(f"| {SAMPLERS[s].label} | " + " | ".join(f"{r.error[s][n] / r.error['obelm'][n]:.2f}"
                                                      for n in r.steps if n <= 20) + " |")
    cosine(samples)
    # DDIMScheduler steps from t to t - T // N: with 'trailing' timesteps and T % N != 0 that is not the next timestep
    odd = ground_truth_comparison(problem, (80,), ("ddim-diffusers", "ddim"), samples=samples)
    print(f"\nN = 80 (1000 % 80 != 0): DDIMScheduler {odd.error['ddim-diffusers'][80]:.2e}, "
          f"library DDIM {odd.error['ddim'][80]:.2e}")
    g = default_gaussian(dim=8)
    x = g.sample(np.random.default_rng(1), 64, s=14.6)
    gap = np.abs(g.flow_closed_form(x, 14.6, 0.0292) - g.flow_reference(x, 14.6, 0.0292)).max()
    print(f"exact flow check, 8-D Gaussian, sigmabar 14.6 -> 0.0292: closed form vs DOP853 (rtol 1e-12) max "
          f"|diff| {gap:.1e}")


def cosine(samples: int) -> None:
    """The cosine schedule (sigmabar about linear in t at the data end): where the nominal orders show."""
    steps = (10, 20, 40, 100, 200)
    problem = default_gaussian(dim=4, seed=1)
    r = ground_truth_comparison(problem, steps, samples=samples, end="sigma_min",
                                config=dict(SD_CONFIG, beta_schedule="squaredcos_cap_v2"))
    o = _orders(r, 40)
    print(f"\n### cosine schedule (squaredcos_cap_v2), 4-D Gaussian (closed-form flow), {samples} samples, end t = 0\n")
    print(f"| sampler | {' | '.join(f'N = {n}' for n in steps)} | order (N >= 40) |")
    print("|---|" + "---|" * len(steps) + "---|")
    for s in r.samplers:
        print(f"| {SAMPLERS[s].label} | " + " | ".join(f"{r.error[s][n]:.2e}" for n in steps) + f" | {o[s]} |")


def trained(quick: bool, samples: int, reference_steps: int) -> None:
    from linmultistep.backends.diffusers.models import load_pipeline
    from linmultistep.backends.diffusers.pipeline import decode_latents, parts_of
    from linmultistep.backends.digits import load_classifier
    from linmultistep.backends.mnist_sd import load_judge
    from linmultistep.backends.mnist_sd.evaluate import prompts_for

    out = {}
    for name, guidance in (("digits", 2.0), ("mnist-sd", 3.0)):
        t0 = time.time()
        pipe = load_pipeline(name, quiet=True)
        parts = parts_of(pipe)
        if name == "digits":
            targets = np.arange(samples) % 10
            prompt = targets.tolist()
            judge = load_classifier()
        else:
            prompt, tg = prompts_for(samples, seed=0)
            targets = np.asarray(tg["digit"])
            judge = load_judge()

        def score(xbar: torch.Tensor) -> float:
            # the end is t = 0: x = alpha_0 xbar, which is what the decoder (or the pixels) take
            x = xbar / float(np.sqrt(1.0 + noise_levels(parts.config)[0] ** 2))
            with torch.no_grad():
                pred = judge.predict(decode_latents(parts, x.float()))
            pred = pred["digit"] if isinstance(pred, dict) else pred
            return float((np.asarray(pred) == targets).mean())

        shape = (samples, int(parts.unet.config.in_channels), int(parts.unet.config.sample_size),
                 int(parts.unet.config.sample_size))
        noise = torch.randn(shape, generator=torch.Generator().manual_seed(0), dtype=torch.float64)
        net = pipeline_net(pipe, prompt, samples, guidance)
        out[name] = (guidance, model_comparison(net, noise, dict(parts.scheduler.config), (5, 10, 20),
                                                reference_steps=reference_steps, cross_check=not quick, score=score))
        print(f"# {name}: {time.time() - t0:.0f} s", flush=True)
    names = list(out)
    steps = (5, 10, 20)
    print(f"\n## Trained models: {samples} samples from seed 0, 'trailing' timesteps, end t = 0\n")
    for name in names:
        g, m = out[name]
        cross = "" if np.isnan(m.reference_cross) else f", to DPM-Solver++ 2M at {reference_steps} steps {m.reference_cross:.1e}"
        print(f"- {name} (guidance {g}): reference {m.reference}; its RMS distance to {reference_steps // 2} steps "
              f"{m.reference_error:.1e}{cross}; reference accuracy {m.reference_accuracy:.2f}")
    cols = " | ".join(f"{nm} N = {n}" for nm in names for n in steps)
    print(f"\nRMS error of the final latent against the reference:\n\n| sampler | {cols} |")
    print("|---|" + "---|" * (len(names) * len(steps)))
    for s in SAMPLERS:
        print(f"| {SAMPLERS[s].label} | " + " | ".join(f"{out[nm][1].result.error[s][n]:.2e}" for nm in names
                                                      for n in steps) + " |")
    print(f"\nDigit accuracy of the decoded samples (digits: its classifier; mnist-sd: its judge):\n\n| sampler | {cols} |")
    print("|---|" + "---|" * (len(names) * len(steps)))
    for s in SAMPLERS:
        print(f"| {SAMPLERS[s].label} | " + " | ".join(f"{out[nm][1].accuracy[s][n]:.2f}" for nm in names
                                                      for n in steps) + " |")


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--quick", action="store_true", help="fewer samples and steps (a smoke run)")
    ap.add_argument("--threads", type=int, default=2)
    ap.add_argument("--only", choices=("ground-truth", "trained"), default=None, help="print one of the two parts")
    ap.add_argument("--samples", type=int, default=None, help="trained-model samples (default 16, quick 10)")
    ap.add_argument("--reference-steps", type=int, default=None, help="default 500, quick 100")
    a = ap.parse_args()
    if a.threads < 1:
        ap.error(f"--threads must be at least 1, got {a.threads}")
    torch.set_num_threads(a.threads)
    t0 = time.time()
    if a.only in (None, "ground-truth"):
        ground_truth(a.quick)
        print(f"\n(ground truth: {time.time() - t0:.0f} s)\n", flush=True)
    if a.only in (None, "trained"):
        trained(a.quick, a.samples or (10 if a.quick else 16), a.reference_steps or (100 if a.quick else 500))
    print(f"\n(total {time.time() - t0:.0f} s)")


if __name__ == "__main__":
    main()
