import numpy as np
import pytest
import torch

from lisa_model.processing.image import (
    CLIP_MEAN,
    CLIP_STD,
    postprocess_masks,
    preprocess_clip,
    preprocess_sam,
    sam_resized_shape,
    validate_rgb_image,
)


def _random_image(h, w, seed=0):
    return np.random.default_rng(seed).integers(0, 256, (h, w, 3), dtype=np.uint8)


# ---------------------------------------------------------------- validation


@pytest.mark.parametrize(
    "bad, message",
    [
        ([[[0, 0, 0]]], "image must be a numpy array, got list"),
        (np.zeros((4, 5, 3), np.float32), "image must be uint8, got float32"),
        (np.zeros((4, 5), np.uint8), r"image must be HxWx3 RGB, got shape \(4, 5\)"),
        (np.zeros((4, 5, 4), np.uint8), r"image must be HxWx3 RGB, got shape \(4, 5, 4\)"),
        (np.zeros((0, 5, 3), np.uint8), r"image is empty: shape \(0, 5, 3\)"),
        (np.zeros((5, 0, 3), np.uint8), r"image is empty: shape \(5, 0, 3\)"),
    ],
)
def test_validate_rgb_image_rejects(bad, message):
    with pytest.raises(ValueError, match=message):
        validate_rgb_image(bad)


def test_validate_rgb_image_accepts():
    validate_rgb_image(np.zeros((1, 1, 3), np.uint8))


# ---------------------------------------------------------------- SAM


@pytest.mark.parametrize(
    "hw, expected",
    [
        ((480, 640), (768, 1024)),  # scale 1.6
        ((640, 480), (1024, 768)),
        ((1, 1000), (1, 1024)),  # 1 * 1.024 = 1.024 -> 1
        ((999, 333), (1024, 341)),  # 333 * 1024 / 999 = 341.33
        ((1024, 1024), (1024, 1024)),
        ((7, 5), (1024, 731)),  # 5 * 1024 / 7 = 731.43
        ((2048, 5), (1024, 3)),  # 2.5 -> 3 (Python's round() would give 2)
        ((5, 2048), (3, 1024)),
        ((2048, 1), (1024, 1)),  # 0.5 -> 1 (round() would give 0)
    ],
)
def test_sam_resized_shape(hw, expected):
    assert sam_resized_shape(*hw) == expected


def test_sam_resized_shape_other_long_side():
    assert sam_resized_shape(480, 640, long_side=512) == (384, 512)
    assert sam_resized_shape(6, 3, long_side=5) == (5, 3)  # 2.5 -> 3


@pytest.mark.parametrize("hw", [(480, 640), (640, 480), (1, 1000), (999, 333), (1024, 1024), (7, 5)])
def test_preprocess_sam_shape_and_zero_padding(hw):
    x, (h, w) = preprocess_sam(_random_image(*hw))
    assert (h, w) == sam_resized_shape(*hw)
    assert x.shape == (3, 1024, 1024) and x.dtype == torch.float32
    assert torch.all(x[:, h:, :] == 0)
    assert torch.all(x[:, :, w:] == 0)
    # random content: the image block is not accidentally zero
    assert x[:, :h, :w].abs().sum() > 0


@pytest.mark.parametrize("hw", [(480, 640), (7, 5), (1, 1000)])
def test_preprocess_sam_constant_colour(hw):
    image = np.empty((*hw, 3), np.uint8)
    image[...] = (200, 100, 50)
    x, (h, w) = preprocess_sam(image)
    expected = [
        (200 - 123.675) / 58.395,  # 1.307043...
        (100 - 116.28) / 57.12,  # -0.285014...
        (50 - 103.53) / 57.375,  # -0.932984...
    ]
    for c in range(3):
        assert torch.allclose(x[c, :h, :w], torch.tensor(expected[c]), atol=1e-6)


def test_preprocess_sam_long_side():
    x, size = preprocess_sam(_random_image(480, 640), long_side=512)
    assert x.shape == (3, 512, 512) and size == (384, 512)
    assert torch.all(x[:, 384:] == 0)


# ---------------------------------------------------------------- CLIP


