import numpy as np
import pytest
from PIL import Image

from lisa_model.visualize import PALETTE, mask_outline, overlay_masks, save_png


def _image(h=20, w=30):
    return np.random.default_rng(0).integers(0, 256, (h, w, 3), dtype=np.uint8)


def _box_mask(h, w, top, left, bottom, right):
    m = np.zeros((h, w), bool)
    m[top:bottom, left:right] = True
    return m


def test_overlay_unmasked_unchanged_and_masked_changed():
    image = _image()
    masks = np.stack([_box_mask(20, 30, 2, 2, 8, 10), _box_mask(20, 30, 10, 15, 18, 28)])
    out = overlay_masks(image, masks)
    assert out.shape == image.shape and out.dtype == np.uint8
    outside = ~masks.any(axis=0)
    assert np.array_equal(out[outside], image[outside])
    assert np.any(out[masks[0]] != image[masks[0]], axis=-1).all()
    assert np.any(out[masks[1]] != image[masks[1]], axis=-1).all()
    # the input is not modified in place
    assert np.array_equal(image, _image())


def test_overlay_interior_is_blended():
    image = np.full((10, 10, 3), 100, np.uint8)
    masks = _box_mask(10, 10, 2, 2, 8, 8)[None]
    out = overlay_masks(image, masks, alpha=0.5, colors=[(200, 0, 50)])
    assert tuple(out[5, 5]) == (150, 50, 75)


def test_outline_pixels_have_mask_colour():
    image = _image()
    masks = np.stack([_box_mask(20, 30, 2, 2, 8, 10), _box_mask(20, 30, 10, 15, 20, 30)])
    out = overlay_masks(image, masks)
    for i, mask in enumerate(masks):
        outline = mask_outline(mask)
        assert outline.any()
        assert np.all(out[outline] == PALETTE[i])
    # a 6x8 box has a 1-pixel ring outline; the box touching the border is outlined there too
    assert mask_outline(masks[0]).sum() == 2 * 8 + 2 * 4
    assert mask_outline(masks[1])[19, 20]


def test_colours_cycle_and_are_distinct():
    assert len(set(PALETTE)) == len(PALETTE) >= 10
    n = len(PALETTE) + 1
    masks = np.zeros((n, n, n), bool)
    for i in range(n):
        masks[i, i, i] = True  # single pixels are all outline
    out = overlay_masks(np.zeros((n, n, 3), np.uint8), masks)
    assert tuple(out[n - 1, n - 1]) == PALETTE[0]


@pytest.mark.parametrize(
    "masks",
    [
        np.zeros((1, 19, 30), bool),
        np.zeros((1, 20, 31), bool),
        np.zeros((20, 30), bool),
        np.zeros((1, 20, 30), np.float32),
    ],
)
def test_overlay_rejects_bad_masks(masks):
    with pytest.raises(ValueError):
        overlay_masks(_image(), masks)


def test_overlay_rejects_bad_image_and_alpha():
    with pytest.raises(ValueError):
        overlay_masks(np.zeros((20, 30), np.uint8), np.zeros((1, 20, 30), bool))
    with pytest.raises(ValueError):
        overlay_masks(_image(), np.zeros((1, 20, 30), bool), alpha=1.5)


def test_save_png_roundtrip(tmp_path):
    image = _image()
    path = tmp_path / "a" / "b" / "out.png"
    save_png(path, image)
    with Image.open(path) as reloaded:
        assert reloaded.format == "PNG"
        assert np.array_equal(np.asarray(reloaded.convert("RGB")), image)
