"""TAT model pieces: LoRA only on the image tower, merged == unmerged, the loss and its labels, config checks."""

from __future__ import annotations

import pytest
import torch
import torch.nn.functional as F

from cir.encoder import load_encoder
from cir.fusion import l2_normalize
from training.config import TrainConfig
from training.lora import add_lora, check_trainable, select_targets, trainable_parameters, vision_prefixes
from training.loss import contrastive_loss, positives_matrix, resolve_positives

TARGETS = ("q_proj", "k_proj", "v_proj", "out_proj")


@pytest.mark.parametrize("which", ["tiny_clip_dir", "tiny_siglip_dir"])
def test_only_image_tower_lora_weights_train(which, request):
    encoder = load_encoder(str(request.getfixturevalue(which)), device="cpu")
    model = add_lora(encoder.model, 4, 4.0, 0.0, TARGETS)
    names = list(trainable_parameters(model))
    assert names and all("lora_" in n and ".vision_model." in f".{n}" for n in names)
    frozen = [n for n, p in model.named_parameters() if not p.requires_grad]
    assert any("text_model" in n for n in frozen) and not any("lora_" in n for n in frozen)
    for name, p in model.named_parameters():
        if "lora_" not in name:
            assert not p.requires_grad, name
    # SigLIP's pooling head is a MultiheadAttention whose out_proj LoRA could not affect: never targeted
    assert not any("head.attention" in n for n in names)


def test_target_selection_stays_in_the_vision_tower(tiny_clip_dir):
    model = load_encoder(str(tiny_clip_dir), device="cpu").model
    assert vision_prefixes(model) == ("vision_model", "visual_projection")
    chosen = select_targets(model, ["q_proj", "fc1", "visual_projection"])
    assert "visual_projection" in chosen and all(not n.startswith("text_model") for n in chosen)
    assert any(n.endswith("mlp.fc1") for n in chosen)
    only = select_targets(model, [r".*layers\.1\.self_attn\.v_proj"])
    assert only == ["vision_model.encoder.layers.1.self_attn.v_proj"]
    with pytest.raises(ValueError, match="no image-tower module"):
        select_targets(model, ["text_projection"])
    model.text_model.embeddings.token_embedding.weight.requires_grad_(True)
    with pytest.raises(RuntimeError, match="only image-tower LoRA"):
        check_trainable(model)


def test_merged_equals_unmerged(tiny_clip_dir):
    encoder = load_encoder(str(tiny_clip_dir), device="cpu")
    model = add_lora(encoder.model, 4, 8.0, 0.1, TARGETS + ("fc1",))
    with torch.no_grad():
        for p in trainable_parameters(model).values():
            p.normal_(0, 0.2)  # LoRA B starts at zero: make the adapter do something
    model.eval()
    pixels = torch.randn(3, 3, 32, 32)
    unmerged = encoder.encode_pixels(pixels)
    texts = encoder.encode_texts(["a red circle", "two dogs"])
    base = load_encoder(str(tiny_clip_dir), device="cpu")
    assert abs(unmerged - base.encode_pixels(pixels)).max() > 1e-3
    merged = model.merge_and_unload()
    assert merged is encoder.model
    assert abs(encoder.encode_pixels(pixels) - unmerged).max() < 1e-5
    assert (encoder.encode_texts(["a red circle", "two dogs"]) == texts).all()


def test_one_to_one_loss_is_clip_cross_entropy():
    torch.manual_seed(0)
    img, txt = l2_normalize(torch.randn(6, 8)), l2_normalize(torch.randn(6, 8))
    logits = 14.3 * img @ txt.T
    target = torch.arange(6)
    expected = (F.cross_entropy(logits, target) + F.cross_entropy(logits.T, target)) / 2
    got = contrastive_loss(img, txt, positives_matrix(["x"] * 6, [None] * 6, "pairs"), 14.3)
    assert torch.allclose(got, expected, atol=1e-6)


def test_multi_positive_labels():
    captions = ["a red shape", "a big blue star", "a red shape"]
    assert positives_matrix(captions, [None] * 3, "captions").tolist() == [
        [True, False, True], [False, True, False], [True, False, True]]
    attrs = [dict(shape="circle", colour="red", size="large", position="top left", pattern="solid"),
             dict(shape="star", colour="blue", size="large", position="top right", pattern="striped"),
             dict(shape="square", colour="red", size="small", position="bottom left", pattern="solid")]
    metas = [{"mentions": {"colour": "red"}, "attributes": attrs[0]},
             {"mentions": {"size": "large", "position": "top"}, "attributes": attrs[1]},
             {"mentions": dict(attrs[2]), "attributes": attrs[2]}]
    # caption 0 ("red") fits images 0 and 2; caption 1 ("large, top") fits 0 and 1; caption 2 only image 2
    assert positives_matrix(captions, metas, "mentions").tolist() == [
        [True, False, True], [True, True, False], [False, False, True]]
    with pytest.raises(ValueError, match="mentions"):
        positives_matrix(captions, [None] * 3, "mentions")
    assert resolve_positives("auto", True) == "mentions" and resolve_positives("auto", False) == "captions"
    # image j's targets: the captions that describe it; caption i's targets: the images it describes
    P = positives_matrix(captions, metas, "mentions")
    torch.manual_seed(1)
    img, txt = l2_normalize(torch.randn(3, 5)), l2_normalize(torch.randn(3, 5))
    logits = 10.0 * img @ txt.T
    i2t = sum(-sum(P[i, j] / P[:, j].sum() * logits[j].log_softmax(0)[i] for i in range(3)) for j in range(3)) / 3
    t2i = sum(-sum(P[i, j] / P[i, :].sum() * logits[:, i].log_softmax(0)[j] for j in range(3)) for i in range(3)) / 3
    assert torch.allclose(contrastive_loss(img, txt, P, 10.0), (i2t + t2i) / 2, atol=1e-6)


@pytest.mark.parametrize("bad", [dict(batch_size=1), dict(lr=0.0), dict(lora_dropout=1.0), dict(temperature=-1.0),
                                 dict(positives="some"), dict(lora_targets=()), dict(eval_alpha=(1.5,)),
                                 dict(max_steps=0), dict(holdout=-1), dict(model="")])
def test_config_rejects_bad_values(bad):
    with pytest.raises(ValueError):
        TrainConfig(**{"model": "m", "data": "d", "out": "o", **bad})


def test_config_identity_ignores_runtime_options():
    a = TrainConfig(model="m", data="d", out="o")
    assert a.logit_scale == pytest.approx(1 / 0.07)
    assert a.identity() == a.replace(workers=7, resume=True, out="elsewhere", eval_cir="x").identity()
    assert a.identity() != a.replace(seed=1).identity()
    assert TrainConfig(model="m", data="d", out="o", temperature=None).logit_scale is None
