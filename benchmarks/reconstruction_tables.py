"""Reconstruction error per method and step count on the tiny Stable Diffusion pipeline,
laid out like the seed's Tables 2 (pixel MSE, [-1, 1] range) and 3 (latent MSE).

    .venv/bin/python benchmarks/reconstruction_tables.py [--images 4] [--size 16] [--vae-steps 200]

The pipeline is the random-weight tiny StableDiffusionPipeline of
``linmultistep.backends.diffusers.testing`` (so the numbers test the samplers, not image quality).
Its tiny VAE is first fitted for ``--vae-steps`` Adam steps to reconstruct the (smooth,
deterministic) test images themselves: a stand-in for a pretrained VAE that reconstructs its
inputs well, so that the autoencoder floor (AE = decode(encode(x)) vs x) is a meaningful
reference rather than the ~0.4 of random weights. The UNet and text encoder stay random. Each method inverts the images (posterior mean, prompt '',
guidance 1) and reconstructs them; latent MSE is between the reconstructed and the encoded
latent, pixel MSE between the decoded reconstruction and the input. States in float32
(the network's dtype), each method in its default mode (O-BELM and BDIA(1): 'stable'); the
last two columns are O-BELM with float64 states and O-BELM in mode 'bits' (fixed point).
"""

from __future__ import annotations

import argparse
import sys
import time

import torch

from linmultistep.backends.diffusers import invert, reconstruct
from linmultistep.backends.diffusers.pipeline import decode_latents, encode_images, parts_of
from linmultistep.backends.diffusers.testing import sample_images, tiny_sd_pipeline

# (column, method, state dtype, mode); mode None = the core's default for the method
METHODS = [("DDIM", "ddim", None, None), ("EDICT", "edict", None, None), ("BDIA", "bdia", None, None),
           ("O-BELM", "obelm", None, None), ("O-BELM f64", "obelm", torch.float64, None),
           ("O-BELM bits", "obelm", None, "bits")]


def fit_vae(pipe, images: torch.Tensor, steps: int, seed: int = 0) -> float:
    """Fit the tiny VAE's encoder mean + decoder to the images (MSE); returns the final loss."""
    vae = pipe.vae
    torch.manual_seed(seed)
    opt = torch.optim.Adam(vae.parameters(), lr=3e-3)
    vae.train()
    loss = torch.tensor(float("nan"))
    for _ in range(steps):
        opt.zero_grad()
        rec = vae.decode(vae.encode(images).latent_dist.mean).sample
        loss = ((rec - images) ** 2).mean()
        loss.backward()
        opt.step()
    vae.eval()
    vae.requires_grad_(False)
    with torch.no_grad():  # re-choose the scaling factor for unit-variance latents, as SD did
        std = vae.encode(images).latent_dist.mean.std()
    vae.register_to_config(scaling_factor=float(1.0 / std))
    return float(loss.detach())


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--images", type=int, default=4)
    ap.add_argument("--size", type=int, default=16)
    ap.add_argument("--vae-steps", type=int, default=200)
    ap.add_argument("--steps", type=int, nargs="+", default=[10, 20, 50, 100])
    args = ap.parse_args()
    t0 = time.time()
    pipe = tiny_sd_pipeline()
    pipe.unet.requires_grad_(False)
    pipe.text_encoder.requires_grad_(False)
    x = sample_images(args.images, args.size, seed=7)
    fit = fit_vae(pipe, x, args.vae_steps)
    parts = parts_of(pipe)
    with torch.no_grad():
        z = encode_images(parts, x)
        floor = float(((decode_latents(parts, z) - x) ** 2).mean())
    print(f"tiny SD pipeline (random UNet/text encoder, VAE fitted {args.vae_steps} steps, train MSE {fit:.4f}); "
          f"{args.images} test images {args.size}x{args.size}, prompt '', guidance 1, posterior mean\n")
    pixel: dict[tuple[str, int], float] = {}
    latent: dict[tuple[str, int], float] = {}
    for n in args.steps:
        for label, name, dtype, mode in METHODS:
            lat = invert(pipe, x, "", num_steps=n, method=name, state_dtype=dtype, mode=mode, progress=False)
            img, z0 = reconstruct(pipe, lat, output_type="pt", return_dict=False, progress=False)
            latent[label, n] = float(((z0.double() - z.double()) ** 2).mean())
            pixel[label, n] = float(((img.double() - x.double()) ** 2).mean())
        print(f"[{n} steps done, {time.time() - t0:.0f} s]", file=sys.stderr, flush=True)
    cols = ["DDIM", "AE", "EDICT", "BDIA", "O-BELM", "O-BELM f64", "O-BELM bits"]
    for title, table, ae in (("Table 2 analogue: pixel MSE ([-1, 1] range)", pixel, floor),
                             ("Table 3 analogue: latent MSE", latent, 0.0)):
        print(title)
        print(f"{'':>10}" + "".join(f"{c:>13}" for c in cols))
        for n in args.steps:
            row = [table["DDIM", n], ae] + [table[c, n] for c in cols[2:]]
            print(f"{n:>4} steps" + "".join(f"{v:>13.3e}" for v in row))
        print()
    print(f"(runtime {time.time() - t0:.0f} s)")


if __name__ == "__main__":
    main()
