"""BELMScheduler / BELMInverseScheduler against diffusers' scheduler contract (DDIMScheduler's and
DDIMInverseScheduler's): arguments and config keys, save/load, outputs, shapes, timesteps, beta
schedules, prediction types, spacing and offset, compatibles; ``method='ddim'`` step for step
against diffusers' own DDIM schedulers; exact round trips for every exact method; and one clear
error for each misuse (off-grid timestep, step out of order, changed sample, non-invertible
features). The truths are diffusers' code (its signatures, schedules, steps) and closed forms.
"""

from __future__ import annotations

import inspect

import numpy as np
import pytest

torch = pytest.importorskip("torch")
diffusers = pytest.importorskip("diffusers")

from diffusers import DDIMInverseScheduler, DDIMScheduler  # noqa: E402
from diffusers.schedulers.scheduling_ddim import betas_for_alpha_bar, rescale_zero_terminal_snr  # noqa: E402

import linmultistep as lms  # noqa: E402
from linmultistep import GridError  # noqa: E402
from linmultistep.backends.diffusers import BELMInverseScheduler, BELMScheduler  # noqa: E402

U32 = 2.0**-24  # float32 unit roundoff: diffusers keeps its schedule in float32
U64 = 2.0**-53
EXACT = [("obelm", {}), ("bdia", {}), ("bdia", {"gamma": 0.5}), ("belm", {})]
METHODS = EXACT + [("ddim", {})]
SD = dict(beta_schedule="scaled_linear", beta_start=0.00085, beta_end=0.012)
# the configs of issue 24 (DDIM's common test family and the failing example)
ISSUE_CONFIGS = [
    {},
    dict(set_alpha_to_one=False),
    dict(prediction_type="v_prediction"),
    dict(steps_offset=1),
    dict(timestep_spacing="trailing"),
    dict(SD, set_alpha_to_one=False, steps_offset=1),
    dict(SD, prediction_type="v_prediction", timestep_spacing="trailing"),
    dict(SD, set_alpha_to_one=False),
    dict(beta_schedule="squaredcos_cap_v2"),
    dict(prediction_type="sample", beta_start=0.01),
]


def ids(kw):
    return ",".join(f"{k}={v}" for k, v in kw.items() if k not in ("beta_start", "beta_end")) or "default"


def net(x, t):
    """A smooth nonlinear stand-in for a UNet: depends on the sample and the timestep."""
    t = float(t)
    return torch.tanh(0.7 * x + 0.3 * x.roll(1, dims=-1)) * (1.0 + t / 1000.0) + 0.05 * x


def sample_like(seed, shape=(2, 3, 4, 4), dtype=torch.float64):
    return torch.randn(*shape, generator=torch.Generator().manual_seed(seed), dtype=torch.float64).to(dtype)


def sampling_loop(sched, x, model=net):
    """The loop a diffusers pipeline runs (what DDIMPipeline does, without guidance)."""
    for t in sched.timesteps:
        x = sched.step(model(x, t), t, x).prev_sample
    return x


def inversion_loop(inv, x, model=net):
    """The loop diffusers' inversion pipelines (DiffEdit, Pix2PixZero) run with DDIMInverseScheduler."""
    for t in inv.timesteps:
        x = inv.step(model(x, t), t, x).prev_sample
    return x


def forward_and_inverse(method, kw, **config):
    return (BELMScheduler(method=method, **kw, **config), BELMInverseScheduler(method=method, **kw, **config))


# --- arguments, config, save/load --------------------------------------------------------------
@pytest.mark.parametrize("ours,theirs", [(BELMScheduler, DDIMScheduler), (BELMInverseScheduler, DDIMInverseScheduler)])
def test_every_ddim_argument_and_config_key_is_accepted(ours, theirs):
    params = set(inspect.signature(theirs.__init__).parameters) - {"self", "kwargs"}
    assert params <= set(inspect.signature(ours.__init__).parameters)
    assert set(theirs().config) <= set(ours().config)
    # DDIM's own config, keys with exact meaning at their non-default values, constructs and round-trips
    cfg = dict(theirs(num_train_timesteps=500, beta_schedule="squaredcos_cap_v2", clip_sample=False,
                      set_alpha_to_one=False, steps_offset=1, prediction_type="v_prediction",
                      timestep_spacing="trailing", rescale_betas_zero_snr=False).config)
    ours_from = ours.from_config(cfg)
    assert all(ours_from.config[k] == v for k, v in cfg.items() if not k.startswith("_"))
    assert theirs.from_config(ours_from.config).config["timestep_spacing"] == "trailing"
    direct = ours(**{k: v for k, v in cfg.items() if not k.startswith("_")})
    assert {k: v for k, v in direct.config.items() if not k.startswith("_")} == \
           {k: v for k, v in ours_from.config.items() if not k.startswith("_")}


