"""The reproduce report as experiments-as-data: definitions validate, one runner executes a list on tiny
models (a UNet text-to-image pipeline and an SD3 flow pipeline, random weights) and writes the report."""

from __future__ import annotations

import json

import numpy as np
import pytest

torch = pytest.importorskip("torch")
pytest.importorskip("diffusers")
pytest.importorskip("transformers")

from linmultistep.backends.experiments.definitions import (  # noqa: E402
    DIGITS_SAMPLERS, DIRECT, FLOW_SAMPLERS, P2P, PLAIN, EditVariant, Experiment, Sampler, definitions_for,
)
from linmultistep.backends.experiments.runner import edit_targets, run  # noqa: E402
from linmultistep.backends.experiments.subjects import FlowSubject, Heldout, UNetSubject  # noqa: E402

DDIM, OBELM_BITS = DIGITS_SAMPLERS[0], DIGITS_SAMPLERS[7]
WORDS = {"digit": ("zero", "one", "two", "three", "four", "five", "six", "seven", "eight", "nine"),
         "thickness": ("thin", "thick")}


class ConstantJudge:
    """Judges every image as digit 5 and thin; features: the images' pooled pixels (a stand-in feature net)."""

    def predict(self, x):
        return {"digit": torch.full((len(x),), 5), "thickness": torch.zeros(len(x), dtype=torch.long)}

    def features(self, x):
        return torch.nn.functional.adaptive_avg_pool2d(x.float(), 2).flatten(1)


def _heldout(images):
    captions = ["a thick zero", "a thin three", "a thick seven"][: len(images)]
    digits = torch.tensor([0, 3, 7][: len(images)])
    thickness = torch.tensor([1, 0, 1][: len(images)])
    return Heldout(images, captions, {"digit": digits, "thickness": thickness})


# --- definitions ----------------------------------------------------------------------------------
def _recon(**kw):
    base = dict(name="r", kind="reconstruction", samplers=(DDIM,), steps=(10,), images=2, measures=("pixel_mse",))
    base.update(kw)
    return Experiment(**base)


@pytest.mark.bad_input("9 unclear errors")
@pytest.mark.parametrize("field, build", [
    ("kind", lambda: _recon(kind="table9")),
    ("samplers", lambda: _recon(samplers=())),
    ("samplers", lambda: _recon(samplers=(DDIM, DDIM))),
    ("steps", lambda: _recon(steps=(1,))),
    ("steps", lambda: _recon(steps=(10.5,))),
    ("guidance", lambda: _recon(guidance=(0.5,))),
    ("dtypes", lambda: _recon(dtypes=("float16",))),
    ("measures", lambda: _recon(measures=("frechet",))),
    ("images", lambda: _recon(images=0)),
    ("images", lambda: _recon(kind="interpolation", images=3, measures=("endpoint_error",))),
    ("reference_steps", lambda: _recon(kind="generation", samples=10, reference_steps=50, steps=(50,),
                                       measures=("reference_error",))),
    ("samples", lambda: _recon(kind="generation", samples=1, measures=("accuracy",))),
    ("strengths", lambda: _recon(kind="edit", strengths=(0.0,), variants=(PLAIN,), changes=("digit",),
                                 measures=("target_share",))),
    ("changes", lambda: _recon(kind="edit", strengths=(1.0,), variants=(PLAIN,), changes=("colour",),
                               measures=("target_share",))),
    ("reference_method", lambda: _recon(kind="generation", samples=10, reference_steps=100, reference_method="rk4",
                                        measures=("accuracy",))),
    ("Sampler.method", lambda: Sampler("RK4", "rk4")),
    ("Sampler.mode", lambda: Sampler("fast", "obelm", "fast")),
    ("EditVariant.cross_attention_steps", lambda: EditVariant("p2p", cross_attention_steps=1.5)),
])
def test_a_bad_definition_is_refused_naming_the_field(field, build):
    with pytest.raises(ValueError, match=field.replace(".", r"\.")):
        build()


@pytest.mark.parametrize("model", ["digits", "mnist-sd", "mnist-flow", "generic"])
@pytest.mark.parametrize("quick", [False, True])
def test_every_models_list_is_valid_with_distinct_names(model, quick):
    exps = definitions_for(model, quick)
    assert exps and len({e.name for e in exps}) == len(exps)


