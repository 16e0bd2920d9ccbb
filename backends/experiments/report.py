"""Write the runner's outcomes: ``report.md`` (markdown tables and pictures), ``results.json``, figures."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any, Callable, Sequence

import numpy as np
import torch

from .measures import mean_std
from .runner import Outcome

__all__ = ["write_report", "grid_image", "md_table"]


def md_table(headers: Sequence[str], rows: Sequence[Sequence[str]]) -> str:
    lines = ["| " + " | ".join(headers) + " |", "|" + "---|" * len(headers)]
    lines += ["| " + " | ".join(r) + " |" for r in rows]
    return "\n".join(lines)


def _plt() -> Any:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    return plt


def grid_image(rows: Sequence[torch.Tensor], path: Path, titles: "Sequence[str] | None" = None,
               col_titles: "Sequence[str] | None" = None, dpi: int = 80) -> Path:
    """A picture grid: each row a (K, C, H, W) tensor in [-1, 1] (grey for C = 1)."""
    plt = _plt()
    nrow, ncol = len(rows), max(len(r) for r in rows)
    fig, axes = plt.subplots(nrow, ncol, figsize=(0.55 * ncol + (1.9 if titles else 0), 0.6 * nrow + 0.4), squeeze=False)
    for r, row in enumerate(rows):
        for c in range(ncol):
            ax = axes[r][c]
            ax.set_xticks([])
            ax.set_yticks([])
            for sp in ax.spines.values():
                sp.set_visible(False)
            if c < len(row):
                img = row[c].float().clamp(-1, 1)
                if img.shape[0] == 1:
                    ax.imshow(img[0].numpy(), cmap="gray", vmin=-1, vmax=1, interpolation="nearest")
                else:
                    ax.imshow(((img + 1) / 2).permute(1, 2, 0).numpy(), interpolation="nearest")
            if c == 0 and titles:
                ax.set_ylabel(titles[r], rotation=0, ha="right", va="center", fontsize=6)
            if r == 0 and col_titles and c < len(col_titles):
                ax.set_title(col_titles[c], fontsize=7)
    fig.tight_layout(pad=0.2)
    fig.savefig(path, dpi=dpi)
    plt.close(fig)
    return path


def _slug(name: str) -> str:
    return "_".join(name.lower().split())


# --- sections --------------------------------------------------------------------------------------
def _reconstruction(o: Outcome, subject: Any, out: Path) -> list[str]:
    exp, r = o.experiment, o.result
    labels = [s.label for s in exp.samplers]
    latent = subject.latent_space
    md = [f"## {exp.name[0].upper() + exp.name[1:]} (Tables 2/3 analogue)", ""]
    if latent:
        floor = "-" if r.get("ae_floor") is None else f"{r['ae_floor']:.2e}"
        scale = "-" if r.get("latent_mean_square") is None else f"{r['latent_mean_square']:.2f}"
        md += [f"Pixel MSE of decode(reconstruct(invert(x))) against x on {r['images']} held-out images ([-1, 1] "
               f"range), next to the autoencoder's own round trip decode(encode(x)) (the floor: {floor}); and latent "
               f"MSE of the sampled-back latent against the encoded one (mean square of the latents: {scale}). "
               "`stable` and `bits` are the precision modes of docs/precision.md; `bits` is exact to the last bit.", ""]
    else:
        md += [f"Pixel MSE of reconstruct(invert(x)) on {r['images']} held-out digits ([-1, 1] range). "
               "`stable` and `bits` are the precision modes of docs/precision.md; `bits` is exact to the last bit.", ""]
    def cell(table: dict, lab: str, n: int) -> str:
        v = table.get(lab, {}).get(n)
        return "–" if v is None else f"{v:.2e}"

    for key in sorted(r["pixel_mse"], key=lambda k: (k.split(" ")[0], float(k.split("=")[1]))):
        dtype, w = key.split(" ")
        title = f"{dtype} states, guidance w = {w.removeprefix('w=')}"
        for measure in (("pixel_mse", "latent_mse") if latent else ("pixel_mse",)):
            table = r[measure][key]
            cols = [lab for lab in labels if lab in table]  # a part of a merged run may lack a column
            rows = [n for n in exp.steps if any(n in table[lab] for lab in cols)]
            md += [f"**{title}" + (f", {measure.replace('_', ' ').replace('mse', 'MSE')}**" if latent else "**"), "",
                   md_table(["steps"] + cols, [[str(n)] + [cell(table, lab, n) for lab in cols] for n in rows]), ""]
    drift = _cfg_drift_line(r, labels, exp.steps)
    if drift:
        md += [drift, ""]
    return md


def _cfg_drift_line(r: dict, labels: list[str], steps: Sequence[int]) -> str:
    """The guided round trip in one line: the exact sampler stays at 0, DDIM inversion drifts more with CFG."""
    keys = [k for k in r["latent_mse"] if not k.endswith("w=1")]
    present = {lab for k in keys for lab in r["latent_mse"][k]}
    exact = next((lab for lab in ("O-BELM bits", "O-BELM stable", "O-BELM") if lab in present), None)
    plain = next((lab for lab in ("DDIM", "Euler") if lab in labels), None)
    if not keys or exact is None or plain is None:
        return ""
    key = keys[0]
    lat = r["latent_mse"][key]
    common = [n for n in steps if n in lat.get(exact, {}) and n in lat.get(plain, {})]
    if not common:
        return ""
    n = max(common)
    one = key.split(" ")[0] + " w=1"
    parts = [f"with guidance ({key}, N = {n}): {exact} latent MSE {lat[exact][n]:.2e}, {plain} inversion {lat[plain][n]:.2e}"]
    if n in r["latent_mse"].get(one, {}).get(plain, {}):
        parts.append(f"(without guidance {plain} {r['latent_mse'][one][plain][n]:.2e})")
    return "Reconstruction with classifier-free guidance is exact; DDIM-type inversion with guidance drifts: " + " ".join(parts) + "."


_METHOD_NAMES = {"obelm": "O-BELM", "ddim": "DDIM/Euler", "edict": "EDICT", "bdia": "BDIA"}


def _generation(o: Outcome, subject: Any, out: Path) -> list[str]:
    exp, r = o.experiment, o.result
    labels = [s.label for s in exp.samplers]
    ref = r["reference"]
    md = ["## Generation quality (Table 4 analogue)", "",
          f"{r['samples']} samples per seed (conditions {subject.prompt_note}), guidance w = {r['guidance']:g}, seeds "
          f"{r['seeds']}, the same noise for every sampler; mean ± std over seeds. FD: Fréchet distance of the judge's "
          "features against the held-out images (lower is better). Error: RMS difference of the final model-space "
          f"x_0 to a {r['reference_steps']}-step {_METHOD_NAMES.get(exp.reference_method, exp.reference_method)} solution of "
          "the probability-flow ODE from the same noise "
          f"(float64 states; its own error, RMS against {r['reference_steps'] // 2} steps: "
          f"{mean_std(ref['error'], '.1e') if ref['error'] else '-'}). Reference: FD {mean_std(ref['frechet'])}, "
          + ", ".join(f"{h} accuracy {mean_std(v)}" for h, v in ref["accuracy"].items()) + ".", ""]
    blocks = [(f"{h} accuracy" if h != "digit" or len(r["accuracy"]) > 1 else "class accuracy", r["accuracy"][h], ".3f")
              for h in r["accuracy"]]
    blocks += [("Fréchet distance", r["frechet"], ".3f"), ("error vs the PF-ODE solution", r["error"], ".4f")]
    for title, metric, fmt in blocks:
        if not metric:
            continue
        md += [f"**{title}**", "", md_table(["steps"] + labels,
                                            [[str(n)] + [mean_std(metric[lab][n], fmt) for lab in labels] for n in exp.steps]), ""]
    err = r["error"]
    plain = next((lab for lab in ("DDIM", "Euler") if lab in err), None)
    if plain and "O-BELM" in err:
        md += [f"error({plain}) / error(O-BELM): " + ", ".join(
            f"N={n}: {np.mean(err[plain][n]) / np.mean(err['O-BELM'][n]):.2f}" for n in exp.steps), ""]
    return md


def _edit(o: Outcome, subject: Any, out: Path) -> list[str]:
    exp, r = o.experiment, o.result
    md = [f"## Editing" + ("" if exp.name == "editing" else f": {exp.name.removeprefix('editing ')}"), ""]
    what = {"digit": "the digit a becomes b = (a + 5) mod 10", "thickness": "thin <-> thick", "width": "narrow <-> wide",
            "slant": "the slant moves to the next word"}
    for change, e in r["changes"].items():
        slug = _slug(f"{exp.name} {change}")
        md += [f"{r['images']} held-out images edited ({what[change]}"
               + (", one word of the caption" if subject.text else "") + f") through exact "
               f"{exp.samplers[0].label} inversion ({r['steps']} steps, target guidance w = {r['guidance']:g}). "
               "Strength = share of the grid inverted (1 = to pure noise).", ""]
        if subject.text:
            md += [f"Example: `{e['sources'][0]}` -> `{e['targets'][0]}`.", ""]
        rows = [[f"judged as the target, {v}"] + [f"{x:.2f}" for x in e["share"][v]] for v in e["share"]]
        rows += [[f"RMS distance to source, {v}"] + [f"{x:.3f}" for x in e["distance"][v]] for v in e["distance"]]
        md += [md_table(["strength"] + [f"{s:g}" for s in r["strengths"]], rows), ""]
        fresh_share = "-" if e["fresh_share"] is None else f"{e['fresh_share']:.2f}"
        md += [f"A fresh sample of the target: judged as the target {fresh_share}, RMS distance to the source "
               f"{e['fresh_distance']:.3f}.", ""]
        pics = o.pictures.get(change)
        if pics is not None and pics["edits"]:
            _edit_figures(pics, e, r, subject, out, slug)
        if e["distance"]:
            md += [f"![edit grid]({slug}_grid.png)", ""]
            if e["share"]:
                md += [f"![edit metrics]({slug}_metrics.png)", ""]
    md += [f"- {note}" for note in r["notes"]] + ([""] if r["notes"] else [])
    return md


def _edit_figures(pics: dict, e: dict, r: dict, subject: Any, out: Path, slug: str) -> None:
    rows, titles = [], []
    short = {"plain": "plain", "direct inversion": "DI", "prompt-to-prompt": "P2P"}
    for j in range(min(6, len(pics["sources"]))):
        for variant, grid in pics["edits"].items():
            rows.append(torch.cat([pics["sources"][j:j + 1], grid[:, j], pics["fresh"][j:j + 1]]))
            src, tgt = e["sources"][j], e["targets"][j]
            pair = f"{src}->{tgt}" if not subject.text else _word_change(src, tgt)
            titles.append(f"{pair} {short.get(variant, variant)}")
    grid_image(rows, out / f"{slug}_grid.png", titles, ["source"] + [f"s={v:g}" for v in r["strengths"]] + ["fresh"])
    if e["share"]:
        plt = _plt()
        fig, (a1, a2) = plt.subplots(1, 2, figsize=(8, 3))
        for (variant, share), marker in zip(e["share"].items(), "os^"):
            a1.plot(r["strengths"], share, marker=marker, label=variant)
            a2.plot(r["strengths"], e["distance"][variant], marker=marker, label=variant)
        if e["fresh_share"] is not None:
            a1.axhline(e["fresh_share"], color="gray", ls="--", label="fresh sample of the target")
        a2.axhline(e["fresh_distance"], color="gray", ls="--", label="fresh sample of the target")
        a1.set(xlabel="strength", ylabel="share judged as the target", ylim=(-0.02, 1.02))
        a2.set(xlabel="strength", ylabel="RMS distance to the source")
        a1.legend(fontsize=7)
        fig.tight_layout()
        fig.savefig(out / f"{slug}_metrics.png", dpi=80)
        plt.close(fig)


def _word_change(src: str, tgt: str) -> str:
    a, b = src.split(), tgt.split()
    diff = [(x, y) for x, y in zip(a, b) if x != y]
    return ",".join(f"{x}->{y}" for x, y in diff) or "same"


def _interpolation(o: Outcome, subject: Any, out: Path) -> list[str]:
    r, rows = o.result, o.pictures.get("rows")
    if rows:
        grid_image(list(rows.values()), out / "interpolation.png", list(rows),
                   [f"t={t:.2f}" for t in np.linspace(0, 1, r["frames"])])
    space = "latents" if subject.latent_space else "pixels"
    return ["## Interpolation", "",
            f"Spherical interpolation between the exact unconditional latents of two held-out images ({r['steps']} "
            "steps; every window entry interpolated with the same weight). Max endpoint error in model space "
            f"({space}; t = 0, 1 must give the inputs back): "
            + ", ".join(f"{lab} {err:.1e}" for lab, err in r["endpoint_error"].items()) + ".", "",
            "![interpolation](interpolation.png)", ""]


def _comparison(exp: Any, r: dict) -> Any:
    """The section's numbers as a ComparisonResult keyed by label (for the shared table and sentence)."""
    from linmultistep.analysis.sampler_comparison import ComparisonResult

    labels = [s.label for s in exp.samplers if s.label in r["error"]]
    steps = [n for n in exp.steps if all(n in r["error"][lab] for lab in labels)]
    return ComparisonResult(steps, labels, {lab: r["error"][lab] for lab in labels},
                            {lab: r["nfe"].get(lab, {}) for lab in labels}, {lab: {} for lab in labels})


