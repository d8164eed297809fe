"""The networks that ``python main.py train`` fits and the ``trained`` embedder rebuilds.

Everything a trained run needs at embedding time lives here, below both users: the shared
audio front end (16 kHz mono, log-mel), the encoders and the checkpoint reader. ``training/``
adds the losses, the data pipeline and the loop; ``embedders/trained.py`` only reads.

Networks (all take a batch and return one vector per example from :meth:`embed`):

* :class:`SimSiamNet` -- small ResNet over log-mel ``(B, n_mels, T)``, projector, predictor.
* :class:`CRNN` -- convolution blocks over log-mel, a GRU over time, a penultimate layer (the
  embedding) and a classifier.
* :class:`CPCNet` -- strided 1-D convolutions over 16 kHz audio ``(B, n_samples)``, a GRU
  context network and one linear predictor per future step; embedding = context mean over time.
* :class:`HFAudioClassifier` -- a Hugging Face ``transformers`` waveform encoder (wav2vec 2.0,
  HuBERT, WavLM, data2vec-audio: a convolutional front-end over 16 kHz audio, then a
  transformer), one hidden layer pooled over time (the embedding), a linear classifier. Its
  checkpoint holds the transformers config as JSON beside the weights, so it is rebuilt with
  ``AutoConfig.for_model`` / ``AutoModel.from_config`` without the original folder or network.

Imported only inside ``_load`` (it imports torch; transformers only for ``finetune``).
"""
from __future__ import annotations

import json
import math
import os
from pathlib import Path

import numpy as np
import torch
from torch import nn
import torch.nn.functional as F

from ..base import ConfigurationError, InputError
from .audio_io import read_audio, to_mono

SR = 16000
#: Checkpoints written by ``train`` carry this in ``format``; anything else is refused.
CHECKPOINT_FORMAT = "embcompare-train"
CHECKPOINT_VERSION = 1
METHODS = ("simsiam", "cpc", "crnn", "finetune")
#: Methods whose input is the log-mel front end; the others take the 16 kHz signal.
MEL_METHODS = ("simsiam", "crnn")
#: Methods trained with the labels (split, classifier, test metrics).
SUPERVISED_METHODS = ("crnn", "finetune")
#: The log-mel front end shared by the mel methods (its values are part of every feature-cache
#: key and stored in each checkpoint).
FRONTEND = {"sr": SR, "n_fft": 512, "hop_length": 256, "n_mels": 64, "fmin": 30.0, "fmax": 8000.0}
_LOG_FLOOR = 1e-5


class CheckpointError(Exception):
    """A file is not a usable ``train`` checkpoint (corrupt, another format or method)."""


# -- front end ------------------------------------------------------------------------------------

def load_audio_16k(path: str | os.PathLike) -> np.ndarray:
    """Mono float32 samples at 16 kHz (channel mean, soxr HQ).

    Returns
    -------
    np.ndarray [shape=(n_samples,), dtype=float32]

    Raises
    ------
    InputError
        Unreadable, empty or non-finite audio.
    """
    import soxr

    audio, sr = read_audio(path, dtype="float32")
    y = to_mono(audio).astype(np.float32)
    if sr != SR:
        y = soxr.resample(y, sr, SR, quality="HQ").astype(np.float32)
    if y.shape[0] < FRONTEND["n_fft"]:
        raise InputError(path, f"audio too short ({y.shape[0]} samples at 16 kHz)")
    return np.ascontiguousarray(y)


_MEL_BASIS: dict[tuple, torch.Tensor] = {}


def _mel_basis(front: dict) -> torch.Tensor:
    key = tuple(sorted(front.items()))
    if key not in _MEL_BASIS:
        import librosa
        _MEL_BASIS[key] = torch.from_numpy(librosa.filters.mel(
            sr=front["sr"], n_fft=front["n_fft"], n_mels=front["n_mels"], fmin=front["fmin"],
            fmax=front["fmax"]).astype(np.float32))
    return _MEL_BASIS[key]


def log_mel(y: np.ndarray, front: dict = FRONTEND) -> np.ndarray:
    """Log-mel spectrogram of 16 kHz mono audio: ``log(mel power + 1e-5)``.

    Parameters
    ----------
    y : np.ndarray [shape=(n_samples,)]

    Returns
    -------
    np.ndarray [shape=(n_mels, n_frames), dtype=float32]
        ``n_frames = 1 + n_samples // hop_length`` (centered frames).
    """
    wave = torch.from_numpy(np.ascontiguousarray(y, dtype=np.float32))
    spec = torch.stft(wave, n_fft=front["n_fft"], hop_length=front["hop_length"],
                      window=torch.hann_window(front["n_fft"]), center=True,
                      return_complex=True).abs() ** 2
    mel = _mel_basis(front) @ spec
    return torch.log(mel + _LOG_FLOOR).numpy().astype(np.float32)


