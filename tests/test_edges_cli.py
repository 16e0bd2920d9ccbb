"""The command line at the user's edges (issue 22): per-image prompts, repeated options, outputs named
by label, grids, the image-size guardrail, refusals before heavy imports, closed pipes, and the
commands registered by their packages (issue 25)."""

from __future__ import annotations

import subprocess
import sys

import numpy as np
import pytest

torch = pytest.importorskip("torch")
pytest.importorskip("diffusers")
from PIL import Image  # noqa: E402

from linmultistep.backends.diffusers import cli as dcli  # noqa: E402
from linmultistep.backends.diffusers import load_latent  # noqa: E402
from linmultistep.backends.diffusers.cli import UsageError, per_image_prompts  # noqa: E402
from linmultistep.cli import commands, main  # noqa: E402
from strategies import cli_error  # noqa: E402

QUIET = ["--quiet", "--threads", "1"]


def pixels(path) -> np.ndarray:
    return np.asarray(Image.open(path), dtype=np.int64)


@pytest.fixture(scope="module")
def digits(tmp_path_factory):
    """Two held-out digits (a 5 and a 6 if present) as 8-bit grey PNG files, and the pipeline."""
    from linmultistep.backends.digits import load_heldout, load_pipeline

    d = tmp_path_factory.mktemp("digits")
    x, y = load_heldout()
    paths, labels = [], []
    for want in (5, 6):
        k = int((y == want).nonzero()[0, 0])
        p = d / f"d{want}.png"
        Image.fromarray(((x[k, 0] + 1) * 127.5).round().byte().numpy(), "L").save(p)
        paths.append(p)
        labels.append(str(want))
    return d, paths, labels, load_pipeline()


@pytest.fixture
def no_model_load(monkeypatch):
    def refuse(*_a, **_k):
        raise AssertionError("the model was loaded before the options were checked")

    monkeypatch.setattr(dcli, "_load", refuse)


# --- 2. per-image prompts -------------------------------------------------------------------------
def test_invert_takes_one_label_per_image_and_matches_the_api(digits, tmp_path):
    from linmultistep.backends.diffusers import invert, reconstruct

    d, paths, labels, pipe = digits
    out = tmp_path / "two.safetensors"
    assert main(["invert", "--model", "digits", *map(str, paths), "--prompt", *labels, "--steps", "3",
                 "--mode", "bits", "-o", str(out), *QUIET]) == 0
    latent = load_latent(out)
    assert latent.metadata["prompt"] == labels  # each image inverted with its own class
    api = invert(pipe, [Image.open(p) for p in paths], labels, num_steps=3, mode="bits", progress=False)
    assert torch.equal(latent.x, api.x)
    back = reconstruct(pipe, latent, output_type="pt", progress=False).images
    assert torch.equal(back, reconstruct(pipe, api, output_type="pt", progress=False).images)


@pytest.mark.bad_input("10 cli")
def test_a_repeated_prompt_is_an_error_not_the_last_value(digits, tmp_path, capsys, no_model_load):
    d, paths, _, _ = digits
    with pytest.raises(SystemExit) as info:
        main(["invert", "--model", "digits", str(paths[0]), "--prompt", "8", "--prompt", "4",
              "-o", str(tmp_path / "x.safetensors")])
    assert info.value.code == 2
    assert "--prompt is given twice" in capsys.readouterr().err


@pytest.mark.bad_input("10 cli")
def test_a_prompt_count_that_fits_neither_one_nor_each_image_is_refused(digits, tmp_path, capsys, no_model_load):
    d, paths, _, _ = digits
    line = cli_error(capsys, ["invert", "--model", "digits", *map(str, paths), "--prompt", "1", "2", "3",
                              "-o", str(tmp_path / "x.safetensors")])
    assert "--prompt gives 3 prompts for 2 images" in line


