"""The diffusion wrappers around the one loop: NFE, latents, callbacks, errors, purity."""

import subprocess
import sys

import numpy as np
import pytest

import linmultistep as lm
from linmultistep.errors import GridError, LatentMismatchError, NonFiniteError
from strategies import MLPEps, gaussian_problem, rel_err

AC = lm.alphas_cumprod_for("scaled_linear")
GRID = lm.Grid.from_alphas_cumprod(AC, 12, "leading", steps_offset=1, final_alpha_one=False)
NET = MLPEps(6, 0)
X0 = np.random.default_rng(1).standard_normal((2, 6))


class Counting:
    def __init__(self, f):
        self.f, self.calls = f, []

    def __call__(self, x, i):
        self.calls.append(i)
        return self.f(x, i)


@pytest.mark.parametrize(
    "name,params,per_step", [("ddim", {}, 1), ("obelm", {}, 1), ("bdia", {"gamma": 0.8}, 1), ("edict", {"p": 0.9}, 2)]
)
def test_network_evaluations_per_step(name, params, per_step):
    N = GRID.N
    f = Counting(NET)
    latent = lm.invert(f, X0, GRID, lm.get_method(name, **params))
    assert latent.nfe == len(f.calls) == per_step * N
    assert min(f.calls) >= 1 and max(f.calls) <= N  # never evaluated at the clean point
    f.calls.clear()
    lm.sample(f, latent, GRID, lm.get_method(name, **params))
    k = lm.get_method(name, **params).k
    assert len(f.calls) == per_step * (N - k + 1)  # from the latent: the window is already there
    f.calls.clear()
    lm.sample(f, np.zeros_like(X0), GRID, lm.get_method(name, **params))
    assert len(f.calls) == per_step * N


def test_ddim_inversion_follows_diffusers_timestep_convention():
    """DDIMInverseScheduler evaluates the model at the lower-noise latent with the target timestep."""
    f = Counting(NET)
    lm.invert(f, X0, GRID, "ddim")
    assert f.calls == list(range(1, GRID.N + 1))


def test_callback_sees_every_step_and_progress_bar_runs(capsys):
    seen = []
    latent = lm.invert(NET, X0, GRID, "obelm", callback=seen.append, progress=True)
    assert [s.index for s in seen] == list(range(1, GRID.N + 1))
    assert [s.method for s in seen] == ["ddim"] + ["obelm"] * (GRID.N - 1)
    assert [s.exact for s in seen] == [False] + [True] * (GRID.N - 1)
    assert seen[-1].nfe == latent.nfe and seen[-1].total == GRID.N
    assert "inverting (obelm" in capsys.readouterr().err
    seen.clear()
    lm.sample(NET, latent, GRID, "obelm", callback=seen.append)
    assert [s.index for s in seen] == list(range(GRID.N - 2, -1, -1))
    # the default mode of a 2-step BELM is 'stable' (docs/precision.md): entries are (x, xbar, v)
    np.testing.assert_array_equal(seen[-1].entry.x, lm.sample(NET, latent, GRID, "obelm"))


def test_partial_runs_compose():
    """Inverting to index 5 then on to N equals one inversion; sampling to 4 then to 0 equals one run."""
    whole = lm.invert(NET, X0, GRID, "obelm")
    part = lm.invert(NET, X0, GRID, "obelm", stop=5)
    assert sorted(part.window) == [4, 5]
    rest = lm.invert(NET, part, GRID, "obelm")
    assert rest.named_arrays().keys() == whole.named_arrays().keys()
    for name, arr in whole.named_arrays().items():
        np.testing.assert_array_equal(rest.named_arrays()[name], arr)
    mid = lm.sample(NET, whole, GRID, "obelm", stop=4, return_state=True)
    np.testing.assert_array_equal(lm.sample(NET, mid, GRID, "obelm"), lm.sample(NET, whole, GRID, "obelm"))
    assert rel_err(lm.sample(NET, mid, GRID, "obelm"), X0) < 1e-12


