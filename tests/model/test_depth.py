"""Tests for the MolmoAct depth VQ-VAE decoder (model/depth.py)."""

from __future__ import annotations

import warnings
from pathlib import Path

import numpy as np
import pytest
import torch
import torch.nn.functional as F

from model.depth import (
    DepthMap,
    DepthVQVAEConfig,
    decode_depth_codes,
    load_depth_decoder,
    random_depth_decoder,
    save_depth_decoder,
)

# 32x32 image, 4x4 code grid, widths 16 -> 16 -> 8 -> 4 -> 1.
SMALL = DepthVQVAEConfig(
    image_size=32, num_tokens=16, codebook_dim=8, hidden_dim=4, downsample_ratio=8
)


@pytest.fixture(scope="module")
def small_decoder():
    return random_depth_decoder(SMALL, seed=3)


def _reference_decode(state: dict[str, torch.Tensor], codes: torch.Tensor) -> torch.Tensor:
    """Hand-written decode of SMALL with functional ops and official key names."""
    w = lambda k: state[f"decoder.{k}.weight"]  # noqa: E731
    b = lambda k: state[f"decoder.{k}.bias"]  # noqa: E731
    x = F.embedding(codes, state["_vq_vae._embedding"]).permute(0, 3, 1, 2)
    x = F.relu(F.conv2d(x, w(0), b(0)))
    for blk in (2, 3):
        h = F.relu(F.conv2d(x, w(f"{blk}.net.0"), b(f"{blk}.net.0"), padding=1))
        h = F.relu(F.conv2d(h, w(f"{blk}.net.2"), b(f"{blk}.net.2"), padding=1))
        x = F.conv2d(h, w(f"{blk}.net.4"), b(f"{blk}.net.4")) + x
    for idx in (4, 6, 8):
        x = F.relu(F.conv_transpose2d(x, w(idx), b(idx), stride=2, padding=1))
    return F.conv2d(x, w(10), b(10))


def test_reference_layout_key_names_and_shapes():
    state = random_depth_decoder(DepthVQVAEConfig(), seed=0).state_dict()
    assert state["_vq_vae._embedding"].shape == (128, 512)
    assert state["decoder.0.weight"].shape == (256, 512, 1, 1)
    assert state["decoder.2.net.0.weight"].shape == (256, 256, 3, 3)
    assert state["decoder.3.net.4.weight"].shape == (256, 256, 1, 1)
    assert state["decoder.4.weight"].shape == (256, 256, 4, 4)  # ConvT: [in, out, k, k]
    assert state["decoder.6.weight"].shape == (256, 128, 4, 4)
    assert state["decoder.12.weight"].shape == (32, 16, 4, 4)
    assert state["decoder.14.weight"].shape == (1, 16, 1, 1)
    assert "decoder.15.weight" not in state


def test_full_size_decode_shape():
    decoder = random_depth_decoder(DepthVQVAEConfig(), seed=0)
    codes = torch.randint(0, 128, (1, 10, 10), generator=torch.Generator().manual_seed(0))
    with torch.inference_mode():
        out = decoder.decode(codes)
    assert out.shape == (1, 1, 320, 320)
    assert out.dtype == torch.float32


def test_matches_functional_reference(small_decoder):
    codes = torch.arange(16).view(1, 4, 4).flip(-1)
    state = {k: v.clone() for k, v in small_decoder.state_dict().items()}
    with torch.inference_mode():
        got = small_decoder.decode(codes)
        want = _reference_decode(state, codes)
    assert got.shape == (1, 1, 32, 32)
    torch.testing.assert_close(got, want, rtol=1e-5, atol=1e-6)
    depth = decode_depth_codes(small_decoder, codes.flatten().tolist())
    np.testing.assert_allclose(depth.relative, want[0, 0].numpy(), rtol=1e-5, atol=1e-6)


