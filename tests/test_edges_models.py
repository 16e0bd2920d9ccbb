"""Models at the user's edges (issue 22): one resolver with one precedence for the API and the CLI,
a registry other model packages add names to, the shipped model in plain diffusers, ``generate`` the
function, quiet loading, warnings that point at the caller, and the k-diffusion denoiser wrapper."""

from __future__ import annotations

import json
import os
import shutil
import subprocess
import sys
import warnings
from pathlib import Path

import numpy as np
import pytest

torch = pytest.importorskip("torch")
pytest.importorskip("diffusers")
from PIL import Image  # noqa: E402

from linmultistep.backends.diffusers.models import (  # noqa: E402
    BuiltinModel, ModelPathError, builtin_model, builtin_models, load_pipeline, register_model, resolve_model)
from linmultistep.backends.digits import MODEL_DIR  # noqa: E402

ROOT = Path(__file__).resolve().parent.parent


# --- 1. one resolver, one precedence, a registry ------------------------------------------------------
def test_a_folder_named_like_a_builtin_model_does_not_shadow_it(tmp_path, monkeypatch):
    from linmultistep.backends.diffusers.cli import check_model_path
    from linmultistep.backends.digits import model_path

    (tmp_path / "digits").mkdir()  # e.g. the user's own folder of digit images
    (tmp_path / "digits" / "d.png").write_bytes(b"")
    monkeypatch.chdir(tmp_path)
    assert resolve_model("digits") == MODEL_DIR
    assert check_model_path("digits") == MODEL_DIR == model_path("digits")  # CLI and API: the same answer


def test_a_model_folder_is_a_model_whatever_its_name(tmp_path, monkeypatch):
    mine = tmp_path / "digits"
    shutil.copytree(MODEL_DIR, mine)
    monkeypatch.chdir(tmp_path)
    assert resolve_model("digits") == Path("digits")  # a directory with model_index.json comes first
    assert builtin_model("digits") is None  # ... and it is the user's model, not the built-in
    assert builtin_model(str(MODEL_DIR)).name == "digits"  # the shipped folder by path is still the built-in



def _user_copy(shipped: Path, where: Path) -> Path:
    """A model folder of the user's at ``where``: the shipped weights linked, its own scheduler config
    (another beta_end, or shift for a flow scheduler), so that loading it is told apart from the built-in."""
    where.mkdir()
    for part in shipped.iterdir():
        if part.name != "scheduler":
            (where / part.name).symlink_to(part)
    (where / "scheduler").mkdir()
    config = json.loads((shipped / "scheduler" / "scheduler_config.json").read_text())
    key = "shift" if "shift" in config else "beta_end"
    (where / "scheduler" / "scheduler_config.json").write_text(json.dumps({**config, key: 0.0123}))
    return where


def _changed(pipe) -> bool:
    config = pipe.scheduler.config
    return config.get("shift", config.get("beta_end")) == 0.0123


@pytest.mark.parametrize("package", ["digits", "mnist_sd", "mnist_flow"])
def test_every_model_packages_own_path_and_loader_follow_the_one_precedence(package, tmp_path, monkeypatch):
    """digits, mnist-sd and mnist-flow: ``model_path`` and ``load_pipeline`` of the package give what
    ``--model`` gives, a same-named folder that is not a model never shadows the built-in name, and a
    same-named model folder is the user's (models.py's precedence)."""
    import importlib

    from linmultistep.backends.diffusers.cli import check_model_path

    pkg = importlib.import_module(f"linmultistep.backends.{package}")
    name = pkg.MODELS[0].name
    if not (pkg.MODEL_DIR / "model_index.json").is_file():
        pytest.skip(f"the {name} weights are not shipped in this checkout")
    monkeypatch.chdir(tmp_path)
    (tmp_path / name).mkdir()  # e.g. the user's folder of images of that name
    (tmp_path / name / "d.png").write_bytes(b"")
    assert pkg.model_path(name) == resolve_model(name) == check_model_path(name) == pkg.MODEL_DIR
    shutil.rmtree(tmp_path / name)
    _user_copy(pkg.MODEL_DIR, tmp_path / name)
    assert pkg.model_path(name) == resolve_model(name) == check_model_path(name) == Path(name)
    torch.set_num_threads(1)
    assert _changed(pkg.load_pipeline(name))  # the user's folder, not the built-in
    assert not _changed(pkg.load_pipeline())  # no name: the shipped model

@pytest.mark.bad_input("6 files")
def test_unknown_names_and_non_model_folders_are_named_with_the_builtin_names(tmp_path):
    with pytest.raises(ModelPathError, match="model path not found: .*built-in model name: .*digits"):
        resolve_model(tmp_path / "nowhere")
    with pytest.raises(ModelPathError, match="no model_index.json"):
        resolve_model(tmp_path)