def _reference_clip_processor(size):
    from transformers import CLIPImageProcessorPil

    # Matches openai/clip-vit-large-patch14(-336) preprocessor_config.json.
    return CLIPImageProcessorPil(
        do_resize=True,
        size={"shortest_edge": size},
        resample=3,
        do_center_crop=True,
        crop_size={"height": size, "width": size},
        do_rescale=True,
        rescale_factor=1 / 255,
        do_normalize=True,
        image_mean=list(CLIP_MEAN),
        image_std=list(CLIP_STD),
        do_convert_rgb=True,
    )


@pytest.mark.parametrize("size", [224, 336])
@pytest.mark.parametrize(
    "hw", [(480, 640), (640, 480), (1, 1000), (999, 333), (1024, 1024), (7, 5), (225, 300), (100, 101)]
)
def test_preprocess_clip_matches_transformers(size, hw):
    image = _random_image(*hw, seed=hw[0] * 7 + hw[1])
    # input_data_format is needed: for H in (1, 3, 4) transformers would otherwise
    # guess channels-first.
    reference = _reference_clip_processor(size)(image, return_tensors="pt", input_data_format="channels_last")
    expected = reference["pixel_values"][0]
    out = preprocess_clip(image, size=size)
    assert out.shape == (3, size, size) and out.dtype == torch.float32
    assert torch.allclose(out, expected, atol=1e-6, rtol=0)


def test_preprocess_clip_constant_colour():
    image = np.full((50, 80, 3), 255, np.uint8)
    out = preprocess_clip(image)
    for c in range(3):
        assert torch.allclose(out[c], torch.tensor((1.0 - CLIP_MEAN[c]) / CLIP_STD[c]), atol=1e-6)


# ---------------------------------------------------------------- masks


def test_postprocess_masks_shapes():
    logits = torch.randn(2, 1, 256, 256)
    out = postprocess_masks(logits, (768, 1024), (480, 640))
    assert out.shape == (2, 480, 640) and out.dtype == torch.float32
    out3 = postprocess_masks(logits[:, 0], (768, 1024), (480, 640))
    assert torch.equal(out, out3)


def test_postprocess_masks_bfloat16_input_gives_float32():
    logits = torch.randn(1, 1, 256, 256).bfloat16()
    assert postprocess_masks(logits, (1024, 731), (7, 5)).dtype == torch.float32


def test_postprocess_masks_constant_stays_constant():
    logits = torch.full((3, 1, 256, 256), 2.5)
    out = postprocess_masks(logits, (1024, 341), (999, 333))
    assert torch.allclose(out, torch.full_like(out, 2.5), atol=1e-6)


def test_postprocess_masks_left_half():
    # Positive in low-res columns 0..127: the 1024 upsample changes sign between
    # columns 511 and 512; the crop keeps all 1024 columns (input 768x1024), so
    # the 640-wide output splits at 512 * 640 / 1024 = 320.
    logits = torch.full((1, 1, 256, 256), -1.0)
    logits[..., :128] = 1.0
    mask = postprocess_masks(logits, (768, 1024), (480, 640))[0] > 0
    first_negative = mask.float().argmin(dim=1)  # first False in each row
    assert torch.all(mask[:, :319]) and not torch.any(mask[:, 321:])
    assert torch.all((first_negative - 320).abs() <= 1)
    assert torch.all(first_negative == first_negative[0])  # same boundary in every row


def test_postprocess_masks_crop_is_applied():
    # Positive in low-res rows 0..63 = top 256 rows of the 1024 input. With the
    # resized image only 512 rows tall, those are its top half, so the output
    # (300 x 600) should be positive in rows < 150 only.
    logits = torch.full((1, 256, 256), -1.0)
    logits[:, :64, :] = 1.0
    mask = postprocess_masks(logits, (512, 1024), (300, 600))[0] > 0
    assert torch.all(mask[:149]) and not torch.any(mask[151:])
    boundary = int(mask[:, 0].float().argmin())
    assert abs(boundary - 150) <= 1


def test_postprocess_masks_bad_shape():
    with pytest.raises(ValueError):
        postprocess_masks(torch.zeros(1, 2, 256, 256), (1024, 1024), (10, 10))