def test_random_decoder_is_seeded():
    a = random_depth_decoder(SMALL, seed=7).state_dict()
    b = random_depth_decoder(SMALL, seed=7).state_dict()
    c = random_depth_decoder(SMALL, seed=8).state_dict()
    assert all(torch.equal(a[k], b[k]) for k in a)
    assert not torch.equal(a["_vq_vae._embedding"], c["_vq_vae._embedding"])


@pytest.mark.parametrize("official_pt", [True, False])
def test_save_load_round_trip(tmp_path: Path, small_decoder, official_pt: bool):
    path = tmp_path / ("vae-final.pt" if official_pt else "vae.safetensors")
    save_depth_decoder(small_decoder, path, official_pt=official_pt)
    if official_pt:
        raw = torch.load(path, map_location="cpu", weights_only=True)
        assert set(raw) == {"weights"}
        assert all(k.startswith("module.") for k in raw["weights"])
    loaded = load_depth_decoder(path, config=SMALL)
    codes = list(range(16))
    a = decode_depth_codes(small_decoder, codes)
    b = decode_depth_codes(loaded, codes)
    np.testing.assert_array_equal(a.relative, b.relative)


def test_load_ignores_encoder_and_ema_buffers(tmp_path: Path, small_decoder):
    state = {f"module.{k}": v for k, v in small_decoder.state_dict().items()}
    state["module.encoder.0.weight"] = torch.zeros(4, 1, 4, 4)
    state["module._vq_vae._ema_cluster_size"] = torch.zeros(16)
    state["module._vq_vae._ema_w"] = torch.zeros(16, 8)
    path = tmp_path / "raw.pt"
    torch.save(state, path)  # raw state dict, no {'weights': ...} wrapper
    loaded = load_depth_decoder(path, config=SMALL)
    assert torch.equal(loaded.codebook, small_decoder.codebook)


def test_missing_file_names_path(tmp_path: Path):
    path = tmp_path / "nope" / "vae-final.pt"
    with pytest.raises(FileNotFoundError, match="vae-final.pt"):
        load_depth_decoder(path)


def test_missing_key_is_named(tmp_path: Path, small_decoder):
    state = dict(small_decoder.state_dict())
    del state["decoder.2.net.4.bias"]
    del state["_vq_vae._embedding"]
    path = tmp_path / "partial.pt"
    torch.save({"weights": state}, path)
    with pytest.raises(ValueError, match="partial.pt") as err:
        load_depth_decoder(path, config=SMALL)
    assert "decoder.2.net.4.bias" in str(err.value)
    assert "_vq_vae._embedding" in str(err.value)


def test_wrong_shape_is_named(tmp_path: Path, small_decoder):
    state = dict(small_decoder.state_dict())
    state["decoder.0.weight"] = torch.zeros(16, 9, 1, 1)
    path = tmp_path / "shape.safetensors"
    from safetensors.torch import save_file

    save_file(state, str(path))
    with pytest.raises(ValueError, match=r"decoder\.0\.weight.*\(16, 8, 1, 1\)"):
        load_depth_decoder(path, config=SMALL)


def test_reference_config_rejects_small_checkpoint(tmp_path: Path, small_decoder):
    path = save_depth_decoder(small_decoder, tmp_path / "small.safetensors")
    with pytest.raises(ValueError, match="_vq_vae._embedding"):
        load_depth_decoder(path, config=DepthVQVAEConfig())  # an explicit config wins over the stored one
    pt = save_depth_decoder(small_decoder, tmp_path / "vae-final.pt", official_pt=True)
    with pytest.raises(ValueError, match="decoder.0.weight"):
        load_depth_decoder(pt)  # official .pt files carry no config: the reference one is assumed


def test_small_safetensors_carries_its_config(tmp_path: Path, small_decoder):
    path = save_depth_decoder(small_decoder, tmp_path / "small.safetensors")
    loaded = load_depth_decoder(path)
    assert loaded.config == small_decoder.config
    codes = torch.randint(0, small_decoder.config.num_tokens, (1, *small_decoder.config.grid))
    assert torch.equal(loaded.decode(codes), small_decoder.decode(codes))


