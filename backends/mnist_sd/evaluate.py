"""Measure mnist-sd samples: is a guided sample judged as its prompt? (issue 20, item 2)

Prompts: sample k asks for digit k mod 10 and attributes drawn uniformly by a seeded generator. Each is
sampled with plain diffusers (``StableDiffusionPipeline``, its DDIM scheduler, ``steps`` steps,
classifier-free guidance ``w`` against the empty prompt) from seeded noise, then

- judged: the judge's digit / attribute predictions against the prompt's words;
- measured: the attribute classes by the caption rule itself (``data.AttributeBins`` of the folder,
  the very measurement that wrote the training captions) against the prompt's words;
- compared: Fréchet distance between judge features of the samples and of the held-out images.

Run ``python -m linmultistep.backends.mnist_sd.evaluate --model PATH`` (default: the shipped folder).
"""

from __future__ import annotations

import argparse
import json
import os
import time
from typing import Any

import numpy as np
import torch

from .data import ATTRIBUTES, NUM_CLASSES, caption

__all__ = ["prompts_for", "sample", "evaluate", "main"]


def prompts_for(n: int, seed: int) -> tuple[list[str], dict[str, np.ndarray]]:
    """``n`` prompts (digit k mod 10, uniform random attributes) and their target class per head."""
    rng = np.random.default_rng(seed)
    t = {"digit": np.arange(n) % NUM_CLASSES}
    t.update({k: rng.integers(0, len(v), n) for k, v in ATTRIBUTES.items()})
    prompts = [caption(int(t["digit"][i]), int(t["thickness"][i]), int(t["width"][i]), int(t["slant"][i])) for i in range(n)]
    return prompts, t


@torch.no_grad()
def sample(pipe: Any, prompts: list[str], seed: int, steps: int = 50, guidance: float = 3.0, batch: int = 100) -> np.ndarray:
    """(N, 1, 32, 32) float32 images in [-1, 1] from the pipeline's own DDIM sampler."""
    gen = torch.Generator().manual_seed(seed)
    out = []
    for k in range(0, len(prompts), batch):
        img = pipe(prompts[k:k + batch], num_inference_steps=steps, guidance_scale=guidance, generator=gen, output_type="np").images
        out.append(np.asarray(img, np.float32).transpose(0, 3, 1, 2) * 2 - 1)
    return np.concatenate(out)


@torch.no_grad()
def evaluate(model: "str | os.PathLike | None" = None, samples: int = 200, seeds: tuple[int, ...] = (0, 1, 2),
             steps: int = 50, guidance: float = 3.0) -> dict:
    """Judged and measured accuracy per head, and FD to the held-out images, as mean and std over ``seeds``."""
    from . import load_attribute_bins, load_heldout, load_judge, load_pipeline
    from .judge import HEADS, frechet_distance

    pipe = load_pipeline(model)
    judge = load_judge(model)
    bins = load_attribute_bins(model)
    held, _, _ = load_heldout(model)
    held_feat = judge.features(held).numpy()
    runs = []
    for seed in seeds:
        t0 = time.time()
        prompts, target = prompts_for(samples, seed)
        x = sample(pipe, prompts, seed=seed, steps=steps, guidance=guidance)
        xt = torch.from_numpy(x)
        pred = {k: v.numpy() for k, v in judge.predict(xt).items()}
        measured = bins.classes(x, target["digit"])
        run = {f"judged_{h}": float((pred[h] == target[h]).mean()) for h in HEADS}
        run.update({f"measured_{k}": float((measured[k] == target[k]).mean()) for k in ATTRIBUTES})
        run["frechet"] = frechet_distance(judge.features(xt).numpy(), held_feat)
        run["seconds"] = time.time() - t0
        runs.append(run)
    keys = list(runs[0])
    return {"samples": samples, "seeds": list(seeds), "steps": steps, "guidance": guidance,
            **{k: {"mean": float(np.mean([r[k] for r in runs])), "std": float(np.std([r[k] for r in runs], ddof=1)) if len(runs) > 1 else 0.0}
               for k in keys}}


def main(argv: "list[str] | None" = None) -> int:
    p = argparse.ArgumentParser(prog="mnist-sd-evaluate", description=__doc__.splitlines()[0])
    p.add_argument("--model", default=None, help="model folder (default: the shipped one)")
    p.add_argument("--samples", type=int, default=200)
    p.add_argument("--seeds", type=int, nargs="+", default=[0, 1, 2])
    p.add_argument("--steps", type=int, default=50)
    p.add_argument("--guidance", type=float, default=3.0)
    p.add_argument("--threads", type=int, default=1)
    a = p.parse_args(argv)
    torch.set_num_threads(a.threads)
    print(json.dumps(evaluate(a.model, a.samples, tuple(a.seeds), a.steps, a.guidance), indent=2))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
