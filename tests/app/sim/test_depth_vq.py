"""The sim depth VQ-VAE: its decoder half is the runtime's DepthDecoder, saved and loaded as such."""
import numpy as np
import torch

from app.sim.depth_vq import (SIM_DEPTH_CONFIG, DepthVQVAE, VQTrainConfig, encode_all, fit_encoder,
                              train_depth_vqvae)
from model.depth import decode_depth_codes, load_depth_decoder, save_depth_decoder


def scenes(n: int, seed: int = 0) -> np.ndarray:
    """Inverse-depth images like the cell's: a far band on top, a table ramp, one near box."""
    rng = np.random.default_rng(seed)
    side = SIM_DEPTH_CONFIG.image_size
    y = np.linspace(0, 1, side)[:, None]
    out = np.zeros((n, side, side), np.float32)
    for i in range(n):
        img = np.broadcast_to(0.5 + 0.6 * y, (side, side)).copy()
        img[: side // 4] = 0.2
        r, c = rng.integers(side // 3, side - 12, 2)
        img[r:r + 10, c:c + 10] += 0.3
        out[i] = img
    return out


def test_grid_is_ten_by_ten():
    assert SIM_DEPTH_CONFIG.grid == (10, 10)


def test_exported_decoder_decodes_like_the_trained_vqvae(tmp_path):
    torch.manual_seed(0)
    vq = DepthVQVAE().eval()
    x = torch.from_numpy(scenes(2))[:, None]
    with torch.no_grad():
        recon, codes, _ = vq(x)
    path = save_depth_decoder(vq.export_decoder(), tmp_path / "vae-final.safetensors")
    dec = load_depth_decoder(path)
    assert dec.config == SIM_DEPTH_CONFIG
    dm = decode_depth_codes(dec, codes[0].flatten().tolist())
    np.testing.assert_allclose(dm.relative, recon[0, 0].numpy(), atol=1e-5)


def test_training_reconstructs_held_out_depth():
    train, test = scenes(64, 1), scenes(8, 2)
    vq = train_depth_vqvae(train, VQTrainConfig(steps=150, batch=16), log=lambda m: None)
    codes = encode_all(vq, test)
    assert codes.shape == (8, 100) and codes.min() >= 0 and codes.max() < 128
    dec = vq.export_decoder()
    errs = [np.abs(decode_depth_codes(dec, c.tolist()).relative - t).mean() for c, t in zip(codes, test)]
    baseline = np.abs(test - train.mean()).mean()        # predicting the mean image
    assert np.mean(errs) < 0.5 * baseline


def test_a_new_encoder_for_a_frozen_decoder_reconstructs_as_well_as_the_original():
    """Continuing a checkpoint needs codes that *its* saved decoder reads: an encoder fitted to the frozen
    codebook and decoder reconstructs held-out depth about as well as the original encoder did (several codes
    can decode to near-identical patches, so the code ids themselves need not match), and leaves the decoder as
    it was."""
    train, test = scenes(64, 1), scenes(8, 2)
    vq = train_depth_vqvae(train, VQTrainConfig(steps=150, batch=16), log=lambda m: None)
    decoder = vq.export_decoder()
    before = {k: v.clone() for k, v in decoder.state_dict().items()}
    refit = fit_encoder(decoder, train, VQTrainConfig(steps=150, batch=16, seed=3), log=lambda m: None)
    exported = refit.export_decoder()
    for k, v in decoder.state_dict().items():
        assert torch.equal(v, before[k]) and torch.equal(exported.state_dict()[k], v), k

    def error(model):
        codes = encode_all(model, test)
        return np.mean([np.abs(decode_depth_codes(decoder, c.tolist()).relative - t).mean()
                        for c, t in zip(codes, test)])

    fresh = DepthVQVAE()                       # the same decoder behind an untrained encoder: the baseline
    fresh.vq.decoder.load_state_dict(decoder.decoder.state_dict())
    with torch.no_grad():
        fresh.codebook.copy_(decoder.codebook)
    original, refitted, untrained = error(vq), error(refit), error(fresh.eval())
    assert refitted < 1.3 * original + 0.005 and refitted < 0.5 * untrained


def test_codebook_gradient_does_not_depend_on_thread_timing():
    """With two threads, indexing the codebook (``codebook[codes]``) summed its gradient in a run-dependent
    order, so two trainings from one seed differed; the one-hot matmul sums in a fixed order."""
    threads = torch.get_num_threads()
    torch.set_num_threads(2)
    try:
        torch.manual_seed(0)
        model = DepthVQVAE()
        x = torch.rand(32, 1, 80, 80) + 0.5

        def codebook_grad():
            model.zero_grad()
            recon, _, vq_loss = model(x)
            (torch.nn.functional.l1_loss(recon, x) + vq_loss).backward()
            return model.codebook.grad.clone()

        first = codebook_grad()
        assert all(torch.equal(first, codebook_grad()) for _ in range(3))
    finally:
        torch.set_num_threads(threads)