def test_model_packages_register_names_through_entry_points_and_at_run_time(tmp_path):
    assert builtin_models()["digits"].folder == MODEL_DIR  # the digits package's entry point
    copy = tmp_path / "copy"
    shutil.copytree(MODEL_DIR, copy)
    register_model(BuiltinModel("digits-copy-for-test", copy, "a copy"))
    from linmultistep.backends.diffusers.cli import check_model_path

    assert resolve_model("digits-copy-for-test") == copy == check_model_path("digits-copy-for-test")
    pipe = load_pipeline("digits-copy-for-test", device="cpu")
    assert type(pipe).__name__ == "DigitsPipeline"  # the copy's model_index.json names the project's class


def test_one_load_pipeline_for_the_api_and_the_cli():
    from linmultistep.backends.diffusers import cli
    from linmultistep.backends.diffusers import load_pipeline as api_load

    assert cli.load_pipeline is load_pipeline is api_load
    assert not hasattr(cli, "resolve_model") or cli.resolve_model is resolve_model


# --- 3. the shipped model in plain diffusers -----------------------------------------------------------
def test_plain_diffusers_loads_the_digits_pipeline_and_samples_class_labels(tmp_path):
    """A fresh process that imports only diffusers: the folder's model_index.json names the project's
    pipeline class; its samples equal linmultistep's generate on the same noise."""
    code = (
        "import sys, torch; torch.set_num_threads(1)\n"
        "from diffusers import DiffusionPipeline\n"
        "pipe = DiffusionPipeline.from_pretrained(sys.argv[1], trust_remote_code=True)\n"
        "out = pipe(class_labels=[3, 5], num_inference_steps=5, output_type='pt',\n"
        "           generator=torch.Generator().manual_seed(0))\n"
        "torch.save({'images': out.images, 'cls': type(pipe).__name__}, sys.argv[2])\n"
    )
    env = {**os.environ, "HF_HOME": str(tmp_path / "hf"), "HF_HUB_OFFLINE": "1"}
    proc = subprocess.run([sys.executable, "-c", code, str(MODEL_DIR), str(tmp_path / "out.pt")], env=env,
                          capture_output=True, text=True, timeout=600)
    assert proc.returncode == 0, proc.stderr
    got = torch.load(tmp_path / "out.pt")
    assert got["cls"] == "DigitsPipeline"
    from linmultistep.backends.diffusers import generate
    from linmultistep.backends.digits import load_pipeline as digits_pipeline

    torch.set_num_threads(1)
    ref = generate(digits_pipeline(), [3, 5], num_steps=5, guidance_scale=2.0, output_type="pt", progress=False,
                   generator=torch.Generator().manual_seed(0)).images
    assert torch.equal(got["images"], ref)


def test_plain_diffusers_without_trust_remote_code_says_what_to_pass(tmp_path):
    from diffusers import DiffusionPipeline

    with pytest.raises(ValueError, match="trust_remote_code=True"):
        DiffusionPipeline.from_pretrained(str(MODEL_DIR))


def test_the_digits_pipeline_asks_for_class_labels():
    from linmultistep.backends.digits import load_pipeline as digits_pipeline

    with pytest.raises(ValueError, match="class-conditional: give class_labels"):
        digits_pipeline()(num_inference_steps=2)


# --- 4. public names are what they say ----------------------------------------------------------------------
def test_generate_is_the_function_even_after_its_module_is_imported():
    import linmultistep.backends.diffusers.generation  # noqa: F401  (a submodule import rebinds package attributes)
    from linmultistep.backends.diffusers import generate
    from linmultistep.backends.digits import load_pipeline as digits_pipeline

    assert callable(generate) and generate.__name__ == "generate"
    out = generate(digits_pipeline(), [1], num_steps=2, progress=False, generator=torch.Generator().manual_seed(0))
    assert out.images.shape == (1, 1, 8, 8)


# --- 5. colour conversions are said ----------------------------------------------------------------------
@pytest.mark.bad_input("8 coercions")
def test_colour_to_grey_is_a_warning_naming_the_conversion_at_the_callers_line():
    from linmultistep.backends.diffusers.images import read_images

    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        read_images(Image.new("RGB", (8, 8), (200, 10, 10)), channels=1)
        read_images(Image.new("L", (8, 8), 7), channels=1)  # grey for a grey model: nothing to say
        read_images(Image.new("L", (8, 8), 7), channels=3)  # grey replicated to RGB: nothing lost
    said = [w for w in caught if issubclass(w.category, UserWarning)]
    assert len(said) == 1 and "colours become grey" in str(said[0].message)
    assert said[0].filename == __file__  # attributed to the caller, not to a line inside linmultistep
    with pytest.warns(UserWarning, match="alpha channel .RGBA. is composited on white"):
        read_images(Image.new("RGBA", (8, 8), (0, 0, 0, 0)))


# --- 6. quiet loading --------------------------------------------------------------------------------------
def test_loading_a_model_prints_and_warns_nothing(capfd):
    code = ("import warnings, torch; warnings.simplefilter('always'); torch.set_num_threads(1)\n"
            "from linmultistep.backends.diffusers import load_pipeline\n"
            "load_pipeline('digits', 'float32', 'cpu', quiet=True)\n"
            "load_pipeline('digits', 'float64', 'cpu', quiet=True)\n")
    proc = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=600)
    assert proc.returncode == 0, proc.stderr
    assert proc.stderr == "" and proc.stdout == "", proc.stderr  # no accelerate banner, no 'kept in float32'


