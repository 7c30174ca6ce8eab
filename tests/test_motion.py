"""Motion fields and the latent warp: analytic forms, identities, exact shifts, noise statistics."""

import math

import numpy as np
import pytest
import torch

from conftest import randn as _noise
from zeroshot.motion import (
    Affine,
    Keyframe,
    KeyframedPath,
    Trajectories,
    Translation,
    VideoFlow,
    cell_centres,
    field_from_recipe,
    parse_drag,
    similarity_matrix,
    warp,
)
from zeroshot.recipe import Motion, Recipe, RecipeError

MODES = ("nearest", "bilinear", "variance-preserving")
PADDINGS = ("reflection", "border", "zeros")


def _inverse_affine(q, k, *, t, zoom, rot_deg, c):
    """Frame-0 source of output point q (numpy (..., 2)) under the forward map
    p -> c + k t + zoom^k R(k rot) (p - c), R counter-clockwise on screen (y down)."""
    a = math.radians(rot_deg * k)
    s = zoom**k
    r = np.array([[math.cos(a), math.sin(a)], [-math.sin(a), math.cos(a)]])
    d = q - np.asarray(c) - k * np.asarray(t)
    return np.asarray(c) + d @ np.linalg.inv(r).T / s


# ---------------------------------------------------------------------------------------
# analytic forms


def test_cell_centres_convention():
    c = cell_centres(64, 96, (8, 12))
    assert c.shape == (2, 8, 12)
    assert torch.allclose(c[0, 0, :3], torch.tensor([3.5, 11.5, 19.5], dtype=c.dtype))
    assert torch.allclose(c[1, :3, 0], torch.tensor([3.5, 11.5, 19.5], dtype=c.dtype))
    assert torch.equal(cell_centres(5, 7, (5, 7))[0, 0], torch.arange(7, dtype=torch.float64))


def test_translation_flow_and_forward_are_analytic():
    field = Translation(3.0, -2.0)
    flow = field.flow(5, 64, 80, grid=(8, 10))
    assert flow.shape == (5, 2, 8, 10) and flow.dtype == torch.float32
    for k in range(5):
        assert torch.all(flow[k, 0] == -3.0 * k) and torch.all(flow[k, 1] == 2.0 * k)
    pts = torch.tensor([[10.0, 20.0], [0.0, 0.0]])
    fwd = field.forward(pts, 5, 64, 80)
    assert torch.allclose(fwd[4], pts + torch.tensor([12.0, -8.0]))


@pytest.mark.parametrize("center", [None, (20.0, 10.0)])
def test_affine_flow_matches_closed_form(center):
    field = Affine(translate=(1.5, -0.5), zoom=1.07, rotate=4.0, center=center)
    H, W, grid = 48, 64, (6, 8)
    flow = field.flow(4, H, W, grid=grid, dtype=torch.float64)
    q = cell_centres(H, W, grid).permute(1, 2, 0).numpy()  # (h, w, 2)
    c = center if center is not None else ((W - 1) / 2, (H - 1) / 2)
    assert torch.count_nonzero(flow[0]) == 0
    for k in range(1, 4):
        src = _inverse_affine(q, k, t=(1.5, -0.5), zoom=1.07, rot_deg=4.0, c=c)
        np.testing.assert_allclose(flow[k].permute(1, 2, 0).numpy(), src - q, atol=1e-9)
    # forward() inverts the backward flow: a source point lands on its output position
    src = torch.from_numpy(q.reshape(-1, 2) + flow[3].permute(1, 2, 0).reshape(-1, 2).numpy())
    np.testing.assert_allclose(field.forward(src, 4, H, W)[3].numpy(), q.reshape(-1, 2), atol=1e-4)


