"""FreeInit: filter shape and symmetry, parity with diffusers' FreeInitMixin, frequency
mixing, the iteration loop (1 iteration == plain sampling), and the variance of mixing."""

from __future__ import annotations

import math

import pytest
import torch

from zeroshot.methods.freeinit import (
    FILTERS,
    freeinit,
    frequency_filter,
    mix_frequencies,
    mixing_variance,
    step_counts,
)
from zeroshot.recipe import FreeInit

SIZES = [(8, 16, 16), (5, 7, 9), (1, 6, 4), (16, 12, 10)]


def _mirror(x: torch.Tensor) -> torch.Tensor:
    """x[-k] for every FFT index k (indices mod size) over the last three axes."""
    for dim in (-3, -2, -1):
        n = x.shape[dim]
        x = x.index_select(dim, (-torch.arange(n)) % n)
    return x


@pytest.mark.parametrize("kind", FILTERS)
@pytest.mark.parametrize("size", SIZES)
def test_filter_is_one_at_dc_symmetric_and_in_range(kind, size):
    lp = frequency_filter(*size, kind=kind)
    assert lp.shape == size and lp.dtype == torch.float32
    assert lp[0, 0, 0] == 1.0
    assert torch.equal(lp, _mirror(lp))
    assert lp.min() >= 0 and lp.max() <= 1
    if min(size[1:]) >= 6:
        assert lp.min() < 0.5  # a real low-pass: high frequencies are cut


def test_filter_values_at_known_frequencies():
    # 16 bins: FFT index k has normalised frequency u = 2k/16 = k/8.
    f = h = w = 16
    bw = frequency_filter(f, h, w, kind="butterworth", d_s=0.25, d_t=0.25, order=4)
    assert bw[0, 2, 0] == pytest.approx(0.5)  # u_h = 0.25 = d_s: half power
    ga = frequency_filter(f, h, w, kind="gaussian", d_s=0.25)
    assert ga[0, 2, 0] == pytest.approx(math.exp(-0.5))
    ideal = frequency_filter(f, h, w, kind="ideal", d_s=0.25, d_t=0.25)
    assert ideal[0, 2, 0] == 1 and ideal[0, 3, 0] == 0 and ideal[0, 1, 1] == 1
    box = frequency_filter(f, h, w, kind="box", d_s=0.25, d_t=0.5)
    assert box[4, 2, 2] == 1 and box[5, 0, 0] == 0 and box[0, 3, 0] == 0 and box[12, 14, 14] == 1
    # temporal stop frequency: with d_t = 2 d_s the temporal axis is stretched twice as far
    wide_t = frequency_filter(f, h, w, kind="butterworth", d_s=0.25, d_t=0.5)
    assert wide_t[4, 0, 0] == pytest.approx(0.5)


@pytest.mark.parametrize("kind", ["butterworth", "gaussian"])
def test_filter_matches_diffusers_for_even_sizes(kind):
    from diffusers.pipelines.free_init_utils import FreeInitMixin

    shape = (1, 2, 4, 6, 8)
    ref = FreeInitMixin._get_free_init_freq_filter(
        None, shape=shape, device="cpu", filter_type=kind, order=4,
        spatial_stop_frequency=0.25, temporal_stop_frequency=0.4,
    )
    ours = frequency_filter(4, 6, 8, kind=kind, d_s=0.25, d_t=0.4, order=4)
    shifted = torch.fft.fftshift(ours, dim=(-3, -2, -1))  # diffusers keeps DC in the centre
    assert torch.allclose(shifted.expand(shape), ref, atol=1e-6)


def test_mix_matches_diffusers_apply_freq_filter():
    from diffusers.pipelines.free_init_utils import FreeInitMixin

    g = torch.Generator().manual_seed(0)
    x, noise = torch.randn((2, 3, 4, 6, 8), generator=g), torch.randn((2, 3, 4, 6, 8), generator=g)
    lp = frequency_filter(4, 6, 8)
    ref = FreeInitMixin._apply_freq_filter(None, x, noise, torch.fft.fftshift(lp, dim=(-3, -2, -1)))
    assert torch.allclose(mix_frequencies(x, noise, lp), ref, atol=1e-5)


