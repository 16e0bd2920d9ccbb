"""The shipped mnist-sd model in the settings of tests/test_mnist_sd_model.py, measured: what the tests' bounds
stand against (docs/mnist-sd.md, "What the tests check").

1. Round trips of held-out digits (one of each of ``--digits``) at 10 steps, w = 1 and 3: the VAE latent
   z = scaling_factor * mean q(z|x) inverted and sampled back, float64 states (and mode 'bits' where the
   method has it): max-norm relative latent error, pixel MSE of the decoded result next to the
   autoencoder's floor MSE(D(z), x), computed with diffusers' own AutoencoderKL.
2. Guided 50-step O-BELM samples (w = 3) of 20 captions (every digit twice, attributes cycling), for each
   seed of ``--seeds``: the share judged as the caption's digit, and the shares whose attributes, measured
   by the captioning rule, are the caption's.
3. A digit word-swap edit (d -> d + 5 mod 10, 20 steps, w = 3, Direct Inversion) of ``--edit-images``
   held-out images per digit: the share judged as the target digit.

``python benchmarks/mnist_sd_checks.py [--seeds 0 1 2] [--edit-images 1] [--threads 1]``
"""

from __future__ import annotations

import argparse

import numpy as np
import torch

from linmultistep.backends.diffusers import edit, generate, invert, reconstruct
from linmultistep.backends.mnist_sd import load_attribute_bins, load_heldout, load_judge, load_pipeline
from linmultistep.backends.mnist_sd.data import ATTRIBUTES, DIGIT_WORDS, caption


def round_trips(pipe, digits: list[int]) -> None:
    images, labels, caps = load_heldout()
    pick = [int((labels == d).nonzero()[0]) for d in digits]
    x = images[pick]
    sf = float(pipe.vae.config.scaling_factor)
    with torch.no_grad():
        z = (pipe.vae.encode(x).latent_dist.mean * sf).contiguous()
        floor = float((pipe.vae.decode(z / sf).sample.clamp(-1, 1) - x).pow(2).mean())
    print(f"1. round trips of {len(pick)} held-out digits {digits}, 10 steps; autoencoder floor MSE {floor:.7f}")
    print(f"{'w':>4} {'method':>8} {'mode':>8} {'latent rel. err':>16} {'pixel MSE':>11} {'pixel / floor':>14}")
    for w in (1.0, 3.0):
        for method, mode in (("obelm", None), ("bdia", None), ("edict", None), ("ddim", None), ("obelm", "bits"),
                             ("bdia", "bits")):
            dtype = torch.float64 if mode is None else None
            out = reconstruct(pipe, invert(pipe, x, [caps[i] for i in pick], num_steps=10, method=method,
                                           guidance_scale=w, state_dtype=dtype, mode=mode))
            err = float((out.latents.double() - z.double()).abs().max() / z.double().abs().max())
            pixel = float((out.images.double() - x.double()).pow(2).mean())
            print(f"{w:>4} {method:>8} {mode or 'float64':>8} {err:>16.2e} {pixel:>11.7f} {pixel / floor:>14.4f}")


def guided(pipe, seeds: list[int]) -> None:
    k = np.arange(20)
    want = {"digit": k % 10, "thickness": k // 10 % 2, "width": k % 2, "slant": k % 3}
    prompts = [caption(*(int(want[n][i]) for n in ("digit", "thickness", "width", "slant"))) for i in k]
    judge, bins = load_judge(), load_attribute_bins()
    rows = []
    for seed in seeds:
        x = generate(pipe, prompts, num_steps=50, guidance_scale=3.0, generator=torch.Generator().manual_seed(seed)).images
        measured = bins.classes(x.numpy(), want["digit"])
        rows.append([float((judge.predict(x)["digit"].numpy() == want["digit"]).mean())]
                    + [float((measured[n] == want[n]).mean()) for n in ATTRIBUTES])
    print("2. guided O-BELM samples, 50 steps, w = 3, 20 captions per seed")
    print(f"{'seed':>6} {'digit (judge)':>14} " + " ".join(f"{n + ' (rule)':>17}" for n in ATTRIBUTES))
    for seed, r in zip(seeds, rows):
        print(f"{seed:>6} {r[0]:>14.2f} " + " ".join(f"{v:>17.2f}" for v in r[1:]))


def word_swap(pipe, per_digit: int) -> None:
    images, labels, caps = load_heldout()
    pick = [int(i) for d in range(10) for i in (labels == d).nonzero()[1:1 + per_digit, 0]]
    src_digits = labels[pick].numpy()
    target = (src_digits + 5) % 10
    prompts = [caps[i].replace(f" {DIGIT_WORDS[s]} ", f" {DIGIT_WORDS[t]} ") for i, s, t in zip(pick, src_digits, target)]
    out = edit(pipe, images[pick], [caps[i] for i in pick], prompts, num_steps=20, guidance_scale=3.0).images
    share = float((load_judge().predict(out)["digit"].numpy() == target).mean())
    print(f"3. digit word-swap edit of {len(pick)} held-out images (d -> d + 5), 20 steps, w = 3: "
          f"judged as the target {share:.2f}")


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--digits", type=int, nargs="+", default=[0, 3, 5, 7])
    p.add_argument("--seeds", type=int, nargs="+", default=[0, 1, 2])
    p.add_argument("--edit-images", type=int, default=1, help="held-out images per digit to edit")
    p.add_argument("--threads", type=int, default=1)
    a = p.parse_args()
    torch.set_num_threads(a.threads)
    pipe = load_pipeline()
    round_trips(pipe, a.digits)
    guided(pipe, a.seeds)
    word_swap(pipe, a.edit_images)


if __name__ == "__main__":
    main()
