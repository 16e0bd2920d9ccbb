"""The seeds' experiments (BELM reproduction, sections 5.1-5.4) on a trained model, one command.

    linmultistep reproduce --out out/reproduce                 # the shipped digits model
    linmultistep reproduce --out out/reproduce --quick         # the `make run` version (~1 min)

Writes ``report.md`` with:

- Tables 2/3 analogue: reconstruction MSE of held-out digits at 10/20/50/100 steps, every sampler in
  every mode it has, without and with classifier-free guidance, float32 and float64 states. Pixel
  space: there is no autoencoder, so the floor is 0 (the seed's AE column).
- Table 4 analogue: generation quality at 10/20/50 steps from the same noise: class accuracy of
  the shipped classifier, Fréchet distance in its features against the held-out digits, and the
  RMS error against a 1000-step O-BELM solution of the probability-flow ODE (whose own error is
  estimated against 500 steps and printed); mean ± standard deviation over seeds.
- Editing: exact inversion of a digit of class a, regenerated as class b (plain, and the
  Direct-Inversion variant) over a strength sweep; the share classified as b and the distance to
  the source, against a fresh sample of class b.
- Interpolation: spherical interpolation between the exact latents of two held-out digits.

Another model: ``--model PATH`` (a local diffusers folder; text models take ``--prompts``-free
class-less paths only through the Python API). Everything runs offline.
"""

from __future__ import annotations

import argparse
import dataclasses
import json
import math
import time
import warnings
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Callable, Sequence

import numpy as np

from linmultistep import PrecisionWarning
import torch

__all__ = ["Settings", "reconstruction_table", "generation_table", "edit_study", "interpolation", "run_all",
           "add_arguments", "run", "SAMPLERS", "slerp"]

# (label, method, mode): every sampler of the seeds, in every mode it has
SAMPLERS: list[tuple[str, str, str]] = [
    ("DDIM", "ddim", "recurrence"),
    ("EDICT", "edict", "recurrence"),
    ("BDIA", "bdia", "recurrence"),
    ("BDIA stable", "bdia", "stable"),
    ("BDIA bits", "bdia", "bits"),
    ("O-BELM", "obelm", "recurrence"),
    ("O-BELM stable", "obelm", "stable"),
    ("O-BELM bits", "obelm", "bits"),
]
GENERATORS = [("DDIM", "ddim"), ("EDICT", "edict"), ("BDIA", "bdia"), ("O-BELM", "obelm")]


@dataclass
class Settings:
    model: str = "digits"
    recon_steps: Sequence[int] = (10, 20, 50, 100)
    recon_images: int = 50
    guidance: float = 2.0
    gen_steps: Sequence[int] = (10, 20, 50)
    gen_samples: int = 200
    seeds: Sequence[int] = (0, 1, 2)
    reference_steps: int = 500
    edit_images: int = 50
    strengths: Sequence[float] = (0.2, 0.4, 0.6, 0.8, 1.0)
    edit_steps: int = 50
    samplers: Sequence[tuple[str, str, str]] = tuple(SAMPLERS)
    dtypes: Sequence[str] = ("float32", "float64")
    threads: int = 2
    quick: bool = False

    @classmethod
    def quick_settings(cls, **kw: Any) -> "Settings":
        base = dict(recon_steps=(10, 50), recon_images=50, dtypes=("float32",), gen_steps=(), seeds=(0,),
                    edit_images=20, strengths=(0.6, 1.0), quick=True)
        base.update(kw)
        return cls(**base)