def test_mix_frequencies_extremes_and_dtype():
    g = torch.Generator().manual_seed(1)
    x = torch.randn((1, 2, 5, 6, 7), generator=g, dtype=torch.float64)
    noise = torch.randn((1, 2, 5, 6, 7), generator=g, dtype=torch.float64)
    ones, zeros = torch.ones(5, 6, 7), torch.zeros(5, 6, 7)
    assert torch.allclose(mix_frequencies(x, noise, ones), x, atol=1e-12)
    assert torch.allclose(mix_frequencies(x, noise, zeros), noise, atol=1e-12)
    assert mix_frequencies(x.half(), noise.half(), ones).dtype == torch.float16
    with pytest.raises(ValueError, match="lowpass"):
        mix_frequencies(x, noise, torch.ones(5, 6, 6))


def test_invalid_filter_arguments():
    with pytest.raises(ValueError, match="kind"):
        frequency_filter(4, 4, 4, kind="sinc")
    with pytest.raises(ValueError, match="d_s"):
        frequency_filter(4, 4, 4, d_s=0.0)


def test_step_counts():
    assert step_counts(FreeInit(iterations=3), 50) == [50, 50, 50]
    assert step_counts(FreeInit(iterations=3, coarse_to_fine=True), 50) == [16, 33, 50]
    assert step_counts(FreeInit(iterations=1, coarse_to_fine=True), 20) == [20]
    assert step_counts(FreeInit(iterations=4, coarse_to_fine=True), 2) == [1, 1, 1, 2]


class Recorder:
    """A stand-in for a method's sampling: records its inputs and returns a fixed
    function of them, so the loop's arithmetic can be checked exactly."""

    def __init__(self):
        self.calls: list[tuple[torch.Tensor, int]] = []

    def __call__(self, latents: torch.Tensor, num_steps: int) -> torch.Tensor:
        self.calls.append((latents.clone(), num_steps))
        return 0.5 * torch.tanh(latents) + 0.01 * num_steps


def _abar():
    return torch.linspace(0.9991, 0.0047, 1000, dtype=torch.float64)


def test_one_iteration_is_plain_sampling_exactly():
    noise = torch.randn((1, 4, 6, 8, 8), generator=torch.Generator().manual_seed(0))
    rec = Recorder()
    out = freeinit(rec, noise, config=FreeInit(iterations=1), alphas_cumprod=_abar(), timestep=981,
                   num_inference_steps=20, generator=torch.Generator().manual_seed(1))
    assert torch.equal(out, Recorder()(noise, 20))
    assert len(rec.calls) == 1 and torch.equal(rec.calls[0][0], noise)


@pytest.mark.parametrize("kind", FILTERS)
def test_new_initial_latent_keeps_low_frequencies_of_renoised_latent(kind):
    g = torch.Generator().manual_seed(0)
    noise = torch.randn((2, 4, 8, 16, 16), generator=g)
    fresh_draws = []

    def noise_fn(shape):
        x = torch.randn(shape, generator=g)
        fresh_draws.append(x)
        return x

    rec = Recorder()
    abar = _abar()
    config = FreeInit(iterations=3, filter=kind)
    freeinit(rec, noise, config=config, alphas_cumprod=abar, timestep=981,
             num_inference_steps=10, noise_fn=noise_fn)
    assert len(rec.calls) == 3 and len(fresh_draws) == 2
    lp = frequency_filter(8, 16, 16, kind=kind).double()
    dims = (-3, -2, -1)
    for i in (1, 2):
        x0 = Recorder()(rec.calls[i - 1][0], 10).double()
        a = abar[981]
        renoised = a.sqrt() * x0 + (1 - a).sqrt() * noise.double()  # the SAME initial noise
        new = torch.fft.fftn(rec.calls[i][0].double(), dim=dims)
        z, fresh = torch.fft.fftn(renoised, dim=dims), torch.fft.fftn(fresh_draws[i - 1].double(), dim=dims)
        assert torch.allclose(new, lp * z + (1 - lp) * fresh, atol=1e-3)
        keep = lp == 1
        assert keep.any() and (~keep).any()
        assert torch.allclose(new[..., keep], z[..., keep], atol=1e-3)  # low frequencies: re-noised latent
        if kind in ("ideal", "box"):
            assert torch.allclose(new[..., ~keep], fresh[..., ~keep], atol=1e-3)  # the rest: fresh noise


def test_freeinit_coarse_to_fine_steps_and_timestep_function():
    noise = torch.randn((1, 2, 4, 8, 8), generator=torch.Generator().manual_seed(0))
    rec, seen = Recorder(), []

    def first_timestep(num_steps):
        seen.append(num_steps)
        return 1000 - 1000 // num_steps

    freeinit(rec, noise, config=FreeInit(iterations=3, coarse_to_fine=True), alphas_cumprod=_abar(),
             timestep=first_timestep, num_inference_steps=30, generator=torch.Generator().manual_seed(0))
    assert [n for _, n in rec.calls] == [10, 20, 30]
    assert seen == [20, 30]


