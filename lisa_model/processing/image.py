"""Image pre/post-processing for LISA: SAM and CLIP inputs, SAM mask outputs.

Conventions used throughout: images are numpy uint8 arrays of shape (H, W, 3) in
RGB order, indexed [row, column, channel] with (0, 0) at the top-left corner.
Sizes are always given as (height, width); PIL's (width, height) order only
appears at the PIL call sites.
"""

from __future__ import annotations

import numpy as np
import torch
import torch.nn.functional as F
from PIL import Image

SAM_PIXEL_MEAN = (123.675, 116.28, 103.53)
SAM_PIXEL_STD = (58.395, 57.12, 57.375)
CLIP_MEAN = (0.48145466, 0.4578275, 0.40821073)
CLIP_STD = (0.26862954, 0.26130258, 0.27577711)


# Images are refused above these, before any resizing: CLIP scales the short side up to
# 224, so a 1x30000 strip would become 224x6720000 (+3.6 GB). Callers may pass other
# limits; LisaPredictor uses these (None: these; set them to change its limits).
MAX_IMAGE_PIXELS = 50_000_000
MAX_IMAGE_ASPECT_RATIO = 20.0


def validate_rgb_image(image, max_pixels: int | None = None, max_aspect_ratio: float | None = None) -> None:
    """Raise ValueError unless `image` is a non-empty uint8 numpy array of shape (H, W, 3)
    within the size limits.

    Values are expected in [0, 255], RGB channel order, (row, column) indexing.

    Arguments:
        image (ndarray uint8 [H,W,3]): the image to check; nothing is allocated.
        max_pixels (int | None): most H*W accepted; None: MAX_IMAGE_PIXELS.
        max_aspect_ratio (float | None): most max(H,W)/min(H,W) accepted; None:
            MAX_IMAGE_ASPECT_RATIO.
    """
    _check_rgb_array(image)
    height, width = image.shape[:2]
    max_pixels = MAX_IMAGE_PIXELS if max_pixels is None else max_pixels
    max_aspect_ratio = MAX_IMAGE_ASPECT_RATIO if max_aspect_ratio is None else max_aspect_ratio
    if height * width > max_pixels:
        raise ValueError(f"image is too large: {height}x{width} is {height * width} pixels, at most {max_pixels}")
    if max(height, width) / min(height, width) > max_aspect_ratio:
        raise ValueError(
            f"image is too elongated: {height}x{width} has aspect ratio "
            f"{max(height, width) / min(height, width):.1f}, at most {max_aspect_ratio:g}"
        )


def _check_rgb_array(image) -> None:
    # The array checks alone: the preprocessing functions reproduce the reference at any
    # size; the size limits belong at the door (validate_rgb_image).
    if not isinstance(image, np.ndarray):
        raise ValueError(f"image must be a numpy array, got {type(image).__name__}")
    if image.dtype != np.uint8:
        raise ValueError(f"image must be uint8, got {image.dtype}")
    if image.ndim != 3 or image.shape[2] != 3:
        raise ValueError(f"image must be HxWx3 RGB, got shape {image.shape}")
    if image.shape[0] == 0 or image.shape[1] == 0:
        raise ValueError(f"image is empty: shape {image.shape}")


def sam_resized_shape(height: int, width: int, long_side: int = 1024) -> tuple[int, int]:
    """Return the (height, width) an image is resized to before SAM padding.

    The longer side becomes `long_side`; the other keeps the aspect ratio and is
    rounded half up, exactly as segment-anything's
    ResizeLongestSide.get_preprocess_shape (scale first, then side * scale).
    """
    scale = long_side * 1.0 / max(height, width)
    new_h = int(height * scale + 0.5)
    new_w = int(width * scale + 0.5)
    # The reference would produce 0 for extremely thin images and then crash in
    # the resize; keep at least one pixel instead.
    return max(new_h, 1), max(new_w, 1)


