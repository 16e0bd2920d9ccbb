"""Round-trip error of every sampler at 10/50/100/500 steps in float64 and float32, and NFE per step.

Fixed problem: Stable Diffusion schedule ('leading', steps_offset=1, set_alpha_to_one=False, as
SD-1.5's config), a random smooth nonlinear network eps(x, i) = tanh(x W1 + c t_i) W2 on
x in R^(8 x 64), data from N(0, 1). Round trip: sample(invert(x0)) against x0, max relative error, each method in its default mode
(`lm.default_mode`: "stable" for O-BELM and BDIA(1), the plain recurrence otherwise).

Run:  python benchmarks/core_roundtrip.py
"""

from __future__ import annotations

import numpy as np

import linmultistep as lm

STEPS = (10, 50, 100, 500)
METHODS = [lm.ddim(), lm.edict(0.93), lm.bdia(1.0), lm.bdia(0.5), lm.obelm()]


def network(dim: int = 64, width: int = 128, seed: int = 0):
    rng = np.random.default_rng(seed)
    w1 = rng.standard_normal((dim, width)) / np.sqrt(dim)
    w2 = rng.standard_normal((width, dim)) / np.sqrt(width)
    c = rng.standard_normal(width)

    def eps(x, i, grid):
        t = grid.timesteps[i] / 1000.0
        return (np.tanh(x @ w1.astype(x.dtype) + (c * t).astype(x.dtype)) @ w2.astype(x.dtype))

    return eps


def main() -> None:
    ac = lm.alphas_cumprod_for("scaled_linear")
    x0 = np.random.default_rng(1).standard_normal((8, 64))
    net = network()
    print(f"{'method [mode]':<30}{'NFE/step':>9}" + "".join(f"{f'N={n} f64':>12}{f'N={n} f32':>12}" for n in STEPS))
    for method in METHODS:
        row, per_step = [], None
        for n in STEPS:
            grid = lm.Grid.from_alphas_cumprod(ac, n, "leading", steps_offset=1, final_alpha_one=False)
            eps = lambda x, i: net(x, i, grid)  # noqa: E731
            for dtype in (np.float64, np.float32):
                x = x0.astype(dtype)
                with np.errstate(all="ignore"):
                    try:
                        latent = lm.invert(eps, x, grid, method)
                        back = lm.sample(eps, latent, grid, method)
                    except lm.NonFiniteError:  # rounding growth overflowed the state
                        row.append(np.inf)
                        continue
                    err = np.abs(back.astype(np.float64) - x0.astype(dtype)).max() / np.abs(x0).max()
                row.append(err)
                per_step = latent.nfe / n
        label = f"{method.spec} [{lm.default_mode(method)}]"
        print(f"{label:<30}{per_step:>9.0f}" + "".join(f"{e:>12.1e}" for e in row))


if __name__ == "__main__":
    main()
