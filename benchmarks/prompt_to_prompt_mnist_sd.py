"""Prompt-to-Prompt word swap on the shipped mnist-sd model: held-out sevens edited to threes.

For O-BELM (exact) and DDIM, each at CFG 3 in the inversion and the edit, prints per edit variant the
share of edits the judge reads as the target digit, the share keeping each source attribute (thickness,
width, slant as the judge reads the input), and for classical P2P (free source branch) the relative
error of the source branch's x_0 against the input's latent: ~1e-6 (float32 rounding) for the exact
method, a drift for DDIM. Usage: ``python benchmarks/prompt_to_prompt_mnist_sd.py [--images 16] [--steps 20]``.
"""

from __future__ import annotations

import argparse
import warnings

import torch

from linmultistep.backends.diffusers import edit
from linmultistep.backends.diffusers.pipeline import encode_images, parts_of
from linmultistep.backends.mnist_sd import load_heldout, load_judge, load_pipeline

VARIANTS = [  # (label, direct_inversion, self_attention_steps, cross_attention_steps)
    ("plain", False, 0.0, 0.0),
    ("direct inversion (self 0.4)", True, 0.4, 0.0),
    ("P2P on direct inversion (cross 0.4)", True, 0.0, 0.4),
    ("P2P classical (cross 0.4)", False, 0.0, 0.4),
    ("P2P classical (cross 0.8)", False, 0.0, 0.8),
]


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--images", type=int, default=16)
    ap.add_argument("--steps", type=int, default=20)
    a = ap.parse_args()
    torch.set_num_threads(1)
    warnings.filterwarnings("ignore")
    pipe, judge = load_pipeline(), load_judge()
    images, _, caps = load_heldout()
    idx = [k for k, c in enumerate(caps) if " seven " in c][:a.images]
    x, src = images[idx], [caps[k] for k in idx]
    tgt = [c.replace(" seven ", " three ") for c in src]
    z = encode_images(parts_of(pipe), x)
    kept = judge.predict(x)
    print(f"{len(idx)} held-out sevens -> 'three', {a.steps} steps, CFG 3 in inversion and edit")
    print(f"{'method':7s} {'variant':38s} {'judged 3':>9s} {'thickness':>9s} {'width':>6s} {'slant':>6s} {'src branch err':>15s}")
    for method in ("obelm", "ddim"):
        for label, direct, sa, ca in VARIANTS:
            out = edit(pipe, x, src, tgt, num_steps=a.steps, method=method, guidance_scale=3.0, source_guidance_scale=3.0,
                       direct_inversion=direct, self_attention_steps=sa, cross_attention_steps=ca, output_type="pt",
                       progress=False)
            pred = judge.predict(out.images)
            share = {k: float((pred[k] == kept[k]).float().mean()) for k in ("thickness", "width", "slant")}
            err = "" if out.source_latents is None else f"{float((out.source_latents - z).norm() / z.norm()):.2e}"
            print(f"{method:7s} {label:38s} {float((pred['digit'] == 3).float().mean()):9.2f} {share['thickness']:9.2f} "
                  f"{share['width']:6.2f} {share['slant']:6.2f} {err:>15s}", flush=True)


if __name__ == "__main__":
    main()
