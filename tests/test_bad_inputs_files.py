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


@pytest.mark.bad_input("4 companions")
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


@pytest.mark.bad_input("4 companions")
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


@pytest.mark.bad_input("6 files")
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


@pytest.mark.bad_input("6 files")
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


@pytest.mark.bad_input("1 data loss")
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


@pytest.mark.bad_input("4 companions")
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


# --- 6. latent files: writes that keep what the user had, crafted fields -------------------------------
def _small_latent(digits):
    pipe, x, y = digits
    return invert(pipe, x[:1], y[:1], num_steps=4, progress=False)


@pytest.mark.bad_input("6 files")
@pytest.mark.parametrize("mode", [0o644, 0o600, 0o664])
def test_overwriting_a_latent_keeps_its_permissions(digits, tmp_path, mode):
    import os
    import stat

    path = tmp_path / "l.safetensors"
    path.write_bytes(b"old")
    os.chmod(path, mode)
    save_latent(_small_latent(digits), path)
    assert stat.S_IMODE(path.stat().st_mode) == mode
    assert load_latent(path).nfe == 4


@pytest.mark.bad_input("6 files")
def test_a_new_latent_gets_the_umask_permissions(digits, tmp_path):
    import os
    import stat

    old = os.umask(0o022)
    try:
        path = save_latent(_small_latent(digits), tmp_path / "new.safetensors")
    finally:
        os.umask(old)
    assert stat.S_IMODE(path.stat().st_mode) == 0o644  # not mkstemp's 0600


@pytest.mark.bad_input("6 files")
def test_saving_through_a_symlink_writes_its_target(digits, tmp_path):
    target = tmp_path / "store" / "real.safetensors"
    target.parent.mkdir()
    target.write_bytes(b"old")
    link = tmp_path / "link.safetensors"
    link.symlink_to(target)
    save_latent(_small_latent(digits), link)
    assert link.is_symlink() and link.resolve() == target.resolve()
    assert load_latent(target).nfe == 4


@pytest.mark.bad_input("6 files")
def test_an_interrupted_write_leaves_the_old_file_and_no_temporary(digits, tmp_path, monkeypatch):
    import os

    path = tmp_path / "l.safetensors"
    path.write_bytes(b"precious")

    def killed(fd):
        raise KeyboardInterrupt

    monkeypatch.setattr(os, "fsync", killed)
    with pytest.raises(KeyboardInterrupt):
        save_latent(_small_latent(digits), path)
    assert path.read_bytes() == b"precious"
    assert sorted(p.name for p in tmp_path.iterdir()) == ["l.safetensors"]


@pytest.mark.bad_input("6 files")
def test_temporaries_of_killed_writers_are_removed_on_the_next_write(digits, tmp_path):
    import os
    import subprocess
    import sys

    dead = subprocess.run([sys.executable, "-c", "import os; print(os.getpid())"], capture_output=True, text=True)
    dead_pid = int(dead.stdout)
    stale = tmp_path / f".l.safetensors.{dead_pid}.abc123.tmp"
    stale.write_bytes(b"x" * 1000)
    live = tmp_path / f".l.safetensors.{os.getpid()}.def456.tmp"  # a writer still running: kept
    live.write_bytes(b"y")
    other = tmp_path / ".notes.txt.tmp"
    other.write_bytes(b"z")
    save_latent(_small_latent(digits), tmp_path / "l.safetensors")
    assert not stale.exists() and live.exists() and other.exists()


def _rewrite(path, out, **changes):
    """The file at ``path`` rewritten with metadata fields changed AND its digest recomputed: a crafted
    file, which the integrity digest cannot catch; the field checks must."""
    from safetensors import safe_open
    from safetensors.torch import save_file

    from linmultistep.backends.diffusers.latents import _digests

    with safe_open(str(path), framework="pt") as fh:
        meta = dict(fh.metadata())
        tensors = {k: fh.get_tensor(k) for k in fh.keys()}
    for k, v in changes.items():
        if v is None:
            meta.pop(k, None)
        else:
            meta[k] = v
    meta["digest"] = json.dumps(_digests(meta, tensors), sort_keys=True)
    save_file(tensors, str(out), metadata=meta)
    return out


CRAFTED = [
    ({"info": json.dumps({"num_steps": 10**9})}, "info.num_steps' must be an integer in"),
    ({"info": json.dumps({"num_steps": 10.7})}, "info.num_steps"),
    ({"info": json.dumps({"num_steps": "50"})}, "info.num_steps"),
    ({"info": json.dumps({"batch": 0})}, "info.batch"),
    ({"info": json.dumps({"eval_batch": -3})}, "info.eval_batch"),
    ({"info": "[1, 2]"}, "'info' must be a JSON object"),
    ({"info": "{not json"}, "'info' is not valid JSON"),
    ({"nfe": "-1"}, "'nfe' must be a non-negative integer"),
    ({"nfe": "4.5"}, "'nfe' must be a non-negative integer"),
    ({"nfe": "abc"}, "'nfe' is not valid JSON"),
    ({"params": "{}"}, "'params' must be a list of"),
    ({"params": "[[1, 2, 3]]"}, "'params' must be a list of"),
    ({"method": None}, "lacks the field.*method"),
    ({"fingerprint": None}, "lacks the field.*fingerprint"),
    ({"format": "linmultistep-latent/0"}, "is not a linmultistep latent"),
    ({"mode": "turbo"}, "turbo"),
]


@pytest.mark.bad_input("6 files")
@pytest.mark.parametrize("changes,match", CRAFTED, ids=[f"crafted{k}" for k in range(len(CRAFTED))])
def test_crafted_latent_fields_are_refused_naming_file_and_field(digits, tmp_path, changes, match):
    good = save_latent(_small_latent(digits), tmp_path / "good.safetensors")
    bad = _rewrite(good, tmp_path / "crafted.safetensors", **changes)
    with pytest.raises(ValueError, match=f"crafted.safetensors.*{match}"):
        load_latent(bad)


@pytest.mark.bad_input("6 files")
def test_damaged_files_are_refused_naming_the_file(digits, tmp_path):
    good = save_latent(_small_latent(digits), tmp_path / "good.safetensors").read_bytes()
    cases = {"empty.safetensors": b"", "half.safetensors": good[: len(good) // 2],
             "text.safetensors": b"hello world", "header.safetensors": b"\xff" * 8 + good[8:]}
    for name, data in cases.items():
        (tmp_path / name).write_bytes(data)
        with pytest.raises(ValueError, match=name):
            load_latent(tmp_path / name)
    with pytest.raises(FileNotFoundError, match="missing.safetensors"):
        load_latent(tmp_path / "missing.safetensors")
    (tmp_path / "dir.safetensors").mkdir()
    with pytest.raises(FileNotFoundError, match="dir.safetensors"):
        load_latent(tmp_path / "dir.safetensors")


@pytest.mark.bad_input("6 files")
def test_rows_of_a_bits_latent_reconstruct_alone_and_bad_rows_are_refused(digits):
    from linmultistep.backends.diffusers.latents import take_rows

    pipe, x, y = digits
    latent = invert(pipe, x, y, num_steps=5, mode="bits", eval_batch=1, progress=False)
    for j in range(x.shape[0]):
        one = take_rows(latent, [j])
        assert one.metadata["batch"] == 1 and one.metadata["prompt"] == [y[j]]
        assert torch.equal(reconstruct(pipe, one, progress=False).images, x[j:j + 1])
    for rows in ([], [2], [-1]):
        with pytest.raises(ValueError, match="rows must be"):
            take_rows(latent, rows)