def test_inverse_scheduler_takes_the_deprecated_set_alpha_to_zero():
    with pytest.warns(FutureWarning, match="set_alpha_to_zero"):
        inv = BELMInverseScheduler(set_alpha_to_zero=False)
    ref = DDIMInverseScheduler(set_alpha_to_zero=False)
    # diffusers applies it to the schedule only; the config says so too here, so save/load keeps it
    assert inv.config.set_alpha_to_one is False
    assert float(inv.initial_alpha_cumprod) == pytest.approx(float(ref.initial_alpha_cumprod), rel=4 * U32)


@pytest.mark.parametrize("method,kw", METHODS, ids=lambda v: v if isinstance(v, str) else ids(v))
def test_save_pretrained_and_from_pretrained_give_the_same_scheduler(tmp_path, method, kw):
    for cls in (BELMScheduler, BELMInverseScheduler):
        sched = cls(method=method, **kw, **SD, set_alpha_to_one=False, steps_offset=1, prediction_type="v_prediction")
        sched.save_pretrained(tmp_path / cls.__name__)
        again = cls.from_pretrained(tmp_path / cls.__name__)
        assert {k: v for k, v in again.config.items() if not k.startswith("_")} == \
               {k: v for k, v in sched.config.items() if not k.startswith("_")}
        a, b = sched, again
        a.set_timesteps(8)
        b.set_timesteps(8)
        x = sample_like(0)
        loop = sampling_loop if cls is BELMScheduler else inversion_loop
        assert torch.equal(loop(a, x.clone()), loop(b, x.clone()))


def test_config_of_a_method_round_trips_through_other_schedulers(tmp_path):
    sched = BELMScheduler(method="bdia", gamma=0.5, mode="recurrence", **SD)
    inv = BELMInverseScheduler.from_config(sched.config, timestep_convention="lagged")
    assert (inv.config.method, inv.config.gamma, inv.config.mode) == ("bdia", 0.5, "recurrence")
    ddim = DDIMScheduler.from_config(sched.config)  # diffusers ignores our keys
    assert ddim.config.beta_schedule == "scaled_linear"


# --- public attributes, outputs, shapes -----------------------------------------------------------
@pytest.mark.parametrize("ours,theirs", [(BELMScheduler, DDIMScheduler), (BELMInverseScheduler, DDIMInverseScheduler)])
def test_public_attributes_diffusers_reads(ours, theirs):
    a, b = ours(**SD), theirs(**SD)
    public = {k for k in vars(b) if not k.startswith("_")}
    assert public <= set(dir(a))
    for name in ("order", "_compatibles", "init_noise_sigma"):
        assert getattr(a, name) == getattr(b, name)
    for name in ("betas", "alphas", "alphas_cumprod"):
        assert torch.allclose(getattr(a, name).float(), getattr(b, name), rtol=1100 * U32, atol=0)
    assert torch.equal(a.timesteps, b.timesteps) and a.num_inference_steps is None
    a.set_timesteps(10)
    b.set_timesteps(10)
    assert torch.equal(a.timesteps, b.timesteps) and a.num_inference_steps == 10
    x = sample_like(1, dtype=torch.float32)
    assert torch.equal(a.scale_model_input(x, a.timesteps[0]), b.scale_model_input(x, b.timesteps[0]))
    assert len(a) == len(b) == 1000


def test_add_noise_equals_ddims():
    a, b = BELMScheduler(**SD), DDIMScheduler(**SD)
    x0, noise = sample_like(2, dtype=torch.float32), sample_like(3, dtype=torch.float32)
    t = torch.tensor([0, 499, 999])
    for i in range(3):
        ours = a.add_noise(x0[:1].expand(1, -1, -1, -1), noise[:1], t[i:i + 1])
        theirs = b.add_noise(x0[:1], noise[:1], t[i:i + 1])
        assert torch.allclose(ours, theirs, rtol=0, atol=2000 * U32)  # diffusers' float32 cumprod over t factors


