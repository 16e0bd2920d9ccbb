"""Mode-'bits' latents say where they are exact (backends/diffusers/environment.py).

The other machine is played by a subprocess under another ``ATEN_CPU_CAPABILITY`` (torch's portable
'default' kernels against this CPU's vectorised ones, or AVX2 when this process already runs the
default kernels): the same weights, the same torch, other rounding in the network's kernels.
"""

from __future__ import annotations

import dataclasses
import json
import os
import re
import subprocess
import sys
import warnings

import pytest

torch = pytest.importorskip("torch")
pytest.importorskip("diffusers")

from linmultistep import NondeterministicNetworkError  # noqa: E402
from linmultistep.backends.diffusers import invert, load_latent, reconstruct, save_latent  # noqa: E402
from linmultistep.backends.diffusers.environment import (  # noqa: E402
    ENVIRONMENT_KEY, ApproximateReconstructionWarning, EnvironmentMismatchError, EnvironmentWarning, describe,
    expected_error)
from linmultistep.backends.diffusers.grid import grid_from_config  # noqa: E402
from linmultistep.backends.diffusers.pipeline import method_of  # noqa: E402
from linmultistep.backends.digits import load_heldout, load_pipeline  # noqa: E402

STEPS = 8
ROWS = 3

INVERT_ELSEWHERE = f"""
import json, sys, torch
torch.set_num_threads(1)
from linmultistep.backends.digits import load_heldout, load_pipeline
from linmultistep.backends.diffusers import invert, save_latent
pipe = load_pipeline()
x, y = load_heldout()
latent = invert(pipe, x[:{ROWS}], y[:{ROWS}].tolist(), num_steps={STEPS}, mode="bits", progress=False)
save_latent(latent, sys.argv[1])
print(json.dumps(latent.metadata["environment"]))
"""


@pytest.fixture(scope="module")
def digits():
    torch.set_num_threads(1)
    pipe = load_pipeline()
    x, y = load_heldout()
    return pipe, x[:ROWS], y[:ROWS].tolist()


@pytest.fixture(scope="module")
def local_latent(digits):
    pipe, x, y = digits
    return invert(pipe, x, y, num_steps=STEPS, mode="bits", progress=False)


@pytest.fixture(scope="module")
def foreign(tmp_path_factory):
    """(path, recorded environment) of a latent of the same images inverted in a subprocess under another
    CPU capability; skipped where this CPU offers only one."""
    other = "default" if torch.backends.cpu.get_cpu_capability() != "DEFAULT" else "avx2"
    path = tmp_path_factory.mktemp("foreign") / "latent.safetensors"
    env = {**os.environ, "ATEN_CPU_CAPABILITY": other, "OMP_NUM_THREADS": "1"}
    proc = subprocess.run([sys.executable, "-c", INVERT_ELSEWHERE, str(path)], capture_output=True, text=True,
                          env=env, timeout=900)
    assert proc.returncode == 0, proc.stderr[-3000:]
    recorded = json.loads(proc.stdout.strip().splitlines()[-1])
    if recorded["cpu_capability"] == torch.backends.cpu.get_cpu_capability():
        pytest.skip(f"ATEN_CPU_CAPABILITY={other} gives this CPU's own kernels: no second capability to compare")
    return path, recorded


def _here(pipe, latent):
    return describe(pipe.unet, grid_from_config(pipe.scheduler, STEPS), tuple(latent.x.shape))


class _Calls:
    """Counts the UNet's forward calls (to tell 'refused up front' from 'failed at a step')."""

    def __init__(self, unet):
        self.n = 0
        self.handle = unet.register_forward_hook(self._hook)

    def _hook(self, *_):
        self.n += 1

    def __enter__(self):
        return self

    def __exit__(self, *_):
        self.handle.remove()


def test_a_bits_latent_records_its_environment(digits, local_latent, tmp_path):
    pipe, x, y = digits
    env = local_latent.metadata[ENVIRONMENT_KEY]
    assert env["torch"] == torch.__version__ and env["device"] == "cpu"
    assert env["cpu_capability"] == torch.backends.cpu.get_cpu_capability()
    assert env["dtype"] == "float32" and env["threads"] == torch.get_num_threads() and env["deterministic"] is True
    # the probe is a deterministic function of network and environment: recomputed, it agrees bit for bit
    assert env["probe"] == _here(pipe, local_latent)["probe"]
    # ... and it sees the network: other weights, another digest
    other = load_pipeline()
    with torch.no_grad():
        other.unet.conv_out.bias.add_(1e-6)
    assert _here(other, local_latent)["probe"]["digest"] != env["probe"]["digest"]
    # saved and read back with the latent; only mode 'bits' records it (the other modes are not exact anyway)
    assert load_latent(save_latent(local_latent, tmp_path / "l.safetensors")).metadata[ENVIRONMENT_KEY] == env
    assert ENVIRONMENT_KEY not in invert(pipe, x, y, num_steps=STEPS, mode="stable", progress=False).metadata