def test_zoom_and_rotation_compose_as_the_affine_matrix():
    H, W = 40, 60
    c = ((W - 1) / 2, (H - 1) / 2)
    both = Affine(zoom=1.1, rotate=7.0).matrices(5, H, W)
    zoom = Affine(zoom=1.1).matrices(5, H, W)
    rot = Affine(rotate=7.0).matrices(5, H, W)
    for k in range(5):
        expected = similarity_matrix((0.0, 0.0), 1.1**k, 7.0 * k, c)
        assert torch.allclose(both[k], expected, atol=1e-12)
        assert torch.allclose(both[k], zoom[k] @ rot[k], atol=1e-12)
        assert torch.allclose(both[k], rot[k] @ zoom[k], atol=1e-12)
    # counter-clockwise on screen: a point right of the centre moves up (smaller y)
    p = Affine(rotate=90.0).forward(torch.tensor([[c[0] + 10.0, c[1]]]), 2, H, W)[1, 0]
    assert torch.allclose(p, torch.tensor([c[0], c[1] - 10.0]), atol=1e-4)
    # zoom > 1 pushes points away from the centre
    p = Affine(zoom=2.0).forward(torch.tensor([[c[0] + 5.0, c[1] + 1.0]]), 2, H, W)[1, 0]
    assert torch.allclose(p, torch.tensor([c[0] + 10.0, c[1] + 2.0]), atol=1e-4)


def test_keyframed_path_interpolates_and_matches_constant_rate_affine():
    f, H, W = 7, 32, 48
    path = KeyframedPath(
        (Keyframe(0, (0.0, 0.0), 1.0, 0.0), Keyframe(f - 1, (2.0 * (f - 1), -1.0 * (f - 1)), 1.05 ** (f - 1), 3.0 * (f - 1)))
    )
    cam = Affine(translate=(2.0, -1.0), zoom=1.05, rotate=3.0)
    assert torch.allclose(path.matrices(f, H, W), cam.matrices(f, H, W), atol=1e-9)
    assert torch.allclose(path.flow(f, H, W, grid=(4, 6)), cam.flow(f, H, W, grid=(4, 6)), atol=1e-5)
    tr, zoom, angle = path.at(3)
    assert tr == pytest.approx((6.0, -3.0)) and zoom == pytest.approx(1.05**3) and angle == pytest.approx(9.0)


def test_keyframed_path_holds_outside_keys_and_frame_zero_is_still():
    path = KeyframedPath((Keyframe(2, (5.0, 5.0)), Keyframe(4, (9.0, 5.0))))
    flow = path.flow(7, 16, 16)
    assert torch.count_nonzero(flow[0]) == 0 and torch.count_nonzero(flow[2]) == 0  # held at the first key
    assert torch.allclose(flow[3], torch.tensor([-2.0, 0.0])[:, None, None].expand(2, 16, 16))
    assert torch.allclose(flow[6], flow[4])


def test_keyframed_path_from_toml(tmp_path):
    p = tmp_path / "path.toml"
    p.write_text(
        "center = [10.0, 12.0]\n"
        "[[key]]\nframe = 0\n"
        "[[key]]\nframe = 4\ntranslate = [8, 4]\nzoom = 1.5\nangle = 20\n"
    )
    path = KeyframedPath.from_toml(p)
    assert path.center == (10.0, 12.0) and path.keys[1] == Keyframe(4.0, (8.0, 4.0), 1.5, 20.0)
    fwd = path.forward(torch.tensor([[10.0, 12.0]]), 5, 32, 32)  # the centre only translates
    assert torch.allclose(fwd[2, 0], torch.tensor([14.0, 14.0]), atol=1e-5)
    bad = tmp_path / "bad.toml"
    bad.write_text("[[key]]\nframe = 0\nzooom = 2\n")
    with pytest.raises(RecipeError, match="zooom"):
        KeyframedPath.from_toml(bad)
    with pytest.raises(RecipeError, match="motion.path"):
        KeyframedPath.from_toml(tmp_path / "missing.toml")
    for text in ('[[key]]\nframe = "x"\n', "[[key]]\nframe = 0\ntranslate = [1]\n", "[[key]]\nframe = 1\n[[key]]\nframe = 0\n"):
        bad.write_text(text)
        with pytest.raises(RecipeError, match="motion.path"):
            KeyframedPath.from_toml(bad)


