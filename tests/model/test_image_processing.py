"""Tests for model.image_processing: counts and layouts pinned to the reference."""

from __future__ import annotations

import numpy as np
import pytest
import torch
import torch.nn.functional as F
from PIL import Image

from model.image_processing import (
    ImageProcessingConfig,
    ImageTokenIds,
    arange_for_pooling,
    build_overlapping_crops,
    image_tokens_for_grids,
    num_image_tokens,
    patchify,
    preprocess_images,
    select_tiling,
    siglip_resize,
)

TOKENS = ImageTokenIds(start=101, end=102, patch=103, col=104)
CONFIG = ImageProcessingConfig()


def _random_image(height: int, width: int, seed: int = 0) -> np.ndarray:
    return np.random.default_rng(seed).integers(0, 256, (height, width, 3), dtype=np.uint8)


def _count(tokens: np.ndarray, token_id: int) -> int:
    return int(np.sum(tokens == token_id))


# ---------------------------------------------------------------- token counts


@pytest.mark.parametrize("height,width", [(256, 256), (240, 320)])
def test_small_images_give_two_views_and_424_tokens(height: int, width: int) -> None:
    out = preprocess_images([_random_image(height, width)], CONFIG, TOKENS)
    tokens = out.image_token_ids[0]
    assert out.crops.shape == (2, 729, 588)
    assert out.image_grids == [[(14, 14), (14, 14)]]
    assert len(tokens) == 424
    assert _count(tokens, TOKENS.patch) == 392
    assert _count(tokens, TOKENS.col) == 28
    assert _count(tokens, TOKENS.start) == 2
    assert _count(tokens, TOKENS.end) == 2


def test_640x480_gives_five_views_and_766_tokens() -> None:
    out = preprocess_images([_random_image(480, 640)], CONFIG, TOKENS)
    tokens = out.image_token_ids[0]
    # 212 global (14x14) + 554 high-res (2x2 tiling -> 644x644 -> 46x46 patches -> 23x23 pooled)
    assert out.image_grids == [[(14, 14), (23, 23)]]
    assert out.num_views == [5]
    assert out.crops.shape == (5, 729, 588)
    assert len(tokens) == 766 == num_image_tokens(out.image_grids[0])
    assert _count(tokens, TOKENS.patch) == 14 * 14 + 23 * 23
    assert _count(tokens, TOKENS.col) == 14 + 23


def test_token_layout_rows_end_with_col() -> None:
    tokens = image_tokens_for_grids([(2, 3)], TOKENS)
    p, c = TOKENS.patch, TOKENS.col
    assert tokens.tolist() == [TOKENS.start, p, p, p, c, p, p, p, c, TOKENS.end]


@pytest.mark.parametrize("height,width", [(256, 256), (480, 640), (300, 1000)])
def test_every_patch_token_has_a_pooling_row(height: int, width: int) -> None:
    out = preprocess_images([_random_image(height, width)], CONFIG, TOKENS)
    idx = out.pooled_patches_idx
    assert idx.dtype == np.int64 and idx.shape[1] == 4
    assert idx.shape[0] == _count(out.image_token_ids[0], TOKENS.patch)
    # Every pooled row pools at least one real patch.
    assert np.all((idx >= 0).any(axis=1))
    assert idx.max() < out.crops.shape[0] * 729
    # Every patch of the global view and each high-res patch is pooled once at most.
    valid = idx[idx >= 0]
    assert len(np.unique(valid)) == len(valid)


def test_global_pooling_rows_pad_last_row_and_column() -> None:
    out = preprocess_images([_random_image(256, 256)], CONFIG, TOKENS)
    global_idx = out.pooled_patches_idx[:196]
    assert global_idx[0].tolist() == [0, 1, 27, 28]
    # Cell (0, 13) covers column 26 and the padded column 27.
    assert global_idx[13].tolist() == [26, -1, 53, -1]
    # Cell (13, 13): only patch (26, 26) is real.
    assert global_idx[195].tolist() == [728, -1, -1, -1]
    # The high-res crop (crop 1) is offset by one crop's 729 patches.
    assert out.pooled_patches_idx[196].tolist() == [729, 730, 756, 757]


# ----------------------------------------------------------------- crops/views


def test_1x1_tiling_crop_equals_global_view() -> None:
    out = preprocess_images([_random_image(200, 300, seed=3)], CONFIG, TOKENS)
    assert out.crops.shape[0] == 2
    np.testing.assert_array_equal(out.crops[0], out.crops[1])


