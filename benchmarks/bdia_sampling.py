"""BDIA as a sampler from noise on the shipped digits model: which BDIA, which gamma, which grid.

    python benchmarks/bdia_sampling.py                       # 100 guided samples (w = 2), 10/20/50 steps
    python benchmarks/bdia_sampling.py --samples 20 --steps 10   # a quick look

Samplers, all from the same noise x_N (seeded), guidance w = 2, float64 states, float32 network:

- ``DDIM``, ``O-BELM`` and ``lib BDIA g`` (linmultistep's BDIA(gamma), the 2-step BELM in scaled
  coordinates xbar = x / alpha) through :func:`linmultistep.sample`;
- ``paper BDIA g``: the BDIA paper's eq. 29 / the authors' sampler in model coordinates,
  x_{i-1} = D_i(x_i) + gamma (x_{i+1} - B_i(x_i)), which is linmultistep's form with gamma replaced by
  gamma alpha_{i+1} / alpha_{i-1} (analysis/bdia_damped.py);
- ``damped g``: the authors' public sampler, which also re-estimates its stored previous state,
  s <- x_i + (s - B_i(x_i)) / 2 (not exactly invertible: analysis/bdia_damped.py);
- diagnostics: ``... exact start``: the same two-step recurrence with x_{N-1} taken from the reference
  solution instead of the one-DDIM-step starter; ``... last step DDIM``: the final step (to the clean
  point) made by DDIM instead of BDIA.

Grids: the digits model's own (diffusers 'leading' spacing, set_alpha_to_one: timesteps 0, T/N, ..., and
the clean point, so the last step is sigmabar 0.01 -> 0) and 'trailing' (timesteps T-1, ..., T/N - 1).
Metrics: accuracy of the shipped classifier (the digit asked for); Fréchet distance of its 64 features
against the 300 held-out digits (biased upwards at 100 samples: compare columns, not with
docs/digits.md's 200-sample figures); RMS error of x_0 against a
high-accuracy solution of the probability-flow ODE from the same x_N at the same start time (O-BELM on
every ``--ref-stride``-th integer timestep from t_N down to 0, its own error estimated against twice the
stride); per-step errors against that solution with the cosine between consecutive error vectors
(near -1: the error flips sign each step, the parasitic mode of a 2-step method).
"""

from __future__ import annotations

import argparse
import json
import math
import sys
import time
from pathlib import Path
from typing import Any, Callable

import numpy as np
import torch

import linmultistep as lm
from linmultistep.analysis.bdia_damped import bdia_step, damped_step, ddim_map
from linmultistep.backends.diffusers import Conditioning, UNetEps, grid_from_config
from linmultistep.backends.diffusers.generate import initial_noise
from linmultistep.backends.diffusers.grid import alphas_cumprod_from_config, scheduler_config
from linmultistep.backends.digits import load_classifier, load_heldout, load_pipeline
from linmultistep.backends.digits.classifier import frechet_distance

GAMMAS = (0.5, 0.8, 0.9, 1.0)
RESULTS = Path(__file__).resolve().parent / "results" / "bdia_sampling.json"


# --- grids -------------------------------------------------------------------------------------
def coarse_grid(pipe: Any, n: int, spacing: str) -> lm.Grid:
    cfg = scheduler_config(pipe.scheduler)
    cfg["timestep_spacing"] = spacing
    return grid_from_config(cfg, n)


def fine_grid(pipe: Any, t_top: int, stride: int) -> lm.Grid:
    """Every ``stride``-th integer timestep from t_top down (t_top, t_top - stride, ...), then the clean point."""
    ac = alphas_cumprod_from_config(pipe.scheduler)
    ts = np.arange(t_top, -1, -stride)[::-1].astype(np.float64)
    acs = np.concatenate([[1.0], ac[ts.astype(np.int64)]])
    return lm.Grid(np.sqrt(acs), np.sqrt(1.0 - acs), np.concatenate([[np.nan], ts]))


# --- runs --------------------------------------------------------------------------------------
Trajectory = dict  # grid index -> x (torch, float64)


