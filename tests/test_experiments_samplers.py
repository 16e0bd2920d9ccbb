"""The reports' experiment "samplers" (issue 23 item 4): the samplers users pick instead, driven by the
model's own network, against a high-step reference, on tiny models (random weights); on a flow model
diffusers' flow variants (their accuracy against the exact flow: tests/test_flow_sampler_comparison.py).

Independent checks: a sampler run at half the reference's steps is the reference's own error estimate
(the same solve, computed twice by different code paths), so the two numbers must agree exactly; the
judge's accuracy on a constant judge is known; every sampler yields every N with N network calls."""

from __future__ import annotations

import argparse
import json

import numpy as np
import pytest

torch = pytest.importorskip("torch")
pytest.importorskip("diffusers")
pytest.importorskip("transformers")

from linmultistep.analysis.sampler_comparison import FLOW_SAMPLERS, SAMPLERS  # noqa: E402
from linmultistep.backends.experiments.cli import add_arguments, experiments_for  # noqa: E402
from linmultistep.backends.experiments.definitions import (  # noqa: E402
    COMPARED, COMPARED_SAMPLERS, FLOW_COMPARED, FLOW_ONLY, Experiment, Sampler, definitions_for,
)
from linmultistep.backends.experiments.runner import run  # noqa: E402
from linmultistep.backends.experiments.subjects import FlowSubject, Heldout, UNetSubject  # noqa: E402

ONE_TORCH_THREAD = True


class FiveJudge:
    """Judges every image as digit 5."""

    def predict(self, x):
        return {"digit": torch.full((len(x),), 5)}

    def features(self, x):
        return x.float().flatten(1)[:, :4]


def _prompts(n, seed):
    """Every other prompt asks for a 5: the judge's accuracy is exactly the share of those, 0.5 for even n."""
    digits = np.where(np.arange(n) % 2 == 0, 5, 3)
    return [f"a thick {'five' if d == 5 else 'three'}" for d in digits], {"digit": digits}


def _samplers_experiment(samplers, reference_method="obelm", measures=("reference_error", "reference_cross", "accuracy")):
    # N = 5 and 10 with a 20-step reference: N = 10 is the reference's own half-step solve
    return Experiment("samplers", "samplers", samplers, (5, 10), (3.0,), ("float64",), samples=2, seeds=(0,),
                      reference_steps=20, reference_method=reference_method, measures=measures)


def _heldout(images):
    return Heldout(images, ["a thick five"] * len(images), {"digit": torch.full((len(images),), 5)})


def _results(tmp_path):
    return json.loads((tmp_path / "results.json").read_text())["experiments"]["samplers"]["result"]


# --- the lists and the command line ---------------------------------------------------------------
def test_the_compared_names_are_the_comparisons():
    assert COMPARED == tuple(SAMPLERS)
    assert {s.method for s in COMPARED_SAMPLERS} == set(COMPARED)
    assert set(COMPARED) | set(FLOW_ONLY) >= set(FLOW_SAMPLERS) and set(FLOW_ONLY) == set(FLOW_SAMPLERS) - set(COMPARED)
    assert [s.method for s in FLOW_COMPARED] == list(FLOW_SAMPLERS)


@pytest.mark.parametrize("model", ["digits", "mnist-sd", "mnist-flow"])
def test_samplers_is_in_every_full_list_and_out_of_quick(model):
    full = {e.name: e for e in definitions_for(model)}
    exp = full["samplers"]
    assert exp.kind == "samplers" and exp.steps == (5, 10, 20) and exp.reference_steps >= 2 * max(exp.steps)
    expected = FLOW_COMPARED if model == "mnist-flow" else COMPARED_SAMPLERS
    assert exp.samplers == expected
    assert "samplers" not in {e.name for e in definitions_for(model, quick=True)}  # --quick stays quick


def test_only_samplers_is_accepted_and_unknown_names_refused():
    p = argparse.ArgumentParser()
    add_arguments(p)
    exps = experiments_for("mnist-sd", False, args=p.parse_args(["--only", "samplers", "--reference-steps", "100"]))
    assert [(e.name, e.kind, e.reference_steps) for e in exps] == [("samplers", "samplers", 100)]
    with pytest.raises(ValueError, match=r"--only names \['sampler'\]"):
        experiments_for("mnist-sd", False, args=p.parse_args(["--only", "samplers", "sampler"]))


@pytest.mark.bad_input("9 unclear errors")
@pytest.mark.parametrize("field, build", [
    ("samplers", lambda: _samplers_experiment((Sampler("EDICT", "edict"),))),
    ("samplers", lambda: Experiment("r", "reconstruction", (Sampler("UniPC", "unipc"),), (10,), images=2,
                                    measures=("pixel_mse",))),
    ("samplers", lambda: _samplers_experiment((Sampler("O-BELM bits", "obelm", "bits"),))),
    ("reference_steps", lambda: _samplers_experiment(COMPARED_SAMPLERS).replace(reference_steps=21)),
    ("reference_steps", lambda: _samplers_experiment(COMPARED_SAMPLERS).replace(reference_steps=18)),
    ("seeds", lambda: _samplers_experiment(COMPARED_SAMPLERS).replace(seeds=(0, 1))),
    ("measures", lambda: _samplers_experiment(COMPARED_SAMPLERS, measures=("accuracy",))),
    ("dtypes", lambda: _samplers_experiment(COMPARED_SAMPLERS).replace(dtypes=("float32",))),
    ("Sampler.method", lambda: Sampler("DPM 3M", "dpm++3m")),
    ("samplers", lambda: _samplers_experiment(COMPARED_SAMPLERS[2:3] + FLOW_COMPARED[:1])),  # VP and flow mixed
])
def test_a_bad_samplers_definition_is_refused_naming_the_field(field, build):
    with pytest.raises(ValueError, match=field.replace(".", r"\.")):
        build()