@pytest.mark.parametrize("method,kw", METHODS, ids=lambda v: v if isinstance(v, str) else ids(v))
@pytest.mark.parametrize("shape,dtype", [((2, 3, 8, 8), torch.float32), ((1, 4, 2, 3, 3), torch.float64), ((5, 7), torch.float32)])
def test_outputs_as_tuple_and_dataclass_with_the_sample_shape(method, kw, shape, dtype):
    for cls, loop_ts in ((BELMScheduler, None), (BELMInverseScheduler, None)):
        a, b = cls(method=method, **kw), cls(method=method, **kw)
        a.set_timesteps(6)
        b.set_timesteps(6)
        x = y = sample_like(4, shape, dtype)
        for t in a.timesteps:
            out = a.step(net(x, t), t, x)
            tup = b.step(net(y, t), t, y, return_dict=False)
            assert isinstance(tup, tuple) and len(tup) == 2
            assert torch.equal(out.prev_sample, tup[0]) and out.prev_sample.shape == shape
            assert out.prev_sample.dtype == dtype
            if out.pred_original_sample is not None or tup[1] is not None:
                assert torch.equal(out.pred_original_sample, tup[1]) and tup[1].shape == shape
            assert out.to_tuple()[0] is out.prev_sample  # diffusers' BaseOutput
            x, y = out.prev_sample, tup[0]


# --- timesteps, spacing, offset, schedules -------------------------------------------------------
@pytest.mark.parametrize("T", [100, 500, 1000])
@pytest.mark.parametrize("spacing,offset", [("leading", 0), ("leading", 1), ("trailing", 0), ("linspace", 0)])
@pytest.mark.parametrize("alpha_one", [True, False])
def test_timesteps_equal_ddims(T, spacing, offset, alpha_one):
    for n in (1, 5, 10, 50):
        cfg = dict(num_train_timesteps=T, timestep_spacing=spacing, steps_offset=offset, set_alpha_to_one=alpha_one)
        ours, ref = BELMScheduler(method="ddim", **cfg), DDIMScheduler(**cfg)
        if n == 1 and offset == 0 and spacing in ("leading", "linspace") and not alpha_one:
            # diffusers' one step is from timestep 0 to alphas_cumprod[0]: zero length, nothing to sample
            with pytest.raises(GridError, match="no step is left"):
                ours.set_timesteps(n)
            continue
        ours.set_timesteps(n)
        ref.set_timesteps(n)
        assert torch.equal(ours.timesteps, ref.timesteps), (cfg, n)
        for method in ("obelm", "ddim"):
            inv = BELMInverseScheduler(method=method, **cfg)
            inv.set_timesteps(n)
            if spacing != "linspace":  # DDIMInverseScheduler has no 'linspace'
                ref_inv = DDIMInverseScheduler(**cfg)
                ref_inv.set_timesteps(n)
                assert torch.equal(inv.timesteps, ref_inv.timesteps), (cfg, n)
            # the same timesteps as the forward scheduler, in reverse
            assert torch.equal(inv.timesteps, ours.timesteps.flip(0)), (cfg, n)


@pytest.mark.parametrize("schedule", ["linear", "scaled_linear", "squaredcos_cap_v2"])
@pytest.mark.parametrize("T", [100, 1000])
def test_every_beta_schedule_is_diffusers(schedule, T):
    cfg = dict(beta_schedule=schedule, num_train_timesteps=T, **({} if schedule == "linear" else
                                                                 {"beta_start": 0.00085, "beta_end": 0.012}))
    ours, ref = BELMScheduler(**cfg), DDIMScheduler(**cfg)
    # diffusers' float32 linspace errs by a few unit roundoffs of its largest value (squared: twice that)
    assert torch.allclose(ours.betas.float(), ref.betas, rtol=U32, atol=8 * U32 * float(ours.betas.max()))
    if schedule == "squaredcos_cap_v2":
        assert torch.allclose(ours.betas.float(), betas_for_alpha_bar(T), rtol=U32, atol=0)
    # alphas_cumprod[t]: t + 1 float32 roundings of factors 1 - beta (conditioned by beta / (1 - beta) <= 999)
    cond = float((ours.betas / (1 - ours.betas)).max())
    bound = (torch.arange(T, dtype=torch.float64) + 2) * U32 * (1 + cond)
    assert ((ours.alphas_cumprod - ref.alphas_cumprod.double()).abs() <= bound * ours.alphas_cumprod).all()