def _samplers(o: Outcome, subject: Any, out: Path) -> list[str]:
    from linmultistep.analysis.sampler_comparison import where_obelm_loses

    exp, r = o.experiment, o.result
    res = _comparison(exp, r)
    method = {s.label: s.method for s in exp.samplers}
    ref = r["reference"]
    cross_label = ref.get("cross_label", f"DPM-Solver++ 2M at {r['reference_steps']} steps")
    cross = "" if ref.get("cross") is None else f", to {cross_label} {ref['cross']:.1e}"
    flow = (getattr(subject, "family", None) == "flow" or exp.reference_method != "obelm"  # (a merged report has no family)
            or any(s.method.startswith("flow-") for s in exp.samplers))
    md = ["## The samplers users pick instead (issue 23)", ""]
    if flow:
        md += [f"{r['samples']} samples from seed {r['seed']} (conditions {subject.prompt_note}), guidance w = "
               f"{r['guidance']:g}, every sampler from the same noise at sigma = 1, driven by the model's own velocity "
               "(classifier-free guidance in one batched call) on the model's own sigmas (its "
               "`FlowMatchEulerDiscreteScheduler` config, shift included) down to sigma = 0, float64 states: "
               "diffusers' `DPMSolverMultistepScheduler` (DPM-Solver++ 2M) and `UniPCMultistepScheduler` (UniPC) "
               "with `prediction_type='flow_prediction'`, `use_flow_sigmas=True`, and `FlowMatchEulerDiscreteScheduler` "
               "(FlowMatchEuler), each through its own `step`; the library's Euler (FlowMatchEuler step for step, "
               "tests/test_flow_schedulers.py) and O-BELM (default mode) "
               "(`linmultistep.analysis.flow_sampler_comparison`, docs/samplers.md); N steps = N network "
               "evaluations for every sampler. O-BELM is the only one of them that inverts exactly.", "",
               "The model's own sigmas are the pipeline's: `FlowMatchEulerDiscreteScheduler.set_timesteps(N)`, "
               "shift(linspace(1, sigma_min, N)) with a last step from the fixed sigma_min to 0. The second table "
               "runs every sampler on the uniform sigmas shift(k / N), k = N..1, then 0 (DPM-Solver's and UniPC's own "
               "`use_flow_sigmas` grid, up to their factor 0.999; FLUX pipelines' `sigmas=linspace(1, 1/N, N)`), "
               "against the same reference.", ""]
    else:
        md += [f"{r['samples']} samples from seed {r['seed']} (conditions {subject.prompt_note}), guidance w = "
               f"{r['guidance']:g}, every sampler from the same noise, driven by the model's own network "
               "(classifier-free guidance in one batched call): diffusers' `DDIMScheduler`, `EulerDiscreteScheduler` "
               "(Euler), `DPMSolverMultistepScheduler` (DPM-Solver++ 2M) and `UniPCMultistepScheduler` (UniPC) through "
               "their own loop, and the library's DDIM and O-BELM (default mode), all on 'trailing' timesteps and "
               "ending at t = 0 (`linmultistep.analysis.sampler_comparison`, docs/samplers.md); N steps = N network "
               "evaluations for every sampler. O-BELM is the only one of them that inverts exactly.", ""]
    end = "final latent x_0" if flow else "final model-space x_0 / alpha_0 (xbar at t = 0)"
    md += [f"Error: RMS of the {end} against {ref['label']} from the same noise (its own "
           f"error: RMS distance to {r['reference_steps'] // 2} steps {ref['error']:.1e}{cross}; a difference between "
           "two samplers below that is not resolved). Fitted order: least squares of log error on log N over the "
           "N shown (± standard error). ÷ O-BELM: the error divided by O-BELM's.", ""]
    head, rows = _comparison_rows(res, method)
    if flow and r.get("uniform"):
        md += ["**on the model's own sigmas**", ""]
    md += [md_table(head, rows), ""]
    line = where_obelm_loses(res, against="O-BELM") if "O-BELM" in res.samplers else ""
    if line:
        md += [f"Where O-BELM loses: {line}", ""]
    if flow and r.get("uniform"):
        uni = _comparison(exp, r["uniform"])
        md += ["**on the uniform sigmas shift(k / N)**", "", md_table(*_comparison_rows(uni, method)), ""]
        line = where_obelm_loses(uni, against="O-BELM") if "O-BELM" in uni.samplers else ""
        if line:
            md += [f"Where O-BELM loses on the uniform sigmas: {line}", ""]
    if r["accuracy"]:
        acc_ref = "" if ref.get("accuracy") is None else f" (reference: {ref['accuracy']:.2f})"
        md += [f"**digit accuracy of the decoded samples**{acc_ref}", "",
               md_table(["sampler"] + [f"N = {n}" for n in res.steps],
                        [[lab] + [f"{r['accuracy'][lab][n]:.2f}" for n in res.steps] for lab in res.samplers
                         if lab in r["accuracy"]]), ""]
        if flow and r.get("uniform", {}).get("accuracy"):
            acc = r["uniform"]["accuracy"]
            md += ["**digit accuracy on the uniform sigmas**", "",
                   md_table(["sampler"] + [f"N = {n}" for n in res.steps],
                            [[lab] + [f"{acc[lab][n]:.2f}" for n in res.steps] for lab in res.samplers if lab in acc]),
                   ""]
    md += [f"- {note}" for note in r.get("notes", [])] + ([""] if r.get("notes") else [])
    return md


