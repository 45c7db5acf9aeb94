"""A depth VQ-VAE of the reference's architecture, smaller, trained on the simulated cell's depth.

The decoder half *is* ``model.depth.DepthDecoder`` (same module tree, same ``decoder.<i>`` and
``_vq_vae._embedding`` names), so the trained codes decode with the runtime's own ``depth.py``. The
encoder mirrors it (strided convs down to the code grid, residual blocks, a 1x1 projection to the
codebook dimension). The target is inverse depth in 1/m, so the decoded map is "brighter = nearer"
like the reference's relative depth and converts back to metres as 1/value.

Training: straight-through estimator, codebook + 0.25 commitment loss, codebook seeded from encoder
outputs and dead codes re-seeded from the batch; deterministic from the seed on the CPU.
"""
from __future__ import annotations

from dataclasses import dataclass

import numpy as np
import torch
import torch.nn.functional as F
from torch import nn

from model.depth import DepthDecoder, DepthVQVAEConfig, ResBlock

SIM_DEPTH_CONFIG = DepthVQVAEConfig(image_size=80, num_tokens=128, codebook_dim=32, hidden_dim=16,
                                    downsample_ratio=8, num_resnet_blocks=1)
INPUT_SHIFT, INPUT_SCALE = 0.8, 4.0     # inverse depth of the cell is ~0.4..1.2 1/m: centre it for the encoder


class DepthEncoder(nn.Module):
    def __init__(self, cfg: DepthVQVAEConfig) -> None:
        super().__init__()
        layers: list[nn.Module] = []
        chan_in, chan = cfg.channels, cfg.width // (2 ** cfg.layer_num)
        for _ in range(cfg.layer_num + 1):
            layers += [nn.Conv2d(chan_in, chan, 4, stride=2, padding=1), nn.ReLU()]
            chan_in, chan = chan, min(chan * 2, cfg.width)
        layers += [ResBlock(chan_in) for _ in range(cfg.num_resnet_blocks)]
        layers.append(nn.Conv2d(chan_in, cfg.codebook_dim, 1))
        self.net = nn.Sequential(*layers)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.net((x - INPUT_SHIFT) * INPUT_SCALE)


@dataclass
class VQTrainConfig:
    steps: int = 800
    batch: int = 32
    lr: float = 1e-3
    commitment: float = 0.25
    seed: int = 0