def slerp(a: torch.Tensor, b: torch.Tensor, t: float) -> torch.Tensor:
    """Spherical interpolation per batch row (Shoemake 1985), the usual choice for Gaussian latents:
    sin((1-t) w)/sin(w) a + sin(t w)/sin(w) b with cos(w) = <a, b> / (|a| |b|)."""
    fa, fb = a.reshape(a.shape[0], -1).double(), b.reshape(b.shape[0], -1).double()
    cos = (fa * fb).sum(1) / (fa.norm(dim=1) * fb.norm(dim=1))
    w = torch.arccos(cos.clamp(-1, 1))
    s = torch.sin(w)
    ca = torch.where(s > 1e-8, torch.sin((1 - t) * w) / s, torch.full_like(w, 1 - t))
    cb = torch.where(s > 1e-8, torch.sin(t * w) / s, torch.full_like(w, t))
    out = ca[:, None] * fa + cb[:, None] * fb
    return out.reshape(a.shape).to(a.dtype)


def _plain(prompts: Any) -> Any:
    return prompts.tolist() if isinstance(prompts, torch.Tensor) else prompts


def _mse(a: torch.Tensor, b: torch.Tensor) -> float:
    return float((a.double() - b.double()).pow(2).mean())


# --- Tables 2/3 --------------------------------------------------------------------------------
def reconstruction_table(pipe: Any, images: torch.Tensor, prompts: Any, steps: Sequence[int],
                         samplers: Sequence[tuple[str, str, str]], guidance: float, dtype: torch.dtype,
                         progress: Callable[[str], None] = print) -> dict[str, dict[int, float]]:
    """{sampler label: {N: pixel MSE of reconstruct(invert(x)) vs x}} (pixel space: floor 0).

    ``prompts``: class labels (a label tensor or list) or text prompts, one per image or one for all."""
    from ..diffusers import invert, reconstruct

    table: dict[str, dict[int, float]] = {}
    for label, method, mode in samplers:
        table[label] = {}
        for n in steps:
            opts = {"eps_bound": 64.0 * max(1.0, guidance)} if mode == "bits" else None
            with warnings.catch_warnings():  # the table measures the rounding growth they warn of
                warnings.simplefilter("ignore", PrecisionWarning)
                latent = invert(pipe, images, _plain(prompts), num_steps=n, method=method, mode=mode,
                                mode_options=opts, guidance_scale=guidance, state_dtype=dtype, progress=False)
            back = reconstruct(pipe, latent, progress=False).images
            table[label][n] = _mse(back, images)
        progress(f"  reconstruction w={guidance:g} {str(dtype).removeprefix('torch.')} {label}: "
                 + ", ".join(f"N={n} {v:.2e}" for n, v in table[label].items()))
    return table


# --- Table 4 -----------------------------------------------------------------------------------
@dataclass
class GenResult:
    accuracy: dict[str, dict[int, list[float]]] = field(default_factory=dict)
    fd: dict[str, dict[int, list[float]]] = field(default_factory=dict)
    error: dict[str, dict[int, list[float]]] = field(default_factory=dict)
    reference_fd: list[float] = field(default_factory=list)
    reference_accuracy: list[float] = field(default_factory=list)
    reference_error: list[float] = field(default_factory=list)  # RMS(ref N vs ref N/2): the reference's own error


