"""Camera images -> MolmoAct vision-tower inputs.

This reproduces the reference MolmoAct image processor
(allenai/molmoact, ``image_processing_molmoact.py``) bit for bit for the
modes the released checkpoints use (``overlap-and-resize-c2`` cropping with
SigLIP resizing and normalisation), without depending on transformers,
torchvision or einops.  The checkpoints were trained on exactly these
tensors, so small deviations (a different resize kernel, another rounding,
a different index layout) silently degrade the policy.

Pipeline for one image:

1. a *global view*: the whole image stretched to the base input size;
2. *high-res crops*: the image stretched to a tiling of overlapping
   windows and cut into base-size crops;
3. every view is cut into ``patch x patch`` pixel patches (``patchify``);
4. ``pooled_patches_idx`` says, for every ``<im_patch>`` token, which
   (up to 2x2) patches the model pools into it (-1 = nothing);
5. the image's token ids: per view a grid of ``<im_patch>`` tokens with an
   ``<im_col>`` token ending every row, between ``<im_start>``/``<im_end>``.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any, Mapping, Sequence, Union

import numpy as np
import torch
import torch.nn.functional as F
from PIL import Image

ImageLike = Union[np.ndarray, Image.Image]

SUPPORTED_CROP_MODES = ("overlap-and-resize-c2", "overlap-and-resize", "resize")
SUPPORTED_RESIZE_MODES = ("siglip",)
SUPPORTED_NORMALIZE_MODES = ("siglip",)

# Value the reference uses in the required-scale table to rule out tilings
# that would need downscaling (``10e9`` there).
_RULED_OUT_SCALE = np.float32(1e10)


# --------------------------------------------------------------------------
# Configuration and result types
# --------------------------------------------------------------------------


def _pair(value: Any, name: str) -> tuple[int, int]:
    """Accept an int or a 1/2-element sequence, like the reference does."""
    if isinstance(value, (int, np.integer)):
        return int(value), int(value)
    values = [int(v) for v in value]
    if len(values) == 1:
        return values[0], values[0]
    if len(values) != 2:
        raise ValueError(f"{name} must have 1 or 2 entries, got {value!r}")
    return values[0], values[1]


@dataclass(frozen=True)
class ImageProcessingConfig:
    """Preprocessing settings; defaults are those of the MolmoAct checkpoints."""

    crop_mode: str = "overlap-and-resize-c2"
    resize_mode: str = "siglip"
    normalize_mode: str = "siglip"
    max_crops: int = 8
    max_multi_image_crops: int = 4
    overlap_margins: tuple[int, int] = (4, 4)
    base_image_input_size: tuple[int, int] = (378, 378)
    image_patch_size: int = 14
    image_pooling_w: int = 2
    image_pooling_h: int = 2

    def __post_init__(self) -> None:
        # Fail at load time, not in the middle of an episode.
        if self.crop_mode not in SUPPORTED_CROP_MODES:
            raise NotImplementedError(
                f"crop_mode {self.crop_mode!r} is not supported "
                f"(supported: {', '.join(SUPPORTED_CROP_MODES)})")
        if self.resize_mode not in SUPPORTED_RESIZE_MODES:
            raise NotImplementedError(
                f"resize_mode {self.resize_mode!r} is not supported "
                f"(supported: {', '.join(SUPPORTED_RESIZE_MODES)})")
        if self.normalize_mode not in SUPPORTED_NORMALIZE_MODES:
            raise NotImplementedError(
                f"normalize_mode {self.normalize_mode!r} is not supported "
                f"(supported: {', '.join(SUPPORTED_NORMALIZE_MODES)})")
        object.__setattr__(self, "overlap_margins",
                           _pair(self.overlap_margins, "overlap_margins"))
        object.__setattr__(self, "base_image_input_size",
                           _pair(self.base_image_input_size, "base_image_input_size"))
        self._validate_sizes()

    def _validate_sizes(self) -> None:
        for name in ("max_crops", "max_multi_image_crops", "image_patch_size",
                     "image_pooling_w", "image_pooling_h"):
            if int(getattr(self, name)) < 1:
                raise ValueError(f"{name} must be >= 1, got {getattr(self, name)}")
        height, width = self.base_image_input_size
        if height != width:
            raise ValueError(f"base_image_input_size must be square, got {(height, width)}")
        if height % self.image_patch_size:
            raise ValueError(
                f"base_image_input_size {height} is not a multiple of "
                f"image_patch_size {self.image_patch_size}")
        if min(self.overlap_margins) < 0 or sum(self.overlap_margins) >= self.crop_patches:
            raise ValueError(f"overlap_margins {self.overlap_margins} do not fit in a crop "
                             f"of {self.crop_patches} patches")

    @property
    def crop_patches(self) -> int:
        """Patches along one side of a crop (27 for 378 / 14)."""
        return self.base_image_input_size[0] // self.image_patch_size

    @property
    def patches_per_crop(self) -> int:
        return self.crop_patches * self.crop_patches

    @property
    def patch_dim(self) -> int:
        """Values per patch: patch * patch * RGB (588 for 14x14x3)."""
        return self.image_patch_size * self.image_patch_size * 3

    @classmethod
    def from_preprocessor_config(cls, config: Mapping[str, Any]) -> "ImageProcessingConfig":
        """Build from the checkpoint's ``preprocessor_config.json`` contents.

        Keys we do not use (``image_processor_type``, ``pad_value``, ...) are
        ignored; missing keys keep the defaults.
        """
        keys = ("crop_mode", "resize_mode", "normalize_mode", "max_crops",
                "max_multi_image_crops", "overlap_margins", "base_image_input_size",
                "image_patch_size", "image_pooling_w", "image_pooling_h")
        kwargs = {key: config[key] for key in keys if config.get(key) is not None}
        return cls(**kwargs)


@dataclass(frozen=True)
class ImageTokenIds:
    """Ids of the image special tokens, passed in so we need no tokenizer."""

    start: int
    end: int
    patch: int
    col: int


@dataclass
class OverlappingCrops:
    """High-res crops of one image and where each resized-image patch lives."""

    crops: np.ndarray       # float32 [n_crops, S, S, 3], normalised
    patch_idx: np.ndarray   # int [resized_h // patch, resized_w // patch]
    tiling: tuple[int, int]  # (rows, cols)


@dataclass
class ImageViews:
    """Everything the model needs about one image (indices local to it)."""

    crops: np.ndarray               # float32 [n_views, patches_per_crop, patch_dim]
    pooled_patches_idx: np.ndarray  # int64 [n_tokens, pool_h * pool_w]
    grids: list[tuple[int, int]]    # pooled (h, w) per token grid, global first

    @property
    def num_views(self) -> int:
        return int(self.crops.shape[0])

    @property
    def num_patches(self) -> int:
        return int(self.crops.shape[0] * self.crops.shape[1])


@dataclass
class PreprocessedImages:
    """Vision inputs for one example (one or several images)."""

    crops: np.ndarray               # float32 [N, patches_per_crop, patch_dim]
    image_masks: np.ndarray         # float32 [N, patches_per_crop], all ones (no padding)
    pooled_patches_idx: np.ndarray  # int64 [T, pool_h * pool_w]
    image_grids: list[list[tuple[int, int]]]   # per image, pooled grid per view group
    image_token_ids: list[np.ndarray]          # per image, int64 token ids
    num_views: list[int] = field(default_factory=list)  # per image

    @property
    def num_images(self) -> int:
        return len(self.image_token_ids)

    @property
    def image_grids_array(self) -> np.ndarray:
        """All grids stacked [sum_k, 2], the layout the reference returns."""
        rows = [grid for grids in self.image_grids for grid in grids]
        return np.asarray(rows, dtype=np.int64).reshape(-1, 2)


# --------------------------------------------------------------------------
# Input handling, resizing, normalisation
# --------------------------------------------------------------------------


def to_rgb_uint8(image: ImageLike) -> np.ndarray:
    """Validate and convert an input to HxWx3 uint8 RGB."""
    if isinstance(image, Image.Image):
        image = np.asarray(image.convert("RGB"))
    if not isinstance(image, np.ndarray):
        raise ValueError(f"expected a numpy array or PIL image, got {type(image).__name__}")
    if image.dtype != np.uint8:
        raise ValueError(f"expected a uint8 image, got dtype {image.dtype}")
    if image.ndim != 3 or image.shape[2] != 3:
        raise ValueError(f"expected an HxWx3 RGB image, got shape {image.shape}")
    if image.shape[0] < 1 or image.shape[1] < 1:
        raise ValueError(f"image is empty, shape {image.shape}")
    return image


def siglip_resize(image: np.ndarray, size: tuple[int, int]) -> np.ndarray:
    """Stretch a uint8 image to ``size`` (h, w); return float32 in [0, 1].

    Matches torchvision's ``Resize(BILINEAR, antialias=False)`` on a uint8
    tensor: bilinear in float32, round back to uint8, then scale to [0, 1].
    The aspect ratio is not preserved (SigLIP stretches).
    """
    height, width = int(size[0]), int(size[1])
    # A float32 copy: exact for uint8 values, and writable (PIL arrays are not).
    tensor = torch.from_numpy(np.array(image, dtype=np.float32)).permute(2, 0, 1)[None]
    resized = F.interpolate(tensor, size=(height, width),
                            mode="bilinear", align_corners=False, antialias=False)
    resized = torch.clip(torch.round(resized), 0, 255).to(torch.uint8)
    scaled = resized.to(torch.float32) / 255.0
    return scaled[0].permute(1, 2, 0).contiguous().numpy()


def siglip_normalize(image: np.ndarray) -> np.ndarray:
    """Map [0, 1] to [-1, 1] (SigLIP's mean = std = 0.5)."""
    return image * np.float32(2.0) - np.float32(1.0)


def resize_and_normalize(image: np.ndarray, size: tuple[int, int],
                         config: ImageProcessingConfig) -> np.ndarray:
    """Resize + normalise with the configured modes (only SigLIP for now)."""
    if config.resize_mode != "siglip" or config.normalize_mode != "siglip":
        raise NotImplementedError(f"{config.resize_mode}/{config.normalize_mode}")
    return siglip_normalize(siglip_resize(image, size))


# --------------------------------------------------------------------------
# Tiling and crops
# --------------------------------------------------------------------------


def candidate_tilings(max_crops: int) -> np.ndarray:
    """All (rows, cols) with rows * cols <= max_crops, smallest first.

    Sorting by (area, rows) makes argmin/argmax prefer small tilings on ties.
    """
    tilings = [(i, j) for i in range(1, max_crops + 1)
               for j in range(1, max_crops + 1) if i * j <= max_crops]
    tilings.sort(key=lambda t: (t[0] * t[1], t[0]))
    return np.asarray(tilings, dtype=np.int32)


def select_tiling(height: int, width: int, window: int, max_crops: int) -> tuple[int, int]:
    """Pick the (rows, cols) tiling of ``window``-sized tiles for an image.

    Prefers the tiling that needs the least upscaling; if every tiling needs
    downscaling, the one that needs the least.  Computed in float32 like
    the training code; a zero side gives an infinite scale so the other
    side decides (negative sides, images smaller than the margins, fall
    through the same arithmetic as in the reference).
    """
    tilings = candidate_tilings(max_crops)
    resolutions = (tilings * window).astype(np.float32)
    original = np.array([height, width], dtype=np.float32)
    with np.errstate(divide="ignore", invalid="ignore"):
        required_scale = np.min(resolutions / original, axis=-1)
    if np.all(required_scale < 1):
        index = int(np.argmax(required_scale))
    else:
        required_scale = np.where(required_scale < 1.0, _RULED_OUT_SCALE, required_scale)
        index = int(np.argmin(required_scale))
    return int(tilings[index][0]), int(tilings[index][1])


def _crop_patch_index(crop_index: int, row: int, col: int, tiling: tuple[int, int],
                      config: ImageProcessingConfig) -> np.ndarray:
    """Patch ids of one crop, with its overlap margins masked to -1.

    Each margin is owned by the neighbouring crop, so every patch of the
    resized image is claimed by exactly one crop.
    """
    n = config.crop_patches
    left, right = config.overlap_margins
    idx = np.arange(n * n, dtype=np.int64).reshape(n, n) + crop_index * n * n
    if row != 0:
        idx[:left, :] = -1
    if col != 0:
        idx[:, :left] = -1
    if row != tiling[0] - 1 and right > 0:
        idx[-right:, :] = -1
    if col != tiling[1] - 1 and right > 0:
        idx[:, -right:] = -1
    return idx


def build_overlapping_crops(image: np.ndarray, config: ImageProcessingConfig,
                            max_crops: int) -> OverlappingCrops:
    """Cut the image into overlapping base-size crops.

    The tiling is chosen as if the image had no margins and tiles were the
    margin-free window, so that margins only add context at the borders.
    """
    size = config.base_image_input_size[0]
    patch = config.image_patch_size
    left, right = config.overlap_margins
    margin_pixels = patch * (left + right)
    window = (config.crop_patches - left - right) * patch
    tiling = select_tiling(image.shape[0] - margin_pixels, image.shape[1] - margin_pixels,
                           window, max_crops)
    resized_shape = (tiling[0] * window + margin_pixels, tiling[1] * window + margin_pixels)
    resized = resize_and_normalize(image, resized_shape, config)

    crops, indices = [], []
    for row in range(tiling[0]):
        for col in range(tiling[1]):
            y0, x0 = row * window, col * window
            crops.append(resized[y0:y0 + size, x0:x0 + size])
            indices.append(_crop_patch_index(len(indices), row, col, tiling, config))
    return OverlappingCrops(
        crops=np.stack(crops, 0),
        patch_idx=_assemble_patch_index(np.stack(indices, 0), tiling, resized_shape, config),
        tiling=tiling,
    )


def _assemble_patch_index(crop_indices: np.ndarray, tiling: tuple[int, int],
                          resized_shape: tuple[int, int],
                          config: ImageProcessingConfig) -> np.ndarray:
    """Crop-by-crop patch ids -> one grid in the resized image's layout."""
    n = config.crop_patches
    grid = crop_indices.reshape(tiling[0], tiling[1], n, n).transpose(0, 2, 1, 3).reshape(-1)
    patch = config.image_patch_size
    return grid[grid >= 0].reshape(resized_shape[0] // patch, resized_shape[1] // patch)


# --------------------------------------------------------------------------
# Patches, pooling, tokens
# --------------------------------------------------------------------------


def patchify(images: np.ndarray, patch_size: int) -> np.ndarray:
    """[n, H, W, C] (or [H, W, C]) -> [n, patches, patch*patch*C].

    Patches are numbered row-major; values inside a patch are ordered
    (y, x, channel), which is what the ViT's patch embedding expects.
    """
    if images.ndim == 3:
        images = images[None]
    n, height, width, channels = images.shape
    rows, cols = height // patch_size, width // patch_size
    blocks = images[:, :rows * patch_size, :cols * patch_size]
    blocks = blocks.reshape(n, rows, patch_size, cols, patch_size, channels)
    blocks = blocks.transpose(0, 1, 3, 2, 4, 5)
    return np.ascontiguousarray(blocks.reshape(n, rows * cols, patch_size * patch_size * channels))


def arange_for_pooling(idx_grid: np.ndarray, pool_h: int, pool_w: int) -> np.ndarray:
    """Group a patch-id grid into pooling cells: [h', w', pool_h * pool_w].

    The grid is padded with -1 to a multiple of the pool size (half the
    padding before, the rest after, so 27 -> 28 pads the last row/column);
    within a cell the ids are ordered (dy, dx) row-major.
    """
    height, width = idx_grid.shape
    pad_h = (-height) % pool_h
    pad_w = (-width) % pool_w
    padded = np.pad(idx_grid, [[pad_h // 2, (pad_h + 1) // 2], [pad_w // 2, (pad_w + 1) // 2]],
                    mode="constant", constant_values=-1)
    cells_h, cells_w = padded.shape[0] // pool_h, padded.shape[1] // pool_w
    cells = padded.reshape(cells_h, pool_h, cells_w, pool_w).transpose(0, 2, 1, 3)
    return cells.reshape(cells_h, cells_w, pool_h * pool_w)


def image_tokens_for_grids(grids: Sequence[tuple[int, int]],
                           token_ids: ImageTokenIds) -> np.ndarray:
    """Token ids for one image: per grid, start, rows of patches + col, end."""
    pieces = []
    for height, width in grids:
        row = np.concatenate([np.full(width, token_ids.patch, dtype=np.int64),
                              np.array([token_ids.col], dtype=np.int64)])
        pieces += [np.array([token_ids.start], dtype=np.int64),
                   np.tile(row, height),
                   np.array([token_ids.end], dtype=np.int64)]
    return np.concatenate(pieces)


def num_image_tokens(grids: Sequence[tuple[int, int]]) -> int:
    """Length of ``image_tokens_for_grids`` without building it."""
    return sum(h * (w + 1) + 2 for h, w in grids)


# --------------------------------------------------------------------------
# Per-image and per-example processing
# --------------------------------------------------------------------------


def _pooled_grid(idx_grid: np.ndarray, config: ImageProcessingConfig
                 ) -> tuple[np.ndarray, tuple[int, int]]:
    """Pooling cells as rows [cells, pool] plus the cell-grid shape."""
    cells = arange_for_pooling(idx_grid, config.image_pooling_h, config.image_pooling_w)
    shape = (int(cells.shape[0]), int(cells.shape[1]))
    return cells.reshape(-1, cells.shape[-1]).astype(np.int64), shape


def _global_view(image: np.ndarray, config: ImageProcessingConfig
                 ) -> tuple[np.ndarray, np.ndarray, tuple[int, int]]:
    """The whole image stretched to one base-size crop."""
    view = resize_and_normalize(image, config.base_image_input_size, config)
    n = config.crop_patches
    pooled, grid = _pooled_grid(np.arange(n * n, dtype=np.int64).reshape(n, n), config)
    return view[None], pooled, grid


def process_image(image: ImageLike, config: ImageProcessingConfig,
                  max_crops: int) -> ImageViews:
    """Views, pooling indices and grids for one image (ids local to it)."""
    image = to_rgb_uint8(image)
    patch = config.image_patch_size
    if config.crop_mode == "resize":
        view, pooled, grid = _global_view(image, config)
        return ImageViews(patchify(view, patch), pooled, [grid])

    high_res = build_overlapping_crops(image, config, max_crops)
    hr_pooled, hr_grid = _pooled_grid(high_res.patch_idx, config)
    if config.crop_mode == "overlap-and-resize":
        return ImageViews(patchify(high_res.crops, patch), hr_pooled, [hr_grid])

    # overlap-and-resize-c2: the global view is crop 0, so the high-res
    # patch ids shift by one crop (padding stays -1).
    view, global_pooled, global_grid = _global_view(image, config)
    hr_pooled = np.where(hr_pooled >= 0, hr_pooled + config.patches_per_crop, -1)
    return ImageViews(
        crops=patchify(np.concatenate([view, high_res.crops], 0), patch),
        pooled_patches_idx=np.concatenate([global_pooled, hr_pooled], 0),
        grids=[global_grid, hr_grid],
    )


def preprocess_images(images: Sequence[ImageLike], config: ImageProcessingConfig,
                      token_ids: ImageTokenIds) -> PreprocessedImages:
    """Turn the images of one example into vision-tower inputs.

    One image uses ``max_crops``; several images (e.g. two cameras) use
    ``max_multi_image_crops`` each and are concatenated in order.
    """
    if isinstance(images, (np.ndarray, Image.Image)):
        raise ValueError("pass a sequence of images, e.g. [image]")
    if len(images) == 0:
        raise ValueError("at least one image is required")
    max_crops = config.max_crops if len(images) == 1 else config.max_multi_image_crops
    per_image = [process_image(image, config, max_crops) for image in images]

    pooled, offset = [], 0
    for views in per_image:
        # Quirk of the reference, kept on purpose because the checkpoints
        # were trained with it: the offset of earlier images' patches is
        # added to *every* entry, including the -1 padding.  For the second
        # of two 256x256 images a padding -1 becomes 1457, i.e. a valid
        # index pointing at the last patch of the first image's high-res
        # crop.  (A single image gets offset 0, so -1 stays -1.)
        pooled.append(views.pooled_patches_idx + offset)
        offset += views.num_patches

    crops = np.concatenate([v.crops for v in per_image], 0).astype(np.float32, copy=False)
    return PreprocessedImages(
        crops=crops,
        image_masks=np.ones(crops.shape[:2], dtype=np.float32),
        pooled_patches_idx=np.concatenate(pooled, 0).astype(np.int64, copy=False),
        image_grids=[list(v.grids) for v in per_image],
        image_token_ids=[image_tokens_for_grids(v.grids, token_ids) for v in per_image],
        num_views=[v.num_views for v in per_image],
    )