# ---------------------------------------------------------------------------------------
# trajectories


def test_parse_drag():
    assert parse_drag("1,2->3.5,-4") == (1.0, 2.0, 3.5, -4.0)
    for bad in ("1,2,3,4", "1,2->3", "a,b->c,d", "1,2->nan,3"):
        with pytest.raises(RecipeError, match="trajectories"):
            parse_drag(bad)


def test_trajectories_pass_through_the_drags():
    f, H, W = 5, 48, 64
    field = Trajectories.parse(["10,12->30,12", "50,40->46,20", "40,8->40,8"], sigma_px=10.0)
    starts = torch.tensor([[10.0, 12.0], [50.0, 40.0], [40.0, 8.0]])
    ends = torch.tensor([[30.0, 12.0], [46.0, 20.0], [40.0, 8.0]])
    fwd = field.forward(starts, f, H, W)
    flow = field.flow(f, H, W, dtype=torch.float64)  # full-resolution grid: cells are pixels
    assert torch.count_nonzero(flow[0]) == 0
    for k in range(f):
        here = starts + (k / (f - 1)) * (ends - starts)
        assert torch.allclose(fwd[k], here, atol=1e-4)
        for i in range(3):
            x, y = here[i].tolist()
            if float(x).is_integer() and float(y).is_integer():
                back = flow[k, :, int(y), int(x)]
                assert torch.allclose(back, (starts[i] - here[i]).double(), atol=1e-6)
    # far from every drag the picture stays still
    assert flow[-1, :, -1, 0].abs().max() < 1e-3
    # and the field is smooth: neighbouring cells differ by a small fraction of the drag
    assert flow[-1].diff(dim=-1).abs().max() < 3.0


def test_trajectories_single_frame_is_still():
    flow = Trajectories.parse(["1,1->5,5"]).flow(1, 8, 8)
    assert flow.shape == (1, 2, 8, 8) and torch.count_nonzero(flow) == 0


# ---------------------------------------------------------------------------------------
# optical flow from a video


def _textured(h, w, seed=0):
    import cv2

    rng = np.random.default_rng(seed)
    img = cv2.GaussianBlur(rng.random((h, w)).astype(np.float32), (0, 0), 2.0)
    img = (img - img.min()) / (img.max() - img.min())
    return (img * 255).astype(np.uint8)


def _shifted_video(dx, dy, f, h=96, w=96):
    import cv2

    base = _textured(h + 64, w + 64)
    frames = []
    for k in range(f):
        m = np.float32([[1, 0, dx * k - 32], [0, 1, dy * k - 32]])  # content moves (dx, dy) per frame
        frame = cv2.warpAffine(base, m, (w, h), flags=cv2.INTER_CUBIC, borderMode=cv2.BORDER_REFLECT)
        frames.append(np.repeat(frame[..., None], 3, axis=-1))
    return np.stack(frames)


@pytest.mark.parametrize("method", ["dis", "farneback"])
def test_video_flow_recovers_a_synthetic_shift(method):
    dx, dy, f = 1.5, -1.0, 5
    field = VideoFlow.from_frames(_shifted_video(dx, dy, f), method=method)
    flow = field.flow(f, 96, 96, grid=(96, 96))
    inner = flow[:, :, 16:-16, 16:-16]
    for k in range(1, f):
        err_x = (inner[k, 0] + dx * k).abs().mean().item()
        err_y = (inner[k, 1] + dy * k).abs().mean().item()
        assert err_x < 0.5 and err_y < 0.5, (k, err_x, err_y)
    assert torch.count_nonzero(flow[0]) == 0
    pts = torch.tensor([[48.0, 48.0], [30.0, 60.0]])
    fwd = field.forward(pts, f, 96, 96)
    assert torch.allclose(fwd[-1], pts + torch.tensor([dx, dy]) * (f - 1), atol=0.5)


