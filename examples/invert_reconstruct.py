"""Invert data to its exact noise latent and reconstruct it, with a numpy "network".

Run: python examples/invert_reconstruct.py

O-BELM's latent is the pair (x_N, x_{N-1}) plus the method and grid it belongs to; sampling
from it returns the data to rounding error. DDIM inversion, for comparison, is approximate.
"""

import numpy as np

import linmultistep as lm


def main() -> dict:
    ac = lm.alphas_cumprod_for("scaled_linear")  # Stable Diffusion's schedule
    grid = lm.Grid.from_alphas_cumprod(ac, 50, "leading", steps_offset=1, final_alpha_one=False)

    W = np.random.default_rng(0).standard_normal((16, 16)) / 4

    def eps_fn(x, i):  # stands in for a trained network: noise prediction at grid index i
        return np.tanh(x @ W)

    x0 = np.random.default_rng(1).standard_normal((4, 16))
    errors = {}
    for method in ("obelm", "bdia", "edict", "ddim"):
        latent = lm.invert(eps_fn, x0, grid, method)
        back = lm.sample(eps_fn, latent, grid, method)
        errors[method] = float(np.abs(back - x0).max())
        print(f"{method:6s} round-trip max error {errors[method]:.2e}")
    latent = lm.invert(eps_fn, x0, grid, "obelm")
    print(f"\nthe O-BELM latent holds grid points {sorted(latent.window)} (x_N, x_N-1) of a {grid.N}-step grid")
    return errors


if __name__ == "__main__":
    err = main()
    assert err["obelm"] < 1e-10 and err["ddim"] > 1e-6  # exact versus approximate inversion
