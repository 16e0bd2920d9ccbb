"""The command line: every bad value ends in ONE line naming the option, exit code 2, before the model
is loaded; nothing the user had is overwritten; --quiet is quiet."""

from __future__ import annotations

import pytest

torch = pytest.importorskip("torch")
pytest.importorskip("diffusers")
from hypothesis import HealthCheck, given, settings  # noqa: E402
from hypothesis import strategies as st  # noqa: E402
from PIL import Image  # noqa: E402

from linmultistep.backends.diffusers import cli as dcli  # noqa: E402
from linmultistep.cli import main, user_message  # noqa: E402
from linmultistep.errors import ArgumentError, LatentMismatchError, MethodError  # noqa: E402
from strategies import cli_error  # noqa: E402


@pytest.fixture
def files(tmp_path):
    """An input digit image, a latent made from it, and a text file posing as an image."""
    img = tmp_path / "in.png"
    Image.new("L", (8, 8), 128).save(img)
    (tmp_path / "notes.png").write_text("not an image")
    lat = tmp_path / "in.safetensors"
    assert main(["invert", "--model", "digits", str(img), "--prompt", "3", "--steps", "3", "-o", str(lat),
                 "--quiet", "--threads", "1"]) == 0
    return tmp_path


@pytest.fixture
def no_model_load(monkeypatch):
    """Validation must finish before the model loads: loading it here fails the test."""
    def refuse(*_a, **_k):
        raise AssertionError("the model was loaded before the options were checked")

    monkeypatch.setattr(dcli, "_load", refuse)


def invert_cmd(d, *extra, out="new.safetensors"):
    return ["invert", "--model", "digits", str(d / "in.png"), "--prompt", "3", "-o", str(d / out), *extra]


def edit_cmd(d, *extra, out="ed.png"):
    return ["edit", "--model", "digits", str(d / "in.png"), "--source-prompt", "3", "--target-prompt", "8",
            "-o", str(d / out), *extra]


# (argv builder, what the one line must say): outputs that would destroy what the user has
DATA_LOSS = [
    (lambda d: invert_cmd(d, out="in.png"), "must end with .safetensors"),
    (lambda d: invert_cmd(d, out="in.safetensors"), "exists; pass --overwrite"),
    (lambda d: ["invert", "--model", "digits", str(d / "in.safetensors"), "-o", str(d / "in.safetensors"),
                "--overwrite"], "is one of the inputs"),
    (lambda d: invert_cmd(d, out="."), "must end with .safetensors"),
    (lambda d: edit_cmd(d, out="in.png"), "is one of the inputs"),
    (lambda d: edit_cmd(d, "--overwrite", out="in.png"), "is one of the inputs"),
    (lambda d: edit_cmd(d, "--save-latent", str(d / "in.safetensors")), "exists; pass --overwrite"),
    (lambda d: edit_cmd(d, "--save-latent", str(d / "ed.png"), out="ed.png"), "must end with .safetensors"),
    (lambda d: ["reconstruct", "--model", "digits", str(d / "in.safetensors"), "-o", str(d / "in.png")],
     "exists; pass --overwrite"),
    (lambda d: ["generate", "--model", "digits", "--prompt", "3", "-o", str(d / "in.png")], "exists; pass --overwrite"),
]