def test_video_flow_follows_untextured_shapes_over_large_displacements():
    """World clips (a flat shape moving 2 px/frame on a plain background, up to 14 px by frame
    7): the flow composed of frame-to-frame flows takes frame 0's centre where the shape is
    (forward) and brings frame k's centre back to frame 0's (backward). One jump from frame k
    to frame 0 missed by about 2.5 px here; the composed flows are within 0.6 px on average."""
    import math

    from zeroshot.shapes import world

    rng = np.random.default_rng(0)
    forward, backward = [], []
    for i in range(10):
        scene = world.sample_scene(rng)
        heading = math.atan2(32 - scene.center[1], 32 - scene.center[0]) + rng.uniform(-0.5, 0.5)
        motion = world.ShapeMotion(kind="translate" if i % 2 else "curve", turn_deg=10.0,
                                   velocity=(2 * math.cos(heading), 2 * math.sin(heading)))
        clip = world.render_video(scene, motion, 8)
        field = VideoFlow.from_frames(clip.frames)
        track = field.forward(torch.tensor(clip.centroids[:1], dtype=torch.float32), 8, 64, 64)[:, 0].numpy()
        forward.append(np.linalg.norm(track - clip.centroids, axis=1)[1:].mean())
        flow = field.flow(8, 64, 64, grid=(64, 64)).numpy()
        back = [clip.centroids[k] + flow[k, :, round(clip.centroids[k][1]), round(clip.centroids[k][0])]
                for k in range(1, 8)]
        backward.append(np.linalg.norm(np.array(back) - clip.centroids[0], axis=1).mean())
    assert np.mean(forward) < 0.6 and np.mean(backward) < 0.6, (np.mean(forward), np.mean(backward))


def test_video_flow_rescales_to_output_size_and_grid(tmp_path):
    import cv2

    frames = _shifted_video(2.0, 0.0, 3)
    for k, frame in enumerate(frames):
        cv2.imwrite(str(tmp_path / f"{k:03d}.png"), frame[..., ::-1])
    field = VideoFlow(str(tmp_path))
    flow = field.flow(3, 192, 192, grid=(24, 24))  # output twice the video size, grid /8
    assert flow.shape == (3, 2, 24, 24)
    assert abs(flow[2, 0, 4:-4, 4:-4].mean().item() + 8.0) < 0.5  # 2 px/frame * 2 frames * 2x
    with pytest.raises(RecipeError, match="num_frames=5"):
        field.flow(5, 96, 96)
    with pytest.raises(RecipeError, match="does not exist"):
        VideoFlow(str(tmp_path / "nope.mp4")).flow(2, 8, 8)


# ---------------------------------------------------------------------------------------
# warp


@pytest.mark.parametrize("mode", MODES)
@pytest.mark.parametrize("padding", PADDINGS)
def test_zero_flow_is_the_identity(mode, padding):
    x = _noise(2, 4, 3, 10, 14)
    flow = torch.zeros(3, 2, 10, 14)
    out = warp(x, flow, scale=(8, 8), mode=mode, padding=padding)
    assert torch.equal(out, x)
    # and a frame with zero flow next to moving frames is untouched too
    flow[1:] = 0.7
    out = warp(x, flow, scale=1.0, mode=mode, padding=padding)
    assert torch.equal(out[:, :, 0], x[:, :, 0]) and not torch.equal(out[:, :, 1], x[:, :, 1])