def test_freeinit_deterministic_and_global_rng_untouched():
    noise = torch.randn((1, 2, 4, 8, 8), generator=torch.Generator().manual_seed(0))
    config = FreeInit(iterations=2)
    state = torch.get_rng_state()
    a = freeinit(Recorder(), noise, config=config, alphas_cumprod=_abar(), timestep=981,
                 num_inference_steps=5, generator=torch.Generator().manual_seed(3))
    b = freeinit(Recorder(), noise, config=config, alphas_cumprod=_abar(), timestep=981,
                 num_inference_steps=5, generator=torch.Generator().manual_seed(3))
    c = freeinit(Recorder(), noise, config=config, alphas_cumprod=_abar(), timestep=981,
                 num_inference_steps=5)
    assert torch.equal(torch.get_rng_state(), state)
    assert torch.equal(a, b) and not torch.equal(a, c)
    assert not torch.equal(a, Recorder()(noise, 5))  # the second iteration changed the result


@pytest.mark.parametrize("kind", FILTERS)
def test_mixing_variance_matches_measurement(kind):
    """Mixing two independent unit Gaussians with complementary masks has, per frequency,
    variance L^2 + (1-L)^2 (so mean(L^2 + (1-L)^2) in all): exactly 1 for binary masks,
    down to 0.5 where a smooth mask is near 0.5."""
    g = torch.Generator().manual_seed(0)
    shape = (32, 4, 16, 32, 32)
    x, y = torch.randn(shape, generator=g), torch.randn(shape, generator=g)
    lp = frequency_filter(16, 32, 32, kind=kind)
    mixed = mix_frequencies(x, y, lp).double()
    n = x.numel()
    assert mixed.var().item() == pytest.approx(mixing_variance(lp), abs=5 * math.sqrt(2 / n))
    # power per frequency: |FFT|^2 / (f h w) has mean L^2 + (1-L)^2
    power = torch.fft.fftn(mixed, dim=(-3, -2, -1)).abs().pow(2).mean(dim=(0, 1)) / (16 * 32 * 32)
    expected = lp.double() ** 2 + (1 - lp.double()) ** 2
    band = (lp > 0.3) & (lp < 0.7)
    if kind in ("ideal", "box"):
        assert not band.any() and mixing_variance(lp) == pytest.approx(1.0)
    else:
        # |FFT|^2 of complex Gaussian noise is exponential (relative sd 1); the band mean
        # averages > 50 frequencies x 128 samples, half of them conjugate pairs: sd < 2%
        assert band.sum() > 50
        assert power[band].mean().item() == pytest.approx(expected[band].mean().item(), rel=0.1)
        assert expected[band].mean().item() < 0.6
        assert mixing_variance(lp) < 1.0


# --- through generate() on a tiny real Stable Diffusion -------------------------------


@pytest.fixture(scope="module")
def model(tiny_model):
    return tiny_model


def _recipe(**kw):
    from zeroshot.recipe import CrossFrame, Motion, Recipe

    base = dict(method="t2v-zero", num_frames=3, height=32, width=32, num_inference_steps=4,
                guidance_scale=3.0, cross_frame=CrossFrame(), motion=Motion(translate=(4.0, 4.0)))
    base.update(kw)
    return Recipe(**base)


def test_generate_freeinit_one_iteration_equals_plain(model):
    from zeroshot.generate import generate

    plain = generate(model, "a red cat", _recipe(), seed=1, progress=False)
    one = generate(model, "a red cat", _recipe(freeinit=FreeInit(iterations=1)), seed=1, progress=False)
    assert torch.equal(one.latents, plain.latents)


def test_generate_freeinit_iterations_change_result_deterministically(model):
    from zeroshot.generate import generate

    plain = generate(model, "a red cat", _recipe(), seed=1, progress=False)
    r = _recipe(freeinit=FreeInit(iterations=2, coarse_to_fine=True))
    a = generate(model, "a red cat", r, seed=1, progress=False)
    b = generate(model, "a red cat", r, seed=1, progress=False)
    assert torch.equal(a.latents, b.latents)
    assert not torch.equal(a.latents, plain.latents)
    assert torch.isfinite(a.latents).all()