# (argv builder, what the one line must say): other bad values
CASES = [
    (lambda d: invert_cmd(d, "--steps", "0"), "--steps must be between 1 and"),
    (lambda d: invert_cmd(d, "--steps", "1000000000"), "--steps must be between 1 and"),
    (lambda d: invert_cmd(d, "--gamma", "0.5"), "--gamma applies to --method bdia only"),
    (lambda d: invert_cmd(d, "--method", "bdia", "--p", "0.9"), "--p applies to --method edict only"),
    (lambda d: invert_cmd(d, "--method", "bdia", "--gamma", "nan"), "gamma"),
    (lambda d: invert_cmd(d, "--method", "edict", "--p", "0"), r"p must be in \(0, 1\]"),
    (lambda d: invert_cmd(d, "--eps-bound", "9"), "--eps-bound / --data-bound apply to --mode bits only"),
    (lambda d: invert_cmd(d, "--mode", "bits", "--eps-bound", "-1"), "--eps-bound must be a positive finite number"),
    (lambda d: invert_cmd(d, "--mode", "bits", "--data-bound", "inf"), "--data-bound must be a positive finite number"),
    (lambda d: invert_cmd(d, "--method", "edict", "--mode", "stable"), "stable"),
    (lambda d: invert_cmd(d, "--guidance-scale", "nan"), "--guidance-scale must be a finite number"),
    (lambda d: ["invert", "--model", "digits", str(d / "missing.png"), "-o", str(d / "x.safetensors")],
     "image file not found: .*missing.png"),
    (lambda d: ["invert", "--model", "digits", str(d / "notes.png"), "-o", str(d / "x.safetensors")],
     "cannot read image .*notes.png"),
    (lambda d: ["invert", "--model", str(d / "nowhere"), str(d / "in.png"), "-o", str(d / "x.safetensors")],
     "model path not found"),
    (lambda d: ["invert", "--model", str(d), str(d / "in.png"), "-o", str(d / "x.safetensors")],
     "no model_index.json"),
    (lambda d: edit_cmd(d, "--strength", "0"), r"--strength must be in \(0, 1\], got 0.0"),
    (lambda d: edit_cmd(d, "--strength", "1.5"), r"--strength must be in \(0, 1\], got 1.5"),
    (lambda d: edit_cmd(d, "--self-attention-steps", "2"), r"--self-attention-steps must be a fraction of the steps in \[0, 1\]"),
    (lambda d: edit_cmd(d, "--self-attention-steps", "nan"), "--self-attention-steps must be a finite number"),
    (lambda d: edit_cmd(d, "--freeze-last", "-1"), "--freeze-last must be >= 0"),
    (lambda d: edit_cmd(d, "--source-guidance-scale", "inf"), "--source-guidance-scale must be a finite"),
    (lambda d: edit_cmd(d, "--save-latent", str(d / "l.txt")), "--save-latent .* must end with .safetensors"),
    (lambda d: ["reconstruct", "--model", "digits", str(d / "notes.png"), "-o", str(d / "r.png")],
     "notes.png is not a readable safetensors file"),
    (lambda d: ["reconstruct", "--model", "digits", str(d / "gone.safetensors"), "-o", str(d / "r.png")],
     "latent file not found"),
    (lambda d: ["reconstruct", "--model", "digits", str(d / "in.safetensors"), "-o", str(d / "r.gif")],
     "must end with .png"),
    (lambda d: ["reconstruct", "--model", "digits", str(d / "in.safetensors"), "-o", str(d / "r.png"),
                "--guidance-scale", "nan"], "--guidance-scale must be a finite number"),
    (lambda d: ["generate", "--model", "digits", "--prompt", "3", "--count", "0", "-o", str(d / "g.png")],
     "--count must be >= 1"),
    (lambda d: ["generate", "--model", "digits", "--prompt", "3", "--threads", "0", "-o", str(d / "g.png")],
     "--threads must be at least 1"),
]


def _refused_before_loading(files, capsys, build, match) -> None:
    import re

    before = {p.name: p.read_bytes() for p in files.iterdir() if p.is_file()}
    line = cli_error(capsys, build(files))
    assert re.search(match, line), line
    assert {p.name: p.read_bytes() for p in files.iterdir() if p.is_file()} == before  # nothing written or changed


@pytest.mark.bad_input("10 cli")
@pytest.mark.parametrize("build,match", CASES, ids=[f"cli{k}" for k in range(len(CASES))])
def test_bad_options_end_in_one_line_exit_2_before_the_model_loads(files, no_model_load, capsys, build, match):
    _refused_before_loading(files, capsys, build, match)


@pytest.mark.bad_input("1 data loss")
@pytest.mark.parametrize("build,match", DATA_LOSS, ids=[f"loss{k}" for k in range(len(DATA_LOSS))])
def test_outputs_never_replace_inputs_or_existing_files(files, no_model_load, capsys, build, match):
    _refused_before_loading(files, capsys, build, match)


@pytest.mark.bad_input("10 cli")
@settings(suppress_health_check=[HealthCheck.function_scoped_fixture])
@given(option=st.sampled_from(["--strength", "--self-attention-steps", "--guidance-scale", "--source-guidance-scale"]),
       value=st.one_of(st.floats(allow_nan=True, allow_infinity=True), st.sampled_from(["nan", "-inf", "1e400"])))
