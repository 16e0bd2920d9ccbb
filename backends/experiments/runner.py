"""One runner for every model: execute a list of :class:`~.definitions.Experiment` on a subject.

``run_experiments(experiments, subject)`` returns, per experiment name, a JSON-able result (the
numbers of the report) and the pictures the report draws; :func:`run` also writes ``report.md``,
``results.json`` and the figures (:mod:`.report`).
"""

from __future__ import annotations

import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Callable, Sequence

import numpy as np
import torch

from . import measures as M
from .definitions import FLOW_ONLY, Experiment, Sampler, check_unique_names

__all__ = ["Outcome", "run_experiments", "run", "edit_targets"]

Progress = Callable[[str], None]


@dataclass
class Outcome:
    """An experiment's numbers (``result``, written to results.json) and pictures (``pictures``, tensors)."""

    experiment: Experiment
    result: dict[str, Any]
    pictures: dict[str, Any] = field(default_factory=dict)
    seconds: float = 0.0


def _cfg(dtype: str, w: float) -> str:
    return f"{dtype} w={w:g}"


# --- Tables 2/3 ----------------------------------------------------------------------------------
@torch.no_grad()
def reconstruction(exp: Experiment, subject: Any, progress: Progress) -> Outcome:
    held = subject.heldout.pick(exp.images)
    x = held.images
    z0 = subject.encode(x)
    floor = M.mse(subject.decode(z0), x) if subject.latent_space else 0.0
    res: dict[str, Any] = {"images": len(x), "ae_floor": floor, "latent_mean_square": float(z0.double().pow(2).mean()),
                           "pixel_mse": {}, "latent_mse": {}}
    for dtype in exp.dtypes:
        for w in exp.guidance:
            key = _cfg(dtype, w)
            pix, lat = res["pixel_mse"].setdefault(key, {}), res["latent_mse"].setdefault(key, {})
            for s in exp.samplers:
                pix[s.label], lat[s.label] = {}, {}
                for n in exp.steps:
                    latent = subject.invert(x, held.conditions, s, n, w, getattr(torch, dtype))
                    back, z_back = subject.reconstruct(latent)
                    pix[s.label][n] = M.mse(back, x)
                    lat[s.label][n] = M.mse(z_back, z0.to(getattr(torch, dtype)))
                progress(f"  {exp.name} {key} {s.label}: " + ", ".join(f"N={n} {pix[s.label][n]:.2e}/{lat[s.label][n]:.2e}"
                                                                       for n in exp.steps))
    return Outcome(exp, res)