def test_trained_betas_and_zero_snr_rescaling_are_diffusers():
    betas = np.linspace(0.0002, 0.03, 300) ** 1.1
    ours, ref = BELMScheduler(trained_betas=betas.tolist()), DDIMScheduler(trained_betas=betas.tolist())
    assert torch.equal(ours.betas, torch.from_numpy(betas))  # float64, no rounding
    assert torch.allclose(ours.betas.float(), ref.betas, rtol=U32, atol=0)
    for cfg in ({"trained_betas": betas.tolist()}, SD, {}):
        ours = BELMScheduler(rescale_betas_zero_snr=True, **cfg)
        base = BELMScheduler(**cfg).betas
        # diffusers' own rescaling (Lin et al. 2024, Algorithm 1), run on the float64 betas
        assert torch.allclose(ours.betas, rescale_zero_terminal_snr(base.clone()), rtol=1e-12, atol=1e-15)
        assert float(ours.alphas_cumprod[-1]) == 0.0 and float(ours.alphas_cumprod[-2]) > 0.0


@pytest.mark.parametrize("method,kw", METHODS, ids=lambda v: v if isinstance(v, str) else ids(v))
@pytest.mark.parametrize("prediction_type", ["epsilon", "v_prediction", "sample"])
@pytest.mark.parametrize("config", [{}, dict(SD, set_alpha_to_one=False, steps_offset=1),
                                    dict(timestep_spacing="trailing"), dict(beta_schedule="squaredcos_cap_v2")],
                         ids=ids)
def test_every_prediction_type_samples_a_point_mass_exactly(method, kw, prediction_type, config):
    """Data = one point x0: the ideal network's noise is (x - a_t x0) / s_t, the probability-flow ODE
    is xbar = x0 + sigmabar eps, linear in sigmabar, and every consistent method integrates it
    exactly: sampling lands on x0 (closed form), whatever the prediction type the network uses."""
    sched = BELMScheduler(method=method, **kw, prediction_type=prediction_type, **config)
    sched.set_timesteps(12)
    ac = sched.alphas_cumprod
    x0 = sample_like(5)

    def ideal(x, t):
        a, s = float(ac[int(t)]) ** 0.5, float(1 - ac[int(t)]) ** 0.5
        eps = (x - a * x0) / s
        return {"epsilon": eps, "v_prediction": a * eps - s * x0, "sample": x0}[prediction_type]

    out = sampling_loop(sched, sample_like(6), ideal)
    a0 = 1.0 if sched.config.set_alpha_to_one else float(ac[0]) ** 0.5
    s0 = 0.0 if sched.config.set_alpha_to_one else float(1 - ac[0]) ** 0.5
    # the last point is x0 at the data end's noise level, with the trajectory's own (constant) noise
    eps = (sample_like(6) - float(ac[int(sched.timesteps[0])]) ** 0.5 * x0) / float(1 - ac[int(sched.timesteps[0])]) ** 0.5
    want = a0 * x0 + s0 * eps
    assert float((out - want).abs().max()) <= 1e-9 * float(want.abs().max())


# --- compatibles --------------------------------------------------------------------------------
def test_compatibles_build_from_every_compatible_config():
    assert set(BELMScheduler._compatibles) == set(DDIMScheduler._compatibles)
    assert DDIMScheduler in BELMScheduler().compatibles
    for name in DDIMScheduler._compatibles:
        cls = getattr(diffusers, name)
        try:
            cfg = cls().config
        except ImportError:  # an optional dependency of that scheduler (e.g. torchsde) is not installed
            continue
        ref = DDIMScheduler.from_config(cfg)
        try:
            ours = BELMScheduler.from_config(cfg)
        except ValueError as e:  # DDPM-style configs clip x0 by default: refused with the reason, not ignored
            assert cfg.get("clip_sample") or cfg.get("thresholding"), (name, e)
            assert "method='ddim'" in str(e)
            ours = BELMScheduler.from_config(cfg, clip_sample=False, thresholding=False)
        ours.set_timesteps(10)
        ref.set_timesteps(10)
        assert torch.equal(ours.timesteps, ref.timesteps), name
        assert ours.config.prediction_type == ref.config.prediction_type