def test_the_same_environment_reconstructs_exactly_without_a_word(digits, local_latent):
    pipe, x, _ = digits
    with warnings.catch_warnings():
        warnings.simplefilter("error", EnvironmentWarning)
        warnings.simplefilter("error", ApproximateReconstructionWarning)
        assert torch.equal(reconstruct(pipe, local_latent, progress=False).images, x)
        assert torch.equal(reconstruct(pipe, local_latent, progress=False, exact=False).images, x)


def test_other_settings_with_the_same_probe_warn_and_stay_exact(digits, local_latent):
    """A recorded torch version or thread count that differs, while the network computes the same bits:
    said up front, and the reconstruction is still exact (each step is still checked)."""
    pipe, x, _ = digits
    env = dict(local_latent.metadata[ENVIRONMENT_KEY], torch="0.0.0", threads=7)
    latent = dataclasses.replace(local_latent, metadata={**local_latent.metadata, ENVIRONMENT_KEY: env})
    with pytest.warns(EnvironmentWarning, match=r"torch '0\.0\.0' -> .*threads 7 -> .*expected to be exact"):
        assert torch.equal(reconstruct(pipe, latent, progress=False).images, x)


@pytest.mark.bad_input("4 companions")
def test_another_cpu_capability_is_refused_before_the_first_step(digits, foreign):
    pipe, x, _ = digits
    path, recorded = foreign
    latent = load_latent(path)
    here = _here(pipe, latent)
    if here["probe"]["digest"] == recorded["probe"]["digest"]:  # kernels that round alike: exact, said so
        with pytest.warns(EnvironmentWarning, match="cpu_capability"):
            assert torch.equal(reconstruct(pipe, latent, progress=False).images, x)
        return
    with _Calls(pipe.unet) as calls, pytest.raises(EnvironmentMismatchError) as info:
        reconstruct(pipe, latent, progress=False)
    msg = str(info.value)
    assert calls.n == 1  # the probe only: no sampling step ran
    assert f"Inverted in: torch {recorded['torch']}, cpu {recorded['cpu_capability']}" in msg
    assert f"Here: torch {torch.__version__}, cpu {torch.backends.cpu.get_cpu_capability()}" in msg
    assert "cpu_capability" in msg and "exact=False" in msg


def test_the_approximate_reconstruction_keeps_within_its_stated_error(digits, foreign):
    pipe, x, _ = digits
    path, recorded = foreign
    latent = load_latent(path)
    here = _here(pipe, latent)
    if here["probe"]["digest"] == recorded["probe"]["digest"]:
        pytest.skip("the other capability's kernels round like this one's on the probe")
    with pytest.warns(ApproximateReconstructionWarning, match="expected error below about") as caught:
        out = reconstruct(pipe, latent, progress=False, exact=False)
    stated = float(re.search(r"below about ([0-9.e+-]+)", str(caught[0].message)).group(1))
    grid = grid_from_config(pipe.scheduler, STEPS)
    bound = expected_error(recorded, here, grid, method_of(latent.method))
    assert stated == pytest.approx(bound, rel=0.06)  # the message rounds to two digits
    # the stated figure bounds the error in model space (pixels here: the digits model has no VAE)
    assert float((out.latents.double() - x.double()).abs().max()) <= bound


@pytest.mark.bad_input("5 exactness")
def test_a_failed_step_check_names_both_environments(digits, foreign):
    """Where the probe misses a difference (played by giving the foreign latent this machine's probe), the
    per-step checks catch it and the error names where the latent was made and where it runs."""
    pipe, x, _ = digits
    path, recorded = foreign
    latent = load_latent(path)
    here = _here(pipe, latent)
    if here["probe"]["digest"] == recorded["probe"]["digest"]:
        pytest.skip("the other capability's kernels round like this one's on the probe")
    forged = {**latent.metadata, ENVIRONMENT_KEY: {**recorded, "probe": here["probe"]}}
    latent = dataclasses.replace(latent, metadata=forged)
    with pytest.warns(EnvironmentWarning), pytest.raises(NondeterministicNetworkError) as info:
        reconstruct(pipe, latent, progress=False)
    msg = str(info.value)
    assert f"inverted in: torch {recorded['torch']}, cpu {recorded['cpu_capability']}" in msg
    assert f"runs in: torch {torch.__version__}, cpu {torch.backends.cpu.get_cpu_capability()}" in msg
    assert "exact=False" in msg
    # a latent without a record (written before records existed): the error says so
    legacy = dataclasses.replace(latent, metadata={k: v for k, v in forged.items() if k != ENVIRONMENT_KEY})
    with pytest.raises(NondeterministicNetworkError, match="records no environment"):
        reconstruct(pipe, legacy, progress=False)


@pytest.mark.bad_input("8 coercions")
def test_exact_must_be_a_bool(digits, local_latent):
    pipe, _, _ = digits
    for bad in ("no", 0, None):
        with pytest.raises(TypeError, match="exact must be True .* or False"):
            reconstruct(pipe, local_latent, progress=False, exact=bad)