# -- networks -------------------------------------------------------------------------------------

class _ResBlock(nn.Module):
    def __init__(self, c_in: int, c_out: int):
        super().__init__()
        self.conv1 = nn.Conv2d(c_in, c_out, 3, padding=1, bias=False)
        self.bn1 = nn.BatchNorm2d(c_out)
        self.conv2 = nn.Conv2d(c_out, c_out, 3, padding=1, bias=False)
        self.bn2 = nn.BatchNorm2d(c_out)
        self.skip = nn.Conv2d(c_in, c_out, 1, bias=False) if c_in != c_out else nn.Identity()

    def forward(self, x):
        h = F.relu(self.bn1(self.conv1(x)))
        return F.relu(self.bn2(self.conv2(h)) + self.skip(x))


class ResNetEncoder(nn.Module):
    """Small ResNet over log-mel: ``(B, n_mels, T)`` -> ``(B, width * 2**(depth-1))``.

    ``depth`` residual blocks, each followed by 2x2 average pooling; channels double per block.
    The mel input is normalised per example (mean and std over the patch), so gain alone does
    not change the embedding's input scale.
    """

    def __init__(self, *, width: int = 16, depth: int = 3):
        super().__init__()
        chans = [width * 2 ** i for i in range(depth)]
        self.stem = nn.Sequential(nn.Conv2d(1, width, 3, padding=1, bias=False),
                                  nn.BatchNorm2d(width), nn.ReLU())
        self.blocks = nn.ModuleList(_ResBlock(a, b) for a, b in zip([width] + chans[:-1], chans))
        self.dim = chans[-1]

    def forward(self, x):
        x = (x - x.mean(dim=(1, 2), keepdim=True)) / (x.std(dim=(1, 2), keepdim=True) + 1e-5)
        h = self.stem(x.unsqueeze(1))
        for block in self.blocks:
            h = F.avg_pool2d(block(h), 2, ceil_mode=True)
        return h.mean(dim=(2, 3))


def _mlp(d_in: int, d_hidden: int, d_out: int, *, last_bn: bool) -> nn.Sequential:
    layers = [nn.Linear(d_in, d_hidden, bias=False), nn.BatchNorm1d(d_hidden), nn.ReLU(),
              nn.Linear(d_hidden, d_out, bias=not last_bn)]
    if last_bn:
        layers.append(nn.BatchNorm1d(d_out, affine=False))
    return nn.Sequential(*layers)


class SimSiamNet(nn.Module):
    """Encoder + projector (the representation ``z``) + predictor (``p``), as SimSiam."""

    def __init__(self, *, width: int = 16, depth: int = 3, proj_dim: int = 128,
                 pred_dim: int = 32):
        super().__init__()
        self.encoder = ResNetEncoder(width=width, depth=depth)
        self.projector = _mlp(self.encoder.dim, proj_dim, proj_dim, last_bn=True)
        self.predictor = _mlp(proj_dim, pred_dim, proj_dim, last_bn=False)

    def forward(self, x):
        """``(z, p)`` [shape=(B, proj_dim) each]."""
        z = self.projector(self.encoder(x))
        return z, self.predictor(z)

    def embed(self, x):
        """Encoder output [shape=(B, encoder.dim)]: the embedding (as SimSiam evaluates)."""
        return self.encoder(x)