# --- method='ddim' is diffusers' DDIM -------------------------------------------------------------
def with_float64_schedule(ref, ours):
    """diffusers' DDIM step formula on our float64 schedule (its float32 copy is compared above)."""
    ref.alphas_cumprod = ours.alphas_cumprod.clone()
    if hasattr(ref, "final_alpha_cumprod"):
        ref.final_alpha_cumprod = ours.final_alpha_cumprod.clone()
    else:
        ref.initial_alpha_cumprod = ours.initial_alpha_cumprod.clone()
    return ref


@pytest.mark.parametrize("config", ISSUE_CONFIGS, ids=ids)
@pytest.mark.parametrize("n", [10, 50])
def test_method_ddim_equals_ddim_scheduler_step_for_step(config, n):
    ours = BELMScheduler(method="ddim", **config)
    ref = with_float64_schedule(DDIMScheduler(clip_sample=False, **config), ours)
    ours.set_timesteps(n)
    ref.set_timesteps(n)
    assert torch.equal(ours.timesteps, ref.timesteps)
    x = y = sample_like(7)
    for t in ours.timesteps:  # the issue's loop: KeyError at the last step before
        a, b = ours.step(net(x, t), t, x), ref.step(net(y, t), t, y)
        scale = float(b.prev_sample.abs().max())
        assert float((a.prev_sample - b.prev_sample).abs().max()) <= 64 * U64 * scale
        assert torch.allclose(a.pred_original_sample, b.pred_original_sample, rtol=1e-12, atol=1e-12)
        x, y = a.prev_sample, b.prev_sample


@pytest.mark.parametrize("config", [c for c in ISSUE_CONFIGS if c.get("prediction_type") != "sample"], ids=ids)
@pytest.mark.parametrize("n", [10, 50])
def test_method_ddim_inverse_equals_ddim_inverse_scheduler_step_for_step(config, n):
    ours = BELMInverseScheduler(method="ddim", **config)
    ref = with_float64_schedule(DDIMInverseScheduler(clip_sample=False, **config), ours)
    ours.set_timesteps(n)
    ref.set_timesteps(n)
    assert torch.equal(ours.timesteps, ref.timesteps)
    x = y = sample_like(8)
    for t in ours.timesteps:
        a, b = ours.step(net(x, t), t, x), ref.step(net(y, t), t, y)
        assert float((a.prev_sample - b.prev_sample).abs().max()) <= 64 * U64 * float(b.prev_sample.abs().max())
        x, y = a.prev_sample, b.prev_sample
    state = ours.state  # the DDIM latent x_N, for reconstruct()
    assert torch.equal(state.x, x) and sorted(state.window) == [max(state.window)]


@pytest.mark.parametrize("config,step_kw", [
    (dict(clip_sample=True), {}),
    (dict(clip_sample=True, clip_sample_range=0.5, prediction_type="v_prediction"), {}),
    (dict(thresholding=True, sample_max_value=2.0), {}),
    (dict(thresholding=True, prediction_type="v_prediction", sample_max_value=0.5), {}),
    ({}, dict(eta=0.5)),
    (dict(clip_sample=True), dict(eta=1.0, use_clipped_model_output=True)),
    (dict(rescale_betas_zero_snr=True, timestep_spacing="trailing", prediction_type="v_prediction"), {}),
    (dict(rescale_betas_zero_snr=True, prediction_type="v_prediction"), {}),
], ids=lambda v: ids(v) if isinstance(v, dict) else str(v))
def test_method_ddim_with_non_invertible_features_is_ddim_scheduler_itself(config, step_kw):
    ours, ref = BELMScheduler(method="ddim", **config), DDIMScheduler(**{"clip_sample": False, **config})
    ours.set_timesteps(10)
    ref.set_timesteps(10)
    x = y = sample_like(9, dtype=torch.float32)
    for t in ours.timesteps:
        g1, g2 = (torch.Generator().manual_seed(int(t)), torch.Generator().manual_seed(int(t)))
        a = ours.step(net(x, t), t, x, generator=g1, **step_kw).prev_sample
        b = ref.step(net(y, t), t, y, generator=g2, **step_kw).prev_sample
        if config.get("rescale_betas_zero_snr") and config.get("timestep_spacing") != "trailing":
            # 'leading' never reaches the zero-SNR timestep: the core's float64 step, float32 rounding apart
            assert torch.allclose(a, b, rtol=1e-4, atol=1e-5)
        else:
            assert torch.equal(a, b)
        x, y = a, b
    if not step_kw and not config.get("thresholding"):  # DDIMInverseScheduler has neither eta nor thresholding
        inv = BELMInverseScheduler(method="ddim", **config)
        ref_inv = DDIMInverseScheduler(**{"clip_sample": False, **config})
        inv.set_timesteps(10)
        ref_inv.set_timesteps(10)
        x = y = sample_like(10, dtype=torch.float32)
        for t in inv.timesteps:
            x = inv.step(net(x, t), t, x).prev_sample
            y = ref_inv.step(net(y, t), t, y).prev_sample
        assert torch.allclose(x, y, rtol=1e-4, atol=1e-5)


