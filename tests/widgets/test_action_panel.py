"""ActionPanel: the table, the badges, the clip highlight, the history ring and the gripper, offscreen."""
from __future__ import annotations

import numpy as np
import pytest
from PySide6 import QtCore, QtGui

from app.devices.arm import ArmState
from app.session import ActionEvent, ActionStep, ArmEvent
from widgets.action_panel import MODE_COLORS, NO_VALUE, STATUS_COLORS, ActionPanel

CLIP_REASON = "max_translation: translation 0.0677 m clamped to the per-step cap 0.0300 m"


def make_step(index=1, mode="steer_text", status="sent", command=None, sent=None, safety=(),
              timing=None) -> ActionStep:
    command = np.array([0.01, -0.02, 0.005, 0.1, -0.05, 0.2, 0.5]) if command is None else np.asarray(command)
    if sent is None and status == "sent":
        sent = command.copy()
    return ActionStep(index=index, mode=mode, trace=[(10.0, 20.0), (30.0, 40.0)],
                      action_normalized=np.array([0.532, -0.4, 0.3, 0.1, -0.05, 0.2, 1.0]),
                      action=command * 1.0, unnorm_key="fractal20220817_data", status=status,
                      command=command, sent=sent, safety=list(safety),
                      timing_ms={"reason": 812.34, "steer": 45.12} if timing is None else timing)


def clipped_step(index=7) -> ActionStep:
    """Translation norm 0.0677 m clipped to 0.03 m by the guard: x, y, z differ, the rest do not."""
    command = np.array([0.045, -0.04, 0.031, 0.1, -0.05, 0.2, 1.0])
    sent = command.copy()
    sent[:3] = command[:3] * 0.03 / np.linalg.norm(command[:3])
    return make_step(index, mode="steer_text", status="sent", command=command, sent=sent,
                     safety=[CLIP_REASON, "arm: z limited to the arm's step"])


def refused_step(index=8) -> ActionStep:
    return make_step(index, mode="reason", status="refused", sent=None,
                     safety=["estop: e-stop latched: operator pressed e-stop"], timing={"reason": 790.0})