def _comparison_rows(res: Any, method: dict) -> tuple[list[str], list[list[str]]]:
    """The comparison's shared table (nominal orders by the sampler's method)."""
    from linmultistep.analysis.sampler_comparison import comparison_rows, nominal_order

    head, rows = comparison_rows(res, against="O-BELM")
    for row, lab in zip(rows, res.samplers):
        order = nominal_order(method[lab])
        row[1] = "-" if order is None else str(order)
    return head, rows


SECTIONS: dict[str, Callable[[Outcome, Any, Path], list[str]]] = {
    "reconstruction": _reconstruction, "generation": _generation, "edit": _edit, "interpolation": _interpolation,
    "samplers": _samplers}


def write_report(outcomes: Sequence[Outcome], subject: Any, out: Path, header: Sequence[str] = (),
                 seconds: float = 0.0, threads: int = 1) -> Path:
    """``out/report.md`` (header, then one section per experiment), ``out/results.json`` (every number, with
    each experiment's definition) and the figures; returns the report's path."""
    import dataclasses

    out.mkdir(parents=True, exist_ok=True)
    md = list(header)
    data: dict[str, Any] = {"model": subject.name, "subject": {
        "latent_space": bool(subject.latent_space), "text": bool(subject.text),
        "prompt_note": getattr(subject, "prompt_note", "")}, "experiments": {}}
    for o in outcomes:
        md += SECTIONS[o.experiment.kind](o, subject, out)
        data["experiments"][o.experiment.name] = {"definition": dataclasses.asdict(o.experiment), "result": o.result,
                                                  "seconds": round(o.seconds, 1)}
    md += [f"Total time {seconds:.0f} s on {threads} thread(s)."]
    (out / "results.json").write_text(json.dumps(data, indent=1, default=float) + "\n")
    report = out / "report.md"
    report.write_text("\n".join(md) + "\n")
    return report


