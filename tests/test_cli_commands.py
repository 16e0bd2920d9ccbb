"""The command line's commands end to end on the shipped digits model: generate, invert,
reconstruct (exact), edit with several targets in one batch and --save-latent (exact)."""

from __future__ import annotations

import numpy as np
import pytest

torch = pytest.importorskip("torch")
pytest.importorskip("diffusers")
from PIL import Image  # noqa: E402

from linmultistep.backends.diffusers import load_latent  # noqa: E402
from linmultistep.cli import main  # noqa: E402


def pixels(path) -> np.ndarray:
    return np.asarray(Image.open(path), dtype=np.int64)


def run(*argv) -> None:
    assert main([str(a) for a in argv] + ["--quiet", "--threads", "1"]) == 0


def test_generate_invert_reconstruct_edit(tmp_path, capsys):
    run("generate", "--model", "digits", "--prompt", "3", "7", "--count", "2", "--steps", "8", "--seed", "5",
        "-o", tmp_path / "g.png")
    names = sorted(p.name for p in tmp_path.iterdir())
    assert names == ["g_3_0.png", "g_3_1.png", "g_7_0.png", "g_7_1.png"]  # by label, then index
    assert pixels(tmp_path / "g_3_0.png").shape == (8, 8)
    # the seed fixes the noise: the same command gives the same images, another seed others
    run("generate", "--model", "digits", "--prompt", "3", "--steps", "8", "--seed", "5", "-o", tmp_path / "again.png")
    assert np.array_equal(pixels(tmp_path / "again.png"), pixels(tmp_path / "g_3_0.png"))
    run("generate", "--model", "digits", "--prompt", "3", "--steps", "8", "--seed", "6", "-o", tmp_path / "other.png")
    assert not np.array_equal(pixels(tmp_path / "other.png"), pixels(tmp_path / "g_3_0.png"))

    inputs = [tmp_path / "g_3_0.png", tmp_path / "g_3_1.png"]
    run("invert", "--model", "digits", *inputs, "--prompt", "3", "--steps", "8", "-o", tmp_path / "l.safetensors")
    run("reconstruct", "--model", "digits", tmp_path / "l.safetensors", "-o", tmp_path / "r.png")
    for k, src in enumerate(inputs):
        assert np.array_equal(pixels(tmp_path / f"r_{k}.png"), pixels(src))  # exact, to the 8-bit pixel

    run("edit", "--model", "digits", *inputs, "--source-prompt", "3", "--target-prompt", "5", "8", "--steps", "8",
        "-o", tmp_path / "e.png", "--save-latent", tmp_path / "src.safetensors")
    # named by input and target label: e_<image stem>_to-<target>.png
    edited = {(im, t): pixels(tmp_path / f"e_{im}_to-{t}.png") for im in ("g_3_0", "g_3_1") for t in (5, 8)}
    assert not np.array_equal(edited["g_3_0", 5], edited["g_3_0", 8])
    latent = load_latent(tmp_path / "src.safetensors")
    assert latent.x.shape[0] == 2 and latent.metadata["batch"] == 2  # the sources once, not once per target
    run("reconstruct", "--model", "digits", tmp_path / "src.safetensors", "-o", tmp_path / "s.png")
    for k, src in enumerate(inputs):
        assert np.array_equal(pixels(tmp_path / f"s_{k}.png"), pixels(src))


@pytest.mark.gpu
def test_cli_round_trip_on_cuda(tmp_path):
    run("generate", "--model", "digits", "--prompt", "3", "--steps", "8", "-o", tmp_path / "g.png", "--device", "cuda")
    run("invert", "--model", "digits", tmp_path / "g.png", "--prompt", "3", "--steps", "8", "--mode", "bits",
        "-o", tmp_path / "l.safetensors", "--device", "cuda")
    run("reconstruct", "--model", "digits", tmp_path / "l.safetensors", "-o", tmp_path / "r.png", "--device", "cuda")
    assert np.array_equal(pixels(tmp_path / "r.png"), pixels(tmp_path / "g.png"))