def test_the_diffusers_extra_installs_accelerate_and_the_model_folders_are_declared():
    try:
        import tomllib
    except ModuleNotFoundError:  # Python 3.10
        tomllib = pytest.importorskip("tomli")
    config = tomllib.loads((ROOT / "pyproject.toml").read_text())
    assert any(d.startswith("accelerate") for d in config["project"]["optional-dependencies"]["diffusers"])
    tool = config["tool"]["setuptools"]
    packages, package_dir = set(tool["packages"]), tool["package-dir"]
    # every directory of a package's tree is a package setuptools must be told about (else a warning wall)
    for name, folder in package_dir.items():
        for d in (ROOT / folder).rglob("*"):
            if d.is_dir() and "__pycache__" not in d.parts:
                dotted = ".".join([name, *d.relative_to(ROOT / folder).parts])
                if any(f.is_file() for f in d.iterdir()):
                    assert dotted in packages, f"{dotted} ({d}) is not declared in [tool.setuptools] packages"


# --- the k-diffusion denoiser --------------------------------------------------------------------------
def test_unet_denoiser_matches_the_bindings_noise_prediction_on_the_grid():
    from linmultistep.backends.diffusers import UNetDenoiser, UNetEps, grid_from_config
    from linmultistep.backends.diffusers.adapters import encode_classes
    from linmultistep.backends.digits import load_pipeline as digits_pipeline

    pipe = digits_pipeline(dtype=torch.float64)
    grid = grid_from_config(pipe.scheduler, 10)
    labels = torch.tensor([2, 9])
    eps_fn = UNetEps(pipe.unet, grid, "epsilon", encode_classes(pipe.unet, labels, 2))
    den = UNetDenoiser.from_pipeline(pipe)
    x_vp = torch.randn(2, 1, 8, 8, generator=torch.Generator().manual_seed(1), dtype=torch.float64)
    for i in range(1, grid.N + 1):
        sigma = float(grid.sigma[i]) / float(grid.alpha[i])  # k-diffusion's sigma is the grid's sigmabar
        x_ve = x_vp / float(grid.alpha[i])
        d = den(x_ve, torch.full((2,), sigma, dtype=torch.float64), class_labels=labels)
        ref = x_ve - sigma * eps_fn(x_vp, i)
        assert torch.allclose(d, ref, rtol=0, atol=1e-10 * (1 + sigma)), i


def test_unet_denoiser_sigma_to_t_follows_k_diffusion():
    """Between training timesteps log sigma is interpolated linearly; at them t is exact."""
    from linmultistep.backends.diffusers.denoiser import UNetDenoiser

    ac = torch.cumprod(1 - torch.linspace(1e-4, 0.02, 1000, dtype=torch.float64), 0)
    den = UNetDenoiser(torch.nn.Linear(1, 1), ac, quantize=False)
    t = torch.tensor([0.0, 17.0, 500.0, 999.0], dtype=torch.float64)
    assert torch.allclose(den.sigma_to_t(den.t_to_sigma(t)), t, atol=1e-9)
    mid = torch.tensor([((den.log_sigmas[10] + den.log_sigmas[11]) / 2).exp()])
    assert abs(float(den.sigma_to_t(mid)) - 10.5) < 1e-9
    assert float(den.sigma_to_t(mid, quantize=True)) in (10.0, 11.0)
    sig = den.get_sigmas(5)
    assert sig[-1] == 0 and torch.all(sig[:-1].diff() < 0) and torch.isclose(sig[0], den.sigma_max)


def test_kdiffusion_sampler_with_the_denoiser_matches_generate():
    """The same method on the same grid, through k-diffusion's interface and through the binding."""
    from linmultistep.backends import kdiffusion
    from linmultistep.backends.diffusers import UNetDenoiser, generate, grid_from_config
    from linmultistep.backends.digits import load_pipeline as digits_pipeline

    pipe = digits_pipeline(dtype=torch.float64)
    grid = grid_from_config(pipe.scheduler, 8)
    sigmas = torch.tensor((np.asarray(grid.sigma) / np.asarray(grid.alpha))[::-1].copy())
    noise = torch.randn(2, 1, 8, 8, generator=torch.Generator().manual_seed(3), dtype=torch.float64)
    labels = torch.tensor([4, 7])
    ref = generate(pipe, labels.tolist(), num_steps=8, method="ddim", noise=noise, output_type="pt",
                   progress=False).latents
    den = UNetDenoiser.from_pipeline(pipe)
    x = kdiffusion.sample_ddim(den, noise / float(grid.alpha[grid.N]), sigmas,
                               extra_args={"class_labels": labels}, disable=True)
    assert torch.allclose(x, ref, atol=1e-9)