# --- exact methods: round trips ------------------------------------------------------------------
ROUND_TRIP_CONFIGS = [
    {},
    dict(SD, set_alpha_to_one=False, steps_offset=1),
    dict(SD, set_alpha_to_one=False),  # timestep 0 scheduled: diffusers' zero-length step
    dict(timestep_spacing="trailing", prediction_type="v_prediction"),
    dict(timestep_spacing="linspace", prediction_type="sample", set_alpha_to_one=False),
    dict(beta_schedule="squaredcos_cap_v2"),
    dict(SD, rescale_betas_zero_snr=True, prediction_type="v_prediction"),
    dict(trained_betas=(np.linspace(0.0002, 0.03, 300) ** 1.1).tolist()),
]


@pytest.mark.parametrize("method,kw", EXACT, ids=lambda v: v if isinstance(v, str) else ids(v))
@pytest.mark.parametrize("convention", ["ddim", "lagged"])
@pytest.mark.parametrize("config", ROUND_TRIP_CONFIGS, ids=ids)
def test_inverse_then_forward_scheduler_recovers_the_data(method, kw, convention, config):
    """The inversion loop (written for DDIMInverseScheduler), then the sampling loop from the latent:
    the data come back to float64 rounding (the methods' inverses are exact)."""
    inv = BELMInverseScheduler(method=method, **kw, mode="recurrence", timestep_convention=convention, **config)
    inv.set_timesteps(10)
    x0 = sample_like(11)
    latent_x = inversion_loop(inv, x0)
    state = inv.state
    assert torch.equal(state.x, latent_x) and sorted(state.window) == [state.hi - 1, state.hi]
    sched = BELMScheduler.from_config(inv.config)
    sched.set_timesteps(10)
    sched.load_state(state)
    back = sampling_loop(sched, state.x)
    assert float((back - x0).norm() / x0.norm()) <= 1e-10


@pytest.mark.parametrize("mode", [None, "stable"])
@pytest.mark.parametrize("convention", ["ddim", "lagged"])
def test_round_trip_in_the_default_modes(mode, convention):
    inv = BELMInverseScheduler(mode=mode, timestep_convention=convention, **SD, set_alpha_to_one=False, steps_offset=1)
    inv.set_timesteps(10)
    x0 = sample_like(12)
    inversion_loop(inv, x0)
    sched = BELMScheduler.from_config(inv.config)
    sched.set_timesteps(10)
    sched.load_state(inv.state)
    assert float((sampling_loop(sched, inv.state.x) - x0).norm() / x0.norm()) <= 1e-10


@pytest.mark.parametrize("convention", ["ddim", "lagged"])
@pytest.mark.parametrize("config", [{}, dict(SD, set_alpha_to_one=False), dict(timestep_spacing="trailing")], ids=ids)
def test_round_trip_in_mode_bits_is_bit_for_bit(convention, config):
    inv = BELMInverseScheduler(mode="bits", timestep_convention=convention, **config)
    inv.set_timesteps(10)
    x0 = inv.fixed_point_data(sample_like(13, dtype=torch.float32))
    inversion_loop(inv, x0)
    sched = BELMScheduler.from_config(inv.config)
    sched.set_timesteps(10)
    sched.load_state(inv.state)
    assert torch.equal(sampling_loop(sched, inv.state.x), x0)


