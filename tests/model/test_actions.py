"""Tests for action token <-> bin <-> continuous action conversion (model/actions.py)."""

from __future__ import annotations

import numpy as np
import pytest

from model.actions import (
    QWEN_ACTION_BASE_ID,
    ActionStats,
    ActionTokenizer,
    UnknownUnnormKeyError,
    UnnormKeyError,
    decode_actions,
    encode_actions,
    normalize,
    resolve_unnorm_key,
    unnormalize,
)

# Real statistics of the `fractal20220817_data` (RT-1) dataset as shipped with MolmoAct.
FRACTAL_Q01 = [-0.22453527510166169, -0.14820013284683228, -0.231589707583189,
               -0.3517994859814644, -0.4193011274933815, -0.43643461108207704, 0.0]
FRACTAL_Q99 = [0.17824687153100965, 0.14938379630446405, 0.21842354819178575,
               0.5892666035890578, 0.35272657424211445, 0.44796681255102094, 1.0]
FRACTAL_MASK = [True] * 6 + [False]
NORM_STATS = {
    "fractal20220817_data": {
        "action": {"q01": FRACTAL_Q01, "q99": FRACTAL_Q99, "mask": FRACTAL_MASK}
    }
}

QWEN = ActionTokenizer(base_id=151643)
TINY = ActionTokenizer(base_id=512)

# Bin edges are -1 + 2j/255; centre i = -1 + (2i+1)/255.
CENTRE_0 = -0.996078431372549  # -1 + 1/255 = -254/255
CENTRE_254 = 0.996078431372549  # -1 + 509/255 = 254/255


@pytest.fixture
def fractal() -> ActionStats:
    return ActionStats.from_norm_stats(NORM_STATS, "fractal20220817_data")


def test_qwen_base_constant_and_range():
    assert QWEN_ACTION_BASE_ID == 151643
    assert QWEN.token_range == (151643 - 256, 151642)
    assert TINY.token_range == (256, 511)
    assert QWEN.is_action_token(151642) and QWEN.is_action_token(151387)
    assert not QWEN.is_action_token(151643) and not QWEN.is_action_token(151386)


def test_token_to_bin_index_and_centre():
    # digitized = base - id; idx = clip(digitized - 1, 0, 254)
    ids = [151642, 151641, 151643 - 128, 151643 - 255, 151643 - 256]
    assert QWEN.tokens_to_bins(ids).tolist() == [0, 1, 127, 254, 254]
    np.testing.assert_allclose(
        QWEN.decode(ids),
        [CENTRE_0, -0.9882352941176471, 0.0, CENTRE_254, CENTRE_254],  # -1+3/255, -1+255/255
        rtol=0, atol=1e-12,
    )


def test_same_bins_for_tiny_base():
    qwen_ids = [151642, 151643 - 128, 151643 - 255]
    tiny_ids = [511, 512 - 128, 512 - 255]
    np.testing.assert_array_equal(QWEN.decode(qwen_ids), TINY.decode(tiny_ids))


def test_non_action_tokens_clip_or_raise_when_strict():
    # Reference behaviour: clip silently (id == base -> digitized 0 -> idx 0).
    assert TINY.tokens_to_bins([512, 100]).tolist() == [0, 254]
    with pytest.raises(ValueError, match="512 is not an action token"):
        TINY.decode([511, 512], strict=True)


def test_lowest_bin_unnormalizes_by_hand(fractal):
    # every dim token base-1 -> idx 0 -> centre -254/255; 0.5*(c+1) = 1/510
    # dim0: 1/510 * (0.17824687 + 0.22453528) - 0.22453528
    #     = 0.40278214663267134/510 - 0.22453527510166169 = -0.22374550618669567
    ids = [151642] * 7
    out = decode_actions(ids, QWEN, fractal)
    expected = [
        -0.22374550618669567,  # 0.40278214663/510 - 0.22453527510
        -0.14761663494653562,  # 0.29758392915/510 - 0.14820013285
        -0.2307073286502969,   # 0.45001325577/510 - 0.23158970758
        -0.3499542583548555,   # 0.94106608957/510 - 0.35179948598
        -0.417787347686057,    # 0.77202770174/510 - 0.41930112749
        -0.4347004906435808,   # 0.88440142363/510 - 0.43643461108
        CENTRE_0,              # gripper: raw bin centre, never un-normalized
    ]
    assert out.actions.shape == (1, 7)
    np.testing.assert_allclose(out.actions[0], expected, rtol=0, atol=1e-12)
    np.testing.assert_allclose(out.normalized[0], [CENTRE_0] * 7, rtol=0, atol=1e-12)
    assert out.bin_indices.tolist() == [[0] * 7]


