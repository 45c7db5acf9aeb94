"""ActionAdapter presets pinned with hand-computed numbers, config validation, rotation helpers."""
from __future__ import annotations

import json
import math

import numpy as np
import pytest

from app.devices.action_adapter import (
    ARM_TYPES, LIBERO_KEYS, PRESETS, ActionAdapter, ActionAdapterConfig, GripperMapping, StepLimits,
    UnknownPresetError, limit_step, matrix_to_quat_xyzw, matrix_to_rotvec, matrix_to_rpy, preset,
    presets_from_json, quat_xyzw_to_matrix, rotvec_to_matrix, rpy_to_matrix,
)

KEYS = ("fractal20220817_data", "bridge_orig", *LIBERO_KEYS, "sim")
MODEL_ACTION = [0.01, -0.02, 0.03, 0.1, -0.2, 0.3]

# Hand-computed arm motion for MODEL_ACTION. Metres/radians keys pass through; LIBERO scales by
# 0.05 (translation) and 0.5 (rotation); UR's Base frame is base_link turned 180 deg about z, so
# x, y, roll and pitch flip sign.
SAME = [0.01, -0.02, 0.03, 0.1, -0.2, 0.3]
SAME_UR = [-0.01, 0.02, 0.03, -0.1, 0.2, 0.3]
LIBERO = [0.0005, -0.001, 0.0015, 0.05, -0.1, 0.15]
LIBERO_UR = [-0.0005, 0.001, 0.0015, -0.05, 0.1, 0.15]
EXPECTED_MOTION = {
    **{(arm, key): SAME for arm in ("sim", "xarm", "franka")
       for key in ("fractal20220817_data", "bridge_orig", "sim")},
    **{(arm, key): LIBERO for arm in ("sim", "xarm", "franka") for key in LIBERO_KEYS},
    **{("ur", key): SAME_UR for key in ("fractal20220817_data", "bridge_orig", "sim")},
    **{("ur", key): LIBERO_UR for key in LIBERO_KEYS},
}
# model gripper -> arm gripper (0 open .. 1 closed), per key.
EXPECTED_GRIPPER = {
    "fractal20220817_data": {0.0: 1.0, 0.3: 0.7, 0.7: 0.3, 1.0: 0.0, -0.4: 1.0, 1.4: 0.0},  # 1 = open, continuous
    "bridge_orig": {0.0: 1.0, 0.3: 1.0, 0.5: 0.0, 0.7: 0.0, 1.0: 0.0},                      # binarized, inverted
    **{k: {0.0: 1.0, 0.49: 1.0, 0.5: 0.0, 0.9: 0.0} for k in LIBERO_KEYS},
    "sim": {0.0: 0.0, 0.3: 0.3, 1.0: 1.0, 1.2: 1.0},
}


def test_every_preset_is_pinned():
    assert set(PRESETS) == set(EXPECTED_MOTION)
    assert {a for a, _ in PRESETS} == set(ARM_TYPES) and {k for _, k in PRESETS} == set(KEYS)


@pytest.mark.parametrize("arm,key", sorted(EXPECTED_MOTION))
def test_preset_motion(arm, key):
    out = ActionAdapter.for_arm(arm, key).map(MODEL_ACTION + [0.0])
    np.testing.assert_allclose(out[:6], EXPECTED_MOTION[(arm, key)], atol=1e-12)


@pytest.mark.parametrize("arm", ARM_TYPES)
@pytest.mark.parametrize("key", KEYS)
def test_preset_gripper(arm, key):
    adapter = ActionAdapter.for_arm(arm, key)
    for model_g, arm_g in EXPECTED_GRIPPER[key].items():
        assert adapter.map([0, 0, 0, 0, 0, 0, model_g])[6] == pytest.approx(arm_g), (key, model_g)


def test_non_finite_values_stay_non_finite_for_the_guard():
    out = ActionAdapter.for_arm("xarm", "bridge_orig").map([np.nan, 0, 0, 0, 0, 0, np.nan])
    assert np.isnan(out[0]) and np.isnan(out[6])   # a NaN gripper must not turn into "closed"


def test_unknown_pair_lists_known_ones():
    with pytest.raises(UnknownPresetError, match=r"'kuka'.*'bridge_orig'.*ur/sim.*xarm/bridge_orig") as e:
        preset("kuka", "bridge_orig")
    assert isinstance(e.value, KeyError)
    with pytest.raises(UnknownPresetError, match="'no_such_key'"):
        ActionAdapter.for_arm("xarm", "no_such_key")


def test_tool_frame_rotates_into_base():
    adapter = ActionAdapter(ActionAdapterConfig(frame="tool"))
    # Tool yawed +90 deg: tool x is base y, a tool roll is a base-y rotation.
    out = adapter.map([0.01, 0, 0, 0.1, 0, 0, 0.5], ee_rpy=[0, 0, math.pi / 2])
    np.testing.assert_allclose(out, [0, 0.01, 0, 0, 0.1, 0, 0.5], atol=1e-12)
    with pytest.raises(ValueError, match="ee_rpy"):
        adapter.map([0] * 7)