@pytest.mark.parametrize("name", ["vae-final.pt", "vae.safetensors"])
def test_truncated_file_names_file(tmp_path: Path, small_decoder, name: str):
    path = tmp_path / name
    save_depth_decoder(small_decoder, path, official_pt=name.endswith(".pt"))
    data = path.read_bytes()
    path.write_bytes(data[: len(data) // 2])
    with pytest.raises(ValueError, match=name):
        load_depth_decoder(path, config=SMALL)


def test_garbage_file_names_file(tmp_path: Path):
    path = tmp_path / "garbage.pt"
    path.write_bytes(b"this is not a checkpoint" * 10)
    with pytest.raises(ValueError, match="garbage.pt"):
        load_depth_decoder(path)


class _Evil:
    pass


def test_pickled_objects_are_refused(tmp_path: Path):
    path = tmp_path / "evil.pt"
    torch.save({"weights": _Evil()}, path)
    with pytest.raises(ValueError, match="evil.pt"):
        load_depth_decoder(path)


def test_padding_warns_and_uses_zero(small_decoder):
    with pytest.warns(UserWarning, match="got 5 depth codes, expected 16"):
        depth = decode_depth_codes(small_decoder, [1, 2, 3, 4, 5])
    assert depth.codes_used == [1, 2, 3, 4, 5] + [0] * 11


def test_clipping_warns(small_decoder):
    with pytest.warns(UserWarning, match="got 20 depth codes, expected 16"):
        depth = decode_depth_codes(small_decoder, list(range(16)) + [1, 2, 3, 4])
    assert depth.codes_used == list(range(16))


def test_reference_grid_pads_to_100():
    decoder = random_depth_decoder(DepthVQVAEConfig(), seed=1)
    with pytest.warns(UserWarning, match="got 99 depth codes, expected 100"):
        depth = decode_depth_codes(decoder, [5] * 99, grid=(10, 10))
    assert len(depth.codes_used) == 100 and depth.codes_used[-1] == 0
    assert depth.relative.shape == (320, 320) and depth.relative.dtype == np.float32


def test_exact_count_does_not_warn(small_decoder):
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        decode_depth_codes(small_decoder, list(range(16)))


@pytest.mark.parametrize("bad", [16, -1, 1000])
def test_out_of_range_code_raises(small_decoder, bad: int):
    with pytest.raises(ValueError, match="out of range"):
        decode_depth_codes(small_decoder, [0] * 15 + [bad])
    with pytest.raises(ValueError, match="out of range"):
        small_decoder.decode(torch.full((1, 4, 4), bad))


def test_wrong_grid_raises(small_decoder):
    with pytest.raises(ValueError, match="grid"):
        decode_depth_codes(small_decoder, list(range(16)), grid=(10, 10))


def test_normalized_in_unit_range(small_decoder):
    depth = decode_depth_codes(small_decoder, list(range(16)))
    assert isinstance(depth, DepthMap)
    n = depth.normalized
    assert n.dtype == np.float32 and n.shape == (32, 32)
    assert np.isfinite(n).all()
    assert n.min() == pytest.approx(0.0) and n.max() == pytest.approx(1.0)
    assert depth.relative.min() < depth.relative.max()


def test_constant_map_normalizes_to_zeros():
    decoder = random_depth_decoder(SMALL, seed=0)
    with torch.no_grad():
        for p in decoder.decoder.parameters():
            p.zero_()
        decoder.decoder[-1].bias.fill_(0.7)
    depth = decode_depth_codes(decoder, list(range(16)))
    np.testing.assert_allclose(depth.relative, 0.7)
    assert not np.isnan(depth.normalized).any()
    assert (depth.normalized == 0).all()


def test_invalid_config_rejected():
    with pytest.raises(ValueError, match="power of two"):
        DepthVQVAEConfig(downsample_ratio=12)
    with pytest.raises(ValueError, match="divisible"):
        DepthVQVAEConfig(image_size=100)