@pytest.mark.parametrize("mode", MODES)
@pytest.mark.parametrize("size", [(16, 16), (10, 14)])
def test_integer_translation_is_an_exact_roll_in_the_interior(mode, size):
    h, w = size
    f, sy, sx = 4, 8, 8
    x = _noise(1, 3, f, h, w)
    x[:, :, 1:] = x[:, :, :1]  # every frame starts as frame 0
    field = Translation(dx=1 * sx, dy=-1 * sy)  # one cell right and one up per frame
    out = warp(x, field.flow(f, h * sy, w * sx, grid=(h, w)), scale=(sy, sx), mode=mode)
    for k in range(f):
        rolled = torch.roll(x[:, :, 0], shifts=(-k, k), dims=(-2, -1))
        inner = (slice(None), slice(None), slice(0, h - k), slice(k, w))
        assert torch.allclose(out[:, :, k][inner], rolled[inner], atol=1e-6, rtol=0)
        if mode == "nearest" or (h & (h - 1) == 0 and w & (w - 1) == 0):
            assert torch.equal(out[:, :, k][inner], rolled[inner])


def test_content_moves_in_the_requested_direction():
    x = torch.zeros(1, 1, 2, 16, 16)
    x[..., 5, 3] = 1.0
    out = warp(x, Translation(2.0, 1.0).flow(2, 16, 16), scale=1.0)
    assert out[0, 0, 1, 6, 5] == 1.0 and out[0, 0, 1].sum() == 1.0


def test_reflection_padding_mirrors_a_subject_near_the_trailing_edge_and_border_does_not():
    """A pan uncovers the trailing edge: reflection fills it with the mirror image of what
    lies within the shift of that edge (a second copy of a subject there), border with
    copies of the edge column only. Why the shapes model recommends border padding."""
    x = torch.zeros(1, 1, 2, 16, 16)
    x[..., 6:9, 2:5] = 1.0  # a 3x3 subject, 2 cells from the left edge
    flow = Translation(7.0, 0.0).flow(2, 16, 16)  # 7 cells right in frame 1
    reflected = warp(x, flow, scale=1.0, mode="nearest", padding="reflection")[0, 0, 1]
    bordered = warp(x, flow, scale=1.0, mode="nearest", padding="border")[0, 0, 1]
    assert torch.equal(reflected[6:9, 9:12], torch.ones(3, 3)) and torch.equal(bordered[6:9, 9:12], torch.ones(3, 3))
    assert reflected[:, :7].sum() == 9  # the mirror copy in the uncovered strip
    assert bordered[:, :7].sum() == 0  # edge column (empty) repeated
    assert bordered.sum() == 9


def test_padding_is_a_model_recommendation():
    from zeroshot.recipe import get_method, resolve

    recipe = get_method("t2v-zero")
    assert recipe.motion.padding is None
    assert resolve(recipe).motion.padding == "reflection"  # the paper's
    assert resolve(recipe, {"motion.padding": "border"}).motion.padding == "border"
    chosen = resolve(recipe, {"motion.padding": "border"}).motion.padding
    explicit = resolve(Recipe(method="t2v-zero", motion=Motion(padding="zeros")), {"motion.padding": "border"})
    assert chosen == "border" and explicit.motion.padding == "zeros"
    with pytest.raises(RecipeError, match="motion.padding"):
        resolve(Recipe(method="t2v-zero", motion=Motion(padding="wrap")))


def test_warp_samples_the_field_geometry():
    """Bilinear warping of a linear ramp is exact: out(q) = ramp(q + flow(q)) in cell units."""
    H, W, grid, f = 64, 96, (16, 24), 3
    field = Affine(translate=(3.0, 2.0), zoom=1.05, rotate=5.0)
    flow = field.flow(f, H, W, grid=grid, dtype=torch.float64)
    ii, jj = torch.meshgrid(torch.arange(16.0).double(), torch.arange(24.0).double(), indexing="ij")
    ramp = 0.7 * jj - 0.3 * ii
    x = ramp.expand(1, 1, f, 16, 24).clone()
    out = warp(x, flow, scale=(4, 4), mode="bilinear", padding="border")
    pos_x, pos_y = jj + flow[:, 0] / 4, ii + flow[:, 1] / 4
    inside = (pos_x >= 0) & (pos_x <= 23) & (pos_y >= 0) & (pos_y <= 15)
    expected = 0.7 * pos_x - 0.3 * pos_y
    assert inside.float().mean() > 0.6
    assert torch.allclose(out[0, 0][inside], expected[inside], atol=1e-9)