def test_permutation_and_signs():
    # Model x -> arm y, model y -> arm -x (a +90 deg turn about z), double scale on z.
    cfg = ActionAdapterConfig(scale=(1, 1, 2, 1, 1, 1), permutation=(1, 0, 2), signs=(-1, 1, 1))
    out = ActionAdapter(cfg).map([0.01, 0.02, 0.03, 0.1, 0.2, 0.3, 0])
    np.testing.assert_allclose(out[:6], [-0.02, 0.01, 0.06, -0.2, 0.1, 0.3])


@pytest.mark.parametrize("kwargs,match", [
    ({"signs": (-1, 1, 1)}, "mirror"),
    ({"permutation": (0, 0, 2)}, "reorder"),
    ({"scale": (1, 1, 1, 1, 1)}, "6 positive"),
    ({"scale": (1, 1, -1, 1, 1, 1)}, "6 positive"),
    ({"signs": (2, 1, 1)}, "signs"),
    ({"frame": "world"}, "frame"),
])
def test_config_rejects_bad_values(kwargs, match):
    with pytest.raises(ValueError, match=match):
        ActionAdapterConfig(**kwargs)


def test_gripper_mapping_validation_and_output_range():
    with pytest.raises(ValueError, match="input_range"):
        GripperMapping(input_range=(1.0, 1.0))
    with pytest.raises(ValueError, match="binarize_threshold"):
        GripperMapping(binarize_threshold=1.5)
    # [-1, 1] input (e.g. a +1 = close convention), output in [0, 1]
    assert GripperMapping(input_range=(-1, 1)).apply(0.0) == pytest.approx(0.5)
    assert GripperMapping(output_range=(-1, 1), invert=True).apply(0.25) == pytest.approx(0.5)


def test_wrong_shape_is_an_error():
    with pytest.raises(ValueError, match="7 values"):
        ActionAdapter.for_arm("sim", "sim").map([0.0] * 6)


def test_presets_round_trip_through_json():
    text = json.dumps({"ur/bridge_orig": PRESETS[("xarm", "bridge_orig")].to_dict()})
    table = presets_from_json(text)
    out = ActionAdapter.for_arm("ur", "bridge_orig", table).map(MODEL_ACTION + [1.0])
    np.testing.assert_allclose(out, SAME + [0.0])
    with pytest.raises(ValueError, match="arm/unnorm_key"):
        presets_from_json('{"ur": {}}')


# ---------------------------------------------------------------------------- rotation helpers


def test_rpy_matrix_hand_values():
    np.testing.assert_allclose(rpy_to_matrix([0, 0, math.pi / 2]) @ [1, 0, 0], [0, 1, 0], atol=1e-12)
    np.testing.assert_allclose(rpy_to_matrix([math.pi / 2, 0, 0]) @ [0, 1, 0], [0, 0, 1], atol=1e-12)
    np.testing.assert_allclose(rpy_to_matrix([0, math.pi / 2, 0]) @ [0, 0, 1], [1, 0, 0], atol=1e-12)


def test_rotation_round_trips():
    rng = np.random.default_rng(0)
    for rpy in rng.uniform([-3, -1.5, -3], [3, 1.5, 3], size=(50, 3)):
        m = rpy_to_matrix(rpy)
        np.testing.assert_allclose(matrix_to_rpy(m), rpy, atol=1e-9)
        np.testing.assert_allclose(rotvec_to_matrix(matrix_to_rotvec(m)), m, atol=1e-9)
        np.testing.assert_allclose(quat_xyzw_to_matrix(matrix_to_quat_xyzw(m)), m, atol=1e-9)
    # near pi the rotation vector stays exact
    np.testing.assert_allclose(matrix_to_rotvec(rotvec_to_matrix([math.pi, 0, 0])), [math.pi, 0, 0])
    np.testing.assert_allclose(matrix_to_quat_xyzw(rpy_to_matrix([math.pi, 0, 0])), [1, 0, 0, 0], atol=1e-12)


def test_limit_step_clamps_and_refuses():
    limits = StepLimits(max_translation_m=0.05, max_rotation_rad=0.5)
    req, sent, why = limit_step([0.3, 0.4, 0, 0, 0, 1.0, 1.5], limits)
    np.testing.assert_allclose(sent, [0.03, 0.04, 0, 0, 0, 0.5, 1.0])
    assert req[0] == 0.3 and len(why) == 3
    with pytest.raises(ValueError, match="non-finite"):
        limit_step([np.inf, 0, 0, 0, 0, 0, 0], limits)
    with pytest.raises(ValueError, match="7 values"):
        limit_step([0, 0], limits)
    with pytest.raises(ValueError, match="positive"):
        StepLimits(max_translation_m=0)