# --- joining the parts of one report run in parallel ----------------------------------------------
def _merge(a: Any, b: Any) -> Any:
    """Deep union of two results (dicts merged key by key, per-seed lists joined; otherwise the second wins)."""
    if isinstance(a, list) and isinstance(b, list):
        return a + b
    if isinstance(a, dict) and isinstance(b, dict):
        out = dict(a)
        for k, v in b.items():
            out[k] = _merge(a[k], v) if k in a else v
        return out
    return b


def _experiment(d: dict) -> Any:
    from .definitions import EditVariant, Experiment, Sampler

    d = dict(d)
    d["samplers"] = tuple(Sampler(**s) for s in d["samplers"])
    d["variants"] = tuple(EditVariant(**v) for v in d["variants"])
    for k in ("steps", "guidance", "dtypes", "seeds", "strengths", "changes", "measures"):
        d[k] = tuple(d[k])
    d.setdefault("reference_method", "obelm")  # parts written before the field existed
    return Experiment(**d)


def _int_keys(x: Any) -> Any:
    """JSON turned the step counts into strings: back to ints where a key is a number."""
    if isinstance(x, dict):
        return {(int(k) if isinstance(k, str) and k.isdigit() else k): _int_keys(v) for k, v in x.items()}
    return x


def _sampler_rank(model: str, name: str, label: str) -> int:
    """A column's place in the model's own list (merged parts keep the report's usual column order)."""
    from .definitions import definitions_for

    try:
        exp = next(e for e in definitions_for(model) if e.name == name)
        return [s.label for s in exp.samplers].index(label)
    except (ValueError, StopIteration):
        return 1000