def test_convention_ddim_equals_the_core_run_from_the_pair_x0_x0():
    """Convention 'ddim' is the core's exact inversion started from (x_0, x_1) = (x_0, x_0)."""
    inv = BELMInverseScheduler(mode="recurrence", **SD, set_alpha_to_one=False, steps_offset=1)
    inv.set_timesteps(9)
    x0 = sample_like(14)
    inversion_loop(inv, x0)
    from linmultistep.backends.diffusers import grid_from_config

    grid = grid_from_config(inv, 9)
    start = lms.State({0: lms.Point(x0), 1: lms.Point(x0)}, lms.get_method("obelm").spec, grid.fingerprint)
    core = lms.invert(lambda x, i: net(x, grid.timesteps[i]), start, grid, "obelm", mode="recurrence")
    assert all(torch.equal(core.window[i].x, inv.state.window[i].x) for i in core.window)


def test_a_loop_over_ddim_schedulers_own_timesteps_inverts_exactly():
    """Code that iterates DDIMScheduler's timesteps reversed (as DDIM-inversion code often does) runs
    unchanged with BELMInverseScheduler and inverts exactly."""
    ddim = DDIMScheduler(**SD, set_alpha_to_one=False, steps_offset=1)
    ddim.set_timesteps(8)
    inv = BELMInverseScheduler(mode="recurrence", **SD, set_alpha_to_one=False, steps_offset=1)
    inv.set_timesteps(8)
    x0 = x = sample_like(15)
    for t in reversed(ddim.timesteps):
        x = inv.step(net(x, t), t, x).prev_sample
    sched = BELMScheduler.from_config(inv.config)
    sched.set_timesteps(8)
    sched.load_state(inv.state)
    assert float((sampling_loop(sched, inv.state.x) - x0).norm() / x0.norm()) <= 1e-10


def test_an_img2img_start_mid_way_runs_the_method_from_there():
    """The first call after set_timesteps may be at any timestep (img2img): one DDIM step, then the
    method, as the core's sample from a window there."""
    sched = BELMScheduler(mode="recurrence", **SD)
    sched.set_timesteps(10)
    x = sample_like(16)
    out = sampling_loop_from(sched, x, 4)
    from linmultistep.backends.diffusers import grid_from_config

    grid = grid_from_config(sched, 10)
    top = 10 - 4  # the core from x at the noise end of the grid cut at that point
    cut = lms.Grid(grid.alpha[:top + 1], grid.sigma[:top + 1], grid.timesteps[:top + 1])
    ref = lms.sample(lambda y, i: net(y, grid.timesteps[i]), x, cut, "obelm", mode="recurrence")
    assert torch.equal(out, ref)


def sampling_loop_from(sched, x, k):
    for t in sched.timesteps[k:]:
        x = sched.step(net(x, t), t, x).prev_sample
    return x


# --- one clear error per misuse -------------------------------------------------------------------
@pytest.mark.bad_input("9 unclear errors")
@pytest.mark.parametrize("method,kw", METHODS, ids=lambda v: v if isinstance(v, str) else ids(v))
@pytest.mark.parametrize("cls", [BELMScheduler, BELMInverseScheduler])
def test_an_off_grid_timestep_is_refused_with_the_timesteps(method, kw, cls):
    sched = cls(method=method, **kw)
    sched.set_timesteps(50)
    x = sample_like(17)
    for t in (1, 49, 999, 10_000, -1):
        with pytest.raises(ValueError, match=rf"timestep {t} is not on this scheduler's grid.*scheduler.timesteps"):
            sched.step(net(x, t), t, x)
    with pytest.raises(ValueError, match="set_timesteps"):
        cls(method=method, **kw).step(x, 0, x)


@pytest.mark.bad_input("9 unclear errors")
@pytest.mark.parametrize("method,kw", EXACT, ids=lambda v: v if isinstance(v, str) else ids(v))
def test_a_sampling_step_out_of_order_or_on_a_changed_sample_is_refused(method, kw):
    sched = BELMScheduler(method=method, **kw)
    sched.set_timesteps(10)
    ts = sched.timesteps
    x = sample_like(18)
    x1 = sched.step(net(x, ts[0]), ts[0], x).prev_sample
    x2 = sched.step(net(x1, ts[1]), ts[1], x1).prev_sample
    with pytest.raises(ValueError, match=rf"got timestep {int(ts[4])}, but the run's next step is at timestep "
                                         rf"{int(ts[2])}.*in order"):
        sched.step(net(x2, ts[4]), ts[4], x2)
    with pytest.raises(ValueError, match=rf"got timestep {int(ts[1])}, but the run's next step"):
        sched.step(net(x2, ts[1]), ts[1], x2)
    with pytest.raises(ValueError, match="not the prev_sample this scheduler returned.*Pass prev_sample back"):
        sched.step(net(x2, ts[2]), ts[2], x2 + 1e-6)
    # nothing was lost: the run continues from its own output, and a new run starts at the noise end
    x = x2
    for t in ts[2:]:
        x = sched.step(net(x, t), t, x).prev_sample
    with pytest.raises(ValueError, match="reached the data end"):
        sched.step(net(x, ts[3]), ts[3], x)
    assert sched.step(net(x, ts[0]), ts[0], x).prev_sample.shape == x.shape