# --- the runner on tiny models --------------------------------------------------------------------
def test_samplers_on_a_tiny_text_to_image_unet(tmp_path):
    from linmultistep.backends.diffusers.testing import sample_images, tiny_sd_pipeline

    pipe = tiny_sd_pipeline()
    pipe.set_progress_bar_config(disable=True)
    subject = UNetSubject(pipe, "tiny-sd", 3.0, _heldout(sample_images(2, 16, seed=3)), FiveJudge(), text=True)
    subject.prompt_note, subject.prompts = "test captions", _prompts
    report = run([_samplers_experiment(COMPARED_SAMPLERS)], subject, tmp_path, progress=lambda _: None)
    r = _results(tmp_path)
    labels = [s.label for s in COMPARED_SAMPLERS]
    assert_every_sampler_ran(r, labels)
    for lab in labels:
        p, _ = r["order"][lab]
        e5, e10 = r["error"][lab]["5"], r["error"][lab]["10"]
        assert p == pytest.approx(np.log(e5 / e10) / np.log(2), rel=1e-12)  # two points: the slope itself
    # O-BELM at N = 10 is the 20-step reference's half-step solve: its error is the reference's own error
    assert r["error"]["O-BELM"]["10"] == r["reference"]["error"]
    assert r["reference"]["label"] == "O-BELM, 20 steps" and 0 < r["reference"]["cross"] < float("inf")
    text = report.read_text()
    assert "## The samplers users pick instead" in text
    for lab in labels:
        assert f"| {lab} |" in text
    assert "Where O-BELM loses:" in text or "O-BELM is the most accurate" in text


def assert_every_sampler_ran(r: dict, labels: list) -> None:
    """Every sampler, in order, at N = 5 and 10 with a finite error, one network call per step, and the
    judge's accuracy 0.5 (it says 5; every other prompt asks 5)."""
    assert list(r["error"]) == labels
    for lab in labels:
        assert set(r["error"][lab]) == {"5", "10"} and all(0 < e < float("inf") for e in r["error"][lab].values())
        assert r["nfe"][lab] == {"5": 5, "10": 10}  # one network call per step
        assert r["accuracy"][lab] == {"5": 0.5, "10": 0.5}


def test_samplers_on_a_tiny_sd3_flow_pipeline(tmp_path):
    from linmultistep.backends.diffusers.flow_testing import tiny_sd3_pipeline
    from linmultistep.backends.diffusers.testing import sample_images

    pipe = tiny_sd3_pipeline()
    pipe.set_progress_bar_config(disable=True)
    subject = FlowSubject(pipe, "tiny-sd3", 3.0, _heldout(sample_images(2, 16, seed=4)), FiveJudge())
    subject.prompt_note, subject.prompts = "test captions", _prompts
    exp = _samplers_experiment(FLOW_COMPARED, "ddim")
    report = run([exp], subject, tmp_path, progress=lambda _: None)
    r = _results(tmp_path)
    labels = [s.label for s in FLOW_COMPARED]
    assert_every_sampler_ran(r, labels)
    assert r["error"]["Euler"]["10"] == r["reference"]["error"]  # Euler at 10 = the 20-step Euler reference's half
    assert 0 < r["reference"]["cross"] < float("inf") and "uniform grid" in r["reference"]["cross_label"]
    u = r["uniform"]  # the same samplers on the uniform sigmas shift(k / N), against the same reference
    assert list(u["error"]) == labels
    for lab in labels:
        assert u["nfe"][lab] == {"5": 5, "10": 10} and all(0 < e < float("inf") for e in u["error"][lab].values())
        assert u["accuracy"][lab] == {"5": 0.5, "10": 0.5}
    assert r["notes"] == []
    text = report.read_text()
    assert "flow_prediction" in text and "not wrapped" not in text and "on the uniform sigmas shift(k / N)" in text
    for lab in labels:
        assert f"| {lab} |" in text
    assert "Where O-BELM loses:" in text or "O-BELM is the most accurate" in text


@pytest.mark.bad_input("4 companions")
@pytest.mark.parametrize("family", ["unet", "flow"])
def test_a_sampler_of_the_other_path_is_refused_before_running(tmp_path, family):
    from linmultistep.backends.diffusers.testing import sample_images

    if family == "flow":
        from linmultistep.backends.diffusers.flow_testing import tiny_sd3_pipeline

        subject = FlowSubject(tiny_sd3_pipeline(), "tiny-sd3", 3.0, _heldout(sample_images(2, 16, seed=4)), FiveJudge())
        samplers, match = COMPARED_SAMPLERS[2:3], r"noise-prediction schedulers .* use their flow variants"
    else:
        from linmultistep.backends.diffusers.testing import tiny_sd_pipeline

        subject = UNetSubject(tiny_sd_pipeline(), "tiny-sd", 3.0, _heldout(sample_images(2, 16, seed=3)), FiveJudge(),
                              text=True)
        samplers, match = FLOW_COMPARED[:1], r"flow-matching samplers .* variance-preserving path"
    subject.prompt_note, subject.prompts = "test captions", _prompts
    calls = []
    subject.decode = lambda z: calls.append(z)  # nothing may be sampled or decoded before the refusal
    with pytest.raises(ValueError, match=match):
        run([_samplers_experiment(samplers, "ddim" if family == "flow" else "obelm", ("reference_error",))],
            subject, tmp_path, progress=lambda _: None)
    assert calls == [] and not (tmp_path / "results.json").exists()
