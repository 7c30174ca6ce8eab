"""Flow-conditioned generation, training-free: motion requests -> dense flow
(polylines, pins, regions, still pixels, two densifiers), flow-warped noise (statistics,
exact shifts, identity at zero flow, correlation along the flow), and the technique that
feeds it to every family through generate()."""

from __future__ import annotations

import math

import numpy as np
import pytest
import torch

from zeroshot import noise as zn
from zeroshot import testing
from zeroshot.motion import (
    Affine,
    Trajectories,
    Trajectory,
    Translation,
    field_from_recipe,
)
from zeroshot.recipe import Motion, Recipe, RecipeError, apply_override, get_method

# ---------------------------------------------------------------------------------------
# flow-warped noise: statistics


def _rho(d: float) -> float:
    return (1 - d) ** 2 / ((1 - d) ** 2 + d**2)


def _draw(flow, *, samples=4096, h=8, w=8, degradation=0.0, seed=0):
    """`samples` draws (b = samples / 4, c = 4) of flow-warped noise on an h x w latent grid."""
    f, _, hs, ws = flow.shape
    return zn.flow_warped(
        (samples // 4, 4, f, h, w), torch.Generator().manual_seed(seed), flow_px=flow, scale=hs // h * 1.0,
        degradation=degradation,
    )


def _smooth_random_flow(f, hs, ws, amplitude, seed=0):
    """A smooth random backward flow (px) with zero at frame 0."""
    g = torch.Generator().manual_seed(seed)
    coarse = torch.randn(f, 2, 3, 3, generator=g, dtype=torch.float64) * amplitude
    flow = torch.nn.functional.interpolate(coarse, size=(hs, ws), mode="bicubic", align_corners=True)
    flow[0] = 0
    return flow * torch.arange(f, dtype=torch.float64)[:, None, None, None] / max(f - 1, 1)


S = 4  # sub-cells per latent cell side in these tests (one per output px at scale 4)
FLOWS = {
    "fractional pan": lambda: Translation(2.5, -1.25).flow(4, 32, 32),
    "zoom in": lambda: Affine(zoom=1.15).flow(4, 32, 32),
    "zoom out": lambda: Affine(zoom=0.85).flow(4, 32, 32),
    "rotation": lambda: Affine(rotate=10.0).flow(4, 32, 32),
    "drag with region": lambda: Trajectories((Trajectory(((10.0, 10.0), (22.0, 16.0)), radius_px=6.0),)).flow(4, 32, 32),
    "smooth random": lambda: _smooth_random_flow(4, 32, 32, amplitude=6.0),
}


@pytest.mark.parametrize("name", list(FLOWS))
def test_every_frame_is_white_noise_whatever_the_flow(name):
    """Per frame: mean 0, variance 1 (pooled and per cell), and every pair of distinct cells
    uncorrelated, within 5 standard errors over 4096 draws."""
    x = _draw(FLOWS[name]().float())  # (1024, 4, 4, 8, 8)
    n = x.shape[0] * x.shape[1]
    y = x.double().permute(2, 0, 1, 3, 4).reshape(x.shape[2], n, -1)  # (f, samples, cells)
    for k in range(y.shape[0]):
        frame = y[k]
        assert abs(frame.mean()) < 5 / math.sqrt(frame.numel())
        assert abs(frame.square().mean() - 1) < 5 * math.sqrt(2 / frame.numel())
        per_cell = frame.square().mean(dim=0)
        assert (per_cell - 1).abs().max() < 5 * math.sqrt(2 / n) * 1.3  # max over 64 cells
        corr = torch.corrcoef(frame.T)
        off = corr - torch.eye(corr.shape[0], dtype=corr.dtype)
        assert off.abs().max() < 5 / math.sqrt(n), (name, k, off.abs().max())


def test_the_white_noise_test_sees_a_correlated_warp():
    """The same check fails for bilinear warping of noise (neighbours correlate), so it can fail."""
    from zeroshot.motion import warp

    base = torch.randn(1024, 4, 4, 8, 8, generator=torch.Generator().manual_seed(0))
    x = warp(base, Translation(2.0, 0.0).flow(4, 32, 32, grid=(8, 8)), scale=4.0, mode="bilinear")
    frame = x[:, :, 1].double().reshape(4096, -1)
    off = torch.corrcoef(frame.T) - torch.eye(64, dtype=torch.float64)
    assert off.abs().max() > 5 / math.sqrt(4096)


@pytest.mark.parametrize("degradation", [0.0, 0.3, 0.5])
def test_correlation_along_the_flow_is_what_the_degradation_says(degradation):
    """Whole-cell pan (4 px = 1 cell per frame): a cell and the cell it moved to correlate by
    (1 - d)^2 / ((1 - d)^2 + d^2) between any two frames; a half-cell pan (2 px per frame)
    splits frame 1's cells half and half between frame 0's two neighbours."""
    x = _draw(Translation(4.0, 0.0).flow(4, 32, 32), degradation=degradation).double()
    n = x.shape[0] * x.shape[1]
    for k, l in ((1, 0), (3, 0), (3, 1)):
        shift = k - l
        a = x[:, :, k, :, shift:].flatten()
        b = x[:, :, l, :, : 8 - shift].flatten()
        got = torch.corrcoef(torch.stack([a, b]))[0, 1]
        assert abs(got - _rho(degradation)) < 5 / math.sqrt(n), (k, l, got)
    assert abs(torch.corrcoef(torch.stack([x[:, :, 1].flatten(), x[:, :, 0].flatten()]))[0, 1]) < 5 / math.sqrt(n * 64)
    half = _draw(Translation(2.0, 0.0).flow(2, 32, 32), degradation=degradation).double()
    for offset in (0, 1):  # frame 1 cell j holds half of frame 0's cell j - 1 and half of cell j
        a = half[:, :, 1, :, 1:].flatten()
        b = half[:, :, 0, :, offset : 7 + offset].flatten()
        got = torch.corrcoef(torch.stack([a, b]))[0, 1]
        assert abs(got - 0.5 * _rho(degradation)) < 5 / math.sqrt(n)


def test_zero_flow_is_the_identity_and_whole_cell_shifts_are_exact():
    shape = (2, 4, 4, 8, 8)
    base = torch.randn(2, 4, 8, 8, generator=torch.Generator().manual_seed(3))
    still = zn.flow_warped(shape, torch.Generator().manual_seed(0), flow_px=torch.zeros(4, 2, 32, 32), scale=4, base=base)
    assert all(torch.equal(still[:, :, k], base) for k in range(4))
    assert torch.equal(zn.flow_warped(shape, torch.Generator().manual_seed(0), base=base), still)  # no flow
    # a pan of one cell per frame moves frame 0's cells exactly; the revealed column of
    # frame k is where frame k + 1's second column comes from (new noise follows the flow too)
    x = zn.flow_warped(shape, torch.Generator().manual_seed(0), flow_px=Translation(4.0, 0.0).flow(4, 32, 32), scale=4)
    for k in range(1, 4):
        assert torch.allclose(x[:, :, k, :, k:], x[:, :, 0, :, : 8 - k], atol=1e-5)
        if k < 3:
            assert torch.allclose(x[:, :, k + 1, :, 1 : k + 1], x[:, :, k, :, :k], atol=1e-5)
    assert not torch.allclose(x[:, :, 1, :, 0], x[:, :, 0, :, 0], atol=1e-2)
    # pans of whole cells in y, and at another sub-grid factor (8 px cells)
    y = zn.flow_warped(shape, torch.Generator().manual_seed(1), flow_px=Translation(0.0, -16.0).flow(4, 64, 64), scale=8)
    assert torch.allclose(y[:, :, 1, :6], y[:, :, 0, 2:], atol=1e-5)


def test_flow_warped_is_deterministic_and_checks_its_arguments():
    flow = Translation(1.0, 0.0).flow(3, 16, 16)
    a = zn.flow_warped((1, 2, 3, 4, 4), torch.Generator().manual_seed(5), flow_px=flow, scale=4)
    assert torch.equal(a, zn.flow_warped((1, 2, 3, 4, 4), torch.Generator().manual_seed(5), flow_px=flow, scale=4))
    assert not torch.equal(a, zn.flow_warped((1, 2, 3, 4, 4), torch.Generator().manual_seed(6), flow_px=flow, scale=4))
    assert zn.flow_warped((1, 2, 3, 4, 4), flow_px=flow, scale=4, dtype=torch.float64).dtype == torch.float64
    with pytest.raises(ValueError, match="multiple"):
        zn.flow_warped((1, 2, 3, 5, 4), flow_px=flow, scale=4)
    with pytest.raises(ValueError, match="flow_px"):
        zn.flow_warped((1, 2, 4, 4, 4), flow_px=flow, scale=4)
    with pytest.raises(ValueError, match="degradation"):
        zn.flow_warped((1, 2, 3, 4, 4), flow_px=flow, scale=4, degradation=1.5)
    with pytest.raises(ValueError, match="base"):
        zn.flow_warped((1, 2, 3, 4, 4), flow_px=flow, scale=4, base=torch.zeros(1, 2, 4, 5))


# ---------------------------------------------------------------------------------------
# motion requests -> dense flow


def test_polyline_points_spread_evenly_or_pinned():
    even = Trajectory.parse("0,0 10,0 10,20")
    assert even.times(5) == [0.0, 2.0, 4.0]
    assert torch.allclose(even.positions(5)[1], torch.tensor([5.0, 0.0], dtype=torch.float64))
    assert torch.allclose(even.positions(5)[3], torch.tensor([10.0, 10.0], dtype=torch.float64))
    pinned = Trajectory.parse("0,0 10,0@3 20,0")
    assert pinned.times(8) == [0.0, 3.0, 7.0]
    spread = Trajectory.parse("0,0@1 4,0 8,0 12,0@7")
    assert spread.times(9) == [1.0, 3.0, 5.0, 7.0]
    late = Trajectory.parse("5,5@2 15,5@4")  # holds before its first and after its last point
    pos = late.positions(6)
    assert torch.equal(pos[0], pos[2]) and torch.equal(pos[4], pos[5])
    assert torch.allclose(pos[3], torch.tensor([10.0, 5.0], dtype=torch.float64))
    # the older drag syntax is the two-point polyline
    assert Trajectories.parse(["1,2->3,4"]) == Trajectories.parse(["1,2 3,4"]) == Trajectories(((1.0, 2.0, 3.0, 4.0),))
    opts = Trajectory.parse("1,1 2,2 r=3.5")
    assert opts.radius_px == 3.5 and opts.points == ((1.0, 1.0), (2.0, 2.0))


@pytest.mark.parametrize("densify", ["rbf", "gaussian"])
def test_several_polylines_pass_through_their_points(densify):
    f, H, W = 7, 40, 48
    field = Trajectories.parse(["4,4 12,8@3 20,4", "40,30 30,30"], sigma_px=6.0, densify=densify)
    flow = field.flow(f, H, W, dtype=torch.float64)  # full-resolution grid: cells are pixels
    starts = torch.tensor([[4.0, 4.0], [40.0, 30.0]])
    fwd = field.forward(starts, f, H, W)
    for i, d in enumerate(field.drags):
        pos = d.positions(f)
        assert torch.allclose(fwd[:, i].double(), pos, atol=1e-4)
        for k in range(f):
            x, y = pos[k].tolist()
            if float(x).is_integer() and float(y).is_integer():
                tol = 1e-6 if densify == "rbf" else 0.25  # gaussian: the other drag's tail adds in
                assert torch.allclose(flow[k, :, int(y), int(x)], pos[0] - pos[k], atol=tol * max(1, (pos[0] - pos[k]).norm()))
    assert torch.count_nonzero(flow[0]) == 0


def test_gaussian_densify_is_the_blurred_sparse_map():
    """One point: the flow is the sparse displacement map convolved with the peak-normalised
    Gaussian (computed here by OpenCV); two overlapping points never exceed their drags."""
    import cv2

    H, W, sigma = 32, 40, 5.0
    field = Trajectories.parse(["10,12 16,15"], sigma_px=sigma, densify="gaussian")
    flow = field.flow(2, H, W, dtype=torch.float64)
    sparse = np.zeros((H, W, 2), np.float64)
    sparse[15, 16] = (-6.0, -3.0)  # backward flow at the point's frame-1 position
    r = 6 * int(sigma)  # wider than the image: no truncation
    g = np.exp(-np.arange(-r, r + 1) ** 2 / (2 * sigma**2))
    blurred = cv2.filter2D(sparse, -1, np.outer(g, g), borderType=cv2.BORDER_CONSTANT)
    assert np.allclose(flow[1].permute(1, 2, 0).numpy(), blurred, atol=1e-3)
    both = Trajectories.parse(["10,12 16,12", "12,12 18,12"], sigma_px=sigma, densify="gaussian").flow(2, H, W)
    assert both[1, 0].min() >= -6.0 - 1e-5 and both[1, 0].min() < -5.9  # a weighted mean, not a sum


def test_a_region_moves_rigidly_and_still_pixels_stay(tmp_path):
    import cv2

    f, H, W = 3, 32, 48
    still = np.zeros((H, W), np.uint8)
    still[:, 40:] = 255
    cv2.imwrite(str(tmp_path / "still.png"), still)
    for densify in ("rbf", "gaussian"):
        field = Trajectories.parse(["12,16 24,16 r=5"], densify=densify, still=str(tmp_path / "still.png"))
        flow = field.flow(f, H, W, dtype=torch.float64)
        ys, xs = torch.meshgrid(torch.arange(H, dtype=torch.float64), torch.arange(W, dtype=torch.float64), indexing="ij")
        for k, dx in ((1, 6.0), (2, 12.0)):
            disk = (xs - 12 - dx) ** 2 + (ys - 16) ** 2 <= 25
            assert torch.all(flow[k, 0][disk] == -dx) and torch.all(flow[k, 1][disk] == 0)
            assert torch.all(flow[k][:, :, 40:] == 0)
            outside = ~disk & (xs < 40)
            assert flow[k, 0][outside].abs().max() > 0.5  # densified around the region
        fwd = field.forward(torch.tensor([[12.0, 16.0], [15.0, 18.0], [44.0, 5.0]]), f, H, W)
        assert torch.allclose(fwd[2], torch.tensor([[24.0, 16.0], [27.0, 18.0], [44.0, 5.0]]))
    rest = Trajectories.parse(["12,16 24,16 r=5"], still="rest").flow(f, H, W)
    disk = (xs - 24) ** 2 + (ys - 16) ** 2 <= 25
    assert torch.all(rest[2, 0][disk] == -12) and torch.all(rest[2][:, ~disk] == 0)


def test_a_mask_region_is_dragged_along_its_polyline(tmp_path):
    import cv2

    H, W = 24, 24
    mask = np.zeros((H, W), np.uint8)
    mask[4:8, 2:6] = 255
    cv2.imwrite(str(tmp_path / "m.png"), mask)
    field = field_from_recipe(
        Motion(translate=(0.0, 0.0), trajectories=(f"4,6 10,6@2 10,16 mask={tmp_path / 'm.png'}",), still="rest"),
        5, H, W,
    )
    flow = field.flow(5, H, W)
    d = field.drags[0].positions(5) - field.drags[0].positions(5)[0]
    for k in range(5):
        dx, dy = int(d[k, 0]), int(d[k, 1])
        moved = torch.zeros(H, W, dtype=torch.bool)
        moved[4 + dy : 8 + dy, 2 + dx : 6 + dx] = True
        assert torch.all(flow[k, 0][moved] == -dx) and torch.all(flow[k, 1][moved] == -dy)
        assert torch.all(flow[k][:, ~moved] == 0)


BAD_REQUESTS = [
    ({"trajectories": ("70,10 20,10",)}, "motion.trajectories: point (70, 10)"),
    ({"trajectories": ("10,10",)}, "at least two points"),
    ({"trajectories": ("10,10 20,10@9",)}, "frame pins"),
    ({"trajectories": ("10,10@5 20,10@2",)}, "frame pins"),
    ({"trajectories": ("10,10 20,10 q=3",)}, "unknown option 'q'"),
    ({"trajectories": ("10,10 20,10",), "still": "rest"}, "has no region"),
    ({"trajectories": ("10,10 20,10 mask=SMALL",)}, "is 16x16, the video is 64x64"),
    ({"trajectories": ("10,10 20,10 mask=BROKEN",)}, "cannot read"),
    ({"trajectories": ("10,10 20,10",), "still": "SMALL"}, "motion.still: mask"),
    ({"trajectories": ("10,10 20,10",), "still": "MISSING"}, "motion.still: mask image"),
    ({"translate": (1.0, 0.0), "still": "rest"}, "motion.still fixes pixels among trajectories"),
    ({"trajectories": ("10,10 20,10",), "densify": "cubic"}, "motion.densify"),
    ({"from_video": "BROKEN"}, "motion.from_video"),
]


@pytest.mark.parametrize("fields,needle", BAD_REQUESTS, ids=[n for _, n in BAD_REQUESTS])
def test_bad_motion_requests_are_one_line_recipe_errors(tmp_path, fields, needle):
    import cv2

    cv2.imwrite(str(tmp_path / "small.png"), np.zeros((16, 16), np.uint8))
    (tmp_path / "broken.png").write_bytes(b"not an image")
    subst = {"SMALL": tmp_path / "small.png", "BROKEN": tmp_path / "broken.png", "MISSING": tmp_path / "none.png"}

    def fill(v):
        if isinstance(v, tuple):
            return tuple(fill(x) for x in v)
        if isinstance(v, str):
            for key, path in subst.items():
                v = v.replace(key, str(path))
        return v

    motion = Motion(**{"translate": (0.0, 0.0), **{k: fill(v) for k, v in fields.items()}})
    with pytest.raises(RecipeError, match=needle.replace("(", r"\(").replace(")", r"\)")) as info:
        field_from_recipe(motion, 8, 64, 64)
    assert "\n" not in str(info.value)


@pytest.mark.parametrize(
    "args,needle",
    [
        (["--trajectory", "40,4 8,4"], "motion.trajectories: point (40, 4)"),
        (["--trajectory", "4,4"], "at least two points"),
        (["--trajectory", "4,4 8,4 mask=SMALL"], "motion.trajectories: mask"),
        (["--trajectory", "4,4 8,4 mask=BROKEN"], "cannot read"),
        (["--trajectory", "4,4 8,4", "--still", "SMALL"], "motion.still"),
        (["--motion-from", "BROKEN"], "motion.from_video"),
        (["--motion", "2,0", "--noise", "flow-warped", "--degradation", "2"], "noise.degradation"),
        (["--motion", "2,0", "--set", "motion.dynamics=off"], "motion.dynamics=false"),
        (["--method", "t2i", "--noise", "flow-warped"], "follows the motion request"),
    ],
)
def test_cli_refuses_bad_flow_requests_before_the_model_loads(tiny_sd, tmp_path, capsys, monkeypatch, args, needle):
    import cv2

    from zeroshot import models
    from zeroshot.cli import main

    cv2.imwrite(str(tmp_path / "small.png"), np.zeros((16, 16), np.uint8))
    (tmp_path / "broken.png").write_bytes(b"not an image")
    args = [a.replace("SMALL", str(tmp_path / "small.png")).replace("BROKEN", str(tmp_path / "broken.png")) for a in args]

    def no_model_work(*a, **k):
        raise AssertionError("the model was loaded before the inputs were checked")

    monkeypatch.setattr(models, "load", no_model_work)
    argv = ["generate", "a red cat", "--model", str(tiny_sd), "--height", "32", "--width", "32", "--frames", "3",
            "--out", str(tmp_path / "o.mp4"), *args]
    rc = main(argv)
    err = capsys.readouterr().err.strip()
    assert rc == 2 and len(err.splitlines()) == 1, err
    assert needle in err
    assert not (tmp_path / "o.mp4").exists()


# ---------------------------------------------------------------------------------------
# the technique, through generate() on every family

SMALL = dict(height=32, width=32, num_inference_steps=3, num_frames=4)


@pytest.fixture(scope="module", params=sorted(testing.FAMILY_FOLDERS))
def family_model(request, tmp_path_factory):
    from zeroshot import models

    name = request.param
    return models.load(str(testing.FAMILY_FOLDERS[name](tmp_path_factory.mktemp(f"flow_{name}"))))


@pytest.fixture
def warped_draws(monkeypatch):
    """Every flow-warped draw the technique makes during a test: (keyword arguments, output)."""
    calls = []
    real = zn.flow_warped

    def spy(shape, generator=None, **kw):
        out = real(shape, generator, **kw)
        calls.append((kw, out))
        return out

    monkeypatch.setattr(zn, "flow_warped", spy)
    return calls


def test_flow_warped_noise_is_the_initial_noise_on_every_family(family_model, tmp_path, warped_draws):
    """With `motion.dynamics=false` the run is the family's plain sampling started from
    flow-warped noise (a pan of one latent cell per frame moves it by whole cells, exactly);
    the hooks are restored."""
    from dataclasses import replace

    from zeroshot.families.base import takes_image, takes_video
    from zeroshot.generate import generate, prepare_recipe
    from zeroshot.techniques.warped_noise import latent_frame_sources

    model = family_model
    image = str(testing.write_test_image(tmp_path / "input.png")) if takes_image(type(model)) else None
    video = None  # the input video of video-conditioned families (pix2pix)
    if takes_video(type(model)):
        video = str(testing.write_control_video(tmp_path / "input", num_frames=4, size=32))
    plain = replace(Recipe(**SMALL, method="t2i" if model.image_model else "video"), image=image, video=video)

    def accepted(num_frames):  # the first frame count >= 4 the family makes (time-compressed latents)
        try:
            prepare_recipe(model, replace(plain, num_frames=num_frames))
        except RecipeError:
            return False
        return True

    plain = replace(plain, num_frames=next(n for n in range(4, 18) if accepted(n)))
    if model.image_model:
        plain = apply_override(plain, "cross_frame", "on")
    _, _, f, _, w = model.latent_shape(2, plain.num_frames, 32, 32)
    cell = 32 // w
    warped = plain
    for key, value in (("noise.prior", "flow-warped"), ("motion.translate", f"{cell},0"), ("motion.dynamics", "off")):
        warped = apply_override(warped, key, value)
    processors = dict(model.denoiser.attn_processors)
    got = generate(model, "a red cat", warped, seed=4, num_videos=2, progress=False)
    assert dict(model.denoiser.attn_processors) == processors
    latents = warped_draws[0][1]  # the initial noise (per-step noise, where a sampler draws it, comes after)
    assert latents.shape[0] == 2 and latents.shape[2] == f
    for j, k in enumerate(latent_frame_sources(f, plain.num_frames, getattr(model, "temporal_compression", None))):
        if 0 < k < w:  # content moves k cells to the right by frame k
            assert torch.allclose(latents[:, :, j, :, k:], latents[:, :, 0, :, :-k], atol=1e-5)
    # the replay's generator as generate() left it before wiring in (svd's encode draws from it)
    g = torch.Generator().manual_seed(4)
    zn.sample(warped.noise, latents.shape, g, device=model.device, dtype=model.dtype)
    ref = generate(model, "a red cat", plain, generator=g, num_videos=2, progress=False, latents=latents)
    assert torch.allclose(got.latents, ref.latents, atol=1e-6)
    assert torch.isfinite(got.frames).all()


def test_t2v_zero_dynamics_renoise_with_flow_warped_noise(tiny_model, warped_draws):
    """`motion.dynamics=true` (default) keeps T2V-Zero's warp; with the flow-warped prior its
    re-noising noise (and frame 0's initial noise) is flow-warped."""
    from zeroshot.generate import generate

    base = Recipe(**SMALL, method="t2v-zero", cross_frame=get_method("t2v-zero").cross_frame, motion=Motion(translate=(4.0, 0.0)))
    got = generate(tiny_model, "a red cat", apply_override(base, "noise.prior", "flow-warped"), seed=2, progress=False)
    (_, renoise), (_, latents) = warped_draws[:2]  # the re-noising noise is drawn when the technique wires in
    assert torch.allclose(renoise[:, :, 2, :, 2:], renoise[:, :, 0, :, :-2], atol=1e-5)  # 1 cell per frame
    ref = generate(tiny_model, "a red cat", base, seed=2, progress=False, latents=latents, renoise_noise=renoise)
    assert torch.allclose(got.latents, ref.latents, atol=1e-6)
    iid = generate(tiny_model, "a red cat", base, seed=2, progress=False, latents=latents)
    assert not torch.allclose(got.latents[:, :, 1:], iid.latents[:, :, 1:], atol=1e-4)  # the re-noising differs
    assert torch.allclose(got.latents[:, :, 0], iid.latents[:, :, 0], atol=1e-6)  # frame 0 does not


def test_dynamics_off_skips_t2v_zero_and_composes_with_freeinit(tiny_model):
    from zeroshot.generate import denoising_steps, generate
    from zeroshot.recipe import resolve

    recipe = apply_override(apply_override(get_method("t2v-zero"), "noise.prior", "flow-warped"), "motion.dynamics", "off")
    for key, value in SMALL.items():
        recipe = apply_override(recipe, key, value)
    assert denoising_steps(resolve(recipe, tiny_model.defaults)) == SMALL["num_inference_steps"]
    a = generate(tiny_model, "a red cat", recipe, seed=1, progress=False)
    one = generate(tiny_model, "a red cat", apply_override(recipe, "freeinit.iterations", 1), seed=1, progress=False)
    assert torch.allclose(a.latents, one.latents, atol=1e-6)  # FreeInit sees the warped noise as its start
    two = generate(tiny_model, "a red cat", apply_override(recipe, "freeinit.iterations", 2), seed=1, progress=False)
    assert torch.isfinite(two.latents).all() and not torch.allclose(a.latents, two.latents, atol=1e-4)


def test_per_step_noise_follows_the_flow(tiny_model):
    """Stochastic samplers' per-step noise comes from the same flow: a whole-cell pan moves it."""
    import contextlib

    from zeroshot.recipe import resolve
    from zeroshot.techniques import Run, warped_noise

    recipe = apply_override(apply_override(get_method("t2i"), "noise.prior", "flow-warped"), "motion.dynamics", "off")
    for key, value in SMALL.items():
        recipe = apply_override(recipe, key, value)
    recipe = resolve(apply_override(recipe, "motion.translate", "8,0"), tiny_model.defaults)
    cell = recipe.width // tiny_model.latent_shape(1, 4, 32, 32)[-1]
    assert cell == 4  # the pan is two cells per frame
    with contextlib.ExitStack() as stack:
        run = Run(tiny_model, recipe, "a red cat", stack, torch.Generator().manual_seed(0))
        warped_noise.apply(run)
        eps = run.noise_fn((2, 4, 4, 8, 8))
    assert torch.allclose(eps[:, :, 1, :, 2:], eps[:, :, 0, :, :-2], atol=1e-5)
    assert torch.allclose(eps[:, :, 3, :, 6:], eps[:, :, 0, :, :2], atol=1e-5)


def test_recipe_checks_of_the_flow_warped_prior():
    from zeroshot.recipe import validate

    flow = apply_override(apply_override(get_method("t2i"), "noise.prior", "flow-warped"), "motion.translate", "2,0")
    validate(flow)
    with pytest.raises(RecipeError, match="follows the motion request"):
        validate(apply_override(get_method("t2i"), "noise.prior", "flow-warped"))
    with pytest.raises(RecipeError, match="motion.dynamics=false leaves the motion request unused"):
        validate(apply_override(get_method("t2v-zero"), "motion.dynamics", "off"))
    with pytest.raises(RecipeError, match="smoothing"):
        validate(apply_override(apply_override(flow, "motion.dynamics", "off"), "smoothing", "on"))
    with pytest.raises(RecipeError, match="motion.sigma"):
        validate(apply_override(flow, "motion.sigma", -1))


def test_latent_frames_of_time_compressed_networks_follow_every_fourth_frame():
    from zeroshot.techniques.warped_noise import latent_frame_sources

    assert latent_frame_sources(3, 9) == [0, 4, 8] == latent_frame_sources(3, 9, 4)
    assert latent_frame_sources(3, 8, 4) == [0, 4, 7]  # the last latent frame holds frames 5-7
    assert latent_frame_sources(3, 7) == [0, 3, 6]
    assert latent_frame_sources(8, 8) == list(range(8))
    assert latent_frame_sources(1, 5) == [0]


def test_cli_flags_reach_the_recipe(tiny_sd, tmp_path):
    import json

    import cv2

    from zeroshot.cli import main

    cv2.imwrite(str(tmp_path / "m.png"), np.full((32, 32), 255, np.uint8))
    out = tmp_path / "clip.mp4"
    argv = ["generate", "a red cat", "--model", str(tiny_sd), "--method", "t2i", "--height", "32", "--width", "32",
            "--frames", "3", "--steps", "2", "--quiet", "--noise", "flow-warped", "--degradation", "0.25",
            "--trajectory", "4,4 12,4@1 20,8 r=3", "--trajectory", "28,28->20,28 mask=" + str(tmp_path / "m.png"),
            "--still", "rest", "--set", "motion.dynamics=off", "--set", "motion.densify=gaussian", "--out", str(out)]
    assert main(argv) == 0
    r = json.loads(out.with_suffix(".json").read_text())["recipe"]
    assert r["noise"]["prior"] == "flow-warped" and r["noise"]["degradation"] == 0.25
    m = r["motion"]
    assert m["trajectories"] == ["4,4 12,4@1 20,8 r=3", f"28,28->20,28 mask={tmp_path / 'm.png'}"]
    assert (m["still"], m["densify"], m["dynamics"], m["translate"]) == ("rest", "gaussian", False, [0.0, 0.0])
