"""The edge-ControlNet trainer (`python -m zeroshot.trained.train_controlnet`), smoke-sized on
the tiny SD folder: it writes a ControlNet folder that loads and fits its base, learns (its zero
convolutions leave zero), and a resumed run equals an uninterrupted one."""

import json
import math

import torch

from zeroshot import control, models, testing
from zeroshot.trained import train_controlnet as tc


def _config(tiny_sd, tmp_path, name, **kw):
    return tc.TrainConfig(model=str(tiny_sd), out=str(tmp_path / name), checkpoint=str(tmp_path / f"{name}.pt"),
                          steps=2, batch_size=2, lr=1e-3, warmup=1, save_every=1, **kw)


def test_the_data_are_shapes_images_and_their_canny_edges():
    data = tc.ShapesEdges(seed=3, size=32, length=4)
    image, edges, caption = data[1]
    assert image.shape == edges.shape == (3, 32, 32)
    assert torch.equal(edges, control.canny(image[None])[0]) and edges.max() == 1
    assert torch.equal(data[1][0], image)  # a pure function of (seed, index)
    from zeroshot.shapes import world

    assert world.parse_caption(caption) not in world.HELD_OUT


def test_train_writes_a_controlnet_that_loads_and_resumes_exactly(tiny_sd, tmp_path):
    config = _config(tiny_sd, tmp_path, "a")
    result = tc.train(config, progress=False)
    assert result["steps"] == 2 and len(result["losses"]) == 2 and all(math.isfinite(x) for x in result["losses"])
    model = models.load(str(tiny_sd))
    base = control.signature_of_config(dict(model.unet.config), vae_scale_factor=model.vae_scale_factor)
    control.check_controlnet(config.out, base)  # made for this base: it passes the refusal check
    net = control.load_controlnet(config.out)
    assert net.controlnet_mid_block.weight.abs().max() > 0  # the zero convolutions learned
    # interrupted after one step and resumed: the same weights as the uninterrupted run
    resumed = _config(tiny_sd, tmp_path, "b")
    tc.train(resumed, progress=False, stop_at=1)
    assert torch.load(resumed.checkpoint, weights_only=False)["step"] == 1
    again = tc.train(resumed, progress=False)
    assert again["steps"] == 2 and again["losses"] == result["losses"]
    b = control.load_controlnet(resumed.out)
    assert all(torch.allclose(p, q, atol=1e-6) for p, q in zip(net.state_dict().values(), b.state_dict().values()))


def test_cli_trains_a_few_steps_and_the_controlnet_conditions_generate(tiny_sd, tmp_path):
    from zeroshot.generate import generate
    from zeroshot.recipe import ControlNet, Recipe

    out, log = tmp_path / "cn", tmp_path / "log.json"
    rc = tc.main(["--model", str(tiny_sd), "--out", str(out), "--checkpoint", "", "--steps", "2", "--batch-size",
                  "1", "--log", str(log)])
    assert rc == 0 and (out / "config.json").is_file() and len(json.loads(log.read_text())["losses"]) == 2
    video = testing.write_control_video(tmp_path / "clip", num_frames=2, size=32)
    recipe = Recipe(method="t2i", num_frames=2, height=32, width=32, num_inference_steps=2,
                    controlnet=ControlNet(models=(str(out),), signals=(f"canny:{video}",)))
    frames = generate(models.load(str(tiny_sd)), "a red cat", recipe, progress=False).frames
    assert frames.shape == (1, 2, 3, 32, 32) and torch.isfinite(frames).all()


def test_v2_images_avoid_the_held_out_captions():
    from zeroshot.shapes import world

    data = tc.ShapesEdges(seed=0, size=32, length=8, world="v2")
    for i in range(8):
        assert world.parse_caption_v2(data[i][2]) not in world.HELD_OUT_V2
