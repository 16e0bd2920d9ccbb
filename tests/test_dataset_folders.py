"""ImageFolder datasets (issue 22): ``invert-dataset --prompt-from-folder`` takes each image's class label or
prompt from its sub-folder's name; a refused or failed start leaves nothing behind."""

from __future__ import annotations

import json
import os

import pytest

torch = pytest.importorskip("torch")
pytest.importorskip("diffusers")
from PIL import Image  # noqa: E402

from linmultistep.backends.diffusers import dataset as D  # noqa: E402
from linmultistep.backends.diffusers.dataset_files import DatasetError  # noqa: E402
from linmultistep.backends.diffusers.images import to_pil  # noqa: E402
from linmultistep.backends.digits import load_heldout  # noqa: E402
from linmultistep.cli import main  # noqa: E402

ONE_TORCH_THREAD = True  # conftest: one torch thread for this module, restored after
STEPS = 4


@pytest.fixture(scope="module")
def pipe(digits_pipe):
    return digits_pipe


@pytest.fixture()
def image_folder(tmp_path):
    """digits/<label>/<k>.png for two 3s and two 8s of the held-out set."""
    x, y = load_heldout()
    root = tmp_path / "digits"
    labels = {}
    for want in (3, 8):
        (root / str(want)).mkdir(parents=True)
        for n, k in enumerate((y == want).nonzero()[:2, 0].tolist()):
            p = root / str(want) / f"{n}.png"
            to_pil(x[k:k + 1])[0].save(p)
            labels[os.path.realpath(p)] = want
    return root, labels


def test_prompts_come_from_the_sub_folder_names(pipe, image_folder, tmp_path):
    root, labels = image_folder
    items = D.list_inputs(root, from_folder=True)
    assert {os.path.realpath(i.path): int(i.prompt) for i in items} == labels
    summary = D.invert_dataset(pipe, root, tmp_path / "lat", prompt_from_folder=True, num_steps=STEPS, mode="bits",
                               progress=False)
    assert summary["ok"] == 4 and summary["failed"] == 0
    records = D.read_manifest(tmp_path / "lat")
    # each latent records its own folder's label, and reconstructs to the image it came from
    assert {os.path.realpath(D.resolve_path(r["path"], tmp_path / "lat", r.get("format"))): int(r["prompt"])
            for r in records} == labels
    D.reconstruct_dataset(pipe, tmp_path / "lat", tmp_path / "back", progress=False, verify=True)


def test_the_cli_reads_an_image_folder(image_folder, tmp_path):
    root, _ = image_folder
    assert main(["invert-dataset", "--model", "digits", str(root), "--prompt-from-folder", "--steps", str(STEPS),
                 "--out", str(tmp_path / "lat"), "--quiet"]) == 0
    prompts = sorted(json.loads(line)["prompt"] for line in (tmp_path / "lat" / "manifest.jsonl").read_text().splitlines())
    assert prompts == ["3", "3", "8", "8"]


@pytest.mark.bad_input("11 dataset bookkeeping")
def test_a_misplaced_image_or_a_bad_folder_name_is_refused_and_leaves_nothing(pipe, image_folder, tmp_path):
    root, _ = image_folder
    Image.new("L", (8, 8), 0).save(root / "loose.png")  # not in a sub-folder
    with pytest.raises(DatasetError, match=r"every image must sit in a sub-folder .*loose\.png"):
        D.invert_dataset(pipe, root, tmp_path / "a", prompt_from_folder=True, num_steps=STEPS, progress=False)
    assert not (tmp_path / "a").exists()
    os.remove(root / "loose.png")
    (root / "cat").mkdir()
    Image.new("L", (8, 8), 0).save(root / "cat" / "0.png")  # a class-conditional model takes labels, not 'cat'
    with pytest.raises(DatasetError, match=r"folder .*cat: .*class label"):
        D.invert_dataset(pipe, root, tmp_path / "b", prompt_from_folder=True, num_steps=STEPS, progress=False)
    assert not (tmp_path / "b").exists()
    with pytest.raises(DatasetError, match="need a folder of sub-folders"):
        D.list_inputs(root / "3" / "0.png", from_folder=True)


@pytest.mark.bad_input("11 dataset bookkeeping")
def test_a_start_that_fails_after_run_json_leaves_nothing_behind(pipe, image_folder, tmp_path, monkeypatch):
    root, _ = image_folder

    def broken(*_a, **_k):
        raise RuntimeError("the first shard failed")

    monkeypatch.setattr(D._ShardRun, "invert_shard", broken)
    with pytest.raises(RuntimeError, match="first shard"):
        D.invert_dataset(pipe, root, tmp_path / "c", prompt_from_folder=True, num_steps=STEPS, progress=False)
    assert not (tmp_path / "c").exists()
    (tmp_path / "d").mkdir()  # a folder the user made stays, empty
    monkeypatch.setattr(D, "_ShardRun", broken)  # a failure before the first shard starts
    with pytest.raises(RuntimeError, match="first shard"):
        D.invert_dataset(pipe, root, tmp_path / "d", prompt_from_folder=True, num_steps=STEPS, progress=False)
    assert (tmp_path / "d").is_dir() and not any((tmp_path / "d").iterdir())