# --- Table 4 -------------------------------------------------------------------------------------
@torch.no_grad()
def generation(exp: Experiment, subject: Any, progress: Progress) -> Outcome:
    judge, w = subject.judge, exp.guidance[0]
    held_features = judge.features(subject.heldout.images.float()).numpy()
    reference = Sampler("reference", exp.reference_method)
    res: dict[str, Any] = {"samples": exp.samples, "seeds": list(exp.seeds), "guidance": w,
                           "reference_steps": exp.reference_steps, "accuracy": {}, "frechet": {}, "error": {},
                           "reference": {"accuracy": {}, "frechet": [], "error": []}}
    for seed in exp.seeds:
        conds, targets = subject.prompts(exp.samples, seed)
        noise = subject.noise(exp.samples, seed)
        ref_x = ref_z = None
        if exp.reference_steps:
            ref_x, ref_z = subject.generate(conds, noise, reference, exp.reference_steps, w)
            if seed == exp.seeds[0] and "reference_error" in exp.measures:  # its own error, once: against half the steps
                _, half = subject.generate(conds, noise, reference, exp.reference_steps // 2, w)
                res["reference"]["error"].append(M.rms(ref_z, half))
            for h, a in M.judge_accuracy(judge, ref_x, targets).items():
                res["reference"]["accuracy"].setdefault(h, []).append(a)
            res["reference"]["frechet"].append(M.frechet(judge, ref_x, held_features))
        for s in exp.samplers:
            for n in exp.steps:
                x, z = subject.generate(conds, noise, s, n, w)
                for h, a in M.judge_accuracy(judge, x, targets).items():
                    res["accuracy"].setdefault(h, {}).setdefault(s.label, {}).setdefault(n, []).append(a)
                res["frechet"].setdefault(s.label, {}).setdefault(n, []).append(M.frechet(judge, x, held_features))
                if ref_z is not None:
                    res["error"].setdefault(s.label, {}).setdefault(n, []).append(M.rms(z, ref_z))
                progress(f"  {exp.name} seed {seed} {s.label} N={n}: FD {res['frechet'][s.label][n][-1]:.2f}, error "
                         f"{res['error'].get(s.label, {}).get(n, [float('nan')])[-1]:.4f}, accuracy "
                         + ", ".join(f"{h} {res['accuracy'][h][s.label][n][-1]:.3f}" for h in res["accuracy"]))
        progress(f"  {exp.name} seed {seed}: reference FD {res['reference']['frechet'][-1] if ref_z is not None else '-'}")
    return Outcome(exp, res)


# --- editing -------------------------------------------------------------------------------------
def edit_targets(subject: Any, conditions: Sequence[Any], classes: dict[str, torch.Tensor], change: str
                 ) -> "tuple[list, np.ndarray | None]":
    """Target conditions that change one thing, and the target class of the judged head ``change``.

    The digit a becomes b = (a + 5) mod 10; an attribute moves to its next word (thin -> thick, ...).
    Class labels (no text): the target label. Captions: the one word replaced."""
    if change == "prompt":  # any model: every image to the subject's given target prompt, nothing to judge
        return [subject.target_prompt] * len(conditions), None
    current = np.asarray(classes[change])
    words = subject.edit_words.get(change)
    count = 10 if change == "digit" else len(words)
    target = (current + (5 if change == "digit" else 1)) % count
    if not subject.text:
        return target.tolist(), target
    out = []
    for cond, a, b in zip(conditions, current, target):
        old, new = f" {words[int(a)]}", f" {words[int(b)]}"
        if cond.count(old) != 1:
            raise ValueError(f"caption {cond!r} does not name its {change} {words[int(a)]!r} exactly once")
        out.append(cond.replace(old, new))
    return out, target


@torch.no_grad()
def edit(exp: Experiment, subject: Any, progress: Progress) -> Outcome:
    held = subject.heldout.pick(exp.images)
    x, sampler, n, w = held.images, exp.samplers[0], exp.steps[0], exp.guidance[0]
    res: dict[str, Any] = {"images": len(x), "steps": n, "guidance": w, "strengths": list(exp.strengths),
                           "changes": {}, "notes": []}
    pictures: dict[str, Any] = {}
    for variant in exp.variants:
        note = subject.edit_variant_note(variant)
        if note:
            res["notes"].append(note)
    variants = [v for v in exp.variants if subject.edit_variant_note(v) is None]
    for change in exp.changes:
        targets, target_classes = edit_targets(subject, held.conditions, held.classes, change)
        fresh = subject.fresh(targets, n, w, seed=1234)
        entry: dict[str, Any] = {"sources": [_plain(c) for c in held.conditions], "targets": [_plain(c) for c in targets],
                                 "share": {}, "distance": {},
                                 "fresh_share": (M.target_share(subject.judge, fresh, change, target_classes)
                                                 if target_classes is not None else None),
                                 "fresh_distance": M.rms(fresh, x)}
        grids = {}
        for variant in variants:
            outs = []
            for strength in exp.strengths:
                y = subject.edit(x, held.conditions, targets, sampler, n, strength, w, variant)
                outs.append(y)
                if target_classes is not None:
                    entry["share"].setdefault(variant.label, []).append(M.target_share(subject.judge, y, change, target_classes))
                entry["distance"].setdefault(variant.label, []).append(M.rms(y, x))
            grids[variant.label] = torch.stack(outs)
            progress(f"  {exp.name} {change} {variant.label}: share {entry['share'].get(variant.label)}")
        res["changes"][change] = entry
        pictures[change] = {"sources": x, "edits": grids, "fresh": fresh}
    return Outcome(exp, res, pictures)


def _plain(c: Any) -> Any:
    return int(c) if isinstance(c, (int, np.integer)) else c


# --- interpolation -------------------------------------------------------------------------------
def _pair(subject: Any) -> torch.Tensor:
    """A held-out 2 and 7 where labels are known (the digits report's pair), else the first two images."""
    held = subject.heldout
    digit = held.classes.get("digit")
    if digit is not None and (digit == 2).any() and (digit == 7).any():
        return torch.stack([held.images[digit == 2][0], held.images[digit == 7][0]])
    return held.images[:2]


@torch.no_grad()
def interpolation(exp: Experiment, subject: Any, progress: Progress, frames: int = 9) -> Outcome:
    pair = _pair(subject)
    n = exp.steps[0]
    # one image at a time, as inverted: an autoencoder's last bits depend on the batch size
    z_ends = torch.cat([subject.encode(pair[k:k + 1]) for k in (0, 1)]).double()
    res: dict[str, Any] = {"steps": n, "frames": frames, "endpoint_error": {}}
    rows = {}
    for s in exp.samplers:
        plain = Sampler(s.label, s.method, "recurrence")  # every window entry blended: no mode's bookkeeping
        # each image inverted on its own: a frame is reconstructed as a batch of one, and the network's last
        # bits depend on the batch size, which the inversion's growth would amplify
        la, lb = (subject.invert(pair[k:k + 1], [subject.unconditional()], plain, n, 1.0, torch.float64) for k in (0, 1))
        imgs, zs = [], []
        for t in np.linspace(0.0, 1.0, frames):
            img, z = subject.reconstruct(subject.blend(la, lb, float(t)))
            imgs.append(img)
            zs.append(z)
        res["endpoint_error"][s.label] = max(M.max_abs(zs[0][0], z_ends[0]), M.max_abs(zs[-1][0], z_ends[1]))
        rows[s.label] = torch.cat(imgs).float()
        progress(f"  {exp.name} {s.label}: endpoint error {res['endpoint_error'][s.label]:.1e}")
    return Outcome(exp, res, {"rows": rows})


# --- the samplers users pick instead (issue 23) --------------------------------------------------------
def _digit_score(subject: Any, targets: dict, end_level: float) -> Callable[[torch.Tensor], float]:
    """score(xbar at the end) -> the judge's digit accuracy of the decoded samples (x = xbar / sqrt(1 + s^2))."""
    def score(xbar: torch.Tensor) -> float:
        images = subject.decode((xbar / (1.0 + end_level**2) ** 0.5).float())
        return M.judge_accuracy(subject.judge, images, {"digit": targets["digit"]})["digit"]

    return score


@torch.no_grad()
def samplers(exp: Experiment, subject: Any, progress: Progress) -> Outcome:
    """The samplers users pick instead, from the same seeded noise, against a high-accuracy reference
    (:func:`linmultistep.analysis.sampler_comparison.model_comparison` on a UNet,
    :func:`linmultistep.analysis.flow_sampler_comparison.flow_model_comparison` on a flow model, driven by
    the subject's own guided velocity on its own grids)."""
    from linmultistep.analysis.study import fit_order

    seed, w = exp.seeds[0], exp.guidance[0]
    conds, targets = subject.prompts(exp.samples, seed)
    noise = subject.noise(exp.samples, seed)
    score = subject.judge is not None and "accuracy" in exp.measures
    res: dict[str, Any] = {"samples": exp.samples, "seed": seed, "guidance": w, "reference_steps": exp.reference_steps,
                           "error": {}, "order": {}, "accuracy": {}, "nfe": {}, "notes": []}
    if subject.family == "unet":
        from linmultistep.analysis.sampler_comparison import model_comparison, noise_levels, pipeline_net

        flow_only = [s.label for s in exp.samplers if s.method in FLOW_ONLY]
        if flow_only:
            raise ValueError(f"experiment {exp.name!r}: {flow_only} are flow-matching samplers (velocity on the "
                             f"rectified-flow path), and {subject.name} predicts noise on the variance-preserving path")
        if exp.reference_method != "obelm":
            raise ValueError(f"experiment {exp.name!r}: on a UNet the comparison's reference is O-BELM, "
                             f"got reference_method {exp.reference_method!r}")
        config = dict(subject.parts.scheduler.config)
        net = pipeline_net(subject.pipe, conds, exp.samples, w)
        cmp = model_comparison(net, noise, config, exp.steps, [s.method for s in exp.samplers],
                               reference_steps=exp.reference_steps, cross_check="reference_cross" in exp.measures,
                               score=_digit_score(subject, targets, float(noise_levels(config)[0])) if score else None)
        res["reference"] = {"label": cmp.reference, "error": cmp.reference_error,
                            "cross": None if cmp.reference_cross != cmp.reference_cross else cmp.reference_cross,
                            "accuracy": cmp.reference_accuracy if score else None}
    else:
        from linmultistep.analysis.flow_sampler_comparison import flow_model_comparisons

        wrong = [s.label for s in exp.samplers if s.method not in FLOW_ONLY + ("ddim", "obelm")]
        if wrong:
            raise ValueError(f"experiment {exp.name!r}: {wrong} are noise-prediction schedulers on the variance-"
                             f"preserving path, and {subject.name} predicts a velocity on the rectified-flow path; "
                             f"use their flow variants {FLOW_ONLY}")

        def field_for(uniform: bool) -> Callable[[int], Any]:  # the guided velocity on the model's own / uniform grids
            return lambda n: subject.field_on(conds, noise.shape, n, w, uniform)

        def flow_score(x0: torch.Tensor) -> float:
            return M.judge_accuracy(subject.judge, subject.decode(x0), {"digit": targets["digit"]})["digit"]

        cmps = flow_model_comparisons({"model": field_for(False), "uniform": field_for(True)}, noise, exp.steps,
                                      [s.method for s in exp.samplers], reference_steps=exp.reference_steps,
                                      reference_method=exp.reference_method,
                                      num_train_timesteps=int(subject.parts.scheduler.config.num_train_timesteps),
                                      score=flow_score if score else None,
                                      cross_check="reference_cross" in exp.measures)
        cmp, uni = cmps["model"], cmps["uniform"].result
        res["reference"] = {"label": cmp.reference, "error": cmp.reference_error,
                            "cross": None if cmp.reference_cross != cmp.reference_cross else cmp.reference_cross,
                            "cross_label": f"the same on the uniform grid at {exp.reference_steps} steps",
                            "accuracy": cmp.reference_accuracy if score else None}
        res["uniform"] = {"error": {}, "order": {}, "nfe": {}, "accuracy": {}}
        for s in exp.samplers:
            res["uniform"]["error"][s.label] = {n: uni.error[s.method][n] for n in exp.steps}
            res["uniform"]["nfe"][s.label] = {n: uni.nfe[s.method][n] for n in exp.steps}
            res["uniform"]["order"][s.label] = list(fit_order(list(exp.steps), [uni.error[s.method][n] for n in exp.steps]))
            if score:
                res["uniform"]["accuracy"][s.label] = {n: cmps["uniform"].accuracy[s.method][n] for n in exp.steps}
            progress(f"  {exp.name} {s.label} (uniform grid): "
                     + ", ".join(f"N={n} {uni.error[s.method][n]:.2e}" for n in exp.steps))
    r = cmp.result
    for s in exp.samplers:
        res["error"][s.label] = {n: r.error[s.method][n] for n in exp.steps}
        res["nfe"][s.label] = {n: r.nfe[s.method][n] for n in exp.steps}
        if score:
            res["accuracy"][s.label] = {n: cmp.accuracy[s.method][n] for n in exp.steps}
    for label, errs in res["error"].items():
        res["order"][label] = list(fit_order(list(errs), list(errs.values())))
        progress(f"  {exp.name} {label}: " + ", ".join(f"N={n} {e:.2e}" for n, e in errs.items())
                 + f", order {res['order'][label][0]:.2f}")
    return Outcome(exp, res)


KIND_RUNNERS: dict[str, Callable[[Experiment, Any, Progress], Outcome]] = {
    "reconstruction": reconstruction, "generation": generation, "edit": edit, "interpolation": interpolation,
    "samplers": samplers}


def run_experiments(experiments: Sequence[Experiment], subject: Any, progress: Progress = print) -> list[Outcome]:
    """Run every experiment of the list on ``subject``, in order."""
    check_unique_names(experiments)
    needs_judge = [e.name for e in experiments if subject.judge is None
                   and (e.kind == "generation" or (e.kind == "samplers" and "accuracy" in e.measures))]
    if needs_judge:
        raise ValueError(f"experiments {needs_judge} need a judge (a classifier of the samples), and {subject.name} ships none")
    outcomes = []
    for exp in experiments:
        t0 = time.time()
        progress(f"{exp.name} ({exp.kind})")
        out = KIND_RUNNERS[exp.kind](exp, subject, progress)
        out.seconds = time.time() - t0
        outcomes.append(out)
    return outcomes


def run(experiments: Sequence[Experiment], subject: Any, out: "str | Path", progress: Progress = print,
        threads: "int | None" = None, header: Sequence[str] = ()) -> Path:
    """Run the list on ``subject`` and write ``out/report.md``, ``out/results.json`` and the figures; return
    the report's path."""
    from .report import write_report

    if threads:
        torch.set_num_threads(threads)
    t0 = time.time()
    outcomes = run_experiments(experiments, subject, progress)
    return write_report(outcomes, subject, Path(out), header=header, seconds=time.time() - t0,
                        threads=torch.get_num_threads())