class CRNN(nn.Module):
    """Conv blocks over log-mel -> GRU over time -> penultimate (embedding) -> classifier."""

    def __init__(self, *, n_classes: int, n_mels: int = FRONTEND["n_mels"], width: int = 16,
                 depth: int = 3, hidden: int = 64, emb_dim: int = 64, dropout: float = 0.2):
        super().__init__()
        layers, c_in = [], 1
        for i in range(depth):
            c_out = width * 2 ** i
            layers += [nn.Conv2d(c_in, c_out, 3, padding=1, bias=False), nn.BatchNorm2d(c_out),
                       nn.ReLU(), nn.MaxPool2d((2, 2), ceil_mode=True)]
            c_in = c_out
        self.conv = nn.Sequential(*layers)
        n_freq = n_mels
        for _ in range(depth):
            n_freq = math.ceil(n_freq / 2)
        self.gru = nn.GRU(c_in * n_freq, hidden, batch_first=True)
        self.penultimate = nn.Sequential(nn.Linear(hidden, emb_dim), nn.ReLU())
        self.dropout = nn.Dropout(dropout)
        self.classifier = nn.Linear(emb_dim, n_classes)

    def embed(self, x):
        """Penultimate layer [shape=(B, emb_dim)] of log-mel ``(B, n_mels, T)``."""
        x = (x - x.mean(dim=(1, 2), keepdim=True)) / (x.std(dim=(1, 2), keepdim=True) + 1e-5)
        h = self.conv(x.unsqueeze(1))                      # (B, C, F, T')
        h = h.flatten(1, 2).transpose(1, 2)                # (B, T', C*F)
        out, _ = self.gru(h)
        return self.penultimate(out.mean(dim=1))

    def forward(self, x):
        """Class logits [shape=(B, n_classes)]."""
        return self.classifier(self.dropout(self.embed(x)))