def test_the_mnist_sd_list_covers_the_issues_tables():
    """Issue 20 item 3: Tables 2/3 for DDIM, EDICT, BDIA, O-BELM in each mode at 10/20/50/100 steps, guidance 1
    and 3, float32 and float64; Table 4 at 10/20/50; editing the digit and an attribute three ways."""
    exps = definitions_for("mnist-sd")
    recs = [e for e in exps if e.kind == "reconstruction"]
    assert {d for e in recs for d in e.dtypes} == {"float32", "float64"}
    for rec in recs:  # every method, in each dtype
        assert {s.method for s in rec.samplers} == {"ddim", "edict", "bdia", "obelm"}
        assert rec.steps == (10, 20, 50, 100) and rec.guidance == (1.0, 3.0)
        assert set(rec.measures) == {"pixel_mse", "latent_mse", "ae_floor"}
    assert {s.mode for e in recs for s in e.samplers if s.method == "obelm"} == {"recurrence", "stable", "bits"}
    gen = next(e for e in exps if e.kind == "generation")
    assert gen.steps == (10, 20, 50) and len(gen.seeds) > 1 and set(gen.measures) == {"accuracy", "frechet", "reference_error"}
    edits = [e for e in exps if e.kind == "edit"]
    assert {c for e in edits for c in e.changes} >= {"digit", "thickness"}
    for e in edits:
        assert set(e.variants) == {PLAIN, DIRECT, P2P}
    assert P2P.direct_inversion is False and P2P.cross_attention_steps == 0.4
    assert any(e.kind == "interpolation" for e in exps)


def test_edit_targets_change_exactly_one_word():
    subject = UNetSubject.__new__(UNetSubject)
    subject.text, subject.edit_words = True, WORDS
    held = _heldout(torch.zeros(3, 3, 16, 16))
    targets, classes = edit_targets(subject, held.conditions, held.classes, "digit")
    assert targets == ["a thick five", "a thin eight", "a thick two"] and classes.tolist() == [5, 8, 2]
    targets, classes = edit_targets(subject, held.conditions, held.classes, "thickness")
    assert targets == ["a thin zero", "a thick three", "a thin seven"] and classes.tolist() == [0, 1, 0]


# --- the runner on tiny models -------------------------------------------------------------------
def test_runner_on_a_tiny_text_to_image_unet_writes_report_and_measures(tmp_path):
    from linmultistep.backends.diffusers.pipeline import decode_latents, encode_images, parts_of
    from linmultistep.backends.diffusers.testing import sample_images, tiny_sd_pipeline

    torch.set_num_threads(1)
    pipe = tiny_sd_pipeline()
    pipe.set_progress_bar_config(disable=True)
    images = sample_images(3, 16, seed=3)
    subject = UNetSubject(pipe, "tiny-sd", 3.0, _heldout(images), ConstantJudge(), text=True, edit_words=WORDS)
    subject.prompt_note = "test captions"
    subject.prompts = lambda n, seed: (["a thick one"] * n, {"digit": np.full(n, 5), "thickness": np.arange(n) % 2})
    exps = [
        Experiment("reconstruction", "reconstruction", (DDIM, OBELM_BITS), (4,), (1.0, 3.0), ("float32",), images=3,
                   measures=("pixel_mse", "latent_mse", "ae_floor")),
        Experiment("generation", "generation", (Sampler("DDIM", "ddim"), Sampler("O-BELM", "obelm")), (3,), (3.0,),
                   ("float64",), samples=4, seeds=(0, 1), reference_steps=6, measures=("accuracy", "frechet", "reference_error")),
        Experiment("editing", "edit", (Sampler("O-BELM", "obelm"),), (4,), (3.0,), images=2, strengths=(1.0,),
                   variants=(PLAIN,), changes=("digit",), measures=("target_share", "source_distance")),
        Experiment("interpolation", "interpolation", (Sampler("DDIM", "ddim"), Sampler("O-BELM", "obelm")), (4,), images=2,
                   measures=("endpoint_error",)),
    ]
    report = run(exps, subject, tmp_path, progress=lambda _: None, header=["# tiny"])
    results = json.loads((tmp_path / "results.json").read_text())["experiments"]

    rec = results["reconstruction"]["result"]
    with torch.no_grad():  # the autoencoder floor, independently: decode(encode(x)) against x
        floor = float((decode_latents(parts_of(pipe), encode_images(parts_of(pipe), images)).double()
                       - images.double()).pow(2).mean())
    assert rec["ae_floor"] == pytest.approx(floor, rel=1e-12)
    for w in ("1", "3"):
        lat, pix = rec["latent_mse"][f"float32 w={w}"], rec["pixel_mse"][f"float32 w={w}"]
        assert lat["O-BELM bits"]["4"] == 0.0 < lat["DDIM"]["4"]
        assert pix["O-BELM bits"]["4"] == pytest.approx(floor, rel=1e-12)  # bit-exact latent: exactly the floor

    gen = results["generation"]["result"]
    assert gen["accuracy"]["digit"]["DDIM"]["3"] == [1.0, 1.0]        # the judge says 5, every prompt asks 5
    assert gen["accuracy"]["thickness"]["O-BELM"]["3"] == [0.5, 0.5]  # says thin, half ask thick
    assert all(v > 0 for v in gen["error"]["DDIM"]["3"]) and len(gen["reference"]["error"]) == 1

    e = results["editing"]["result"]["changes"]["digit"]
    assert e["targets"] == ["a thick five", "a thick two"]  # the 2 images picked: the first and the last
    assert e["share"]["plain"] == [0.5] and e["fresh_share"] == 0.5   # 0 -> 5 judged 5; 7 -> 2 not

    ends = results["interpolation"]["result"]["endpoint_error"]
    assert ends["O-BELM"] < 1e-10 < ends["DDIM"]
    text = report.read_text()
    for section in ("Reconstruction", "Generation quality", "Editing", "Interpolation"):
        assert f"## {section}" in text
    for png in ("editing_digit_grid.png", "editing_digit_metrics.png", "interpolation.png"):
        assert (tmp_path / png).stat().st_size > 1000