def rendered_color(label) -> QtGui.QColor:
    """The colour actually painted at the badge's left padding (not just what the code asked for)."""
    img = label.grab().toImage()
    return img.pixelColor(3, img.height() // 2)


def is_red(c: QtGui.QColor) -> bool:
    return c.red() > 150 and c.green() < 90 and c.blue() < 90


@pytest.fixture
def panel(qtbot):
    w = ActionPanel(history_size=5)
    qtbot.addWidget(w)
    w.resize(520, 720)                  # not shown: grab() renders a hidden widget too, and faster
    return w


def test_clipped_step_highlights_sent_cells_with_the_reason(panel, qtbot):
    step = clipped_step()
    assert step.clipped_dims == [0, 1, 2]
    assert np.linalg.norm(step.command[:3]) > np.linalg.norm(step.sent[:3])
    panel.show_step(step)

    assert panel.mode_text() == "steer_text"
    assert panel.mode_badge.objectName() == "modeBadge"
    assert panel.mode_color() == MODE_COLORS["steer_text"]
    assert panel.status_text() == "sent"
    assert panel.status_color() == STATUS_COLORS["sent"]
    assert panel.step_text() == "step #7"
    assert "x, y, z" in panel.status_detail_text()
    for dim in ("x", "y", "z"):
        item = panel.sent_cell(dim)
        assert panel.is_highlighted(dim)
        assert item.background().color() == QtGui.QColor("#ffc107")
        assert item.font().bold()
        assert CLIP_REASON in item.toolTip()
        assert "arm: z limited" in item.toolTip()
    for dim in ("roll", "pitch", "yaw", "gripper"):
        assert not panel.is_highlighted(dim)
        assert CLIP_REASON not in panel.sent_cell(dim).toolTip()
    assert panel.safety_reasons() == step.safety
    assert [panel.safety_list.item(i).text() for i in range(panel.safety_list.count())] == step.safety
    # the clipped value is shown, not the command
    assert panel.sent_cell("x").text() == f"{step.sent[0] * 1000:+.1f} mm"
    assert panel.cell("x", "command").text() == "+45.0 mm"

    # the next, unclipped step clears the highlight and the tooltip
    panel.show_step(make_step(index=9, mode="reason"))
    assert panel.mode_text() == "reason"
    for dim in range(7):
        assert not panel.is_highlighted(dim)
        assert panel.sent_cell(dim).background().style() == QtCore.Qt.BrushStyle.NoBrush
        assert CLIP_REASON not in panel.sent_cell(dim).toolTip()
    assert panel.safety_reasons() == []
    assert panel.status_detail_text() == "sent as commanded"


def test_refused_step_shows_dash_red_status_and_is_not_plotted(panel, qtbot):
    panel.show_step(make_step(index=1))
    assert panel.history_length() == 1
    panel.show_step(refused_step(index=2))

    assert panel.status_text() == "refused"
    assert panel.status_color() == STATUS_COLORS["refused"]
    assert is_red(QtGui.QColor(panel.status_color()))
    assert is_red(rendered_color(panel.status_badge))
    for dim in range(7):
        assert panel.sent_cell(dim).text() == NO_VALUE
        assert not panel.is_highlighted(dim)
    assert panel.cell("x", "command").text() == "+10.0 mm"       # the command is still shown
    detail = panel.status_detail_text()
    assert "safety guard" in detail and "estop" in detail
    assert "safety guard" in panel.sent_cell("x").toolTip()
    # not in the sent history, only marked
    assert panel.history_length() == 1
    idx, values = panel.history()
    assert idx.tolist() == [1]
    assert panel.curves["x"].getData()[0].tolist() == [1]
    assert panel.refused_steps() == [2]
    assert panel.refused_markers.getData()[0].tolist() == [2]
    assert panel.refused_markers.getData()[1].tolist() == [0]


@pytest.mark.parametrize("status, colour, why", [
    ("pending", "pending", "waiting for Go"), ("preview", "preview", "never sent"),
    ("no_arm", "no_arm", "no arm"), ("failed", "failed", "arm raised an error"),
])
def test_unsent_statuses_say_why(panel, status, colour, why):
    panel.show_step(make_step(index=3, status=status, sent=None, safety=["arm: timeout"]))
    assert panel.status_text() == status
    assert panel.status_color() == STATUS_COLORS[colour]
    assert why in panel.status_detail_text()
    assert all(panel.sent_cell(d).text() == NO_VALUE for d in range(7))
    assert panel.history_length() == 0
    assert panel.refused_steps() == ([3] if status == "failed" else [])


def test_status_colours_are_distinct():
    assert is_red(QtGui.QColor(STATUS_COLORS["failed"]))
    pending = QtGui.QColor(STATUS_COLORS["pending"])
    assert pending.red() > 200 and 100 < pending.green() < 200 and pending.blue() < 60   # amber
    sent = QtGui.QColor(STATUS_COLORS["sent"])
    assert sent.green() > sent.red() and sent.green() > sent.blue()
    assert len(set(MODE_COLORS.values())) == 3


def test_pending_then_sent_is_recorded_once_and_history_keeps_last_n(panel):
    step = make_step(index=1, status="pending", sent=None)
    panel.show_step(step)
    assert panel.history_length() == 0
    step.sent, step.status = step.command.copy(), "sent"        # the session mutates and re-emits
    panel.show_step(step)
    panel.show_step(step)
    assert panel.history_length() == 1

    curves_before = dict(panel.curves)
    items_before = len(panel.translation_plot.listDataItems())
    for i in range(2, 10):
        sent = np.array([0.001 * i, -0.002 * i, 0.0, 0.01 * i, 0.0, -0.01, (i % 2) * 1.0])
        panel.show_step(make_step(index=i, command=sent, sent=sent))
    assert panel.history_size == 5
    assert panel.history_length() == 5
    idx, values = panel.history()
    assert idx.tolist() == [5, 6, 7, 8, 9]
    assert values.shape == (5, 7)
    np.testing.assert_allclose(values[:, 0], [0.005, 0.006, 0.007, 0.008, 0.009])
    # plotted: mm and degrees, same items as before (setData, nothing re-created)
    assert panel.curves == curves_before
    assert len(panel.translation_plot.listDataItems()) == items_before
    x, y = panel.curves["x"].getData()
    assert x.tolist() == [5, 6, 7, 8, 9]
    np.testing.assert_allclose(y, [5.0, 6.0, 7.0, 8.0, 9.0])
    _, roll = panel.curves["roll"].getData()
    np.testing.assert_allclose(roll, np.degrees([0.05, 0.06, 0.07, 0.08, 0.09]))
    _, grip = panel.curves["gripper"].getData()
    assert grip.tolist() == [1.0, 0.0, 1.0, 0.0, 1.0]

    panel.clear_history()
    assert panel.history_length() == 0
    x, _ = panel.curves["x"].getData()
    assert x is None or len(x) == 0
    assert panel.refused_steps() == []


def test_numbers_are_formatted_with_units(panel):
    panel.show_step(make_step(index=4, command=[0.045, -0.0123, 0.0, 0.1, -0.05, np.pi / 2, 1.0],
                              timing={"reason": 812.34}))
    cmd = [panel.cell(d, "command").text() for d in range(7)]
    assert cmd == ["+45.0 mm", "-12.3 mm", "+0.0 mm", "+5.73°", "-2.86°", "+90.00°", "1.00"]
    assert [panel.cell(d, "unit").text() for d in range(7)] == ["mm"] * 3 + ["deg"] * 3 + ["0–1"]
    assert panel.cell("x", "normalized").text() == "+0.532"
    assert panel.cell("x", "action").text() == "+0.0450"
    assert "0.045000 m" in panel.cell("x", "sent").toolTip()
    assert "rad" in panel.cell("roll", "command").toolTip()
    assert panel.timing_text() == "reason 812.3 ms"
    assert "steer" not in panel.timing_text()
    panel.show_step(make_step(index=5))
    assert panel.timing_text() == "reason 812.3 ms · steer 45.1 ms"


def test_show_arm_displays_gripper_and_enabled_state(panel):
    state = ArmState(ee_position=np.array([0.4, 0.0, 0.2]), ee_rpy=np.zeros(3), gripper=0.42,
                     joint_positions=np.zeros(7), timestamp=1.0, enabled=True)
    panel.show_arm(state, True)
    assert "0.42" in panel.gripper_text()
    assert panel.gripper_bar.value() == 420
    assert panel.gripper_value() == pytest.approx(0.42)
    assert panel.gripper_bar.text() == "0.42"
    assert panel.arm_text() == "arm enabled"

    panel.show_arm(ArmState(state.ee_position, state.ee_rpy, 1.0, state.joint_positions, 2.0), False)
    assert panel.arm_text() == "arm disabled"
    assert "1.00" in panel.gripper_text() and "closed" in panel.gripper_text()
    assert panel.gripper_bar.value() == 1000

    panel.show_arm(None, False)
    assert panel.gripper_text().endswith(NO_VALUE)
    assert panel.gripper_value() is None
    assert panel.gripper_bar.value() == 0


def test_handle_event_dispatches_session_events(panel):
    panel.handle_event(ActionEvent(clipped_step(index=11)))
    assert panel.step_text() == "step #11" and panel.is_highlighted("x")
    panel.handle_event(ArmEvent(None, True))
    assert panel.arm_text() == "arm enabled"
    panel.handle_event(object())                                  # other events are ignored
    assert panel.step_text() == "step #11"