def test_prompts_from_a_list_file_a_csv_and_folder_names(tmp_path):
    images = [str(tmp_path / "5" / "a.png"), str(tmp_path / "7" / "b.png")]
    (tmp_path / "list.txt").write_text("5\n7\n\n")
    assert per_image_prompts(None, images, prompt_file=str(tmp_path / "list.txt")) == ["5", "7"]
    (tmp_path / "p.csv").write_text("image,label\nb.png,7\na.png,5\n")  # matched by name, in any order
    assert per_image_prompts(None, images, prompt_file=str(tmp_path / "p.csv")) == ["5", "7"]
    assert per_image_prompts(None, images, from_folder=True) == ["5", "7"]  # the ImageFolder convention
    assert per_image_prompts(["3"], images) == "3"  # one for all
    with pytest.raises(UsageError, match="both give the prompts"):
        per_image_prompts(["3"], images, from_folder=True)
    (tmp_path / "bad.csv").write_text("file,prompt\na.png,5\n")
    with pytest.raises(UsageError, match="columns image and prompt"):
        per_image_prompts(None, images, prompt_file=str(tmp_path / "bad.csv"))


# --- 8. outputs named by label; grids ---------------------------------------------------------------
def test_edit_outputs_are_named_by_target_label(digits, tmp_path):
    from linmultistep.backends.diffusers import edit

    d, paths, _, pipe = digits
    assert main(["edit", "--model", "digits", str(paths[0]), "--source-prompt", "5", "--target-prompt", "0", "4",
                 "--steps", "4", "--guidance-scale", "2", "-o", str(tmp_path / "e.png"), *QUIET]) == 0
    assert sorted(p.name for p in tmp_path.iterdir()) == ["e_to-0.png", "e_to-4.png"]
    api = edit(pipe, [Image.open(paths[0])] * 2, "5", ["0", "4"], num_steps=4, guidance_scale=2.0,
               output_type="pil", progress=False).images
    assert np.array_equal(pixels(tmp_path / "e_to-4.png"), np.asarray(api[1], dtype=np.int64))
    assert np.array_equal(pixels(tmp_path / "e_to-0.png"), np.asarray(api[0], dtype=np.int64))


def test_generate_grid_is_one_file_holding_each_image(tmp_path):
    common = ["generate", "--model", "digits", "--prompt", "1", "7", "--count", "3", "--steps", "3", "--seed", "2"]
    assert main(common + ["-o", str(tmp_path / "g.png"), *QUIET]) == 0
    assert main(common + ["--grid", "-o", str(tmp_path / "grid.png"), *QUIET]) == 0
    grid = pixels(tmp_path / "grid.png")
    assert grid.shape == (2 * 8 + 1, 3 * 8 + 2)  # 2 prompts x 3 images, 1-pixel gaps
    for r, label in enumerate(("1", "7")):
        for c in range(3):
            cell = grid[r * 9:r * 9 + 8, c * 9:c * 9 + 8]
            assert np.array_equal(cell, pixels(tmp_path / f"g_{label}_{c}.png"))


def test_edit_grid_has_the_sources_then_a_row_per_target(digits, tmp_path):
    d, paths, _, _ = digits
    argv = ["edit", "--model", "digits", *map(str, paths), "--source-prompt", "5", "6", "--target-prompt", "0", "4",
            "--steps", "3", "--guidance-scale", "2"]
    assert main(argv + ["-o", str(tmp_path / "e.png"), *QUIET]) == 0
    assert main(argv + ["--grid", "-o", str(tmp_path / "grid.png"), *QUIET]) == 0
    grid = pixels(tmp_path / "grid.png")
    assert grid.shape == (3 * 8 + 2, 2 * 8 + 1)
    for c, p in enumerate(paths):
        assert np.array_equal(grid[0:8, c * 9:c * 9 + 8], pixels(p))
        for r, t in enumerate(("0", "4"), start=1):
            assert np.array_equal(grid[r * 9:r * 9 + 8, c * 9:c * 9 + 8], pixels(tmp_path / f"e_{p.stem}_to-{t}.png"))


# --- 5. image-size guardrail ------------------------------------------------------------------------
@pytest.mark.bad_input("2 resources")
def test_an_image_far_from_the_trained_size_is_refused_with_the_cost(tmp_path, capsys, no_model_load):
    Image.new("RGB", (640, 424), (90, 120, 30)).save(tmp_path / "photo.png")
    line = cli_error(capsys, ["invert", "--model", "digits", str(tmp_path / "photo.png"), "--prompt", "3",
                              "-o", str(tmp_path / "x.safetensors")])
    assert "trained at 8x8" in line and "640x424" in line and "--allow-size-mismatch" in line
    assert f"{640 * 424 // 64:,}x" in line  # the cost: pixels relative to the trained size


