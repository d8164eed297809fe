"""SimSiam's two views of a log-mel patch, drawn from a seeded torch generator.

All in the log-mel domain on a batch ``(B, n_mels, T)``: random time crop (the caller's longer
patch cut to ``crop_frames``), gain (a constant added to log power), noise at a random SNR
(flat-spectrum power added per band), time masking and frequency masking.
"""
from __future__ import annotations

import torch


def random_view(x: torch.Tensor, *, crop_frames: int, gen: torch.Generator,
                gain_db: float = 6.0, snr_db: tuple[float, float] = (5.0, 30.0),
                max_time_mask: float = 0.2, max_freq_mask: float = 0.15) -> torch.Tensor:
    """One augmented view per example.

    Parameters
    ----------
    x : torch.Tensor [shape=(B, n_mels, T)], T >= crop_frames
        Log-mel power (natural log).
    crop_frames : int
    gen : torch.Generator
        The only randomness used, so a run is reproducible and resumable.

    Returns
    -------
    torch.Tensor [shape=(B, n_mels, crop_frames)]
    """
    b, m, t = x.shape
    starts = torch.randint(0, t - crop_frames + 1, (b,), generator=gen)
    idx = starts[:, None] + torch.arange(crop_frames)[None, :]
    v = torch.gather(x, 2, idx[:, None, :].expand(b, m, crop_frames))
    gain = (torch.rand(b, 1, 1, generator=gen) * 2 - 1) * gain_db * (torch.log(torch.tensor(10.0)) / 10)
    power = torch.exp(v + gain)
    snr = snr_db[0] + torch.rand(b, 1, 1, generator=gen) * (snr_db[1] - snr_db[0])
    noise_level = power.mean(dim=(1, 2), keepdim=True) / 10 ** (snr / 10)
    # chi-squared-like fluctuation of noise power per bin (exponential: |complex Gaussian|^2)
    noise = -torch.log(torch.rand(b, m, crop_frames, generator=gen).clamp_min(1e-7))
    v = torch.log(power + noise_level * noise + 1e-5)
    floor = v.amin(dim=(1, 2), keepdim=True)
    for axis, size, frac in ((2, crop_frames, max_time_mask), (1, m, max_freq_mask)):
        width = (torch.rand(b, generator=gen) * frac * size).long()
        start = (torch.rand(b, generator=gen) * (size - width + 1)).long()
        pos = torch.arange(size)[None, :]
        mask = (pos >= start[:, None]) & (pos < (start + width)[:, None])
        mask = mask[:, None, :] if axis == 2 else mask[:, :, None]
        v = torch.where(mask, floor.expand_as(v), v)
    return v