class CPCNet(nn.Module):
    """Contrastive predictive coding on 16 kHz audio.

    ``encode``: strided 1-D convs (total stride 160: 100 steps/s) -> ``z`` (B, T, enc_dim);
    ``context``: GRU -> ``c`` (B, T, ctx_dim); ``predictors[k-1]`` maps ``c_t`` to a guess of
    ``z_{t+k}`` for k = 1..n_future.
    """

    STRIDES = (5, 4, 2, 2, 2)
    KERNELS = (10, 8, 4, 4, 4)

    def __init__(self, *, enc_dim: int = 64, ctx_dim: int = 64, n_future: int = 4):
        super().__init__()
        layers, c_in = [], 1
        for k, s in zip(self.KERNELS, self.STRIDES):
            layers += [nn.Conv1d(c_in, enc_dim, k, stride=s, padding=(k - s) // 2),
                       nn.GroupNorm(1, enc_dim), nn.ReLU()]
            c_in = enc_dim
        self.encoder = nn.Sequential(*layers)
        self.gru = nn.GRU(enc_dim, ctx_dim, batch_first=True)
        self.predictors = nn.ModuleList(nn.Linear(ctx_dim, enc_dim) for _ in range(n_future))
        for lin in self.predictors:
            # start at chance (all logits 0): random predictions score below chance, and the
            # quickest way back to chance is collapsing the encoder, which then never recovers
            nn.init.zeros_(lin.weight)
            nn.init.zeros_(lin.bias)
        self.n_future = n_future

    def encode(self, wave):
        """``(B, n_samples)`` -> ``z`` [shape=(B, T, enc_dim)]."""
        wave = wave / (wave.abs().amax(dim=1, keepdim=True) + 1e-5)
        return self.encoder(wave.unsqueeze(1)).transpose(1, 2)

    def forward(self, wave):
        """``(z, c)`` [shape=(B, T, enc_dim), (B, T, ctx_dim)]."""
        z = self.encode(wave)
        c, _ = self.gru(z)
        return z, c

    def embed(self, wave):
        """Context vectors pooled over time [shape=(B, ctx_dim)]."""
        return self.forward(wave)[1].mean(dim=1)


class HFAudioClassifier(nn.Module):
    """A ``transformers`` waveform encoder, one hidden layer mean-pooled over time, a linear head.

    Parameters
    ----------
    hf_config : str or dict
        The encoder's transformers config (``config.to_dict()``, or that as JSON); its
        ``model_type`` picks the class (``AutoConfig.for_model`` / ``AutoModel.from_config``).
        The weights start random: :meth:`load_pretrained` or ``load_state_dict`` fill them.
    n_classes : int
    layer : int
        Index into ``hidden_states`` (0: the transformer's input, -1: the last layer), as the
        ``hf-audio`` embedder counts.
    do_normalize : bool
        Normalise each input to zero mean and unit variance first, as the model's feature
        extractor does (``preprocessor_config.json``: wav2vec 2.0 base does).
    freeze_feature_encoder : bool
        Keep the convolutional front-end fixed (no gradient), as wav2vec 2.0 fine-tuning does.
    """

    def __init__(self, *, hf_config: str | dict, n_classes: int, layer: int = -1,
                 do_normalize: bool = True, freeze_feature_encoder: bool = True):
        super().__init__()
        from transformers import AutoConfig, AutoModel

        cfg = json.loads(hf_config) if isinstance(hf_config, str) else dict(hf_config)
        self.encoder = AutoModel.from_config(AutoConfig.for_model(**cfg))
        self.layer, self.do_normalize = int(layer), bool(do_normalize)
        self.classifier = nn.Linear(int(self.encoder.config.hidden_size), n_classes)
        if freeze_feature_encoder:  # the convolutional front-end (``feature_extractor``)
            freeze = getattr(self.encoder, "freeze_feature_encoder", None)
            if callable(freeze):  # also stops autograd tracking its input
                freeze()
            else:
                for p in self.encoder.feature_extractor.parameters():
                    p.requires_grad_(False)

    def load_pretrained(self, folder: str | os.PathLike) -> None:
        """Copy the encoder weights of a ``save_pretrained`` folder (the head stays as is)."""
        from transformers import AutoModel
        from transformers.utils import logging as hf_logging

        level, bars = hf_logging.get_verbosity(), hf_logging.is_progress_bar_enabled()
        hf_logging.set_verbosity_error()  # unused pre-training heads are expected, not news
        hf_logging.disable_progress_bar()  # no per-tensor bar in a run's output
        try:
            pre = AutoModel.from_pretrained(str(folder), dtype=torch.float32)
        finally:
            hf_logging.set_verbosity(level)
            if bars:
                hf_logging.enable_progress_bar()
        self.encoder.load_state_dict(pre.state_dict())

    def hidden(self, wave):
        """``hidden_states[layer]`` of 16 kHz audio ``(B, n_samples)`` [shape=(B, T, hidden)]."""
        if self.do_normalize:  # as Wav2Vec2FeatureExtractor: (x - mean) / sqrt(var + 1e-7)
            mean = wave.mean(dim=1, keepdim=True)
            var = wave.var(dim=1, unbiased=False, keepdim=True)
            wave = (wave - mean) / torch.sqrt(var + 1e-7)
        return self.encoder(wave, output_hidden_states=True).hidden_states[self.layer]

    def embed(self, wave):
        """The chosen layer mean-pooled over time [shape=(B, hidden)]: the embedding."""
        return self.hidden(wave).mean(dim=1)

    def forward(self, wave):
        """Class logits [shape=(B, n_classes)]."""
        return self.classifier(self.embed(wave))


def finetune_setup(folder: str | os.PathLike, *, layer: int, crop_samples: int) -> dict:
    """Check a pretrained model folder for ``finetune`` and describe it for the checkpoint.

    Returns
    -------
    dict
        ``hf_config`` (the config as JSON, with ``layerdrop`` 0: a layer skipped at random
        would shift the hidden-state index of the chosen layer), ``do_normalize`` (from
        ``preprocessor_config.json``; the feature extractor's default, True, without one),
        ``n_hidden_states``, ``receptive_field`` and ``stride`` (samples).

    Raises
    ------
    ConfigurationError
        Not a waveform encoder transformers knows, another sampling rate, a layer out of
        range, or a crop shorter than the model needs.
    """
    from transformers import AutoConfig, CONFIG_MAPPING
    from .hf_models import conv_frames, conv_geometry, read_model_config

    folder = Path(folder)
    raw = read_model_config(folder)
    if raw.get("model_type") not in CONFIG_MAPPING:
        raise ConfigurationError(
            f"finetune: {folder} holds no model transformers knows (config.json model_type "
            f"{raw.get('model_type')!r}); models that need their own code are not supported")
    cfg = AutoConfig.from_pretrained(str(folder))
    kernels, strides = getattr(cfg, "conv_kernel", None), getattr(cfg, "conv_stride", None)
    if not kernels or not strides or not hasattr(cfg, "num_hidden_layers"):
        raise ConfigurationError(
            f"finetune needs a waveform encoder with a convolutional front-end (wav2vec 2.0, "
            f"HuBERT, WavLM, data2vec-audio); {folder} holds a {cfg.model_type!r} model")
    pre = {}
    try:
        with open(folder / "preprocessor_config.json", encoding="utf-8") as fh:
            pre = json.load(fh)
    except (OSError, ValueError):
        pass
    if int(pre.get("sampling_rate", SR)) != SR:
        raise ConfigurationError(f"finetune: the model expects {pre['sampling_rate']} Hz audio; "
                                 f"training here feeds {SR} Hz")
    n_hidden = int(cfg.num_hidden_layers) + 1
    if not -n_hidden <= layer < n_hidden:
        raise ConfigurationError(f"--layer {layer} is out of range: the model has {n_hidden} "
                                 f"hidden states (0 ... {n_hidden - 1}, or -1 for the last)")
    field, jump = conv_geometry(kernels, strides)
    n_frames = conv_frames(crop_samples, receptive_field=field, stride=jump)
    need = max(1, int(getattr(cfg, "mask_time_length", 1))
               if getattr(cfg, "apply_spec_augment", False)
               and getattr(cfg, "mask_time_prob", 0) > 0 else 1)
    if n_frames < need:
        raise ConfigurationError(f"--crop-seconds is too short for this model: a clip of "
                                 f"{crop_samples} samples gives {n_frames} frames, it needs at "
                                 f"least {need}")
    d = cfg.to_dict()
    d["layerdrop"] = 0.0
    return {"hf_config": json.dumps(d, sort_keys=True, default=str),
            "do_normalize": bool(pre.get("do_normalize", True)), "n_hidden_states": n_hidden,
            "receptive_field": field, "stride": jump}


def build_network(method: str, net_config: dict) -> nn.Module:
    """The network of ``method`` with the keyword arguments ``net_config``."""
    if method == "simsiam":
        return SimSiamNet(**net_config)
    if method == "crnn":
        return CRNN(**net_config)
    if method == "cpc":
        return CPCNet(**net_config)
    if method == "finetune":
        return HFAudioClassifier(**net_config)
    raise CheckpointError(f"unknown training method {method!r}; known: {', '.join(METHODS)}")


# -- checkpoints ----------------------------------------------------------------------------------

def resolve_checkpoint(path: str | os.PathLike) -> str:
    """A run folder -> its ``best.pt`` (else ``last.pt``); a file stays as it is."""
    path = str(path)
    if os.path.isdir(path):
        for name in ("best.pt", "last.pt"):
            candidate = os.path.join(path, name)
            if os.path.isfile(candidate):
                return candidate
        raise CheckpointError(f"{path}: run folder holds no best.pt or last.pt checkpoint")
    if not os.path.isfile(path):
        raise CheckpointError(f"{path}: no such checkpoint file or run folder")
    return path


def read_checkpoint(path: str | os.PathLike, *, method: str | None = None) -> dict:
    """Load a ``train`` checkpoint (tensors on CPU) and check it.

    Parameters
    ----------
    path : str
        A checkpoint file or a run folder.
    method : str or None
        When given, the method the checkpoint must come from.

    Raises
    ------
    CheckpointError
        Missing, corrupt, not written by ``train``, a newer format, or another method.
    """
    path = resolve_checkpoint(path)
    try:
        ckpt = torch.load(path, map_location="cpu", weights_only=True)
    except Exception as exc:  # pickle, zip and torch errors all mean "not readable"
        raise CheckpointError(f"{path}: not a readable checkpoint ({str(exc).splitlines()[0][:160]})") \
            from None
    if not isinstance(ckpt, dict) or ckpt.get("format") != CHECKPOINT_FORMAT:
        raise CheckpointError(f"{path}: not a checkpoint written by 'main.py train'")
    if ckpt.get("format_version", 0) > CHECKPOINT_VERSION:
        raise CheckpointError(f"{path}: checkpoint format {ckpt.get('format_version')} is newer "
                              f"than this version reads ({CHECKPOINT_VERSION})")
    if method is not None and ckpt.get("method") != method:
        raise CheckpointError(f"{path}: checkpoint of method {ckpt.get('method')!r}, "
                              f"not {method!r}")
    return ckpt


def network_from_checkpoint(ckpt: dict) -> nn.Module:
    """Rebuild the network a checkpoint describes and load its weights (eval mode)."""
    try:
        net = build_network(ckpt["method"], dict(ckpt["net_config"]))
    except (ValueError, KeyError, TypeError, ImportError) as exc:  # e.g. a model_type unknown here
        raise CheckpointError(f"cannot rebuild the {ckpt['method']} network of the checkpoint "
                              f"({str(exc).splitlines()[0][:160] if str(exc) else type(exc).__name__})") from None
    try:
        net.load_state_dict(ckpt["model"])
    except (RuntimeError, KeyError) as exc:
        raise CheckpointError(f"checkpoint weights do not fit the {ckpt['method']} network "
                              f"({str(exc).splitlines()[0][:160]})") from None
    return net.eval()
