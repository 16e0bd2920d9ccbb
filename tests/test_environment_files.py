"""Latent files whose integrity cannot be switched off: the digest is mandatory, stored dtypes are
checked, and a crafted field is reported as that field of the file (backends/diffusers/latents.py)."""

from __future__ import annotations

import json

import pytest

torch = pytest.importorskip("torch")
pytest.importorskip("diffusers")

from safetensors import safe_open  # noqa: E402
from safetensors.torch import save_file  # noqa: E402

from linmultistep.backends.diffusers import invert, load_latent, reconstruct, save_latent  # noqa: E402
from linmultistep.backends.diffusers.latents import _digests  # noqa: E402
from linmultistep.backends.digits import load_heldout, load_pipeline  # noqa: E402


@pytest.fixture(scope="module")
def digits():
    torch.set_num_threads(1)
    pipe = load_pipeline()
    x, y = load_heldout()
    return pipe, x[:2], y[:2].tolist()


@pytest.fixture(scope="module")
def saved(digits, tmp_path_factory):
    pipe, x, y = digits
    return save_latent(invert(pipe, x, y, num_steps=5, mode="bits", progress=False),
                       tmp_path_factory.mktemp("saved") / "good.safetensors")


def _read(path):
    with safe_open(str(path), framework="pt") as fh:
        return dict(fh.metadata()), {k: fh.get_tensor(k) for k in fh.keys()}


def _write(out, meta, tensors, digest=True):
    """A file with these fields and tensors; ``digest``: recomputed (a crafted file that passes the integrity
    check, so the field checks must catch it) or left out."""
    meta = {k: v for k, v in meta.items() if k != "digest"}
    if digest:
        meta["digest"] = json.dumps(_digests(meta, tensors), sort_keys=True)
    save_file(tensors, str(out), metadata=meta)
    return out


@pytest.mark.bad_input("6 files")
def test_a_file_without_digest_is_refused_unless_asked(digits, saved, tmp_path):
    """Deleting the digest used to skip every check: a flipped exponent bit then reconstructed far off."""
    pipe, x, _ = digits
    meta, tensors = _read(saved)
    tensors["x[5]"] = tensors["x[5]"].clone()
    tensors["x[5]"].view(torch.int32)[0, 0, 0, 0] ^= 1 << 30  # an exponent bit of the first element
    bad = _write(tmp_path / "nodigest.safetensors", meta, tensors, digest=False)
    with pytest.raises(ValueError, match=r"nodigest\.safetensors has no integrity digest .*allow_legacy=True"):
        load_latent(bad)
    # a legacy file (written before digests) is read by request, with a warning
    legacy = _write(tmp_path / "legacy.safetensors", meta, _read(saved)[1], digest=False)
    with pytest.warns(UserWarning, match=r"legacy\.safetensors: reading a latent without integrity digest"):
        latent = load_latent(legacy, allow_legacy=True)
    assert torch.equal(reconstruct(pipe, latent, progress=False).images, x)
    with pytest.raises(TypeError, match="allow_legacy must be True or False"):
        load_latent(saved, allow_legacy="yes")


@pytest.mark.bad_input("6 files")
def test_stored_dtypes_are_checked_against_the_metadata_and_the_mode(saved, tmp_path):
    meta, tensors = _read(saved)
    assert json.loads(meta["dtypes"]) == {k: str(t.dtype).replace("torch.", "") for k, t in tensors.items()}
    # a fixed-point part stored as float64 (the digest recomputed: only the dtype checks can see it)
    wide = dict(tensors, **{"X[5]": tensors["X[5]"].double()})
    with pytest.raises(ValueError, match=r"wide\.safetensors: stored tensor dtypes differ .*X\[5\] is float64, "
                                         r"recorded 'int64'"):
        load_latent(_write(tmp_path / "wide.safetensors", meta, wide))
    # ... and with the dtypes field crafted to agree, the mode still says what the part must be
    crafted = dict(meta, dtypes=json.dumps({k: str(t.dtype).replace("torch.", "") for k, t in wide.items()}))
    with pytest.raises(ValueError, match=r"crafted\.safetensors: tensor 'X\[5\]' of mode 'bits' must be int64"):
        load_latent(_write(tmp_path / "crafted.safetensors", crafted, wide))
    # a float state in two precisions, or as integers
    mixed = dict(tensors, **{"x[4]": tensors["x[4]"].double()})
    mixed_meta = dict(meta, dtypes=json.dumps({k: str(t.dtype).replace("torch.", "") for k, t in mixed.items()}))
    with pytest.raises(ValueError, match=r"mixed\.safetensors: the state's tensors are stored in several dtypes"):
        load_latent(_write(tmp_path / "mixed.safetensors", mixed_meta, mixed))
    ints = dict(tensors, **{"x[4]": tensors["x[4]"].to(torch.int32)})
    ints_meta = dict(meta, dtypes=json.dumps({k: str(t.dtype).replace("torch.", "") for k, t in ints.items()}))
    with pytest.raises(ValueError, match=r"ints\.safetensors: tensor 'x\[4\]' must be a real floating-point state"):
        load_latent(_write(tmp_path / "ints.safetensors", ints_meta, ints))
    # the field lists other tensors than the file holds
    fewer = dict(meta, dtypes=json.dumps({"x[5]": "float32"}))
    with pytest.raises(ValueError, match=r"fewer\.safetensors: the file holds tensors .* 'dtypes' lists"):
        load_latent(_write(tmp_path / "fewer.safetensors", fewer, tensors))


CRAFTED_INFO = [
    ("image_kind", "jpeg", "'pil' or 'pt'"),  # used to surface as a bad output_type
    ("guidance_scale", "7.5", "finite number"),  # used to be float()-converted silently
    ("guidance_scale", float("nan"), "finite number"),
    ("prompt", {"a": 1}, "text, a class label"),
    ("negative_prompt", [1, 2], "text or a list of texts"),
    ("prediction_type", "eps", "must be one of"),
    ("steps_offset", -1, "non-negative integer"),
    ("set_alpha_to_one", "yes", "true or false"),
    ("image_size", [8, 0], r"\[height, width\]"),
    ("input_sizes", [[8]], "pairs"),
    ("model_digest", 5, "must be a string"),
    ("bits_digests", {"4": ["abc"]}, "integer checksums"),
    ("environment", [], "JSON object"),
    ("environment", {"torch": "2"}, "probe digest"),
    ("environment", {"probe": {"digest": "ab", "values": [1e400]}}, "finite numbers"),
    ("environment", {"probe": {"digest": "ab"}, "threads": 0}, "'threads' must be a positive integer"),
]


@pytest.mark.bad_input("6 files")
@pytest.mark.parametrize("field,value,match", CRAFTED_INFO, ids=[f"{f}-{k}" for k, (f, _, _) in enumerate(CRAFTED_INFO)])
def test_crafted_info_fields_are_reported_as_the_field(saved, tmp_path, field, value, match):
    meta, tensors = _read(saved)
    info = dict(json.loads(meta["info"]), **{field: value})
    bad = _write(tmp_path / "crafted.safetensors", dict(meta, info=json.dumps(info)), tensors)
    with pytest.raises(ValueError, match=rf"crafted\.safetensors: metadata field 'info\.{field}' .*{match}"):
        load_latent(bad)