@pytest.mark.bad_input("9 unclear errors")
@pytest.mark.parametrize("convention", ["ddim", "lagged"])
def test_an_inversion_step_out_of_order_or_on_a_changed_sample_is_refused(convention):
    inv = BELMInverseScheduler(timestep_convention=convention, mode="recurrence")
    inv.set_timesteps(10)
    ts = inv.timesteps
    x = sample_like(19)
    with pytest.raises(ValueError, match=rf"got timestep {int(ts[3])}, expected timestep {int(ts[0])}"):
        inv.step(net(x, ts[3]), ts[3], x)
    x1 = inv.step(net(x, ts[0]), ts[0], x).prev_sample
    x2 = inv.step(net(x1, ts[1]), ts[1], x1).prev_sample
    with pytest.raises(ValueError, match=rf"got timestep {int(ts[5])}, expected timestep {int(ts[2])}"):
        inv.step(net(x2, ts[5]), ts[5], x2)
    with pytest.raises(ValueError, match="not the one this scheduler returned"):
        inv.step(net(x2, ts[2]), ts[2], x2 * 1.001)
    x = x2
    for t in ts[2:]:
        x = inv.step(net(x, t), t, x).prev_sample
    with pytest.raises(ValueError, match="inversion steps are done"):
        inv.step(net(x, ts[-1]), ts[-1], x)


@pytest.mark.bad_input("5 exactness")
@pytest.mark.parametrize("method,kw", EXACT, ids=lambda v: v if isinstance(v, str) else ids(v))
def test_non_invertible_features_are_refused_for_exact_methods_with_the_reason(method, kw):
    for key, value, why in (("clip_sample", True, "clamps the predicted x0"),
                            ("thresholding", True, "dynamic thresholding")):
        with pytest.raises(ValueError, match=rf"{why}.*{key}=False.*method='ddim'"):
            BELMScheduler(method=method, **kw, **{key: value})
    with pytest.raises(ValueError, match=r"clamps the predicted x0.*method='ddim'"):
        BELMInverseScheduler.from_config(DDIMInverseScheduler(clip_sample=True).config, method=method, **kw)
    sched = BELMScheduler(method=method, **kw)
    sched.set_timesteps(5)
    x = sample_like(20)
    with pytest.raises(ValueError, match=r"eta > 0 adds fresh random noise.*eta=0.*method='ddim'"):
        sched.step(net(x, sched.timesteps[0]), sched.timesteps[0], x, eta=0.3)
    with pytest.raises(GridError, match=r"rescale_betas_zero_snr.*'leading'.*method='ddim'"):
        BELMScheduler(method=method, **kw, rescale_betas_zero_snr=True, timestep_spacing="trailing").set_timesteps(10)


@pytest.mark.bad_input("9 unclear errors")
def test_a_schedule_without_noise_level_at_a_scheduled_timestep_is_refused_with_its_cause():
    sched = BELMScheduler(beta_start=0.1, beta_end=2)  # diffusers constructs it too: betas above 1 from t = 474
    assert float(sched.alphas_cumprod[400]) > 0
    with pytest.raises(GridError, match=r"betas reach 1 or more from timestep 474.*beta_end=2"):
        sched.set_timesteps(50)
    short = BELMScheduler(beta_start=0.1, beta_end=2, num_train_timesteps=1000, timestep_spacing="leading")
    with pytest.raises(GridError, match="not in"):
        short.set_timesteps(2)  # timestep 500 is past it as well
    for bad in (dict(beta_schedule="cosine_v9"), dict(prediction_type="x0"), dict(timestep_spacing="uniform")):
        with pytest.raises(ValueError, match=str(list(bad.values())[0])):
            BELMScheduler(**bad)