def run_library(eps: UNetEps, grid: lm.Grid, x_n: torch.Tensor, method: Any) -> Trajectory:
    traj: Trajectory = {grid.N: x_n}

    def record(info: lm.StepInfo) -> None:
        traj[info.index] = info.entry.x.clone()

    lm.sample(eps, x_n, grid, method, mode="recurrence", callback=record)
    return traj


def run_two_step(eps: UNetEps, grid: lm.Grid, x_n: torch.Tensor, gamma: float, variant: str,
                 start: torch.Tensor | None = None, last_ddim: bool = False) -> Trajectory:
    """The authors' loop: one DDIM step x_N -> x_{N-1} (or ``start``), then BDIA steps (the last one a
    DDIM step with ``last_ddim``). variant: 'paper' (eq. 29 in model coordinates), 'lib' (linmultistep's
    scaled form), 'damped'."""
    a, s = grid.alpha, grid.sigma
    N = grid.N
    z = ddim_map(x_n, eps(x_n, N), a, s, N, N - 1) if start is None else start
    prev, traj = x_n, {N: x_n, N - 1: z}
    for i in range(N - 1, 0, -1):
        if last_ddim and i == 1:
            z = ddim_map(z, eps(z, 1), a, s, 1, 0)
        elif variant == "damped":
            prev, z = damped_step(eps, a, s, i, prev, z, gamma)
        else:
            prev, z = z, bdia_step(eps, a, s, i, prev, z, gamma, "model" if variant == "paper" else "scaled")
        traj[i - 1] = z
    return traj


_REFERENCES: dict = {}


def reference(pipe: Any, cond: Conditioning, grid: lm.Grid, x_n: torch.Tensor, stride: int,
              final_only: bool = False) -> tuple[Trajectory, lm.Grid]:
    """O-BELM on the fine grid from grid's t_N; returns {coarse index: x} at the coarse grid's timesteps
    (only index 0 with ``final_only``). Solutions are cached by (t_N, stride): every trailing grid starts at T-1."""
    t_top = int(grid.timesteps[grid.N])
    fine = fine_grid(pipe, t_top, stride)
    if (t_top, stride) not in _REFERENCES:
        eps = UNetEps(pipe.unet, fine, "epsilon", cond)
        _REFERENCES[(t_top, stride)] = run_library(eps, fine, x_n, "obelm")
    full = _REFERENCES[(t_top, stride)]
    by_t = {(-1 if math.isnan(fine.timesteps[k]) else int(fine.timesteps[k])): x for k, x in full.items()}
    out = {}
    for i in ([0] if final_only else range(grid.N + 1)):
        t = -1 if math.isnan(grid.timesteps[i]) else int(grid.timesteps[i])
        if t not in by_t:
            raise ValueError(f"the reference grid (stride {stride}) misses the coarse timestep {t}")
        out[i] = by_t[t]
    return out, fine


def rms(x: torch.Tensor) -> float:
    return float(x.double().pow(2).mean().sqrt())


def cosine(a: torch.Tensor, b: torch.Tensor) -> float:
    a, b = a.reshape(-1).double(), b.reshape(-1).double()
    return float(a @ b / (a.norm() * b.norm()))


# --- the study ---------------------------------------------------------------------------------
def samplers(gammas: tuple[float, ...], damped_gammas: tuple[float, ...]) -> list[tuple[str, Callable]]:
    """(label, run(eps, grid, x_n, ref) -> trajectory)."""
    out: list[tuple[str, Callable]] = [
        ("DDIM", lambda e, g, x, r: run_library(e, g, x, "ddim")),
        ("O-BELM", lambda e, g, x, r: run_library(e, g, x, "obelm")),
    ]
    for gm in gammas:
        out.append((f"lib BDIA {gm:g}", lambda e, g, x, r, gm=gm: run_library(e, g, x, lm.bdia(gm))))
    for gm in gammas:
        out.append((f"paper BDIA {gm:g}", lambda e, g, x, r, gm=gm: run_two_step(e, g, x, gm, "paper")))
    for gm in damped_gammas:
        out.append((f"damped {gm:g}", lambda e, g, x, r, gm=gm: run_two_step(e, g, x, gm, "damped")))
    out.append(("lib BDIA 1 exact start", lambda e, g, x, r: run_two_step(e, g, x, 1.0, "lib", start=r[g.N - 1])))
    out.append(("paper BDIA 1 exact start", lambda e, g, x, r: run_two_step(e, g, x, 1.0, "paper", start=r[g.N - 1])))
    out.append(("paper BDIA 1 last step DDIM", lambda e, g, x, r: run_two_step(e, g, x, 1.0, "paper", last_ddim=True)))
    return out