def test_overlapping_crops_cover_resized_image_once() -> None:
    result = build_overlapping_crops(_random_image(480, 640), CONFIG, max_crops=8)
    assert result.tiling == (2, 2)
    assert result.crops.shape == (4, 378, 378, 3)
    assert result.patch_idx.shape == (46, 46)
    assert len(np.unique(result.patch_idx)) == 46 * 46
    # Top-left corner comes from crop 0, bottom-right from crop 3's last patch.
    assert result.patch_idx[0, 0] == 0
    assert result.patch_idx[-1, -1] == 3 * 729 + 728
    # Crop 0 owns rows/cols 0..22 (27 minus the 4-patch right margin).
    assert result.patch_idx[22, 22] == 22 * 27 + 22
    assert result.patch_idx[23, 23] == 3 * 729 + 4 * 27 + 4


def test_patch_layout() -> None:
    rng = np.random.default_rng(1)
    crops = rng.standard_normal((2, 378, 378, 3)).astype(np.float32)
    patches = patchify(crops, 14)
    assert patches.shape == (2, 729, 588)
    for y, x, c in [(0, 0, 0), (13, 13, 2), (14, 0, 1), (100, 250, 2), (377, 377, 0)]:
        patch = (y // 14) * 27 + x // 14
        offset = ((y % 14) * 14 + (x % 14)) * 3 + c
        assert patches[1, patch, offset] == crops[1, y, x, c]


# ------------------------------------------------------------- normalisation


@pytest.mark.parametrize("value,expected", [(255, 1.0), (0, -1.0)])
def test_constant_image_normalises_exactly(value: int, expected: float) -> None:
    image = np.full((90, 120, 3), value, dtype=np.uint8)
    out = preprocess_images([image], CONFIG, TOKENS)
    assert out.crops.dtype == np.float32
    assert np.all(out.crops == np.float32(expected))
    assert np.all(out.image_masks == 1.0)


def test_normalised_range() -> None:
    out = preprocess_images([_random_image(480, 640)], CONFIG, TOKENS)
    assert out.crops.min() >= -1.0 and out.crops.max() <= 1.0
    assert out.crops.min() < -0.9 and out.crops.max() > 0.9


def test_siglip_resize_matches_direct_computation() -> None:
    image = _random_image(23, 31, seed=7)
    ours = siglip_resize(image, (17, 40))
    tensor = torch.from_numpy(image).permute(2, 0, 1)[None].float()
    direct = F.interpolate(tensor, size=(17, 40), mode="bilinear",
                           align_corners=False, antialias=False)
    direct = direct.round().clamp(0, 255).to(torch.uint8).float() / 255.0
    expected = direct[0].permute(1, 2, 0).numpy()
    assert ours.shape == (17, 40, 3) and ours.dtype == np.float32
    np.testing.assert_array_equal(ours, expected)


def test_resize_stretches_without_padding() -> None:
    # A wide image whose left half is black and right half white: when stretched,
    # the 378x378 output keeps the split at the middle, with no pad rows.
    image = np.zeros((50, 200, 3), dtype=np.uint8)
    image[:, 100:] = 255
    resized = siglip_resize(image, (378, 378))
    assert np.all(resized[:, :180] == 0.0) and np.all(resized[:, 200:] == 1.0)


# -------------------------------------------------------------- select_tiling


def test_select_tiling_hand_worked_cases() -> None:
    # 256x256 image minus 112 margin px -> 144x144. Tiling (1,1): 266/144 = 1.85 >= 1,
    # the smallest upscale -> (1,1).
    assert select_tiling(144, 144, 266, 8) == (1, 1)
    # 480x640 -> 368x528. (1,1): min(266/368, 266/528) = 0.50; (2,2): min(532/368,
    # 532/528) = 1.0076 is the smallest scale >= 1; (3,2) also gives 1.0076 but sorts
    # after (2,2) (area 6 > 4) -> (2,2).
    assert select_tiling(368, 528, 266, 8) == (2, 2)
    # 300x300: (1,1)..(1,4) need 266/300 = 0.887 < 1; (2,2) needs 532/300 = 1.77,
    # ties with (2,3), (2,4), ... which sort later -> (2,2).
    assert select_tiling(300, 300, 266, 8) == (2, 2)
    # 200x2000: only (1,8) reaches >= 1 on both axes: min(266/200, 2128/2000) = 1.064.
    assert select_tiling(200, 2000, 266, 8) == (1, 8)
    # With max 4 crops that tiling is unavailable; all scales < 1, so least downscale:
    # (1,4): min(1.33, 1064/2000) = 0.532 is the maximum -> (1,4).
    assert select_tiling(200, 2000, 266, 4) == (1, 4)
    # 3000x3000: everything downscales; best min(i,j)*266/3000 is 532/3000 = 0.177 for
    # (2,2), (2,3), (3,2), (2,4), (4,2); (2,2) comes first (area 4) -> (2,2).
    assert select_tiling(3000, 3000, 266, 8) == (2, 2)
    # Zero height -> inf scale on that axis, width decides: 266/100 = 2.66 for (1,1)
    # ties with (2,1), (3,1), ... -> the first, (1,1).
    assert select_tiling(0, 100, 266, 8) == (1, 1)


# ------------------------------------------------------------------ multi-image


def test_multi_image_offset_quirk() -> None:
    images = [_random_image(256, 256, seed=1), _random_image(256, 256, seed=2)]
    out = preprocess_images(images, CONFIG, TOKENS)
    single = preprocess_images([images[1]], CONFIG, TOKENS).pooled_patches_idx
    assert out.num_images == 2
    assert out.crops.shape == (4, 729, 588)
    first, second = out.pooled_patches_idx[:392], out.pooled_patches_idx[392:]
    assert second.shape == single.shape
    # All entries, including the -1 padding, are shifted by image 1's 2 * 729 patches.
    np.testing.assert_array_equal(second, single + 1458)
    assert np.all(second[single == -1] == 1457)
    assert np.sum(second == 1457) > 0
    assert -1 in first and -1 not in second


def test_multi_image_uses_max_multi_image_crops() -> None:
    images = [_random_image(480, 640, seed=1), _random_image(480, 640, seed=2)]
    out = preprocess_images(images, CONFIG, TOKENS)
    assert all(views - 1 <= CONFIG.max_multi_image_crops for views in out.num_views)
    assert sum(out.num_views) == out.crops.shape[0]
    total_patch_tokens = sum(_count(t, TOKENS.patch) for t in out.image_token_ids)
    assert out.pooled_patches_idx.shape[0] == total_patch_tokens

    tall = _random_image(2000, 300, seed=3)
    assert preprocess_images([tall], CONFIG, TOKENS).num_views == [9]   # 8 crops alone
    pair = preprocess_images([tall, tall], CONFIG, TOKENS)
    assert pair.num_views == [5, 5]                                     # 4 crops each


# ------------------------------------------------------------- inputs, config


@pytest.mark.parametrize("image", [
    np.zeros((64, 64, 3), dtype=np.float32),
    np.zeros((64, 64), dtype=np.uint8),
    np.zeros((64, 64, 4), dtype=np.uint8),
    np.zeros((0, 64, 3), dtype=np.uint8),
])
def test_bad_inputs_raise_value_error(image: np.ndarray) -> None:
    with pytest.raises(ValueError):
        preprocess_images([image], CONFIG, TOKENS)


def test_empty_and_bare_inputs_raise_value_error() -> None:
    with pytest.raises(ValueError):
        preprocess_images([], CONFIG, TOKENS)
    with pytest.raises(ValueError):
        preprocess_images(_random_image(8, 8), CONFIG, TOKENS)  # type: ignore[arg-type]


def test_pil_input_matches_numpy() -> None:
    image = _random_image(120, 160, seed=5)
    rgba = Image.fromarray(image).convert("RGBA")
    from_pil = preprocess_images([rgba], CONFIG, TOKENS)
    from_np = preprocess_images([image], CONFIG, TOKENS)
    np.testing.assert_array_equal(from_pil.crops, from_np.crops)


def test_arange_for_pooling_pads_after_for_odd_sizes() -> None:
    grid = np.arange(9).reshape(3, 3)
    cells = arange_for_pooling(grid, 2, 2)
    assert cells.shape == (2, 2, 4)
    assert cells[0, 0].tolist() == [0, 1, 3, 4]
    assert cells[1, 1].tolist() == [8, -1, -1, -1]


def test_config_from_preprocessor_config() -> None:
    config = ImageProcessingConfig.from_preprocessor_config({
        "image_processor_type": "MolmoActImageProcessor",
        "crop_mode": "overlap-and-resize-c2", "resize_mode": "siglip",
        "normalize_mode": "siglip", "max_crops": 6, "max_multi_image_crops": 3,
        "overlap_margins": [4, 4], "base_image_input_size": [378, 378],
        "image_patch_size": 14, "image_pooling_w": 2, "image_pooling_h": 2,
        "pad_value": 0.0,
    })
    assert config.max_crops == 6 and config.max_multi_image_crops == 3
    assert config.overlap_margins == (4, 4) and config.base_image_input_size == (378, 378)
    assert config.patches_per_crop == 729 and config.patch_dim == 588


@pytest.mark.parametrize("key,mode", [("crop_mode", "pan-and-scan"),
                                      ("resize_mode", "metaclip"),
                                      ("normalize_mode", "openai")])
def test_unknown_modes_raise_not_implemented(key: str, mode: str) -> None:
    with pytest.raises(NotImplementedError, match=mode):
        ImageProcessingConfig.from_preprocessor_config({key: mode})


def test_resize_crop_mode_gives_global_view_only() -> None:
    config = ImageProcessingConfig(crop_mode="resize")
    out = preprocess_images([_random_image(480, 640)], config, TOKENS)
    assert out.crops.shape == (1, 729, 588)
    assert out.image_grids == [[(14, 14)]]
    assert len(out.image_token_ids[0]) == 212
