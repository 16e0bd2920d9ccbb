"""Images, latent files, command line and bad-input errors of the diffusers binding."""

from __future__ import annotations

import re

import numpy as np
import pytest

torch = pytest.importorskip("torch")
pytest.importorskip("diffusers")
from PIL import Image  # noqa: E402

from linmultistep import LatentMismatchError  # noqa: E402
from linmultistep.backends.diffusers import invert, load_latent, reconstruct, save_latent  # noqa: E402
from linmultistep.backends.diffusers.images import ImageSizeError, load_image, to_rgb, to_tensor  # noqa: E402
from linmultistep.backends.diffusers.testing import same_entry, sample_images, tiny_sd_pipeline  # noqa: E402
from linmultistep.cli import main  # noqa: E402
from strategies import cli_error  # noqa: E402


def test_image_modes_become_rgb():
    rgba = Image.new("RGBA", (4, 4), (10, 20, 30, 0))
    assert to_rgb(rgba).getpixel((0, 0)) == (255, 255, 255)  # transparent -> white
    half = Image.new("RGBA", (4, 4), (0, 0, 0, 128))
    assert to_rgb(half).getpixel((0, 0)) == (127, 127, 127)
    la = Image.new("LA", (4, 4), (100, 255))
    assert to_rgb(la).getpixel((0, 0)) == (100, 100, 100)
    p = Image.new("P", (4, 4), 1)
    p.putpalette([0, 0, 0, 200, 10, 10] + [0] * 762)
    assert to_rgb(p).getpixel((0, 0)) == (200, 10, 10)
    p.info["transparency"] = 1
    assert to_rgb(p).getpixel((0, 0)) == (255, 255, 255)
    i16 = Image.fromarray(np.full((4, 4), 65535, dtype=np.uint16))
    assert i16.mode.startswith("I;16")
    assert to_rgb(i16).getpixel((0, 0)) == (255, 255, 255)
    i16_half = Image.fromarray(np.full((4, 4), 32768, dtype=np.uint16))
    assert to_rgb(i16_half).getpixel((0, 0)) == (128, 128, 128)
    assert to_rgb(Image.new("L", (4, 4), 7)).getpixel((0, 0)) == (7, 7, 7)
    assert to_rgb(Image.new("CMYK", (4, 4), (0, 0, 0, 0))).mode == "RGB"
    assert rgba.mode == "RGBA"  # the input is not modified


def test_invert_accepts_every_mode_and_returns_pil(pipe, tmp_path):
    base = sample_images(1)
    rgb = Image.fromarray(((base[0].permute(1, 2, 0).numpy() + 1) * 127.5).round().astype(np.uint8), "RGB")
    images = [rgb.convert(m) for m in ("RGBA", "LA", "P", "L")]
    images.append(Image.fromarray(np.asarray(rgb.convert("L"), dtype=np.uint16) * 257))
    latent = invert(pipe, images, "a cat", num_steps=4)
    out = reconstruct(pipe, latent).images
    assert isinstance(out, list) and len(out) == 5 and all(o.mode == "RGB" and o.size == (16, 16) for o in out)
    tensor_out = reconstruct(pipe, latent, output_type="pt").images
    assert tensor_out.shape == (5, 3, 16, 16)


def test_size_policy():
    with pytest.raises(ImageSizeError, match="15x16 is not a multiple of 8"):
        to_tensor(Image.new("RGB", (15, 16)), multiple=8)
    x, kind = to_tensor(Image.new("RGB", (15, 17)), multiple=8, resize="down")
    assert kind == "pil" and tuple(x.shape) == (1, 3, 16, 8)
    x, _ = to_tensor(Image.new("RGB", (15, 17)), multiple=8, resize="up")
    assert tuple(x.shape[-2:]) == (24, 16)
    x, _ = to_tensor(torch.zeros(1, 3, 13, 20), multiple=8, resize="nearest")
    assert tuple(x.shape[-2:]) == (16, 16)
    with pytest.raises(ImageSizeError):
        to_tensor(torch.zeros(1, 3, 12, 16), multiple=8)
    with pytest.raises(ValueError, match=r"\[-1, 1\]"):
        to_tensor(torch.full((1, 3, 8, 8), 2.0))
    with pytest.raises(ImageSizeError, match="different sizes"):
        to_tensor([Image.new("RGB", (8, 8)), Image.new("RGB", (16, 8))])


def test_unreadable_and_missing_files_are_named(tmp_path):
    bad = tmp_path / "broken.png"
    bad.write_bytes(b"not an image")
    with pytest.raises(ValueError, match="broken.png"):
        load_image(bad)
    with pytest.raises(FileNotFoundError, match="missing.png"):
        to_tensor([str(tmp_path / "missing.png")])