def preprocess_sam(image: np.ndarray, long_side: int = 1024) -> tuple[torch.Tensor, tuple[int, int]]:
    """Prepare an RGB image for the SAM image encoder.

    Args:
        image: uint8 array (H, W, 3), RGB, values 0..255.
        long_side: side of the square SAM input (1024 for SAM ViT-H).

    Returns:
        pixels: float32 tensor (3, long_side, long_side), channel-first. The
            resized image occupies the top-left (h, w) block and holds
            (pixel - SAM_PIXEL_MEAN) / SAM_PIXEL_STD with pixels in 0..255
            (roughly -2.1..2.7); the bottom/right padding is exactly 0.
        resized_size: (h, w) of the resized image before padding; this is the
            `input_size` that postprocess_masks needs.
    """
    _check_rgb_array(image)
    new_h, new_w = sam_resized_shape(image.shape[0], image.shape[1], long_side)
    resized = np.asarray(Image.fromarray(image).resize((new_w, new_h), Image.BILINEAR))
    x = torch.from_numpy(resized.copy()).permute(2, 0, 1).float()
    mean = torch.tensor(SAM_PIXEL_MEAN, dtype=torch.float32).view(3, 1, 1)
    std = torch.tensor(SAM_PIXEL_STD, dtype=torch.float32).view(3, 1, 1)
    x = (x - mean) / std
    # Padding happens after normalisation, so padded pixels are 0, not -mean/std.
    x = F.pad(x, (0, long_side - new_w, 0, long_side - new_h))
    return x, (new_h, new_w)


def _clip_resized_shape(height: int, width: int, size: int) -> tuple[int, int]:
    # transformers' get_resize_output_image_size(default_to_square=False):
    # the long side is truncated, not rounded.
    if width <= height:
        return int(size * height / width), size
    return size, int(size * width / height)


def preprocess_clip(
    image: np.ndarray,
    size: int = 224,
    mean: tuple[float, float, float] = CLIP_MEAN,
    std: tuple[float, float, float] = CLIP_STD,
) -> torch.Tensor:
    """Prepare an RGB image for the CLIP vision tower, like CLIPImageProcessor (PIL backend).

    Steps: bicubic resize so the shortest side equals `size`, centre crop to
    size x size, multiply by 1/255, normalise with `mean`/`std`.

    Args:
        image: uint8 array (H, W, 3), RGB, values 0..255.
        size: output side (224 for ViT-L/14, 336 for ViT-L/14-336).

    Returns:
        float32 tensor (3, size, size), channel-first, roughly in -1.8..2.2.
    """
    _check_rgb_array(image)
    new_h, new_w = _clip_resized_shape(image.shape[0], image.shape[1], size)
    resized = np.asarray(Image.fromarray(image).resize((new_w, new_h), Image.BICUBIC))
    # Floor division for the offset, like transformers' center_crop; the
    # resized image is never smaller than the crop, so no padding branch.
    top = (new_h - size) // 2
    left = (new_w - size) // 2
    crop = resized[top : top + size, left : left + size]
    # Same arithmetic as transformers (float64 rescale, float32 normalise) so
    # results agree bit for bit.
    x = (crop.astype(np.float64) * (1 / 255)).astype(np.float32)
    x = (x - np.array(mean, dtype=np.float32)) / np.array(std, dtype=np.float32)
    return torch.from_numpy(np.ascontiguousarray(x.transpose(2, 0, 1)))


def postprocess_masks(
    low_res_logits: torch.Tensor,
    input_size: tuple[int, int],
    original_size: tuple[int, int],
    sam_size: int = 1024,
) -> torch.Tensor:
    """Map SAM low-resolution mask logits back to the original image.

    Args:
        low_res_logits: (N, 1, h, w) or (N, h, w) logits over the padded
            sam_size x sam_size input (h = w = 256 for SAM).
        input_size: (h, w) of the resized image inside the padded input, as
            returned by preprocess_sam.
        original_size: (H, W) of the original image.
        sam_size: side of the padded SAM input.

    Returns:
        float32 logits (N, H, W) aligned with the original image; callers
        threshold with `> 0` to get boolean masks.
    """
    x = low_res_logits.float()
    if x.ndim == 3:
        x = x.unsqueeze(1)
    if x.ndim != 4 or x.shape[1] != 1:
        raise ValueError(f"low_res_logits must be (N, 1, h, w) or (N, h, w), got {tuple(low_res_logits.shape)}")
    x = F.interpolate(x, (sam_size, sam_size), mode="bilinear", align_corners=False)
    x = x[..., : input_size[0], : input_size[1]]
    x = F.interpolate(x, tuple(original_size), mode="bilinear", align_corners=False)
    return x[:, 0]