def test_allow_size_mismatch_gets_past_the_guardrail(tmp_path, capsys, no_model_load):
    Image.new("L", (64, 48), 100).save(tmp_path / "big.png")
    argv = ["invert", "--model", "digits", str(tmp_path / "big.png"), "--prompt", "3", "-o", str(tmp_path / "x.safetensors")]
    assert "trained at 8x8" in cli_error(capsys, argv)
    with pytest.raises(AssertionError, match="model was loaded"):  # past every check: the model would load now
        main(argv + ["--allow-size-mismatch"])


# --- 7. refusals before heavy imports; closed pipes ---------------------------------------------------
REFUSALS = [
    ["invert", "--model", "digits", "IMG", "--prompt", "3", "--steps", "0", "-o", "OUT.safetensors"],
    ["invert", "--model", "digits", "missing.png", "--prompt", "3", "-o", "OUT.safetensors"],
    ["invert", "--model", "nowhere", "IMG", "--prompt", "3", "-o", "OUT.safetensors"],
    ["edit", "--model", "digits", "IMG", "--source-prompt", "3", "--target-prompt", "4", "--strength", "0", "-o", "O.png"],
    ["generate", "--model", "digits", "--prompt", "3", "--count", "0", "-o", "O.png"],
    ["reconstruct", "--model", "digits", "missing.safetensors", "-o", "O.gif"],
]


@pytest.mark.bad_input("10 cli")
@pytest.mark.parametrize("argv", REFUSALS, ids=[f"r{k}" for k in range(len(REFUSALS))])
def test_refusals_come_before_torch_and_diffusers_are_imported(tmp_path, argv):
    Image.new("L", (8, 8), 128).save(tmp_path / "in.png")
    argv = [a.replace("IMG", str(tmp_path / "in.png")).replace("OUT", str(tmp_path / "out")) for a in argv]
    code = ("import sys; from linmultistep.cli import main; rc = main(sys.argv[1:]); "
            "print(rc, 'torch' in sys.modules, 'diffusers' in sys.modules)")
    proc = subprocess.run([sys.executable, "-c", code, *argv], capture_output=True, text=True, cwd=tmp_path,
                          timeout=300)
    assert proc.stdout.split() == ["2", "False", "False"], (proc.stdout, proc.stderr)
    assert len(proc.stderr.strip().splitlines()) == 1 and "error:" in proc.stderr


def test_a_closed_pipe_ends_the_command_silently(tmp_path):
    """`linmultistep derive --k 2 | head -0`: the reader is gone before the first line; no error text."""
    proc = subprocess.Popen([sys.executable, "-m", "linmultistep.cli", "derive", "--k", "2"], stdout=subprocess.PIPE,
                            stderr=subprocess.PIPE, cwd=tmp_path)
    proc.stdout.close()  # the reader exits at once
    err = proc.stderr.read().decode()
    proc.wait(timeout=300)
    assert err == "", err
    assert proc.returncode in (0, 141)  # 141 = 128 + SIGPIPE, what a shell reports for `cmd | head`


# --- issue 25: commands registered by their packages ------------------------------------------------------
def test_every_command_comes_from_its_package_registration():
    import importlib

    found = commands()
    assert {"demo", "derive", "study", "invert", "reconstruct", "edit", "generate", "invert-dataset",
            "reconstruct-dataset", "reproduce", "train-digits"} <= set(found)
    cli_source = importlib.import_module("linmultistep.cli").__file__
    text = open(cli_source).read()
    assert "linmultistep.backends" not in text and "linmultistep.analysis" not in text  # names no consumer
    for name in ("cli_invert", "cli_reconstruct", "cli_edit", "cli_generate"):  # no shim modules
        with pytest.raises(ModuleNotFoundError):
            importlib.import_module(f"linmultistep.backends.diffusers.{name}")
    add, run = found["invert"].load()
    assert add is dcli.invert_arguments and run is dcli.invert_command