class DepthVQVAE(nn.Module):
    def __init__(self, cfg: DepthVQVAEConfig = SIM_DEPTH_CONFIG, commitment: float = 0.25) -> None:
        super().__init__()
        self.cfg = cfg
        self.commitment = commitment
        self.encoder = DepthEncoder(cfg)
        self.vq = DepthDecoder(cfg)           # codebook + decoder, saved as the runtime loads them
        self.codebook = nn.Parameter(torch.randn(cfg.num_tokens, cfg.codebook_dim) * 0.1)

    def quantize(self, z: torch.Tensor) -> torch.Tensor:
        """Nearest code index per cell: z [B, C, H, W] → [B, H, W]."""
        flat = z.permute(0, 2, 3, 1).reshape(-1, z.shape[1])
        d = (flat.pow(2).sum(1, keepdim=True) - 2 * flat @ self.codebook.t()
             + self.codebook.pow(2).sum(1)[None])
        return d.argmin(1).view(z.shape[0], z.shape[2], z.shape[3])

    @torch.no_grad()
    def encode(self, inv_depth: torch.Tensor) -> torch.Tensor:
        return self.quantize(self.encoder(inv_depth))

    def forward(self, x: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
        z = self.encoder(x)
        codes = self.quantize(z)
        # a one-hot matmul, not codebook[codes]: indexing's backward accumulates the codebook gradient across
        # threads in a run-dependent order, and runs from one seed would differ (measured with 2 threads)
        q = (F.one_hot(codes, self.cfg.num_tokens).to(z.dtype) @ self.codebook).permute(0, 3, 1, 2)
        vq_loss = F.mse_loss(q, z.detach()) + self.commitment * F.mse_loss(z, q.detach())
        q_st = z + (q - z).detach()
        recon = self.vq.decoder(q_st)
        return recon, codes, vq_loss

    def export_decoder(self) -> DepthDecoder:
        dec = DepthDecoder(self.cfg)
        dec.decoder.load_state_dict(self.vq.decoder.state_dict())
        dec._vq_vae._embedding.copy_(self.codebook.detach())
        return dec.eval()


def _step(model: DepthVQVAE, opt: torch.optim.Optimizer, x: torch.Tensor
          ) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
    """One optimizer step on reconstruction (L1) + the VQ losses: (L1, codes, VQ loss)."""
    recon, codes, vq_loss = model(x)
    rec = F.l1_loss(recon, x)
    opt.zero_grad(set_to_none=True)
    (rec + vq_loss).backward()
    opt.step()
    return rec, codes, vq_loss


def train_depth_vqvae(inv_depths: np.ndarray, cfg: VQTrainConfig = VQTrainConfig(),
                      log=print, device: torch.device | str = "cpu") -> DepthVQVAE:
    """inv_depths: [N, 80, 80] (1/m). Returns the trained VQ-VAE (eval mode, on the CPU). The batches are
    drawn on the CPU from the seed whatever ``device`` the steps run on."""
    g = torch.Generator().manual_seed(cfg.seed)
    torch.manual_seed(cfg.seed)
    data = torch.from_numpy(np.asarray(inv_depths, np.float32))[:, None]
    model = DepthVQVAE(commitment=cfg.commitment).to(device)
    with torch.no_grad():                       # seed the codebook with encoder outputs
        z = model.encoder(data[torch.randperm(len(data), generator=g)[:64]].to(device))
        flat = z.permute(0, 2, 3, 1).reshape(-1, z.shape[1])
        model.codebook.copy_(flat[torch.randperm(len(flat), generator=g)[:model.cfg.num_tokens]])
    opt = torch.optim.Adam(model.parameters(), lr=cfg.lr)
    usage = torch.zeros(model.cfg.num_tokens, device=device)
    for step in range(cfg.steps):
        x = data[torch.randint(len(data), (cfg.batch,), generator=g)].to(device)
        rec, codes, vq_loss = _step(model, opt, x)
        usage += torch.bincount(codes.flatten(), minlength=model.cfg.num_tokens).float()
        if (step + 1) % 25 == 0:
            with torch.no_grad():                # re-seed codes unused over the last 25 steps
                dead = (usage == 0).nonzero().flatten()
                if len(dead):
                    z = model.encoder(x).permute(0, 2, 3, 1).reshape(-1, model.cfg.codebook_dim)
                    pick = torch.randint(len(z), (len(dead),), generator=g)
                    model.codebook[dead] = z[pick.to(device)]
            if (step + 1) % 100 == 0:
                log(f"vq step {step + 1}: l1 {rec.item():.4f} vq {vq_loss.item():.4f} "
                    f"codes used {(usage > 0).sum().item()}/{model.cfg.num_tokens} re-seeded {len(dead)}")
            usage.zero_()
    return model.cpu().eval()


def fit_encoder(decoder: DepthDecoder, inv_depths: np.ndarray, cfg: VQTrainConfig = VQTrainConfig(),
                log=print, device: torch.device | str = "cpu") -> DepthVQVAE:
    """A new encoder for a trained, frozen codebook + decoder (``vae-final.safetensors`` keeps only those).

    Continuing a checkpoint's training needs the depth codes *its* decoder reads; its encoder was not
    saved, and a VQ-VAE retrained from scratch would give the 128 codes other meanings. So the codebook
    and decoder are loaded and frozen, and only the encoder learns (reconstruction through the
    straight-through estimator, plus the commitment loss toward the fixed codes).
    """
    if decoder.config != SIM_DEPTH_CONFIG:
        raise ValueError(f"the depth decoder's config {decoder.config} is not the sim's {SIM_DEPTH_CONFIG}")
    g = torch.Generator().manual_seed(cfg.seed)
    torch.manual_seed(cfg.seed)
    data = torch.from_numpy(np.asarray(inv_depths, np.float32))[:, None]
    model = DepthVQVAE(commitment=cfg.commitment)
    with torch.no_grad():
        model.vq.decoder.load_state_dict(decoder.decoder.state_dict())
        model.codebook.copy_(decoder.codebook.detach())
    for p in [*model.vq.parameters(), model.codebook]:
        p.requires_grad_(False)
    model.to(device)
    opt = torch.optim.Adam(model.encoder.parameters(), lr=cfg.lr)
    for step in range(cfg.steps):
        x = data[torch.randint(len(data), (cfg.batch,), generator=g)].to(device)
        rec, codes, vq_loss = _step(model, opt, x)
        if (step + 1) % 100 == 0:
            log(f"encoder fit step {step + 1}: l1 {rec.item():.4f} commitment {vq_loss.item():.4f} "
                f"codes used {len(torch.unique(codes))}/{model.cfg.num_tokens}")
    return model.cpu().eval()


def encode_all(model: DepthVQVAE, inv_depths: np.ndarray, batch: int = 256) -> np.ndarray:
    """[N, 80, 80] → [N, 100] code indices (row-major, as the answer lists them)."""
    out = []
    for i in range(0, len(inv_depths), batch):
        x = torch.from_numpy(np.asarray(inv_depths[i:i + batch], np.float32))[:, None]
        out.append(model.encode(x).reshape(len(x), -1).numpy())
    return np.concatenate(out, 0).astype(np.int64)