def study(samples: int, steps: tuple[int, ...], spacings: tuple[str, ...], guidance: float, seed: int,
          ref_stride: int, gammas: tuple[float, ...], damped_gammas: tuple[float, ...],
          log: Callable[[str], None], save: Callable[[dict], None] = lambda res: None) -> dict:
    """Every sampler on every (spacing, N); ``save(res)`` after each, so a long run keeps what it measured."""
    pipe = load_pipeline()
    pipe.set_progress_bar_config(disable=True)
    classifier = load_classifier()
    with torch.no_grad():
        held = classifier.features(load_heldout()[0]).numpy()
    labels = torch.arange(samples) % 10
    cond = Conditioning(labels, torch.full_like(labels, pipe.unet.config.num_class_embeds - 1), float(guidance))
    x_n = initial_noise(pipe, samples, generator=torch.Generator().manual_seed(seed), dtype=torch.float64)
    res: dict = {"settings": dict(samples=samples, steps=list(steps), spacings=list(spacings), guidance=guidance,
                                  seed=seed, ref_stride=ref_stride, gammas=list(gammas),
                                  damped_gammas=list(damped_gammas)), "runs": {}}
    checked_self_error = False

    def fd(x: torch.Tensor) -> float:
        with torch.no_grad():
            return float(frechet_distance(classifier.features(x.float().clamp(-1, 1)).numpy(), held))
    for spacing in spacings:
        for n in steps:
            t0 = time.time()
            grid = coarse_grid(pipe, n, spacing)
            ref, fine = reference(pipe, cond, grid, x_n, ref_stride)
            key = f"{spacing} N={n}"
            entry: dict = {"timesteps": [None if math.isnan(t) else int(t) for t in grid.timesteps],
                           "reference_steps": fine.N,
                           "reference_accuracy": float((classifier.predict(ref[0].float().clamp(-1, 1)) == labels).float().mean())}
            if not checked_self_error:  # the reference's own error, once: against twice the stride
                coarser, _ = reference(pipe, cond, grid, x_n, 2 * ref_stride, final_only=True)
                entry["reference_self_error"] = rms(coarser[0] - ref[0])
                checked_self_error = True
            eps = UNetEps(pipe.unet, grid, "epsilon", cond)
            entry["reference_fd"] = fd(ref[0])
            if "check" not in res:  # the benchmark's own loop in scaled coordinates IS linmultistep's BDIA
                lib = run_library(eps, grid, x_n, lm.bdia(1.0))[0]
                own = run_two_step(eps, grid, x_n, 1.0, "lib")[0]
                res["check"] = {"grid": key, "max_abs_diff": float((lib - own).abs().max()), "scale": float(lib.abs().max())}
            entry["methods"] = {}
            for label, run in samplers(gammas, damped_gammas):
                traj = run(eps, grid, x_n, ref)
                x0 = traj[0]
                errs = {i: rms(traj[i] - ref[i]) for i in range(grid.N)}
                coss = {i: cosine(traj[i] - ref[i], traj[i + 1] - ref[i + 1]) for i in range(grid.N - 1)}
                acc = float((classifier.predict(x0.float().clamp(-1, 1)) == labels).float().mean())
                entry["methods"][label] = {"accuracy": acc, "error": rms(x0 - ref[0]), "fd": fd(x0), "step_error": errs,
                                           "step_cos": coss}
            res["runs"][key] = entry
            save(res)
            log(f"  {key}: {time.time() - t0:.0f} s")
    return res