def test_warp_layouts_agree_and_videos_are_independent():
    x = _noise(3, 4, 5, 8, 8)
    flow = Affine(translate=(1.3, 0.6), rotate=3.0).flow(5, 64, 64, grid=(8, 8))
    out5 = warp(x, flow, scale=8, mode="bilinear")
    flat = x.permute(0, 2, 1, 3, 4).reshape(15, 4, 8, 8)  # (b f) c h w
    out4 = warp(flat, flow, scale=8, mode="bilinear")
    assert torch.equal(out4.reshape(3, 5, 4, 8, 8).permute(0, 2, 1, 3, 4), out5)
    single = warp(x[1:2], flow, scale=8, mode="bilinear")
    assert torch.equal(single, out5[1:2])
    half = warp(x.half(), flow, scale=8, mode="bilinear")
    assert half.dtype == torch.float16 and torch.allclose(half.float(), out5, atol=1e-2)


def test_nearest_warp_reproduces_diffusers_t2v_zero():
    from diffusers.pipelines.deprecated.text_to_video_synthesis.pipeline_text_to_video_zero import (
        create_motion_field_and_warp_latents,
    )

    f = 8
    for w, strength in [(64, 12), (64, -12), (8, 12), (12, 5)]:
        x = _noise(f, 4, w, w, seed=w)
        ref = create_motion_field_and_warp_latents(strength, strength, list(range(f)), x)
        width = 8 * w  # diffusers' field is in px of a 512 frame and moves content up-left
        field = Translation(-strength * width / 512, -strength * width / 512)
        out = warp(x, field.flow(f, width, width, grid=(w, w)), scale=8, mode="nearest", padding="reflection")
        assert torch.equal(out, ref), (w, strength)


def _doc_noise_table() -> dict[tuple[str, str], tuple[float, float, float]]:
    """The table "What each mode does to noise" of docs/motion.md: (mode, case) -> (std,
    neighbour correlation, fraction of duplicated cells); "a / b / c" cells are per shift."""
    from pathlib import Path

    text = (Path(__file__).resolve().parents[1] / "docs" / "motion.md").read_text()
    section = text[text.index("### What each mode does to noise"):]
    table = {}
    for line in section.splitlines():
        cells = [c.strip() for c in line.strip().strip("|").split("|")]
        if len(cells) != 5 or cells[0] not in MODES:
            if table and not line.startswith("|"):
                break
            continue
        mode, case, *numbers = cells
        if case.startswith("shift"):
            shifts = case.removeprefix("shift").removesuffix("cell").split("/")
            columns = [[float(v) for v in col.split("/")] for col in numbers]
            for i, shift in enumerate(shifts):
                table[(mode, f"shift {float(shift)}")] = tuple(col[i] if len(col) > 1 else col[0] for col in columns)
        else:
            table[(mode, case)] = tuple(float(v) for v in numbers)
    return table


def _noise_stats(out: torch.Tensor) -> tuple[float, float, float]:
    """std, horizontal-neighbour correlation, fraction of cells equal to their left neighbour
    (over the interior cells, away from the padding)."""
    inner = out[..., 8:-8, 8:-8]
    a, b = inner[..., :, :-1].flatten().double(), inner[..., :, 1:].flatten().double()
    corr = float(((a - a.mean()) * (b - b.mean())).mean() / (a.std() * b.std()))
    return float(inner.std()), corr, float((a == b).double().mean())