def test_runner_on_a_tiny_sd3_flow_pipeline(tmp_path):
    from linmultistep.backends.diffusers.flow_testing import tiny_sd3_pipeline
    from linmultistep.backends.diffusers.testing import sample_images

    torch.set_num_threads(1)
    pipe = tiny_sd3_pipeline()
    pipe.set_progress_bar_config(disable=True)
    subject = FlowSubject(pipe, "tiny-sd3", 3.0, _heldout(sample_images(3, 16, seed=4)), ConstantJudge(), edit_words=WORDS)
    subject.prompt_note = "test captions"
    exps = [
        Experiment("reconstruction", "reconstruction", (FLOW_SAMPLERS[0], FLOW_SAMPLERS[3]), (4,), (1.0, 3.0),
                   ("float32",), images=2, measures=("pixel_mse", "latent_mse")),
        Experiment("editing", "edit", (Sampler("O-BELM", "obelm"),), (4,), (3.0,), images=2, strengths=(0.5,),
                   variants=(PLAIN, DIRECT), changes=("thickness",), measures=("target_share", "source_distance")),
        Experiment("interpolation", "interpolation", (Sampler("Euler", "ddim"), Sampler("O-BELM", "obelm")), (4,),
                   images=2, measures=("endpoint_error",)),
    ]
    report = run(exps, subject, tmp_path, progress=lambda _: None)
    results = json.loads((tmp_path / "results.json").read_text())["experiments"]
    lat = results["reconstruction"]["result"]["latent_mse"]["float32 w=3"]
    assert lat["O-BELM bits"]["4"] == 0.0 < lat["Euler"]["4"]
    e = results["editing"]["result"]
    assert e["changes"]["thickness"]["targets"] == ["a thin zero", "a thin seven"]
    assert e["changes"]["thickness"]["share"]["plain"] == [1.0]       # judged thin, both targets thin
    assert "direct inversion skipped" in report.read_text()            # the transformer binding has no source branch
    ends = results["interpolation"]["result"]["endpoint_error"]
    assert ends["O-BELM"] < 1e-10 < ends["Euler"]