# --- printing ----------------------------------------------------------------------------------
def _table(headers: list[str], rows: list[list[str]]) -> str:
    lines = ["| " + " | ".join(headers) + " |", "|" + "---|" * len(headers)]
    return "\n".join(lines + ["| " + " | ".join(r) + " |" for r in rows])


def report(res: dict) -> str:
    s = res["settings"]
    runs = res["runs"]
    labels = list(next(iter(runs.values()))["methods"])
    out = [f"{s['samples']} samples (labels 0..9 in turn), guidance w = {s['guidance']:g}, seed {s['seed']}, float64 "
           f"states; reference: O-BELM on every {s['ref_stride']}-th integer timestep from t_N to 0."]
    self_err = [r["reference_self_error"] for r in runs.values() if "reference_self_error" in r]
    if self_err:
        first = next(k for k, r in runs.items() if "reference_self_error" in r)
        out.append(f"Reference's own error ({first}, RMS of x_0 against twice the stride): {self_err[0]:.1e}.")
    for spacing in s["spacings"]:
        keys = [f"{spacing} N={n}" for n in s["steps"] if f"{spacing} N={n}" in runs]
        if not keys:
            continue
        out += ["", f"**{spacing} grid**: accuracy / RMS error of x_0 vs the PF-ODE reference / Fréchet distance", ""]
        rows = [[lab] + [f"{m['accuracy']:.2f} / {m['error']:.3f} / {m['fd']:.1f}"
                         for m in (runs[k]['methods'][lab] for k in keys)] for lab in labels]
        rows.append(["(reference)"] + [f"{runs[k]['reference_accuracy']:.2f} / - / {runs[k]['reference_fd']:.1f}" for k in keys])
        out.append(_table(["sampler"] + [f"N = {k.split('=')[1]}" for k in keys], rows))
    if "check" in res:
        c = res["check"]
        out += ["", f"Check ({c['grid']}): linmultistep.sample(bdia(1)) against this benchmark's loop in scaled "
                    f"coordinates: max |difference| {c['max_abs_diff']:.1e} (max |x_0| {c['scale']:.1e})."]
    # per-step errors on the smallest N
    n0 = min(s["steps"])
    show = [lab for lab in labels if lab in ("DDIM", "O-BELM", "lib BDIA 1", "lib BDIA 0.5", "paper BDIA 1",
                                             "damped 1", "damped 0.5", "lib BDIA 1 exact start")]
    for spacing in s["spacings"]:
        k = f"{spacing} N={n0}"
        if k not in runs:
            continue
        r = runs[k]
        out += ["", f"**{spacing} N = {n0}, per step**: RMS error of x_i vs the reference (cosine between the errors "
                    f"at i and i+1)", ""]
        rows = []
        for i in range(n0 - 1, -1, -1):
            t = r["timesteps"][i]
            row = [f"{i} (t={'clean' if t is None else t})"]
            for lab in show:
                m = r["methods"][lab]
                e = m["step_error"][i] if i in m["step_error"] else m["step_error"][str(i)]
                c = m["step_cos"].get(i, m["step_cos"].get(str(i)))
                row.append(f"{e:.3f}" + ("" if c is None else f" ({c:+.2f})"))
            rows.append(row)
        out.append(_table(["i"] + show, rows))
    return "\n".join(out)