def merge_reports(parts: Sequence["str | Path"], out: "str | Path", order: Sequence[str] = (),
                  notes: Sequence[str] = ()) -> Path:
    """Join report folders of one model run in parts (``reproduce --only``) into ``out``: results merged
    (an experiment in several parts, e.g. by guidance, is the union of its tables; the definition's
    guidance/dtypes the union too), figures copied, report.md re-rendered in ``order`` (default: first seen)."""
    import shutil
    from types import SimpleNamespace

    out = Path(out)
    out.mkdir(parents=True, exist_ok=True)
    merged: dict[str, Any] = {}
    seconds, header, meta = 0.0, [], {}
    for part in map(Path, parts):
        data = json.loads((part / "results.json").read_text())
        meta = {**data.get("subject", {}), **meta}
        text = (part / "report.md").read_text().splitlines()
        first_section = next((i for i, line in enumerate(text) if line.startswith("## ")), len(text))
        header = header or text[:first_section]
        for name, e in data["experiments"].items():
            if name in merged:
                old = merged[name]
                d = dict(old["definition"])
                for k in ("guidance", "dtypes", "steps"):
                    d[k] = sorted(set(d[k]) | set(e["definition"][k]), key=lambda v: (str(type(v)), v))
                known = [s["label"] for s in d["samplers"]]
                d["samplers"] = d["samplers"] + [s for s in e["definition"]["samplers"] if s["label"] not in known]
                d["samplers"] = sorted(d["samplers"], key=lambda s: _sampler_rank(data.get("model", ""), name, s["label"]))
                merged[name] = {"definition": d, "result": _merge(old["result"], e["result"]),
                                "seconds": old["seconds"] + e["seconds"]}
            else:
                merged[name] = e
            seconds += e["seconds"]
        for png in part.glob("*.png"):
            if part.resolve() != out.resolve():
                shutil.copy2(png, out / png.name)
    names = [n for n in order if n in merged] + [n for n in merged if n not in order]
    subject = SimpleNamespace(name=data.get("model", ""), **meta)
    outcomes = [Outcome(_experiment(merged[n]["definition"]), _int_keys(merged[n]["result"]), {}, merged[n]["seconds"])
                for n in names]
    header = [line for line in header if not line.startswith("Command: ")] + [f"{n}\n" for n in notes]
    return write_report(outcomes, subject, out, header=header, seconds=seconds, threads=1)


def main(argv: "Sequence[str] | None" = None) -> int:
    import argparse

    p = argparse.ArgumentParser(description="join report folders of one model run in parts (reproduce --only)")
    p.add_argument("--merge", nargs="+", required=True, help="the part folders")
    p.add_argument("--out", required=True)
    p.add_argument("--order", nargs="*", default=(), help="experiment names in report order")
    p.add_argument("--note", nargs="*", default=(), help="paragraphs added to the header (how the parts were run)")
    a = p.parse_args(argv)
    print(merge_reports(a.merge, a.out, a.order, a.note))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
