"""Open the configured station (model, camera, arm, guard) as one ``Session``: the GUI and the
headless front end start the same way and fail the same way, before any thread runs."""
from __future__ import annotations

from app.config import StationConfig
from app.devices.arm import ArmError
from app.devices.camera import CameraError
from app.safety import SafetyConfig, SafetyGuard
from app.session import Session, SessionConfig


class StationError(RuntimeError):
    """The station cannot open: the message says what to fix (a path, a device, a flag)."""


def open_session(cfg: StationConfig, session_cfg: SessionConfig | None = None,
                 safety: SafetyConfig | None = None) -> Session:
    """Load the model, open the devices, connect them; the session owns and releases them."""
    from app.devices.factory import make_arm, make_camera, make_extra_cameras, make_sim_cell
    from model.checkpoint import CheckpointError, load_checkpoint
    from model.config import ConfigError
    from model.decoder import MolmoActDecoder
    from model.tokenizer import TokenizerError

    session_cfg = session_cfg or SessionConfig()
    try:
        ckpt = load_checkpoint(cfg.model.path, device=cfg.model.device)
    except (FileNotFoundError, CheckpointError, ConfigError, TokenizerError, OSError) as e:
        raise StationError(f"cannot load the model: {e}") from e
    decoder = MolmoActDecoder(ckpt)
    cell = camera = arm = None
    extras: list = []
    try:
        if cfg.camera.type == "sim":
            cell = make_sim_cell(cfg.camera, cfg.sim, session_cfg.instruction, ckpt.training)
        camera = make_camera(cfg.camera, cell)
        camera.connect()
        extras = make_extra_cameras(cfg.camera, ckpt.cameras[1:], cell)
        for extra in extras:
            extra.connect()
        arm = make_arm(cfg.arm, cell)
        if arm is not None:
            arm.connect()
            if cfg.arm.enable:
                arm.enable()
    except (KeyError, ValueError, CameraError, ArmError) as e:
        for release in (getattr(arm, "disconnect", None), getattr(camera, "disconnect", None),
                        *(x.disconnect for x in extras), getattr(cell, "close", None)):
            if release is not None:
                try:
                    release()
                except Exception:  # noqa: BLE001 - already failing; release the rest
                    pass
        raise StationError(e.args[0] if e.args else str(e)) from e
    session_cfg.arm_type = cfg.arm.type
    session_cfg.unnorm_key = cfg.model.unnorm_key
    session_cfg.model_name = ckpt.model_id
    session_cfg.device = cfg.model.device
    return Session(camera, decoder, arm, SafetyGuard(safety or SafetyConfig()), session_cfg,
                   on_close=[cell.close] if cell is not None else [], extra_cameras=extras)