def coefficient_table(steps: tuple[int, ...], spacings: tuple[str, ...]) -> str:
    """The parasitic multiplier a_{i,2} of each 2-step method in scaled coordinates on the digits grids.

    For any 2-step BELM with a_{i,1} + a_{i,2} = 1 the difference d_i = xbar_i - xbar_{i+1} of a perturbation
    obeys d_{i-1} = -a_{i,2} d_i + (network terms): a_{i,2} is the per-step factor of the oscillating mode.
    A perturbation of x (model units) made at grid point j is 1/alpha_j larger in xbar."""
    pipe = load_pipeline()
    rows = []
    for spacing in spacings:
        for n in steps:
            g = coarse_grid(pipe, n, spacing)
            a, h = g.alpha, g.h
            idx = range(1, g.N)  # BDIA steps i = N-1 .. 1 (step N is the DDIM starter)
            lib = np.ones(len(idx))
            paper = np.array([a[i + 1] / a[i - 1] for i in idx])
            obelm = np.array([h[i] ** 2 / h[i + 1] ** 2 for i in idx])
            rows.append([f"{spacing} N={n}", f"{g.sigmabar[g.N]:.0f}", f"{1 / a[g.N - 1]:.0f}",
                         f"{paper[-1]:.2f} .. {paper[0]:.2f}", f"{np.prod(paper):.1e}",
                         f"{obelm[-1]:.2f} .. {obelm[0]:.2f}", f"{np.prod(obelm):.1e}", f"{h[1] / h[2]:.3f}"])
    return ("a_{i,2} per BDIA step (gamma = 1; lib BDIA: 1 at every step, product 1; any gamma multiplies every "
            "entry by gamma, the products by gamma^(N-1))\n\n" + _table(
        ["grid", "sigmabar_N", "1/alpha_{N-1}", "paper BDIA: alpha_{i+1}/alpha_{i-1} (noise .. data end)", "product",
         "O-BELM: h_i^2/h_{i+1}^2", "product", "last step h_1/h_2"], rows))


def merge(results: list[dict]) -> dict:
    """One result from runs that differ only in their spacings (e.g. run in parallel, one per spacing)."""
    out = json.loads(json.dumps(results[0]))
    for r in results[1:]:
        for k in ("samples", "guidance", "seed", "ref_stride"):
            if r["settings"][k] != out["settings"][k]:
                raise ValueError(f"cannot merge runs with different {k}: {r['settings'][k]} vs {out['settings'][k]}")
        out["settings"]["spacings"] += [sp for sp in r["settings"]["spacings"] if sp not in out["settings"]["spacings"]]
        out["runs"].update(r["runs"])
        out.setdefault("check", r.get("check"))
    return out


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--samples", type=int, default=100)
    p.add_argument("--steps", type=int, nargs="+", default=[10, 20, 50])
    p.add_argument("--spacings", nargs="+", default=["leading", "trailing"])
    p.add_argument("--guidance", type=float, default=2.0)
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--ref-stride", type=int, default=5)
    p.add_argument("--gammas", type=float, nargs="+", default=list(GAMMAS))
    p.add_argument("--damped-gammas", type=float, nargs="+", default=[0.5, 1.0])
    p.add_argument("--json", default=None, help=f"write the results here (e.g. {RESULTS})")
    p.add_argument("--report", nargs="+", default=None, metavar="JSON",
                   help="print the tables of earlier runs' JSON files (merged; e.g. one per spacing) and exit")
    p.add_argument("--coefficients", action="store_true",
                   help="print the parasitic multipliers a_{i,2} of the grids (no sampling) and exit")
    args = p.parse_args(argv)
    if args.coefficients:
        print(coefficient_table(tuple(args.steps), tuple(args.spacings)))
        return 0
    if args.report:
        print(report(merge([json.loads(Path(f).read_text()) for f in args.report])))
        return 0
    torch.set_num_threads(1)
    t0 = time.time()
    res = study(args.samples, tuple(args.steps), tuple(args.spacings), args.guidance, args.seed, args.ref_stride,
                tuple(args.gammas), tuple(args.damped_gammas), lambda m: print(m, file=sys.stderr, flush=True),
                save=(lambda r: Path(args.json).write_text(json.dumps(r, indent=1) + "\n")) if args.json else (lambda r: None))
    print(report(res))
    print(f"\n(total {time.time() - t0:.0f} s on 1 thread)")
    if args.json:
        Path(args.json).write_text(json.dumps(res, indent=1) + "\n")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