def test_warp_noise_statistics_per_mode():
    """The table in docs/motion.md (std, neighbour correlation and duplicated cells of warped
    unit white noise, 4 x 256 x 256), measured again; where a closed form exists, it is
    checked too: bilinear at a shift s in x and y has std (1 - s)^2 + s^2 and neighbour
    correlation s (1 - s) / ((1 - s)^2 + s^2); nearest under a 1.1x zoom copies 1 - 1/1.1
    of the cells."""
    table = _doc_noise_table()
    assert len(table) == 12, sorted(table)
    size = 256
    x = _noise(1, 4, 2, size, size, seed=0)
    x[:, :, 1] = x[:, :, 0]
    fields = {f"shift {s}": Translation(-s, -s) for s in (0.0, 0.25, 0.5)}
    fields["zoom 1.1"] = Affine(zoom=1.1)
    for (mode, case), (std, corr, dup) in table.items():
        out = warp(x, fields[case].flow(2, size, size), scale=1.0, mode=mode)[:, :, 1]
        got = _noise_stats(out)
        # the doc rounds std and duplicates to 3 decimals, correlations to 2
        assert abs(got[0] - std) <= 0.0005 + 1e-4, (mode, case, got)
        assert abs(got[1] - corr) <= 0.005 + 1e-4, (mode, case, got)
        assert abs(got[2] - dup) <= 0.0005 + 1e-4, (mode, case, got)
        assert abs(float(out[..., 8:-8, 8:-8].mean())) < 0.02
        if mode == "bilinear" and case.startswith("shift"):
            s = float(case.split()[1])
            per_axis = (1 - s) ** 2 + s**2
            assert abs(got[0] - per_axis) < 0.01 and abs(got[1] - s * (1 - s) / per_axis) < 0.02, (case, got)
        if mode == "nearest" and case == "zoom 1.1":
            assert abs(got[2] - (1 - 1 / 1.1)) < 0.01 and abs(got[1] - got[2]) < 0.02  # copies: correlation 1


def test_warp_rejects_bad_arguments():
    x = _noise(1, 4, 2, 8, 8)
    flow = torch.zeros(2, 2, 8, 8)
    with pytest.raises(ValueError, match="mode"):
        warp(x, flow, mode="cubic")
    with pytest.raises(ValueError, match="padding"):
        warp(x, flow, padding="wrap")
    with pytest.raises(ValueError, match="frames"):
        warp(x, torch.zeros(3, 2, 8, 8))
    with pytest.raises(ValueError, match="grid"):
        warp(x, torch.zeros(2, 2, 4, 4))


# ---------------------------------------------------------------------------------------
# recipe mapping


def test_field_from_recipe(tmp_path):
    assert field_from_recipe(Motion(translate=(2.0, 1.0)), 8, 64, 64) == Translation(2.0, 1.0)
    assert field_from_recipe(Motion(translate=None), 8, 64, 64) == Translation(0.0, 0.0)
    cam = field_from_recipe(Motion(translate=(1.0, 0.0), zoom=1.02, rotate=2.0), 8, 64, 64)
    assert cam == Affine(translate=(1.0, 0.0), zoom=1.02, rotate=2.0)
    traj = field_from_recipe(Motion(translate=(0.0, 0.0), trajectories=("1,2->3,4",)), 8, 64, 64)
    assert traj == Trajectories(((1.0, 2.0, 3.0, 4.0),))
    import cv2

    clip = tmp_path / "clip"
    clip.mkdir()
    for k, frame in enumerate(_shifted_video(1.0, 0.0, 8, 32, 32)):
        cv2.imwrite(str(clip / f"{k}.png"), frame)
    assert field_from_recipe(Motion(from_video=str(clip)), 8, 64, 64) == VideoFlow(str(clip))
    p = tmp_path / "p.toml"
    p.write_text("[[key]]\nframe = 0\n")
    assert isinstance(field_from_recipe(Motion(path=str(p)), 8, 64, 64), KeyframedPath)
    with pytest.raises(RecipeError, match="cannot be combined"):
        field_from_recipe(Motion(path=str(p), from_video="clip.mp4"), 8, 64, 64)
    with pytest.raises(RecipeError, match="motion.translate"):
        field_from_recipe(Motion(translate=(12.0, 12.0), from_video="clip.mp4"), 8, 64, 64)
    # the reference video is read here, before any model work: too short, missing, unreadable
    with pytest.raises(RecipeError, match="motion.from_video.*num_frames=9"):
        field_from_recipe(Motion(from_video=str(clip)), 9, 64, 64)
    with pytest.raises(RecipeError, match="motion.from_video.*does not exist"):
        field_from_recipe(Motion(from_video=str(tmp_path / "missing.mp4")), 8, 64, 64)
    (tmp_path / "broken.mp4").write_bytes(b"not a video")
    with pytest.raises(RecipeError, match="motion.from_video.*no frames"):
        field_from_recipe(Motion(from_video=str(tmp_path / "broken.mp4")), 8, 64, 64)