def test_middle_and_top_bins_unnormalize_by_hand(fractal):
    # token base-128 -> idx 127 -> centre 0.0 -> value (q01+q99)/2
    # token base-255 -> idx 254 -> centre 254/255 -> q99 - (q99-q01)/510
    mid = [151643 - 128] * 7
    top = [151643 - 255] * 7
    out = decode_actions(mid + top, QWEN, fractal).actions
    expected_mid = [
        -0.023144201785326016,  # (-0.22453527510 + 0.17824687153)/2
        0.0005918317288158836,  # (-0.14820013285 + 0.14938379630)/2
        -0.006583079695701627,  # (-0.23158970758 + 0.21842354819)/2
        0.11873355880379671,    # (-0.35179948598 + 0.58926660359)/2
        -0.03328727662563352,   # (-0.41930112749 + 0.35272657424)/2
        0.005766100734471952,   # (-0.43643461108 + 0.44796681255)/2
        0.0,                    # gripper: raw centre 0.0
    ]
    expected_top = [
        0.17745710261604364,  # 0.17824687153 - 0.40278214663/510
        0.1488002984041674,   # 0.14938379630 - 0.29758392915/510
        0.21754116925889364,  # 0.21842354819 - 0.45001325577/510
        0.5874213759624489,   # 0.58926660359 - 0.94106608957/510
        0.35121279443479,     # 0.35272657424 - 0.77202770174/510
        0.4462326921125247,   # 0.44796681255 - 0.88440142363/510
        CENTRE_254,           # gripper 0.99608, not 0.99804 (= 1 - 1/510)
    ]
    np.testing.assert_allclose(out, [expected_mid, expected_top], rtol=0, atol=1e-12)


def test_gripper_stays_raw_even_if_mask_true():
    stats = ActionStats.from_norm_stats(
        {"d": {"action": {"q01": FRACTAL_Q01, "q99": FRACTAL_Q99, "mask": [True] * 7}}}
    )
    assert stats.mask[-1] and not stats.effective_mask[-1]
    out = decode_actions([151642] * 7, QWEN, stats).actions[0]
    assert out[-1] == pytest.approx(CENTRE_0, abs=1e-12)  # not 0 + 1/510
    assert out[0] == pytest.approx(-0.22374550618669567, abs=1e-12)
    # Opting out of the reference rule un-normalizes the gripper too: 0 + 1/510
    plain = ActionStats(stats.q01, stats.q99, stats.mask, gripper_raw=False)
    assert unnormalize([CENTRE_0] * 7, plain)[-1] == pytest.approx(0.00196078431372549)


def test_missing_mask_defaults_to_all_true_but_gripper_raw():
    stats = ActionStats.from_norm_stats(
        {"d": {"action": {"q01": [0.0, -2.0], "q99": [1.0, 2.0]}}}
    )
    assert stats.mask.tolist() == [True, True]
    # dim0: 0.5*(0+1)*1 + 0 = 0.5; dim1 (gripper): raw 0.0
    np.testing.assert_allclose(unnormalize([0.0, 0.0], stats), [0.5, 0.0])


def test_unmasked_dim_passes_through():
    stats = ActionStats([0.0, 0.0, 0.0], [10.0, 10.0, 10.0], [True, False, True])
    # dim0: 0.5*(0.5+1)*10 = 7.5; dim1 unmasked -> 0.5; dim2 gripper -> 0.5
    np.testing.assert_allclose(unnormalize([0.5, 0.5, 0.5], stats), [7.5, 0.5, 0.5])


def test_chunk_8x7_shape_and_rows(fractal):
    rng = np.random.default_rng(0)
    ids = (151643 - rng.integers(1, 257, size=56)).tolist()
    out = decode_actions(ids, QWEN, fractal)
    assert out.actions.shape == (8, 7) and out.normalized.shape == (8, 7)
    assert out.token_ids.shape == (8, 7)
    # row 3 equals decoding its own 7 tokens alone
    np.testing.assert_array_equal(
        out.actions[3], decode_actions(ids[21:28], QWEN, fractal).actions[0]
    )
    assert QWEN.decode_chunk(ids, action_dim=7).shape == (8, 7)