def generation_table(pipe: Any, classifier: Any, heldout: torch.Tensor, s: Settings,
                     progress: Callable[[str], None] = print) -> GenResult:
    """Accuracy, Fréchet distance and error vs a high-accuracy PF-ODE solution, per sampler, N, seed."""
    from ..diffusers.generation import generate, initial_noise
    from .classifier import frechet_distance

    with torch.no_grad():
        held_features = classifier.features(heldout).numpy()
    labels = torch.arange(s.gen_samples) % 10
    res = GenResult()

    def score(x: torch.Tensor) -> tuple[float, float]:
        with torch.no_grad():
            acc = float((classifier.predict(x) == labels).float().mean())
            fd = frechet_distance(classifier.features(x).numpy(), held_features)
        return acc, fd

    for seed in s.seeds:
        noise = initial_noise(pipe, s.gen_samples, generator=torch.Generator().manual_seed(seed), dtype=torch.float64)

        def run(method: str, n: int) -> torch.Tensor:
            return generate(pipe, labels.tolist(), num_steps=n, method=method, guidance_scale=s.guidance,
                            noise=noise, state_dtype=torch.float64, progress=False).images

        ref = run("obelm", s.reference_steps)
        if seed == s.seeds[0]:  # the reference's own error, once: against half as many steps
            half = run("obelm", s.reference_steps // 2)
            res.reference_error.append(float((ref - half).pow(2).mean().sqrt()))
        acc, fd = score(ref.float())
        res.reference_accuracy.append(acc)
        res.reference_fd.append(fd)
        for label, method in GENERATORS:
            for n in s.gen_steps:
                x = run(method, n)
                acc, fd = score(x.float())
                res.accuracy.setdefault(label, {}).setdefault(n, []).append(acc)
                res.fd.setdefault(label, {}).setdefault(n, []).append(fd)
                res.error.setdefault(label, {}).setdefault(n, []).append(float((x - ref).pow(2).mean().sqrt()))
        progress(f"  generation seed {seed}: reference FD {res.reference_fd[-1]:.3f}, accuracy "
                 f"{res.reference_accuracy[-1]:.3f}")
    return res


# --- editing -----------------------------------------------------------------------------------
@dataclass
class EditResult:
    strengths: list[float]
    share: dict[str, list[float]]          # variant -> share classified as the target class, per strength
    distance: dict[str, list[float]]       # variant -> RMS distance to the source image, per strength
    fresh_share: float                     # a fresh sample of the target class (same guidance, steps)
    fresh_distance: float
    pictures: dict[str, torch.Tensor]      # variant -> (strengths, B, 1, 8, 8)
    sources: torch.Tensor
    targets: list[int]


def edit_study(pipe: Any, classifier: Any, images: torch.Tensor, labels: torch.Tensor, s: Settings) -> EditResult:
    """Invert digits of class a exactly, regenerate them as class b = (a + 5) mod 10 (plain and
    Direct Inversion) at each strength; compare with fresh samples of class b."""
    from ..diffusers import edit
    from ..diffusers.generation import generate

    targets = [(int(a) + 5) % 10 for a in labels]
    tgt = torch.tensor(targets)
    share: dict[str, list[float]] = {}
    dist: dict[str, list[float]] = {}
    pictures: dict[str, torch.Tensor] = {}
    for variant, direct in (("plain", False), ("direct inversion", True)):
        outs = []
        for strength in s.strengths:
            x = edit(pipe, images, labels.tolist(), targets, num_steps=s.edit_steps, strength=strength,
                     guidance_scale=s.guidance, direct_inversion=direct, progress=False).images
            outs.append(x)
            share.setdefault(variant, []).append(float((classifier.predict(x) == tgt).float().mean()))
            dist.setdefault(variant, []).append(float((x - images).pow(2).mean().sqrt()))
        pictures[variant] = torch.stack(outs)
    fresh = generate(pipe, targets, num_steps=s.edit_steps, guidance_scale=s.guidance,
                     generator=torch.Generator().manual_seed(1234), progress=False).images
    return EditResult(list(s.strengths), share, dist, float((classifier.predict(fresh) == tgt).float().mean()),
                      float((fresh - images).pow(2).mean().sqrt()), pictures, images, targets)


# --- interpolation -----------------------------------------------------------------------------
def _blend(a: Any, b: Any, t: float) -> Any:
    """slerp of two window entries (arrays, or EDICT's (x, y) pairs)."""
    if isinstance(a, tuple):
        return _rebuild(a, [None if p is None else slerp(p, q, t) for p, q in zip(a, b)])
    return slerp(a, b, t)


def _rebuild(entry: tuple, parts: list) -> tuple:
    """A tuple entry of the same kind (a named tuple of a mode, or EDICT's plain (x, y))."""
    return type(entry)(*parts) if hasattr(entry, "_fields") else tuple(parts)


def interpolation(pipe: Any, pair: torch.Tensor, steps: int = 50, frames: int = 9,
                  samplers: Sequence[tuple[str, str]] = tuple(GENERATORS), prompt: Any = None) -> dict[str, tuple[torch.Tensor, float]]:
    """Per sampler: (frames images (frames, 1, 8, 8), max endpoint error) for slerp between the exact
    unconditional (null-class) latents of the two images in ``pair``; every window entry is
    interpolated with the same weight (for a 2-step method x_N and x_{N-1}). ``prompt``: the
    conditioning of both (default: the null class of a class-conditional model, else '')."""
    from ..diffusers import invert, reconstruct
    from ..diffusers.adapters import is_class_conditional, null_class

    null = prompt if prompt is not None else (null_class(pipe.unet) if is_class_conditional(pipe.unet) else "")
    out = {}
    for label, method in samplers:
        # each image inverted on its own: a frame is reconstructed as a batch of one, and the network's
        # last bits depend on the batch size, which the inversion's growth would amplify
        la, lb = (invert(pipe, pair[k:k + 1], [null], num_steps=steps, method=method, mode="recurrence",
                         state_dtype=torch.float64) for k in (0, 1))
        a, b, latent = la.window, lb.window, la
        imgs = []
        for t in np.linspace(0.0, 1.0, frames):
            window = {i: _blend(a[i], b[i], float(t)) for i in latent.window}
            mid = dataclasses.replace(latent, window=window)
            imgs.append(reconstruct(pipe, mid, progress=False).images)
        seq = torch.cat(imgs)
        err = max(float((seq[0] - pair[0]).abs().max()), float((seq[-1] - pair[1]).abs().max()))
        out[label] = (seq.float(), err)
    return out


# --- figures and report ------------------------------------------------------------------------
def _grid_image(rows: Sequence[torch.Tensor], path: Path, titles: Sequence[str] | None = None,
                col_titles: Sequence[str] | None = None, scale: int = 6) -> Path:
    """A picture grid: each row a (K, 1, 8, 8) tensor in [-1, 1]."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    nrow, ncol = len(rows), max(len(r) for r in rows)
    fig, axes = plt.subplots(nrow, ncol, figsize=(0.55 * ncol + (1.6 if titles else 0), 0.6 * nrow + 0.4), squeeze=False)
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
                ax.set_ylabel(titles[r], rotation=0, ha="right", va="center", fontsize=7)
            if r == 0 and col_titles and c < len(col_titles):
                ax.set_title(col_titles[c], fontsize=7)
    fig.tight_layout(pad=0.2)
    fig.savefig(path, dpi=110)
    plt.close(fig)
    return path


def _edit_plot(res: EditResult, path: Path) -> Path:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    fig, (a1, a2) = plt.subplots(1, 2, figsize=(8, 3))
    for variant, marker in (("plain", "o"), ("direct inversion", "s")):
        a1.plot(res.strengths, res.share[variant], marker=marker, label=variant)
        a2.plot(res.strengths, res.distance[variant], marker=marker, label=variant)
    a1.axhline(res.fresh_share, color="gray", ls="--", label="fresh sample of b")
    a2.axhline(res.fresh_distance, color="gray", ls="--", label="fresh sample of b")
    a1.set(xlabel="strength", ylabel="share classified as b", ylim=(-0.02, 1.02))
    a2.set(xlabel="strength", ylabel="RMS distance to the source")
    a1.legend(fontsize=7)
    fig.tight_layout()
    fig.savefig(path, dpi=110)
    plt.close(fig)
    return path


def _md_table(headers: Sequence[str], rows: Sequence[Sequence[str]]) -> str:
    lines = ["| " + " | ".join(headers) + " |", "|" + "---|" * len(headers)]
    lines += ["| " + " | ".join(r) + " |" for r in rows]
    return "\n".join(lines)


def _ms(v: Sequence[float], fmt: str = ".3f") -> str:
    v = np.asarray(v, dtype=np.float64)
    return f"{v.mean():{fmt}} ± {v.std(ddof=1):{fmt}}" if len(v) > 1 else f"{v.mean():{fmt}}"


def run_all(s: Settings, out: "str | Path", progress: Callable[[str], None] = print) -> Path:
    """Run every experiment of ``s`` on the model, write figures and ``out/report.md``; return its path."""
    from . import load_classifier, load_heldout, load_pipeline, model_path

    torch.set_num_threads(s.threads)
    out = Path(out)
    out.mkdir(parents=True, exist_ok=True)
    t0 = time.time()
    pipe = load_pipeline(s.model)
    pipe.set_progress_bar_config(disable=True)
    classifier = load_classifier(s.model)
    heldout, labels = load_heldout(s.model)
    info = json.loads((model_path(s.model) / "training.json").read_text()) if (model_path(s.model) / "training.json").is_file() else {}
    md = [f"# The seeds' experiments on the {s.model} model", "",
          f"Model: `{model_path(s.model)}` (trained {info.get('steps', '?')} steps, seed {info.get('seed', '?')}). "
          f"Held-out digits: {len(heldout)} (never seen in training). Guidance where used: w = {s.guidance:g} "
          "(null class as the unconditional half). Pixel space: the autoencoder floor is 0.", ""]
    data: dict[str, Any] = {"settings": dataclasses.asdict(s)}

    # Tables 2/3
    k = min(s.recon_images, len(heldout))
    idx = torch.linspace(0, len(heldout) - 1, k).round().long()
    images, labs = heldout[idx], labels[idx]
    md += ["## Reconstruction (Tables 2/3 analogue)", "",
           f"Pixel MSE of reconstruct(invert(x)) on {k} held-out digits ([-1, 1] range). "
           "`stable` and `bits` are the precision modes of docs/precision.md; `bits` is exact to the last bit.", ""]
    data["reconstruction"] = {}
    for dtype_name in s.dtypes:
        dtype = getattr(torch, dtype_name)
        for w in (1.0, s.guidance):
            table = reconstruction_table(pipe, images, labs, s.recon_steps, s.samplers, w, dtype, progress)
            data["reconstruction"][f"{dtype_name} w={w:g}"] = table
            md += [f"**{dtype_name} states, guidance w = {w:g}**", "",
                   _md_table(["steps"] + [lab for lab, _, _ in s.samplers],
                             [[str(n)] + [f"{table[lab][n]:.2e}" for lab, _, _ in s.samplers] for n in s.recon_steps]), ""]

    # Table 4
    if s.gen_steps:
        g = generation_table(pipe, classifier, heldout, s, progress)
        data["generation"] = dataclasses.asdict(g)
        md += ["## Generation quality (Table 4 analogue)", "",
               f"{s.gen_samples} samples per seed (labels 0..9 in turn), guidance w = {s.guidance:g}, seeds "
               f"{list(s.seeds)}, the same noise for every sampler; mean ± std over seeds. FD: Fréchet distance "
               "of the shipped classifier's 64 features against the held-out digits (lower is better). Error: RMS "
               f"difference to a {s.reference_steps}-step O-BELM solution of the probability-flow ODE from the same "
               f"noise (its own error, RMS against {s.reference_steps // 2} steps on the first seed: {_ms(g.reference_error, '.1e')}). "
               f"Reference: FD {_ms(g.reference_fd)}, accuracy {_ms(g.reference_accuracy)}.", ""]
        for title, metric, fmt in (("class accuracy", g.accuracy, ".3f"), ("Fréchet distance", g.fd, ".3f"),
                                   ("error vs the PF-ODE solution", g.error, ".4f")):
            md += [f"**{title}**", "", _md_table(["steps"] + [lab for lab, _ in GENERATORS],
                                                 [[str(n)] + [_ms(metric[lab][n], fmt) for lab, _ in GENERATORS]
                                                  for n in s.gen_steps]), ""]
        if "DDIM" in g.error and "O-BELM" in g.error:
            ratios = {n: np.mean(g.error["DDIM"][n]) / np.mean(g.error["O-BELM"][n]) for n in s.gen_steps}
            md += ["error(DDIM) / error(O-BELM): " + ", ".join(f"N={n}: {r:.2f}" for n, r in ratios.items()), ""]

    # editing
    ke = min(s.edit_images, len(heldout))
    eidx = torch.linspace(0, len(heldout) - 1, ke).round().long()
    er = edit_study(pipe, classifier, heldout[eidx], labels[eidx], s)
    data["edit"] = {"strengths": er.strengths, "share": er.share, "distance": er.distance,
                    "fresh_share": er.fresh_share, "fresh_distance": er.fresh_distance}
    _edit_plot(er, out / "edit_metrics.png")
    show = list(range(min(6, ke)))
    rows, titles = [], []
    for j in show:
        for variant in ("plain", "direct inversion"):
            rows.append(torch.cat([er.sources[j:j + 1], er.pictures[variant][:, j]]))
            titles.append(f"{int(labels[eidx][j])}->{er.targets[j]} {'DI' if variant != 'plain' else 'plain'}")
    _grid_image(rows, out / "edit_grid.png", titles, ["source"] + [f"s={v:g}" for v in er.strengths])
    md += ["## Editing", "",
           f"{ke} held-out digits of class a regenerated as class b = (a + 5) mod 10 through exact O-BELM "
           f"inversion ({s.edit_steps} steps, target guidance w = {s.guidance:g}). Strength = share of the grid "
           "inverted (1 = to pure noise).", "",
           _md_table(["strength"] + [f"{v:g}" for v in er.strengths],
                     [[f"classified as b, {v}"] + [f"{x:.2f}" for x in er.share[v]] for v in er.share]
                     + [[f"RMS distance to source, {v}"] + [f"{x:.3f}" for x in er.distance[v]] for v in er.distance]),
           "", f"A fresh sample of class b: classified as b {er.fresh_share:.2f}, RMS distance to the source "
           f"{er.fresh_distance:.3f}.", "", "![edit grid](edit_grid.png)", "", "![edit metrics](edit_metrics.png)", ""]

    # interpolation
    pair = torch.stack([heldout[labels == 2][0], heldout[labels == 7][0]])
    interp = interpolation(pipe, pair, steps=s.edit_steps)
    data["interpolation"] = {lab: err for lab, (_, err) in interp.items()}
    _grid_image([v for v, _ in interp.values()], out / "interpolation.png", list(interp),
                [f"t={t:.2f}" for t in np.linspace(0, 1, 9)])
    md += ["## Interpolation", "",
           f"Spherical interpolation between the exact unconditional latents of a held-out 2 and 7 ({s.edit_steps} "
           "steps; every window entry interpolated with the same weight). Max endpoint error (t = 0, 1 must give the "
           "inputs back): " + ", ".join(f"{lab} {err:.1e}" for lab, (_, err) in interp.items()) + ".", "",
           "![interpolation](interpolation.png)", ""]

    md += [f"Total time {time.time() - t0:.0f} s on {s.threads} thread(s)."]
    (out / "results.json").write_text(json.dumps(data, indent=1, default=float) + "\n")
    report = out / "report.md"
    report.write_text("\n".join(md) + "\n")
    return report


def run_generic(s: Settings, out: "str | Path", images: Sequence[str], prompt: str = "",
                target_prompt: str | None = None, progress: Callable[[str], None] = print) -> Path:
    """The experiments that need no classifier, on any local diffusers model (e.g. a Stable Diffusion
    checkpoint): reconstruction tables on ``images`` with ``prompt``, interpolation between the first
    two images, and (with ``target_prompt``) an edit picture over the strength sweep."""
    from ..diffusers import edit
    from ..diffusers.cli import load_pipeline, resolve_model
    from ..diffusers.images import to_tensor
    from ..diffusers.pipeline import parts_of

    torch.set_num_threads(s.threads)
    out = Path(out)
    out.mkdir(parents=True, exist_ok=True)
    t0 = time.time()
    pipe = load_pipeline(s.model)
    parts = parts_of(pipe)
    x, _ = to_tensor(list(images), parts.size_multiple, "nearest", channels=parts.channels)
    md = [f"# The seeds' experiments on `{resolve_model(s.model)}`", "",
          f"{len(x)} images, prompt {prompt!r}; guidance where used w = {s.guidance:g}. Pixel MSE after the "
          "model's autoencoder (if any): exact samplers sit at the autoencoder floor. No generation-quality "
          "table: it needs a feature network, which only the digits model ships.", ""]
    data: dict[str, Any] = {"settings": dataclasses.asdict(s)}
    for dtype_name in s.dtypes:
        for w in (1.0, s.guidance):
            table = reconstruction_table(pipe, x, prompt, s.recon_steps, s.samplers, w, getattr(torch, dtype_name), progress)
            data.setdefault("reconstruction", {})[f"{dtype_name} w={w:g}"] = table
            md += [f"**{dtype_name} states, guidance w = {w:g}**", "",
                   _md_table(["steps"] + [lab for lab, _, _ in s.samplers],
                             [[str(n)] + [f"{table[lab][n]:.2e}" for lab, _, _ in s.samplers] for n in s.recon_steps]), ""]
    if len(x) >= 2:
        interp = interpolation(pipe, x[:2], steps=s.edit_steps, prompt=prompt)
        data["interpolation"] = {lab: err for lab, (_, err) in interp.items()}
        _grid_image([v for v, _ in interp.values()], out / "interpolation.png", list(interp))
        md += ["## Interpolation", "", "Max endpoint error: " + ", ".join(f"{lab} {e:.1e}" for lab, (_, e) in interp.items()),
               "", "![interpolation](interpolation.png)", ""]
    if target_prompt:
        rows = [torch.cat([x[:1]] + [edit(pipe, x[:1], prompt, target_prompt, num_steps=s.edit_steps, strength=v,
                                          guidance_scale=7.5, progress=False).images for v in s.strengths])]
        _grid_image(rows, out / "edit_grid.png", [f"{prompt} -> {target_prompt}"], ["source"] + [f"s={v:g}" for v in s.strengths])
        md += ["## Editing", "", "![edit grid](edit_grid.png)", ""]
    md += [f"Total time {time.time() - t0:.0f} s on {s.threads} thread(s)."]
    (out / "results.json").write_text(json.dumps(data, indent=1, default=float) + "\n")
    report = out / "report.md"
    report.write_text("\n".join(md) + "\n")
    return report


def add_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("--out", default="out/reproduce", help="output folder (default out/reproduce)")
    parser.add_argument("--model", default="digits", help="built-in model name or local folder (default digits)")
    parser.add_argument("--quick", action="store_true", help="reconstruction at 10 and 50 steps, one edit and one "
                        "interpolation picture (about a minute)")
    parser.add_argument("--threads", type=int, default=2, help="torch threads (default 2)")
    parser.add_argument("--gen-samples", type=int, default=Settings.gen_samples,
                        help=f"samples per seed in the generation table (default {Settings.gen_samples})")
    parser.add_argument("--images", nargs="*", default=None,
                        help="other models (no classifier shipped, e.g. a local Stable Diffusion folder): image files to "
                             "reconstruct and interpolate")
    parser.add_argument("--prompt", default="", help="other models: the prompt of --images (default '')")
    parser.add_argument("--target-prompt", default=None, help="other models: an edit of the first image to this prompt")


def run(args: argparse.Namespace) -> int:
    from ..diffusers.cli import resolve_model

    kw = dict(model=args.model, threads=args.threads)
    s = Settings.quick_settings(**kw) if args.quick else Settings(gen_samples=args.gen_samples, **kw)
    folder = resolve_model(args.model)
    if (folder / "classifier").is_dir() and (folder / "heldout.safetensors").is_file():
        report = run_all(s, args.out)
    elif args.images:
        report = run_generic(s, args.out, args.images, args.prompt, args.target_prompt)
    else:
        raise ValueError(f"{folder} ships no classifier and held-out data (only the digits model "
                         "does): give --images (and --prompt) to run the reconstruction and interpolation experiments")
    print(f"report written to {report}")
    return 0
