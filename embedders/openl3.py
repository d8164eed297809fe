"""OpenL3 audio embeddings: an independent PyTorch port of openl3 0.4.x (kapre front-end).

What is reproduced (see the fixtures in ``tests/fixtures/openl3`` for the parity checks; the
front-end, the network and the weight file are described in :mod:`embedders.lib.openl3_net`):

* Audio: soundfile samples (float64), mono = mean over channels, resampled to 48 kHz with a
  re-implementation of resampy 0.2.2 ``kaiser_best`` (:mod:`embedders.lib.resample`), the resampler
  openl3 0.4.x uses. ``resampler="soxr"`` (libsoxr VHQ) is a faster alternative that is *not*
  bit-compatible: on the fixtures' resampled files it moves embeddings by a few percent.
* Framing: 1-s frames (48000 samples), hop ``int(hop_size*48000)``; ``center=True`` adds 24000
  zeros at the start only; the end is zero-padded so the last frame ends at the padded end;
  ``n_frames = 1 + ceil((L-48000)/hop)`` (1 frame when L <= 48000); timestamps
  ``arange(n_frames) * hop_size``.

How it is computed (the numbers are the reference's up to float32 round-off; measured speeds and
memory are in docs/benchmarks.md and ``bench/bench_openl3.py``): BatchNorm is folded into the
convolutions, the network runs in channels-last memory format under ``torch.inference_mode``,
and front-end, network and pooling run together on CPU micro-batches of 1-2 frames
(``CPU_MICRO_BATCH_BYTES``). ``conv_algorithm="auto"`` (default) computes convs 2-7 on CPU as
Winograd F(4x4,3x3) convolutions (:mod:`embedders.lib.winograd`); ``"direct"`` keeps every conv
on oneDNN, ``"winograd"`` forces the Winograd layers on any device. It is a run-time option, not
part of the cache key. ``precision="bfloat16"`` (opt-in; it changes the numbers) runs the
network under autocast with direct convs only. ``tf32=True`` allows TF32 on CUDA (off by
default: it breaks parity).

Audio is *streamed*: the file is read in 10-s blocks, downmixed, resampled block by block (both
resamplers are streaming-exact), and frames are cut from a small rolling buffer of the 48 kHz
signal (:class:`FrameBatches`) and embedded ``batch_size`` at a time. Neither the whole signal
nor all frames are held in memory; only the (n_frames, dim) output grows, filled in place from
the frame count in the file's header. On an accelerator the next batch is decoded, resampled and
framed in a background thread (:func:`prefetch`) while the current one is embedded.
"""
from __future__ import annotations

import importlib.util
import math
import os
from pathlib import Path
from typing import Iterable, Iterator

import numpy as np

from .lib import audio_io, weights as wts
from .base import (AUDIO, ConfigurationError, Embedder, Embedding, InputError, WeightsError,
                   mean_pool, resolve_device)
from . import register

SR = 48000
FRAME_LEN = 48000
INPUT_REPRS = ("linear", "mel128", "mel256")
CONTENT_TYPES = ("music", "env")
EMBEDDING_SIZES = (512, 6144)
PRECISIONS = ("float32", "bfloat16")
RESAMPLERS = ("kaiser_best", "soxr")
CONV_ALGORITHMS = ("auto", "direct", "winograd")
#: On CPU the network runs on micro-batches whose first-layer activations (64 channels at the
#: full spectrogram size: 13 MB per frame for mel256/linear, 6.5 MB for mel128) stay within this
#: many bytes, i.e. 1 frame for mel256/linear and 2 for mel128: measured 5-15 % faster than 4
#: frames (2 Zen3 cores). ``batch_size`` frames are still framed, transformed and returned together.
CPU_MICRO_BATCH_BYTES = 16 << 20
WEIGHTS_URL = "https://github.com/marl/openl3/raw/models/openl3_audio_{input_repr}_{content_type}-v0_4_0.h5.gz"
WEIGHTS_NAME = "openl3_audio_{input_repr}_{content_type}.h5"
#: Largest output array allocated up front from a file header's length (4 GB: ~4.5 h at hop 0.1
#: with 6144 dims); beyond that the output is concatenated from the batches.
MAX_PREALLOC_BYTES = 4 << 30
#: Learned parameters are ~18.8 MB of float32; anything much smaller is not a weight file.
MIN_WEIGHTS_SIZE = 18_000_000


