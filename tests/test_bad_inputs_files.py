"""Wrong companions and damaged latent files are refused with an error naming what is wrong."""

from __future__ import annotations

import re

import json

import pytest

torch = pytest.importorskip("torch")
pytest.importorskip("diffusers")

from linmultistep import LatentMismatchError  # noqa: E402
from linmultistep.backends.diffusers import invert, load_latent, reconstruct, save_latent  # noqa: E402
from linmultistep.backends.diffusers.pipeline import model_digest  # noqa: E402
from linmultistep.backends.digits import load_heldout, load_pipeline  # noqa: E402
from strategies import cli_error  # noqa: E402


@pytest.fixture(scope="module")
def digits():
    torch.set_num_threads(1)
    pipe = load_pipeline()
    x, y = load_heldout()
    return pipe, x[:2], y[:2].tolist()


def test_reconstruction_with_other_weights_is_refused(digits, tmp_path):
    pipe, x, y = digits
    latent = invert(pipe, x, y, num_steps=6, mode="bits")
    assert latent.metadata["model_digest"] == model_digest(pipe.unet)
    other = load_pipeline()
    with torch.no_grad():
        other.unet.conv_out.bias.add_(1e-3)  # same architecture, other weights
    assert model_digest(other.unet) != model_digest(pipe.unet)
    with pytest.raises(LatentMismatchError, match="another model .*check_model=False"):
        reconstruct(other, latent)
    out = reconstruct(other, latent, check_model=False).images  # explicit override: sampled, not a reconstruction
    assert out.shape == x.shape
    assert torch.equal(reconstruct(pipe, latent).images, x)
    # the digest follows in-place weight updates (not a stale cache)
    before = model_digest(other.unet)
    with torch.no_grad():
        other.unet.conv_out.bias.add_(1e-3)
    assert model_digest(other.unet) != before


def test_cli_names_the_override(digits, tmp_path, capsys):
    from linmultistep.cli import main

    pipe, x, y = digits
    other = load_pipeline()
    with torch.no_grad():
        other.unet.conv_out.bias.add_(1e-3)
    other.save_pretrained(tmp_path / "other")
    latent = invert(pipe, x, y, num_steps=6)
    save_latent(latent, tmp_path / "l.safetensors")
    assert re.search("--ignore-model-mismatch", cli_error(capsys, ["reconstruct", "--model", str(tmp_path / "other"), str(tmp_path / "l.safetensors"), "-o",
              str(tmp_path / "o.png"), "--quiet"]))
    assert main(["reconstruct", "--model", str(tmp_path / "other"), str(tmp_path / "l.safetensors"), "-o",
                 str(tmp_path / "o.png"), "--quiet", "--ignore-model-mismatch"]) == 0


def test_edited_or_damaged_latent_files_are_refused(digits, tmp_path):
    pipe, x, y = digits
    path = save_latent(invert(pipe, x, y, num_steps=6, mode="bits"), tmp_path / "l.safetensors")
    raw = bytearray(path.read_bytes())
    # one flipped bit in the tensor data (the end of the file is tensor bytes)
    flipped = bytearray(raw)
    flipped[-3] ^= 0x01
    (tmp_path / "flipped.safetensors").write_bytes(bytes(flipped))
    with pytest.raises(ValueError, match="flipped.safetensors.*integrity"):
        load_latent(tmp_path / "flipped.safetensors")
    assert torch.equal(reconstruct(pipe, load_latent(path)).images, x)


def test_metadata_changed_through_the_header_is_refused(digits, tmp_path):
    """A file rewritten with the method changed in its metadata (header still valid) fails the digest."""
    from safetensors import safe_open
    from safetensors.torch import save_file

    pipe, x, y = digits
    path = save_latent(invert(pipe, x, y, num_steps=6), tmp_path / "l.safetensors")
    with safe_open(str(path), framework="pt") as fh:
        meta = dict(fh.metadata())
        tensors = {k: fh.get_tensor(k) for k in fh.keys()}
    meta["method"] = "bdia"
    meta["params"] = json.dumps([["gamma", 1.0]])
    save_file(tensors, str(tmp_path / "m.safetensors"), metadata=meta)
    with pytest.raises(ValueError, match=r"m.safetensors.*integrity digest .*method"):
        load_latent(tmp_path / "m.safetensors")


def test_cli_never_writes_over_inputs_or_existing_files(digits, tmp_path, capsys):
    from PIL import Image

    from linmultistep.cli import main

    _, x, y = digits
    png = tmp_path / "digit.png"
    Image.fromarray(((x[0, 0] + 1) * 127.5).round().byte().numpy(), "L").save(png)
    before = png.read_bytes()
    common = ["invert", "--model", "digits", str(png), "--prompt", str(y[0]), "--steps", "5", "--quiet"]
    assert "must end with .safetensors" in cli_error(capsys, common + ["-o", png])  # checked before any work
    assert re.search("is one of the inputs", cli_error(capsys, ["edit", "--model", "digits", str(png), "--source-prompt", str(y[0]), "--target-prompt", "1",
              "--steps", "5", "--quiet", "-o", str(png)]))
    assert png.read_bytes() == before
    lat = tmp_path / "digit.safetensors"
    lat.write_bytes(b"precious")
    assert "exists; pass --overwrite" in cli_error(capsys, common + ["-o", lat])
    assert lat.read_bytes() == b"precious"
    assert main(common + ["-o", str(lat), "--overwrite"]) == 0
    out = tmp_path / "back.png"
    out.write_bytes(b"keep")
    assert re.search("exists; pass --overwrite", cli_error(capsys, ["reconstruct", "--model", "digits", str(lat), "-o", str(out), "--quiet"]))
    assert out.read_bytes() == b"keep"
    assert re.search("must end with", cli_error(capsys, ["reconstruct", "--model", "digits", str(lat), "-o", str(tmp_path / "back.txt"), "--quiet"]))


def test_grid_mismatch_says_what_differs(digits):
    from diffusers import DDIMScheduler

    pipe, x, y = digits
    latent = invert(pipe, x, y, num_steps=6)
    other = load_pipeline()
    other.scheduler = DDIMScheduler.from_config(pipe.scheduler.config, timestep_spacing="trailing")
    with pytest.raises(LatentMismatchError, match="timestep_spacing 'leading' vs 'trailing'"):
        reconstruct(other, latent)
    with pytest.raises(LatentMismatchError, match="num_steps 6 vs 7"):
        reconstruct(pipe, latent, num_steps=7)
    other.scheduler = DDIMScheduler.from_config(pipe.scheduler.config, beta_end=0.03)
    with pytest.raises(LatentMismatchError, match="noise schedule"):
        reconstruct(other, latent)
