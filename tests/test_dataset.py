"""Dataset-scale inversion: shards + manifest, failures recorded, resume, exactness across batch
sizes and world sizes (torchrun with two gloo ranks on the CPU)."""

from __future__ import annotations

import dataclasses
import json
import os
from typing import Any
import subprocess
import sys

import pytest

torch = pytest.importorskip("torch")
pytest.importorskip("diffusers")

from safetensors.torch import load_file  # noqa: E402

from linmultistep.backends.diffusers import dataset as D  # noqa: E402
from linmultistep.backends.diffusers.adapters import eval_chunk_for  # noqa: E402
from linmultistep.fixedpoint import DIGESTS_KEY  # noqa: E402
from linmultistep.backends.diffusers.images import to_pil  # noqa: E402
from linmultistep.backends.diffusers.pipeline import reconstruct  # noqa: E402
from linmultistep.backends.digits import load_heldout, load_pipeline  # noqa: E402

STEPS = 8


@pytest.fixture(scope="module")
def pipe(digits_pipe):
    return digits_pipe


@pytest.fixture()
def folder(tmp_path):
    """9 held-out digits as PNGs (some in a sub-folder), a corrupt file, and a list file with labels."""
    x, y = load_heldout()
    (tmp_path / "imgs" / "sub").mkdir(parents=True)
    lines = []
    for k in range(9):
        p = tmp_path / "imgs" / ("sub" if k % 3 == 0 else "") / f"d{k}.png"
        to_pil(x[k * 13:k * 13 + 1])[0].save(p)
        lines.append(f"{p}\t{int(y[k * 13])}")
    bad = tmp_path / "imgs" / "broken.png"
    bad.write_bytes(b"not an image")
    lines.append(f"{bad}\t3")
    (tmp_path / "list.txt").write_text("\n".join(lines) + "\n")
    return tmp_path


def invert(pipe, folder, out, **kw):
    opts = dict(num_steps=STEPS, mode="bits", batch_size=4, shard_size=4, progress=False)
    opts.update(kw)
    return D.invert_dataset(pipe, folder / "list.txt", out, **opts)


def test_folder_listing_is_recursive_and_sorted(folder):
    items = D.list_inputs(folder / "imgs", prompt="7")
    assert [os.path.basename(i.path) for i in items] == ["broken.png", "d1.png", "d2.png", "d4.png", "d5.png",
                                                         "d7.png", "d8.png", "d0.png", "d3.png", "d6.png"]
    assert all(i.prompt == "7" for i in items)
    with pytest.raises(FileNotFoundError, match="dataset source not found"):
        D.list_inputs(folder / "nowhere")


def test_invert_dataset_records_failures_and_reconstructs_each_image_exactly(pipe, folder):
    out = folder / "lat"
    summary = invert(pipe, folder, out)
    assert summary["images"] == 10 and summary["ok"] == 9 and summary["failed"] == 1
    manifest = D.read_manifest(out)
    bad = [r for r in manifest if r["status"] != "ok"]
    assert len(bad) == 1 and bad[0]["path"].endswith("broken.png") and "cannot read image" in bad[0]["error"]
    ok = [r for r in manifest if r["status"] == "ok"]
    assert {r["mode"] for r in ok} == {"bits"} and len({r["sha256"] for r in ok}) == 9
    assert all(set(r) >= {"path", "sha256", "shard", "position", "method", "fingerprint", "model", "model_digest",
                          "prompt", "guidance_scale"} for r in ok)
    from PIL import Image
    import numpy as np

    for r in ok[:4]:  # each image alone, from a batch of 4 / 1; an image file gives back an image (issue 22.8)
        back = reconstruct(pipe, D.load_image_latent(out, r)).images[0]
        assert isinstance(back, Image.Image)
        assert np.array_equal(np.asarray(back), np.asarray(Image.open(r["path"])))
    # the whole dataset in batches of another size
    res = D.reconstruct_dataset(pipe, out, folder / "back", batch_size=3, verify=True, progress=False)
    assert res["images"] == 9 and res["max_abs_error"] == 0.0 and res["differing"] == []
    assert len(res["files"]) == 9 and all(np.array_equal(np.asarray(Image.open(f)), np.asarray(Image.open(r["path"])))
                                          for f, r in zip(res["files"], ok))


@dataclasses.dataclass(frozen=True)
class SimulatedRank(D.Dist):
    """A rank of a simulated world in this process: at its barrier number ``at``, the other ranks' whole
    runs happen (``others``), as they would between that barrier and the next."""

    others: Any = None
    at: int = 2
    seen: list = dataclasses.field(default_factory=list)

    def barrier(self) -> None:
        self.seen.append(1)
        if len(self.seen) == self.at and self.others is not None:
            self.others()


def test_latents_do_not_depend_on_batch_size_shards_or_world_size(pipe, folder):
    """Issue 23.2: a latent is a function of the image (and prompt, model, method, grid, mode) alone; the
    network always runs in the model's fixed chunk, recorded in the latent."""
    runs = {"b8": dict(batch_size=8), "b3": dict(batch_size=3), "b3-shard2": dict(batch_size=3, shard_size=2)}
    for name, kw in runs.items():
        invert(pipe, folder, folder / name, num_steps=4, **kw)
    def rank_one():  # after rank 0 wrote run.json (its second barrier), before it merges
        invert(pipe, folder, folder / "ws2", num_steps=4, batch_size=3, dist=SimulatedRank(1, 2))

    invert(pipe, folder, folder / "ws2", num_steps=4, batch_size=3, dist=SimulatedRank(0, 2, others=rank_one))
    chunk = eval_chunk_for(pipe.unet)

    def latents(name):
        out = folder / name
        return {r["path"]: D.load_image_latent(out, r) for r in D.read_manifest(out) if r["status"] == "ok"}

    ref = latents("b8")
    assert len(ref) == 9
    for name in ("b3", "b3-shard2", "ws2"):
        other = latents(name)
        assert sorted(other) == sorted(ref), name
        for path, a in ref.items():
            b = other[path]
            arrays_a, arrays_b = a.named_arrays(), b.named_arrays()
            assert sorted(arrays_a) == sorted(arrays_b)
            assert all(torch.equal(arrays_a[n], arrays_b[n]) for n in arrays_a), (name, path)
            assert a.metadata.get(DIGESTS_KEY) == b.metadata.get(DIGESTS_KEY)
            assert a.metadata["eval_batch"] == b.metadata["eval_batch"] == chunk