# ------------------------------------------------------------------------------------------------
# framing (numpy, cheap)
def n_frames_for(n_samples_48k: int, hop_len: int, center: bool) -> int:
    """Number of 1-s frames openl3 makes from a 48 kHz signal of this length."""
    total = n_samples_48k + (FRAME_LEN // 2 if center else 0)
    if total <= FRAME_LEN:
        return 1
    return 1 + int(math.ceil((total - FRAME_LEN) / hop_len))

class FrameBatches:
    """openl3's 1-s frames cut from a stream of mono 48 kHz blocks, ``batch_size`` at a time.

    Iterating (once) yields float32 arrays [shape=(<= batch_size, 48000)]; the frames past the
    end of the signal are zero-padded, as the reference pads the end. Once the iteration is
    over, :attr:`n_samples` is the length of the signal (before the centre padding).

    Parameters
    ----------
    blocks : iterable of np.ndarray [shape=(n,)]
        The 48 kHz signal, block by block (any block lengths).
    hop_len : int
        Samples between frame starts.
    center : bool
        Pad half a frame of zeros at the start.
    batch_size : int
        Frames per yielded batch (the last one may be shorter).

    Raises
    ------
    ValueError
        The signal is empty (raised by the iteration).
    """

    def __init__(self, blocks: Iterable[np.ndarray], *, hop_len: int, center: bool,
                 batch_size: int):
        self.blocks, self.hop_len, self.center, self.batch_size = blocks, hop_len, center, batch_size
        #: Length of the signal in samples at 48 kHz; ``None`` until the iteration is over.
        self.n_samples: int | None = None

    def __iter__(self) -> Iterator[np.ndarray]:
        hop, bs = self.hop_len, self.batch_size
        lead = FRAME_LEN // 2 if self.center else 0
        buf = np.zeros(lead, dtype=np.float32)
        buf_start = 0  # position (in the padded signal) of buf[0]
        next_start = 0
        total = buf.shape[0]
        pending: list[np.ndarray] = []
        for block in self.blocks:
            block = np.asarray(block, dtype=np.float32)
            total += block.shape[0]
            buf = np.concatenate([buf[next_start - buf_start:], block])
            buf_start = next_start
            while next_start + FRAME_LEN <= total:
                off = next_start - buf_start
                pending.append(buf[off:off + FRAME_LEN])
                next_start += hop
                if len(pending) == bs:
                    yield np.stack(pending)
                    pending = []
            # drop consumed samples
            if next_start > buf_start:
                buf = buf[next_start - buf_start:] if next_start - buf_start < buf.shape[0] \
                    else np.zeros(0, dtype=np.float32)
                buf_start = next_start
        n_samples = total - lead
        if n_samples <= 0:
            raise ValueError("empty signal")
        n_total = n_frames_for(n_samples, hop, self.center)
        made = (next_start // hop)
        # remaining frames run past the end: zero-padded
        while made < n_total:
            off = next_start - buf_start
            frame = np.zeros(FRAME_LEN, dtype=np.float32)
            part = buf[max(off, 0):off + FRAME_LEN] if off < buf.shape[0] else buf[:0]
            frame[:part.shape[0]] = part
            pending.append(frame)
            next_start += hop
            made += 1
            if len(pending) == bs:
                yield np.stack(pending)
                pending = []
        if pending:
            yield np.stack(pending)
        self.n_samples = n_samples


def prefetch(iterator: Iterator, depth: int = 2) -> Iterator:
    """Run ``iterator`` in a background thread, ``depth`` items ahead; its exceptions are
    re-raised in the consumer, and a consumer that stops early stops the thread."""
    import queue
    import threading

    q: queue.Queue = queue.Queue(maxsize=depth)
    stop = threading.Event()
    done = object()

    def put(item) -> bool:
        while not stop.is_set():
            try:
                q.put(item, timeout=0.1)
                return True
            except queue.Full:
                continue
        return False

    def work():
        try:
            for item in iterator:
                if not put((True, item)):
                    return
            put((True, done))
        except BaseException as exc:  # handed to the consumer
            put((False, exc))

    thread = threading.Thread(target=work, name="openl3-prefetch", daemon=True)
    thread.start()
    try:
        while True:
            ok, item = q.get()
            if not ok:
                raise item
            if item is done:
                return
            yield item
    finally:
        stop.set()
        thread.join(timeout=5)


# ------------------------------------------------------------------------------------------------
@register
class OpenL3(Embedder):
    """OpenL3 audio embeddings (openl3 0.4.x, kapre front-end), PyTorch port."""

    name = "openl3"
    modality = AUDIO
    version = "1"
    extensions = audio_io.AUDIO_EXTENSIONS
    description = ("OpenL3 audio embedding (Cramer et al. 2019), PyTorch port of openl3 0.4.x: "
                   "1-s frames at 48 kHz, kapre mel/linear front-end, 512 or 6144 dims")
    parallel_files = False
    option_defaults = {
        "input_repr": "mel256",
        "content_type": "music",
        "embedding_size": 6144,
        "hop_size": 0.1,
        "center": True,
        "batch_size": 32,
        "device": None,
        "weights": None,
        "precision": "float32",
        "resampler": "kaiser_best",
        "tf32": False,
        "conv_algorithm": "auto",
    }
    option_types = {"weights": str, "device": str}

    # -- options ---------------------------------------------------------------------------------
    def validate_options(self) -> None:
        o = self.options
        for name, allowed in (("input_repr", INPUT_REPRS), ("content_type", CONTENT_TYPES),
                              ("precision", PRECISIONS), ("resampler", RESAMPLERS),
                              ("conv_algorithm", CONV_ALGORITHMS)):
            if o[name] not in allowed:
                raise ConfigurationError(f"openl3: {name} must be one of {', '.join(allowed)}, "
                                         f"got {o[name]!r}")
        try:
            size = int(o["embedding_size"])
        except (TypeError, ValueError):
            size = None
        if size not in EMBEDDING_SIZES or isinstance(o["embedding_size"], bool) or \
                float(o["embedding_size"]) != size:
            raise ConfigurationError(f"openl3: embedding_size must be 512 or 6144, got "
                                     f"{o['embedding_size']!r}")
        o["embedding_size"] = size
        hop = o["hop_size"]
        if isinstance(hop, bool) or not isinstance(hop, (int, float)) or not math.isfinite(hop) \
                or hop <= 0 or int(hop * SR) < 1:
            raise ConfigurationError(f"openl3: hop_size must be a positive number of seconds "
                                     f"(at least 1/48000), got {hop!r}")
        if not isinstance(o["center"], bool):
            raise ConfigurationError(f"openl3: center must be true or false, got {o['center']!r}")
        bs = o["batch_size"]
        if isinstance(bs, bool) or not isinstance(bs, int) or bs < 1:
            raise ConfigurationError(f"openl3: batch_size must be a positive integer, got {bs!r}")
        if not isinstance(o["tf32"], bool):
            raise ConfigurationError(f"openl3: tf32 must be true or false, got {o['tf32']!r}")
        if o["weights"] is not None and not isinstance(o["weights"], (str, os.PathLike)):
            raise ConfigurationError(f"openl3: weights must be a file or folder path, got "
                                     f"{o['weights']!r}")
        if o["device"] is not None and not isinstance(o["device"], str):
            raise ConfigurationError(f"openl3: device must be a string such as 'cpu' or 'cuda', "
                                     f"got {o['device']!r}")

    def cache_options(self) -> dict:
        """Cache key options: ``conv_algorithm`` is a run-time choice (float32 round-off only)."""
        opts = super().cache_options()
        opts.pop("conv_algorithm", None)
        return opts

    @property
    def dim(self) -> int:
        return int(self.options["embedding_size"])

    @property
    def hop_len(self) -> int:
        return int(self.options["hop_size"] * SR)

    # -- weights ---------------------------------------------------------------------------------
    def weights_file_name(self) -> str:
        return WEIGHTS_NAME.format(**self.options)

    def weights_url(self) -> str:
        return WEIGHTS_URL.format(**self.options)

    def resolve_weights(self) -> Path:
        """Find the weight file: explicit option, user cache, installed openl3 package, download."""
        fname = self.weights_file_name()
        how = (f"Provide it with --openl3-weights PATH (the .h5 file or a folder holding {fname}), "
               f"or put it in {wts.cache_dir('openl3')}.")
        explicit = self.options["weights"]
        if explicit is not None:
            p = Path(explicit).expanduser()
            if p.is_dir():
                cand = p / fname
                if cand.is_file():
                    return cand
                raise WeightsError(f"openl3 weights folder {p} has no {fname}. {how}")
            if p.is_file():
                return p
            raise WeightsError(f"openl3 weights {p} does not exist. {how}")
        cached = wts.cache_dir("openl3") / fname
        if cached.is_file():
            return cached
        try:
            spec = importlib.util.find_spec("openl3")
        except (ImportError, ValueError):
            spec = None
        if spec is not None and spec.submodule_search_locations:
            for loc in spec.submodule_search_locations:
                cand = Path(loc) / fname
                if cand.is_file():
                    return cand
        url = self.weights_url()
        try:
            return wts.download(url, cached, min_size=MIN_WEIGHTS_SIZE, decompress_gzip=True,
                                how_to_provide=how)
        except WeightsError as exc:
            raise WeightsError(f"openl3 weights {fname} not found (looked in the cache "
                               f"{cached.parent} and the openl3 package) and could not be "
                               f"downloaded from {url}: {exc}") from exc

    def weights_identity(self) -> str | None:
        path = getattr(self, "_weights_path", None)
        if path is None:  # not loaded: resolve the weight file only (no network built)
            path = self._weights_path = self.resolve_weights()
        return wts.weights_fingerprint(path)

    # -- model -----------------------------------------------------------------------------------
    def _load(self) -> None:
        import torch

        from .lib.openl3_net import (CONV_CHANNELS, FINAL_POOL, AudioNetwork, Frontend,
                                     read_weights, winograd_layers)

        o = self.options
        self.device = resolve_device(o["device"])
        self._weights_path = self.resolve_weights()
        layers = read_weights(self._weights_path)
        dev = torch.device(self.device)
        if dev.type == "cuda":
            torch.backends.cudnn.allow_tf32 = bool(o["tf32"])
            torch.backends.cuda.matmul.allow_tf32 = bool(o["tf32"])
        self._frontend = Frontend(o["input_repr"]).to(dev).eval()
        with torch.inference_mode():
            n_bins, n_stft = self._frontend(torch.zeros(1, FRAME_LEN, device=dev)).shape[2:]
        # bfloat16 autocast: Winograd's transforms lose too much in bf16; direct convs only
        self._winograd = (winograd_layers(o["conv_algorithm"], dev.type)
                          if o["precision"] == "float32" else ())
        net = AudioNetwork(layers, input_repr=o["input_repr"],
                           winograd=self._winograd).to(dev).eval()
        self._channels_last = dev.type in ("cpu", "cuda") or bool(self._winograd)
        if self._channels_last:
            net = net.to(memory_format=torch.channels_last)
        self._net = net
        self._pool = FINAL_POOL[(o["input_repr"], o["embedding_size"])]
        self._torch_device = dev
        # frames per network call: all of them on GPUs; on CPU, see CPU_MICRO_BATCH_BYTES
        if dev.type == "cpu":
            first_layer_bytes = n_bins * n_stft * CONV_CHANNELS[0][1] * 4
            self._micro_batch = max(1, CPU_MICRO_BATCH_BYTES // first_layer_bytes)
        else:
            self._micro_batch = int(o["batch_size"])
        # on an accelerator, decode/resample/frame the next batch while this one is embedded;
        # on CPU both would compete for the same cores
        self._prefetch = dev.type != "cpu"
        wts.weights_fingerprint(self._weights_path)  # hash once now, not mid-run

    def _embed_frames(self, frames: np.ndarray) -> np.ndarray:
        """Embed a batch of frames.

        Front-end, network and final pooling run together on micro-batches, so the batch's
        spectrograms (the STFT of 32 mel256 frames is ~50 MB) and 512-channel maps (~50 MB) are
        never all alive at once, and on CPU the early layers' activations stay in the cache.

        Parameters
        ----------
        frames : np.ndarray [shape=(n_frames, 48000)]

        Returns
        -------
        np.ndarray [shape=(n_frames, dim), dtype=float32]
        """
        import torch

        from .lib.openl3_net import pool_map

        x = torch.from_numpy(np.ascontiguousarray(frames, dtype=np.float32))
        if self._torch_device.type == "cuda":  # one pinned host->device copy per batch
            x = x.pin_memory().to(self._torch_device, non_blocking=True)
        out = np.empty((x.shape[0], self.dim), dtype=np.float32)
        step = self._micro_batch
        bf16 = self.options["precision"] == "bfloat16"
        with torch.inference_mode():
            for i in range(0, x.shape[0], step):
                spec = self._frontend(x[i:i + step].to(self._torch_device))
                if self._channels_last:
                    spec = spec.contiguous(memory_format=torch.channels_last)
                if bf16:
                    with torch.autocast(self._torch_device.type, dtype=torch.bfloat16):
                        maps = self._net(spec)
                    maps = maps.float()
                else:
                    maps = self._net(spec)
                out[i:i + step] = pool_map(maps, self._pool).cpu().numpy()
        return out

    # -- audio -----------------------------------------------------------------------------------
    def _iter_48k(self, path: str, block_seconds: float = 10.0) -> Iterator[np.ndarray]:
        """Stream the mono 48 kHz float64 signal of a file, block by block."""
        from .lib.resample import make_resampler

        res = None
        for block, sr in audio_io.iter_audio_blocks(path, block_seconds=block_seconds):
            mono = block.mean(axis=1) if block.shape[1] > 1 else block[:, 0]
            if sr == SR:
                yield mono
                continue
            if res is None:
                res = make_resampler(self.options["resampler"], sr, SR)
            out = res.process(mono)
            if out.size:
                yield out
        if res is not None:
            out = res.flush()
            if out.size:
                yield out

    def frame_batches(self, blocks: Iterable[np.ndarray]) -> FrameBatches:
        """This embedder's frames (hop, centring, batch size) of a mono 48 kHz block stream."""
        return FrameBatches(blocks, hop_len=self.hop_len, center=bool(self.options["center"]),
                            batch_size=int(self.options["batch_size"]))

    def embed_signal(self, blocks: Iterable[np.ndarray], *,
                     n_frames_hint: int | None = None) -> tuple[np.ndarray, np.ndarray]:
        """Embed a mono 48 kHz signal given as an iterable of blocks.

        Parameters
        ----------
        blocks : iterable of np.ndarray [shape=(n,)]
        n_frames_hint : int or None
            The expected number of frames (from the file's header). The output is then filled in
            place instead of concatenated at the end, which would briefly hold it twice (an hour
            at hop 0.1 and 6144 dims is ~0.9 GB). A wrong hint only costs that copy.

        Returns
        -------
        frames : np.ndarray [shape=(n_frames, dim), dtype=float32]
        timestamps : np.ndarray [shape=(n_frames,)]
            Seconds, ``arange(n_frames) * hop_size``.
        """
        frames, _ = self._embed_stream(blocks, n_frames_hint=n_frames_hint)
        return frames, self._timestamps(frames.shape[0])

    def _timestamps(self, n_frames: int) -> np.ndarray:
        return np.arange(n_frames) * float(self.options["hop_size"])

    def _embed_stream(self, blocks: Iterable[np.ndarray], *,
                      n_frames_hint: int | None) -> tuple[np.ndarray, int]:
        """Frames [shape=(n_frames, dim)] and the signal's length in 48 kHz samples."""
        self.load()
        framer = self.frame_batches(blocks)
        batches: Iterable[np.ndarray] = framer
        if self._prefetch:
            batches = prefetch(iter(framer))
        if n_frames_hint is None or n_frames_hint <= 0:
            emb = np.concatenate([self._embed_frames(b) for b in batches], axis=0)
        else:
            emb = np.empty((int(n_frames_hint), self.dim), dtype=np.float32)
            done, extra = 0, []
            for b in batches:
                e = self._embed_frames(b)
                if extra or done + e.shape[0] > emb.shape[0]:
                    extra.append(e)
                else:
                    emb[done:done + e.shape[0]] = e
                    done += e.shape[0]
            if extra:
                emb = np.concatenate([emb[:done], *extra], axis=0)
            elif done < emb.shape[0]:
                emb = emb[:done].copy()
        # the framer ran to its end (the prefetch thread too: its last item came through)
        return emb, int(framer.n_samples)

    def embed_array(self, audio: np.ndarray, sr: int) -> tuple[np.ndarray, np.ndarray]:
        """Embed an in-memory array (n,) or (n, channels), like ``openl3.get_audio_embedding``."""
        from .lib.resample import resample

        audio = np.asarray(audio, dtype=np.float64)
        if audio.ndim == 2:
            audio = audio.mean(axis=1)
        if audio.ndim != 1 or audio.shape[0] == 0:
            raise ValueError("audio must be a non-empty (n,) or (n, channels) array")
        if sr != SR:
            audio = resample(audio, sr, SR, self.options["resampler"])
        return self.embed_signal([audio])

    def _embed_file(self, path: str) -> Embedding:
        from .lib.resample import output_length

        sr, channels, n = audio_io.audio_info(path)
        n_48k = n if sr == SR else output_length(n, sr, SR)
        hint = n_frames_for(n_48k, self.hop_len, self.options["center"]) if n_48k > 0 else None
        if hint is not None and hint * self.dim * 4 > MAX_PREALLOC_BYTES:
            hint = None  # an implausible header is not trusted with a huge allocation
        try:
            frames, n_samples = self._embed_stream(self._iter_48k(path), n_frames_hint=hint)
        except InputError:
            raise
        except (ValueError, MemoryError) as exc:
            raise InputError(path, f"cannot embed audio: {exc}") from exc
        info = {
            "sample_rate": sr,
            "channels": channels,
            "resampler": (self.options["resampler"] if sr != SR else "none"),
            "n_samples_48k": n_samples,
            "hop_len": self.hop_len,
            "precision": self.options["precision"],
            "device": self.device,
        }
        return Embedding(frames=frames, clip=mean_pool(frames),
                         timestamps=self._timestamps(frames.shape[0]), info=info)