# ---------------------------------------------------------------------------------------
# through generate()


def test_every_motion_source_runs_through_generate(tiny_sd, tmp_path):
    import cv2

    from zeroshot.generate import generate
    from zeroshot.models import load
    from zeroshot.recipe import apply_override, get_method

    for k, frame in enumerate(_shifted_video(1.0, 0.5, 3, 32, 32)):
        cv2.imwrite(str(tmp_path / f"{k}.png"), frame)
    path = tmp_path / "path.toml"
    path.write_text("[[key]]\nframe = 0\n[[key]]\nframe = 2\ntranslate = [4, 0]\nzoom = 1.2\nangle = 10\n")
    model = load(str(tiny_sd))
    base = get_method("t2v-zero")
    for key, value in (("num_frames", 3), ("num_inference_steps", 4), ("height", 32), ("width", 32)):
        base = apply_override(base, key, value)
    variants = {
        "pan": {"motion.translate": "4,0"},
        "camera": {"motion.translate": "2,1", "motion.zoom": 1.1, "motion.rotate": 5, "motion.mode": "variance-preserving"},
        "path": {"motion.path": str(path)},
        "drags": {"motion.trajectories": ["8,8->20,12"], "motion.mode": "bilinear"},
        "video": {"motion.from_video": str(tmp_path)},
    }
    first, rest = None, []
    for name, overrides in variants.items():
        recipe = base
        for key, value in overrides.items():
            recipe = apply_override(recipe, key, value)
        video = generate(model, "a red circle on a blue background", recipe, seed=3, progress=False)
        assert video.frames.shape == (1, 3, 3, 32, 32), name
        # frame 0 is never warped and attends only to itself: the same for every motion
        if first is None:
            first = video.latents[:, :, 0]
        assert torch.allclose(video.latents[:, :, 0], first, atol=1e-5), name
        rest.append(video.latents[:, :, 1:])
    assert all(not torch.allclose(a, b, atol=1e-3) for i, a in enumerate(rest) for b in rest[i + 1 :])


def test_motion_check_in_view_rule():
    """bench/motion_check.py measures "in view" videos: every frame-0 shape pixel stays in
    the frame along the requested motion (docs/motion.md)."""
    import importlib.util
    from pathlib import Path

    path = Path(__file__).resolve().parents[1] / "bench" / "motion_check.py"
    spec = importlib.util.spec_from_file_location("bench_motion_check", path)
    bench = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(bench)
    mask = np.zeros((64, 64), bool)
    mask[20:30, 10:20] = True  # x 10..19
    pan = Motion(translate=(2.0, 0.0))
    assert bench.stays_in_view(mask, pan, 8)  # right edge at 19 + 14 = 33
    assert bench.stays_in_view(mask, Motion(translate=(6.0, 0.0)), 8)  # 19 + 42 = 61
    assert not bench.stays_in_view(mask, Motion(translate=(7.0, 0.0)), 8)  # 19 + 49 = 68
    assert not bench.stays_in_view(mask, Motion(translate=(-2.0, 0.0)), 8)  # 10 - 14 < 0
    assert bench.stays_in_view(mask, Motion(translate=(0.0, 0.0), zoom=1.05), 8)
    assert not bench.stays_in_view(mask, Motion(translate=(0.0, 0.0), zoom=1.3), 8)
    assert not bench.stays_in_view(np.zeros((64, 64), bool), pan, 8)