def test_any_numeric_option_value_is_refused_in_one_line_or_accepted(files, capsys, option, value):
    """Random values: either one line naming the option (exit 2) or the value is valid and the
    command goes on to load the model (stopped there)."""
    import math

    class Loaded(Exception):
        pass

    def stop(*_a, **_k):
        raise Loaded

    original, dcli._load = dcli._load, stop
    try:
        argv = [str(a) for a in edit_cmd(files, f"{option}={value}", out="h.png")]  # '=': '-1e+16' is no flag
        try:
            code = main(argv)
        except Loaded:
            v = float(value)
            assert math.isfinite(v)
            if option == "--strength":
                assert 0 < v <= 1
            if option == "--self-attention-steps":
                assert 0 <= v <= 1
            return
        err = capsys.readouterr().err.strip().splitlines()
        assert code == 2 and len(err) == 1 and option in err[0], (value, err)
    finally:
        dcli._load = original


@pytest.mark.bad_input("10 cli")
def test_errors_after_loading_are_one_line_too(files, capsys):
    """A latent that fails only once the model is known (another model's weights) still ends in one line."""
    import dataclasses

    from linmultistep.backends.diffusers import load_latent, save_latent

    lat = load_latent(files / "in.safetensors")
    other = dataclasses.replace(lat, metadata={**lat.metadata, "model_digest": "0" * 16})
    save_latent(other, files / "other.safetensors")
    line = cli_error(capsys, ["reconstruct", "--model", "digits", files / "other.safetensors", "-o", files / "o.png",
                              "--quiet"])
    assert "--ignore-model-mismatch" in line and "check_model" not in line


@pytest.mark.bad_input("10 cli")
def test_library_errors_name_the_option_through_their_argument_field():
    """The CLI reads the argument at fault off the error (no rewriting of message text by patterns)."""
    options = {"num_steps": "--steps", "check_model": "--ignore-model-mismatch", "eps_bound": "--eps-bound"}
    assert user_message(ArgumentError("num_steps", "must be an integer"), options) == "--steps must be an integer"
    assert user_message(MethodError("eps_bound must be a positive finite number, got -1", argument="eps_bound"),
                        options) == "--eps-bound must be a positive finite number, got -1"
    line = user_message(LatentMismatchError("other weights; pass check_model=False to go on", argument="check_model"),
                        options)
    assert line == "other weights; pass --ignore-model-mismatch to go on"
    # an error without the field is shown as it is: the words of a message are never guessed at
    assert user_message(ValueError("the eval_batch_size is wrong"), {"eval_batch": "--x"}) == "the eval_batch_size is wrong"


@pytest.mark.bad_input("10 cli")
def test_quiet_prints_nothing_but_the_result(tmp_path, capfd):
    assert main(["generate", "--model", "digits", "--prompt", "3", "--steps", "3", "-o", str(tmp_path / "g.png"),
                 "--quiet", "--threads", "1"]) == 0
    out, err = capfd.readouterr()
    assert out.strip() == f"wrote {tmp_path / 'g.png'}"
    assert err.strip() == "", err  # no loading bars, no diffusers warnings, no sampling bar


@pytest.mark.bad_input("10 cli")
def test_a_bug_keeps_its_traceback(monkeypatch, tmp_path):
    """Only errors about what the user gave become one line; a bug in the library is not hidden."""
    def broken(*_a, **_k):
        raise KeyError("internal")

    monkeypatch.setattr(dcli, "_load", broken)
    with pytest.raises(KeyError):
        main(["generate", "--model", "digits", "--prompt", "3", "-o", str(tmp_path / "g.png")])


@pytest.mark.bad_input("1 data loss")
def test_output_paths_reaching_an_input_through_a_symlink_are_refused(files, no_model_load, capsys):
    (files / "alias.safetensors").symlink_to(files / "in.safetensors")
    line = cli_error(capsys, ["invert", "--model", "digits", files / "in.safetensors", "-o", files / "alias.safetensors",
                              "--overwrite"])
    assert "is one of the inputs" in line


def test_help_states_the_defaults(capsys):
    for command, expected in (("invert", "(default: 1.0)"), ("edit", "(default: 7.5)"), ("generate", "(default: 0)")):
        with pytest.raises(SystemExit):
            main([command, "--help"])
        text = " ".join(capsys.readouterr().out.split())
        assert expected in text, (command, text)