def test_resume_skips_finished_shards_and_never_rewrites_them(pipe, folder, monkeypatch):
    out = folder / "lat"
    calls = {"n": 0}
    real = D.invert

    def dying(*a, **kw):  # the run is killed while its second shard is in flight
        calls["n"] += 1
        if calls["n"] == 2:
            raise KeyboardInterrupt
        return real(*a, **kw)

    monkeypatch.setattr(D, "invert", dying)
    with pytest.raises(KeyboardInterrupt):
        invert(pipe, folder, out)
    monkeypatch.setattr(D, "invert", real)
    assert (out / "shard-00000.json").is_file() and not (out / "shard-00001.json").exists()
    assert not [p for p in os.listdir(out) if p.endswith(".tmp")]
    first = (out / "shard-00000.safetensors").stat().st_mtime_ns
    summary = invert(pipe, folder, out)
    assert summary["shards_skipped"] == 1 and summary["shards_done"] == 2 and summary["ok"] == 9
    assert (out / "shard-00000.safetensors").stat().st_mtime_ns == first
    again = invert(pipe, folder, out)
    assert again["shards_skipped"] == 3 and again["shards_done"] == 0
    with pytest.raises(ValueError, match="other options .*num_steps"):
        invert(pipe, folder, out, num_steps=STEPS + 1)
    clean = folder / "clean"
    invert(pipe, folder, clean)
    for k in range(3):
        a, b = load_file(str(out / f"shard-0000{k}.safetensors")), load_file(str(clean / f"shard-0000{k}.safetensors"))
        assert sorted(a) == sorted(b) and all(torch.equal(a[n], b[n]) for n in a)


def test_world_size_two_under_torchrun_gives_the_same_latents(pipe, folder):
    one = folder / "ws1"
    invert(pipe, folder, one)
    two = folder / "ws2"
    cmd = [sys.executable, "-m", "torch.distributed.run", "--nproc_per_node", "2", "--master_port", "29517",
           "-m", "linmultistep.cli", "invert-dataset", "--model", "digits", str(folder / "list.txt"), "--out", str(two),
           "--steps", str(STEPS), "--mode", "bits", "--batch-size", "4", "--shard-size", "4", "--quiet"]
    env = {**os.environ, "OMP_NUM_THREADS": "1"}
    done = subprocess.run(cmd, capture_output=True, text=True, timeout=300, env=env)
    assert done.returncode == 0, done.stderr[-2000:]
    assert "9 of 10 images inverted, 1 failed" in done.stdout
    for k in range(3):
        a, b = load_file(str(one / f"shard-0000{k}.safetensors")), load_file(str(two / f"shard-0000{k}.safetensors"))
        assert sorted(a) == sorted(b) and all(torch.equal(a[n], b[n]) for n in a)
    def same(rs):  # the model's name is the API's path vs the CLI's 'digits' (so the latent files' hashes
        # differ too); its weights digest must agree
        return [{k: v for k, v in r.items() if k not in ("model", "latent_sha256")} for r in rs]

    assert same(D.read_manifest(one)) == same(D.read_manifest(two))


def test_reconstruct_refuses_another_model(pipe, folder):
    out = folder / "lat"
    invert(pipe, folder, out)
    other = load_pipeline()
    with torch.no_grad():
        other.unet.conv_out.weight.mul_(1.01)
    with pytest.raises(ValueError, match="another model"):
        D.reconstruct_dataset(other, out, folder / "back", progress=False)


def test_bad_options_are_refused(pipe, folder):
    with pytest.raises(ValueError, match="batch_size must be a positive int"):
        invert(pipe, folder, folder / "x", batch_size=0)
    with pytest.raises(ValueError, match="no images found"):
        (folder / "empty").mkdir()
        D.invert_dataset(pipe, folder / "empty", folder / "y", progress=False)
    with pytest.raises(FileNotFoundError, match="manifest.jsonl"):
        D.read_manifest(folder)


@pytest.mark.gpu
def test_nccl_world_of_two_gpus(folder):
    if torch.cuda.device_count() < 2:
        pytest.skip("needs two CUDA devices")
    cmd = [sys.executable, "-m", "torch.distributed.run", "--nproc_per_node", "2", "-m", "linmultistep.cli",
           "invert-dataset", "--model", "digits", str(folder / "list.txt"), "--out", str(folder / "gpu"),
           "--steps", str(STEPS), "--mode", "bits", "--batch-size", "4", "--shard-size", "4", "--quiet"]
    done = subprocess.run(cmd, capture_output=True, text=True, timeout=600)
    assert done.returncode == 0, done.stderr[-2000:]
    records = [json.loads(line) for line in (folder / "gpu" / "manifest.jsonl").read_text().splitlines()]
    assert sum(r["status"] == "ok" for r in records) == 9