@pytest.mark.bad_input("4 companions")
def test_latent_from_another_method_grid_or_mode_is_refused():
    latent = lm.invert(NET, X0, GRID, "obelm")
    with pytest.raises(LatentMismatchError, match=r"produced by obelm and cannot be continued with bdia\(gamma=1.0\)"):
        lm.sample(NET, latent, GRID, "bdia")
    other = lm.Grid.from_alphas_cumprod(AC, 12, "trailing")
    with pytest.raises(LatentMismatchError, match=f"belongs to grid {GRID.fingerprint}"):
        lm.sample(NET, latent, other, "obelm")
    edict_latent = lm.invert(NET, X0, GRID, lm.edict(0.93))
    with pytest.raises(LatentMismatchError, match=r"edict\(p=0.93\).*edict\(p=0.9\)"):
        lm.sample(NET, edict_latent, GRID, lm.edict(0.9))
    from dataclasses import replace

    with pytest.raises(LatentMismatchError, match="mode 'bits'"):
        lm.sample(NET, replace(latent, mode="bits"), GRID, "obelm", mode="stable")


@pytest.mark.bad_input("9 unclear errors")
def test_nan_from_the_network_names_the_index_and_leaves_inputs_alone():
    def bad(x, i):
        out = NET(x, i)
        return out * np.nan if i == 7 else out

    x0 = X0.copy()
    with pytest.raises(NonFiniteError, match=r"grid index 7 \(timestep \d+\)"):
        lm.invert(bad, x0, GRID, "obelm")
    np.testing.assert_array_equal(x0, X0)
    with pytest.raises(GridError, match="NaN or infinity"):
        lm.invert(NET, np.full((2, 6), np.nan), GRID, "obelm")


def test_overflowing_state_is_blamed_on_rounding_growth_not_the_network():
    grid = lm.Grid.from_alphas_cumprod(AC, 500)
    with np.errstate(all="ignore"), pytest.raises(NonFiniteError, match=r"state became NaN or infinite .* bdia\(gamma=0.5\)"):
        lm.invert(NET, X0.astype(np.float32), grid, lm.bdia(0.5))  # 2^500 growth overflows float32


def test_runs_never_modify_what_the_user_gave():
    x0 = X0.copy()
    latent = lm.invert(NET, x0, GRID, "obelm")
    np.testing.assert_array_equal(x0, X0)
    kept = {name: v.copy() for name, v in latent.named_arrays().items()}
    lm.sample(NET, latent, GRID, "obelm")
    for name, arr in latent.named_arrays().items():
        np.testing.assert_array_equal(arr, kept[name])


def test_sampling_approaches_the_exact_ode_solution():
    """O-BELM converges to the closed-form probability-flow ODE solution (Gaussian data)."""
    noise = np.random.default_rng(2).standard_normal((3, 5))
    errs = []
    for n in (25, 50, 100):
        grid = lm.Grid.from_sigmabar(np.linspace(0.0, 8.0, n + 1))
        eps_fn, exact = gaussian_problem(grid, dim=5)
        xN = grid.alpha[-1] * noise * np.sqrt(0.09 + 64)
        errs.append(np.abs(lm.sample(eps_fn, xN, grid, "obelm") - exact(xN)).max())
    assert errs[0] / errs[1] > 3.5 and errs[1] / errs[2] > 3.5  # second order on a uniform sigmabar grid


def test_core_imports_neither_torch_nor_sympy():
    code = (
        "import sys, numpy as np, linmultistep as lm\n"
        "g = lm.Grid.from_alphas_cumprod(lm.alphas_cumprod_for('scaled_linear'), 5)\n"
        "lm.sample(lambda x, i: 0.1 * x, lm.invert(lambda x, i: 0.1 * x, np.ones(3), g), g)\n"
        "import linmultistep.cli\n"
        "bad = [m for m in ('torch', 'sympy', 'scipy', 'matplotlib') if m in sys.modules]\n"
        "assert not bad, bad\n"
    )
    subprocess.run([sys.executable, "-c", code], check=True)


def test_namespaced_subpackages_install_under_linmultistep():
    import linmultistep.analysis
    import linmultistep.backends
    import linmultistep.backends.numpy

    assert linmultistep.backends.numpy.NumpyBackend().name == "numpy"
    assert linmultistep.analysis.__name__ == "linmultistep.analysis"


def test_demo_command_runs_and_reports_exactness(capsys):
    from linmultistep.cli import main

    assert main(["demo", "--steps", "10", "--dim", "4", "--batch", "2"]) == 0
    out = capsys.readouterr().out
    rows = {line.split()[0]: line.split() for line in out.splitlines() if line.split() and line.split()[-1][0].isdigit()}
    assert float(rows["obelm"][4]) < 1e-12 and float(rows["ddim"][4]) > 1e-3
