"""madmom's spectrogram front end for its harmony networks, re-implemented (numpy only).

What ``SignalProcessor(num_channels=1, sample_rate=44100)``, ``FramedSignalProcessor(
frame_size=8192, fps=F)``, ``ShortTimeFourierTransformProcessor()`` and
``LogarithmicFilteredSpectrogramProcessor(num_bands=24, fmin, fmax, unique_filters=True)`` compute
(madmom 0.17), step by step:

* Samples as the file stores them: 16-bit PCM stays int16. Several channels are averaged and cast
  back to the sample type (``np.mean(..).astype(int16)``: truncation towards zero).
* Frames: ``ceil(n / hop)`` frames with ``hop = 44100 / fps`` (a float); frame i covers samples
  ``int(i * hop) - 4096 .. + 8192``, zeros outside the signal.
* STFT: each frame times a Hann window (``np.hanning(8192)``) divided by the sample type's maximum
  (32767 for int16: the scaling to [-1, 1] is folded into the window), FFT in float64, the first
  4096 bins kept as complex64; magnitude as float32.
* Filterbank: frequencies ``440 * 2 ** (k / 24)`` from ``floor(24 log2(fmin/440))`` to
  ``ceil(24 log2(fmax/440))`` (exclusive), trimmed to [fmin, fmax]; each mapped to the nearest FFT
  bin (bin frequencies ``fftfreq(8192, 1/44100)[:4096]``; ties go to the lower bin), duplicates
  removed; triangular filters over consecutive bin triples (start, centre, stop) rising from 0
  at start to 1 at centre (``linspace(0, 1, centre-start, endpoint=False)``) and falling to stop
  (``linspace(1, 0, stop-centre, endpoint=False)``), a filter spanning fewer than 2 bins becoming
  one bin of 1; each normalised to sum 1 (float32); overlapping filters combine by maximum.
* ``log10(1 + spec @ filterbank)`` in float32.
"""
from __future__ import annotations

import numpy as np

SAMPLE_RATE = 44100
FRAME_SIZE = 8192
BANDS_PER_OCTAVE = 24
A4 = 440.0


def downmix(samples: np.ndarray) -> np.ndarray:
    """Mono as madmom makes it: the channel mean cast back to the sample type.

    Parameters
    ----------
    samples : np.ndarray [shape=(n,) or (n, channels)]
    """
    if samples.ndim == 1:
        return samples
    if samples.shape[1] == 1:
        return samples[:, 0]
    return np.mean(samples, axis=-1).astype(samples.dtype)


def frame_starts(n_samples: int, fps: float) -> np.ndarray:
    """First sample of every frame (may be negative): ``int(i * hop) - frame_size // 2``."""
    hop = SAMPLE_RATE / float(fps)
    n_frames = int(np.ceil(n_samples / hop))
    return (np.arange(n_frames) * hop).astype(np.int64) - FRAME_SIZE // 2


def magnitude_spectrogram(signal: np.ndarray, fps: float, *, block: int = 64) -> np.ndarray:
    """``|STFT|`` of a mono signal with madmom's framing and window scaling.

    Parameters
    ----------
    signal : np.ndarray [shape=(n,)], int16/int32 or float
    fps : float
        Frames per second.

    Returns
    -------
    np.ndarray [shape=(ceil(n / (44100 / fps)), 4096), dtype=float32]
    """
    window = np.hanning(FRAME_SIZE)
    if np.issubdtype(signal.dtype, np.integer):
        window = window / float(np.iinfo(signal.dtype).max)
    starts = frame_starts(signal.shape[0], fps)
    padded = np.zeros(signal.shape[0] + 2 * FRAME_SIZE, dtype=signal.dtype)
    padded[FRAME_SIZE:FRAME_SIZE + signal.shape[0]] = signal
    out = np.empty((starts.shape[0], FRAME_SIZE // 2), dtype=np.float32)
    for i in range(0, starts.shape[0], block):
        idx = (starts[i:i + block] + FRAME_SIZE)[:, None] + np.arange(FRAME_SIZE)[None, :]
        spec = np.fft.fft(padded[idx] * window, axis=1)[:, :FRAME_SIZE // 2]
        out[i:i + block] = np.abs(spec.astype(np.complex64))
    return out


def log_frequencies(fmin: float, fmax: float, bands_per_octave: int = BANDS_PER_OCTAVE
                    ) -> np.ndarray:
    """Centre frequencies spaced ``bands_per_octave`` per octave around 440 Hz in [fmin, fmax]."""
    left = np.floor(np.log2(float(fmin) / A4) * bands_per_octave)
    right = np.ceil(np.log2(float(fmax) / A4) * bands_per_octave)
    freqs = A4 * 2.0 ** (np.arange(left, right) / float(bands_per_octave))
    freqs = freqs[np.searchsorted(freqs, fmin):]
    return freqs[:np.searchsorted(freqs, fmax, "right")]


def nearest_bins(freqs: np.ndarray, bin_freqs: np.ndarray) -> np.ndarray:
    """Index of the FFT bin nearest to each frequency (the lower one on a tie), unique, sorted."""
    idx = np.clip(bin_freqs.searchsorted(freqs), 1, len(bin_freqs) - 1)
    lower_is_closer = (freqs - bin_freqs[idx - 1]) <= (bin_freqs[idx] - freqs)
    return np.unique(idx - lower_is_closer.astype(idx.dtype))


def log_filterbank(fmin: float, fmax: float) -> np.ndarray:
    """Normalised triangular filters on a 24-per-octave log scale (see the module text).

    Returns
    -------
    np.ndarray [shape=(4096, n_bands), dtype=float32]
    """
    bin_freqs = np.fft.fftfreq(FRAME_SIZE, 1.0 / SAMPLE_RATE)[:FRAME_SIZE // 2]
    bins = nearest_bins(log_frequencies(fmin, fmax), bin_freqs)
    if bins.size < 3:
        raise ValueError(f"fmin {fmin} / fmax {fmax} leave fewer than 3 filter bins")
    bank = np.zeros((bin_freqs.size, bins.size - 2), dtype=np.float32)
    for band, (start, centre, stop) in enumerate(zip(bins[:-2], bins[1:-1], bins[2:])):
        start, centre, stop = int(start), int(centre), int(stop)
        if stop - start < 2:
            centre, stop = start, start + 1
        tri = np.zeros(stop - start)
        tri[:centre - start] = np.linspace(0, 1, centre - start, endpoint=False)
        tri[centre - start:] = np.linspace(1, 0, stop - centre, endpoint=False)
        tri = tri.astype(np.float32)
        tri /= np.sum(tri)
        np.maximum(bank[start:stop, band], tri, out=bank[start:stop, band])
    return bank


def log_filtered_spectrogram(signal: np.ndarray, *, fps: float, fmin: float, fmax: float
                             ) -> np.ndarray:
    """``log10(1 + |STFT| @ filterbank)``.

    Returns
    -------
    np.ndarray [shape=(n_frames, n_bands), dtype=float32]
    """
    spec = magnitude_spectrogram(signal, fps) @ log_filterbank(fmin, fmax)
    spec += np.float32(1.0)
    return np.log10(spec, out=spec)
