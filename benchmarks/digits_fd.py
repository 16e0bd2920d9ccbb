"""Fréchet distance and class accuracy of high-accuracy samples of the shipped digits model.

    python benchmarks/digits_fd.py [--steps 1000] [--samples 200] [--seed 0] [--guidance 2]

O-BELM with float64 states from seeded noise (labels 0..9 in turn); the distance is computed in the
shipped classifier's 64 features against the 300 held-out digits (the FID analogue of docs/digits.md).
"""

from __future__ import annotations

import argparse
import time

import torch


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--steps", type=int, default=1000)
    p.add_argument("--samples", type=int, default=200)
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--guidance", type=float, default=2.0)
    p.add_argument("--threads", type=int, default=2)
    a = p.parse_args()
    torch.set_num_threads(a.threads)

    from linmultistep.backends.diffusers.generation import generate, initial_noise
    from linmultistep.backends.digits import load_classifier, load_heldout, load_pipeline
    from linmultistep.backends.digits.classifier import frechet_distance

    pipe, clf = load_pipeline(), load_classifier()
    held, _ = load_heldout()
    labels = [k % 10 for k in range(a.samples)]
    noise = initial_noise(pipe, a.samples, generator=torch.Generator().manual_seed(a.seed), dtype=torch.float64)
    t0 = time.time()
    x = generate(pipe, labels, num_steps=a.steps, method="obelm", guidance_scale=a.guidance, noise=noise,
                 state_dtype=torch.float64, progress=False).images.float()
    with torch.no_grad():
        fd = frechet_distance(clf.features(x).numpy(), clf.features(held).numpy())
        acc = float((clf.predict(x) == torch.tensor(labels)).float().mean())
    print(f"{a.steps}-step O-BELM, {a.samples} samples (seed {a.seed}), w={a.guidance:g}: Fréchet distance {fd:.3f}, "
          f"accuracy {acc:.3f} ({time.time() - t0:.0f} s)")


if __name__ == "__main__":
    main()