def test_command_line_overrides_resize_the_list_and_only_picks_by_name():
    import argparse

    from linmultistep.backends.experiments.cli import add_arguments, experiments_for

    p = argparse.ArgumentParser()
    add_arguments(p)
    a = p.parse_args(["--model", "mnist-sd", "--recon-steps", "10", "20", "--recon-guidance", "3", "--seeds", "4",
                      "--reference-steps", "100", "--edit-steps", "12", "--strengths", "1.0",
                      "--only", "reconstruction", "generation", "editing the digit"])
    exps = {e.name: e for e in experiments_for("mnist-sd", False, 7, args=a)}
    assert set(exps) == {"reconstruction", "generation", "editing the digit"}
    assert exps["reconstruction"].steps == (10, 20) and exps["reconstruction"].guidance == (3.0,)
    g = exps["generation"]
    assert (g.samples, g.seeds, g.reference_steps) == (7, (4,), 100)
    assert exps["editing the digit"].steps == (12,) and exps["editing the digit"].strengths == (1.0,)
    with pytest.raises(ValueError, match="--only names \\['tables'\\]"):
        experiments_for("mnist-sd", False, args=p.parse_args(["--only", "tables"]))


def test_parts_run_apart_merge_into_one_report(tmp_path):
    """reproduce --only in parallel, then merge_reports: the union of the tables, one report."""
    from linmultistep.backends.diffusers.testing import sample_images, tiny_sd_pipeline
    from linmultistep.backends.experiments.report import merge_reports

    torch.set_num_threads(1)
    pipe = tiny_sd_pipeline()
    pipe.set_progress_bar_config(disable=True)
    subject = UNetSubject(pipe, "tiny-sd", 3.0, _heldout(sample_images(2, 16, seed=3)), None, text=True, edit_words=WORDS)
    rec = Experiment("reconstruction", "reconstruction", (DDIM, OBELM_BITS), (3,), (1.0,), ("float32",), images=2,
                     measures=("pixel_mse", "latent_mse", "ae_floor"))
    parts = []
    for k, w in enumerate((1.0, 3.0)):
        parts.append(tmp_path / f"p{k}")
        run([rec.replace(guidance=(w,))], subject, parts[-1], progress=lambda _: None, header=["# tiny", ""])
    report = merge_reports(parts, tmp_path / "all")
    merged = json.loads((tmp_path / "all" / "results.json").read_text())["experiments"]["reconstruction"]
    singles = [json.loads((p / "results.json").read_text())["experiments"]["reconstruction"]["result"] for p in parts]
    assert merged["result"]["latent_mse"] == {**singles[0]["latent_mse"], **singles[1]["latent_mse"]}
    assert merged["definition"]["guidance"] == [1.0, 3.0]
    text = report.read_text()
    assert text.startswith("# tiny") and text.count("## Reconstruction") == 1
    assert "guidance w = 1, latent MSE" in text and "guidance w = 3, latent MSE" in text


def test_reproduce_mnist_sd_quick_on_the_command_line(tmp_path, monkeypatch):
    """The CLI path of --model mnist-sd (the shipped model), on a shortened list."""
    from linmultistep.backends.diffusers.pipeline import parts_of
    from linmultistep.backends.experiments import cli
    from linmultistep.backends.mnist_sd import load_pipeline
    from linmultistep.cli import main

    if parts_of(load_pipeline()).channels != 1:
        pytest.skip("this build's pipeline reads grey images as RGB (the models branch's Parts.channels fix)")
    short = [e.replace(steps=(4,), images=2, samplers=e.samplers[-1:] + e.samplers[:1]) if e.kind == "reconstruction"
             else e.replace(steps=(4,), images=2, strengths=(1.0,)) for e in definitions_for("mnist-sd", quick=True)]
    monkeypatch.setattr(cli, "definitions_for", lambda family, quick: short)
    assert main(["reproduce", "--model", "mnist-sd", "--quick", "--threads", "1", "--out", str(tmp_path)]) == 0
    results = json.loads((tmp_path / "results.json").read_text())["experiments"]
    lat = results["reconstruction"]["result"]["latent_mse"]["float32 w=3"]
    assert lat["O-BELM bits"]["4"] == 0.0 < lat["DDIM"]["4"]
    change = results["editing"]["result"]["changes"]["digit"]
    for src, tgt in zip(change["sources"], change["targets"]):  # one word of the caption: the digit
        assert len(src.split()) == len(tgt.split()) and sum(a != b for a, b in zip(src.split(), tgt.split())) == 1
    assert "## Editing" in (tmp_path / "report.md").read_text()
