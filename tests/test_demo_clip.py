"""The demo's CLIP: trained by its own command, written as an ordinary open_clip checkpoint."""
import numpy as np
import pytest
import torch

from pipeline.demo import SHAPES
from pipeline.demo_clip import MODEL, colour_name, frame_and_caption, position_name, train_demo_clip
from pipeline.factory import load_clip, preprocess_cfg, weights_identity
from pipeline.features.clip import normalise_pixels
from pipeline.files import sha256_of

SHORT_RUN = {"seed": 0, "steps": 12, "batch_size": 16, "lr": 3e-3, "detail": 0.5}


def test_captions_say_what_one_frame_shows():
    assert [colour_name(c) for c in ((220, 30, 30), (30, 60, 220), (10, 10, 10), (240, 240, 240))] == \
        ["red", "blue", "black", "white"]
    assert position_name(5, 5, 64) == "top left" and position_name(32, 32, 64) == "centre"
    rng = np.random.default_rng(0)
    for detail in (0.0, 1.0):
        for _ in range(30):
            img, caption, shapes = frame_and_caption(rng, 64, detail)
            assert img.shape == (64, 64, 3) and img.dtype == np.uint8 and set(shapes) <= set(SHAPES)
            assert not any(w in caption for w in ("moving", "rotat", "still"))  # never motion
    detailed = [frame_and_caption(rng, 64, 1.0)[1] for _ in range(40)]
    assert sum("background" in c or " in the " in c for c in detailed) > 10


def test_the_checkpoint_is_an_open_clip_file_loaded_like_a_download(tmp_path):
    out = tmp_path / "demo_clip.pt"
    info = train_demo_clip(out, SHORT_RUN, progress=False)
    assert info["steps"] == 12 and 0 <= info["shape_accuracy"] <= 1
    state = torch.load(out, map_location="cpu", weights_only=True)  # a plain state dict
    assert "logit_scale" in state and any(k.startswith("visual.") for k in state)
    model = load_clip(MODEL, str(out))  # the path clip.pretrained takes for a downloaded file
    for k, v in model.state_dict().items():
        assert torch.equal(v, state[k]), k
    assert weights_identity(str(out)) == "sha256:" + sha256_of(out, 16)
    x = normalise_pixels(torch.zeros(2, 3, 64, 64, dtype=torch.uint8), preprocess_cfg(model))
    assert model.encode_image(x).shape == (2, model.visual.output_dim)
    # seeded: the same command writes the same weights
    train_demo_clip(tmp_path / "again.pt", SHORT_RUN, progress=False)
    again = torch.load(tmp_path / "again.pt", map_location="cpu", weights_only=True)
    assert all(torch.equal(state[k], again[k]) for k in state)
    random = load_clip(MODEL, None).state_dict()
    assert any(not torch.equal(random[k], state[k]) for k in state if k.startswith("visual."))


def test_training_lowers_the_contrastive_loss(tmp_path):
    first = train_demo_clip(tmp_path / "a.pt", {**SHORT_RUN, "steps": 2}, progress=False)
    longer = train_demo_clip(tmp_path / "b.pt", {**SHORT_RUN, "steps": 40}, progress=False)
    assert longer["loss"] < first["loss"] - 0.2, (first["loss"], longer["loss"])


@pytest.mark.parametrize("bad", [{"steps": 0}, {"lr": -1}, {"detail": 2}, {"colour": 1}])
def test_demo_clip_settings_are_validated(bad):
    from pipeline.config import ConfigError, section
    with pytest.raises(ConfigError):
        section("demo", {"clip": bad})