def test_latent_file_round_trip_and_mismatch(pipe, tmp_path):
    x = sample_images(2)
    for method in ("obelm", "edict"):
        latent = invert(pipe, x, ["a cat", "a dog"], num_steps=5, method=method, guidance_scale=2.0)
        path = save_latent(latent, tmp_path / f"{method}.safetensors")
        assert not [p for p in tmp_path.iterdir() if p.name.endswith(".tmp")]
        back = load_latent(path)
        assert back.method == latent.method and back.fingerprint == latent.fingerprint
        assert back.metadata == latent.metadata and set(back.window) == set(latent.window)
        for i, e in latent.window.items():
            assert same_entry(e, back.window[i])
        assert torch.equal(reconstruct(pipe, back).images, reconstruct(pipe, latent).images)
    bdia = invert(pipe, x, "a cat", num_steps=5, method="bdia")
    with pytest.raises(LatentMismatchError, match="bdia"):
        reconstruct(pipe, bdia, method="obelm")
    with pytest.raises(LatentMismatchError, match="grid"):
        reconstruct(pipe, bdia, num_steps=6)
    other = tiny_sd_pipeline(scheduler_config={**dict(pipe.scheduler.config), "timestep_spacing": "trailing"})
    with pytest.raises(LatentMismatchError, match="grid"):
        reconstruct(other, bdia)
    junk = tmp_path / "junk.safetensors"
    junk.write_bytes(b"\x00" * 10)
    with pytest.raises(ValueError, match="junk.safetensors"):
        load_latent(junk)


def test_cli_round_trip_with_a_saved_pipeline(pipe, tmp_path, capsys):
    model = tmp_path / "model"
    pipe.save_pretrained(model)
    x = sample_images(1)
    img = Image.fromarray(((x[0].permute(1, 2, 0).numpy() + 1) * 127.5).round().astype(np.uint8), "RGB").convert("RGBA")
    img.save(tmp_path / "in.png")
    lat = tmp_path / "lat.safetensors"
    assert main(["invert", "--model", str(model), str(tmp_path / "in.png"), "--prompt", "a cat", "--steps", "4",
                 "--method", "bdia", "--gamma", "0.5", "--state-dtype", "float64", "-o", str(lat), "--quiet"]) == 0
    latent = load_latent(lat)
    assert str(latent.method) == "bdia(gamma=0.5)" and latent.metadata["prompt"] == "a cat"
    assert latent.x.dtype == torch.float64
    assert main(["reconstruct", "--model", str(model), str(lat), "-o", str(tmp_path / "rec.png"), "--quiet"]) == 0
    rec = np.asarray(Image.open(tmp_path / "rec.png"), dtype=np.float64) / 127.5 - 1
    direct = reconstruct(pipe, invert(pipe, tmp_path / "in.png", "a cat", num_steps=4, method="bdia",
                                      state_dtype=torch.float64) if False else latent, output_type="pt").images
    assert np.abs(rec - direct[0].permute(1, 2, 0).numpy()).max() <= 1 / 127.5 + 1e-6
    assert main(["edit", "--model", str(model), str(tmp_path / "in.png"), "--source-prompt", "a cat",
                 "--target-prompt", "a dog", "--steps", "4", "-o", str(tmp_path / "ed.png"), "--quiet"]) == 0
    assert Image.open(tmp_path / "ed.png").size == (16, 16)
    # modes: bits with a larger eps bound is recorded and reconstructs; its int64 state keeps its dtype
    bits = tmp_path / "bits.safetensors"
    assert main(["invert", "--model", str(model), str(tmp_path / "in.png"), "--prompt", "a cat", "--steps", "4",
                 "--mode", "bits", "--eps-bound", "256", "-o", str(bits), "--quiet"]) == 0
    assert load_latent(bits).mode == "bits(data_bound=64.0, eps_bound=256.0)"
    assert main(["reconstruct", "--model", str(model), str(bits), "-o", str(tmp_path / "b.png"), "--quiet"]) == 0
    assert re.search("mode bits", cli_error(capsys, ["reconstruct", "--model", str(model), str(bits), "--state-dtype", "float64", "-o", str(tmp_path / "b.png"),
              "--overwrite"]))
    assert re.search("--mode bits only", cli_error(capsys, ["invert", "--model", str(model), str(tmp_path / "in.png"), "--eps-bound", "9", "-o", str(bits), "--overwrite"]))
    # a stable latent (the default for O-BELM; absent parts) converts to another state dtype
    stable = tmp_path / "stable.safetensors"
    assert main(["invert", "--model", str(model), str(tmp_path / "in.png"), "--prompt", "a cat", "--steps", "4",
                 "-o", str(stable), "--quiet"]) == 0
    assert load_latent(stable).mode == "stable"
    assert main(["reconstruct", "--model", str(model), str(stable), "--state-dtype", "float64",
                 "-o", str(tmp_path / "s.png"), "--quiet"]) == 0
    assert re.search("model path not found", cli_error(capsys, ["invert", "--model", str(tmp_path / "nope"), str(tmp_path / "in.png"), "-o", str(tmp_path / "new.safetensors")]))
    assert re.search("no model_index.json", cli_error(capsys, ["reconstruct", "--model", str(tmp_path), str(lat), "-o", str(tmp_path / "r.png")]))


def test_docs_python_blocks_run():
    import re
    from pathlib import Path

    text = (Path(__file__).resolve().parent.parent / "docs" / "diffusers.md").read_text()
    blocks = re.findall(r"```python\n(.*?)```", text, flags=re.S)
    assert len(blocks) >= 4
    namespace: dict = {}
    for block in blocks:
        exec(compile(block, "docs/diffusers.md", "exec"), namespace)
    assert namespace["image"].size == (16, 16)