@pytest.mark.parametrize("n", [0, 6, 55, 57])
def test_chunk_length_not_multiple_raises(fractal, n: int):
    with pytest.raises(ValueError, match="action"):
        decode_actions([151642] * n, QWEN, fractal)
    with pytest.raises(ValueError):
        TINY.decode_chunk([511] * n, action_dim=7)


@pytest.mark.parametrize("tok", [QWEN, TINY])
def test_round_trip_all_256_tokens(tok: ActionTokenizer):
    lo, hi = tok.token_range
    ids = list(range(hi, lo - 1, -1))  # digitized 1..256
    back = tok.encode(tok.decode(ids))
    # every bin maps back to itself, except digitized 256 which decodes to the
    # same top centre as 255 (idx clip at 254) and so re-encodes as 255.
    assert back[:255] == ids[:255]
    assert back[255] == tok.base_id - 255


def test_encode_gives_nearest_centre():
    centres = QWEN.bin_centers
    values = np.linspace(-1.0, 1.0, 2001)
    decoded = QWEN.decode(QWEN.encode(values))
    nearest = centres[np.abs(values[:, None] - centres[None, :]).argmin(axis=1)]
    # ties at inner bin edges may go either way; distance must still be minimal
    np.testing.assert_allclose(
        np.abs(decoded - values), np.abs(nearest - values), rtol=0, atol=1e-12
    )
    assert QWEN.encode([1.0, -1.0, 5.0, -5.0]) == [151643 - 256, 151642, 151643 - 256, 151642]


def test_normalize_inverts_unnormalize(fractal):
    normalized = np.array([[-0.5, 0.25, 0.0, 0.9, -0.9, 0.1, 1.0]])
    actions = unnormalize(normalized, fractal)
    np.testing.assert_allclose(normalize(actions, fractal), normalized, atol=1e-12)
    # q01 -> -1, q99 -> +1, beyond -> clipped
    edge = normalize(np.array([FRACTAL_Q01, FRACTAL_Q99]), fractal)
    np.testing.assert_allclose(edge[:, :6], [[-1.0] * 6, [1.0] * 6], atol=1e-12)
    assert normalize(np.array(FRACTAL_Q99) + 5, fractal)[:6].tolist() == [1.0] * 6


def test_encode_actions_round_trip(fractal):
    actions = unnormalize(QWEN.decode_chunk([151643 - 40] * 14, 7), fractal)
    assert encode_actions(actions, QWEN, fractal) == [151643 - 40] * 14


def test_nan_rejected(fractal):
    bad = [0.0, np.nan, 0.0, 0.0, 0.0, 0.0, 1.0]
    with pytest.raises(ValueError, match="NaN"):
        normalize(bad, fractal)
    with pytest.raises(ValueError, match="NaN"):
        encode_actions(bad, QWEN, fractal)
    with pytest.raises(ValueError, match="NaN"):
        QWEN.encode([0.1, np.inf])


def test_wrong_action_dim_raises(fractal):
    with pytest.raises(ValueError, match="last dimension must be 7"):
        unnormalize(np.zeros(6), fractal)


def test_unknown_key_names_key_and_lists_available():
    stats = {"fractal20220817_data": {}, "libero_spatial": {}}
    with pytest.raises(UnknownUnnormKeyError, match="bridge_orig") as err:
        resolve_unnorm_key(stats, "bridge_orig")
    msg = str(err.value)
    assert "fractal20220817_data" in msg and "libero_spatial" in msg
    assert isinstance(err.value, KeyError) and isinstance(err.value, ValueError)
    with pytest.raises(UnknownUnnormKeyError, match="nope"):
        ActionStats.from_norm_stats(NORM_STATS, "nope")


def test_key_resolution_rules():
    assert resolve_unnorm_key(NORM_STATS, None) == "fractal20220817_data"
    with pytest.raises(UnnormKeyError, match="empty"):
        resolve_unnorm_key({}, None)
    with pytest.raises(UnnormKeyError, match="'a'.*'b'"):
        resolve_unnorm_key({"a": {}, "b": {}}, None)


def test_malformed_stats_entry():
    with pytest.raises(ValueError, match="q01 and q99"):
        ActionStats.from_norm_stats({"d": {"proprio": {}}}, "d")
    with pytest.raises(ValueError, match="lengths"):
        ActionStats([0.0, 0.0], [1.0], [True, True])


def test_invalid_tokenizer():
    with pytest.raises(ValueError, match="base_id"):
        ActionTokenizer(base_id=100)
