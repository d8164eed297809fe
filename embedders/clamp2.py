"""``clamp2``: the CLaMP 2 symbolic (MIDI) encoder, an M3 patch encoder plus the music projection.

Pipeline (identical numbers to the reference ``extract_clamp2.py --normalize``, see
``embedders/mtf.py`` for the text side):

MIDI → MTF text → patches of 64 character ids (BOS / EOS patches added) → segments of at most 512
patches (the last segment is the *last* 512 patches, so it may overlap the previous one) → for
each segment: patch embedding, BERT encoder (post-LN, exact GELU, LayerNorm eps 1e-12, positions
restarting at 0, token-type row 0), masked mean over the real patches, ``music_proj`` → the
per-segment vectors are ``Embedding.frames``; ``Embedding.clip`` is their mean weighted by
512 per full chunk and ``n_patches % 512`` for the remainder. Nothing is L2-normalised.

Only ``music_model.*`` and ``music_proj.*`` are read from the checkpoint; the model size (hidden
size, layers, intermediate size, positions, patch size, output size) comes from tensor shapes, so
the official checkpoint and small test checkpoints both load. The head count (12) is not visible
in the shapes and is fixed, as in the official model.

Speed without changing the maths: the patch embedding gathers weight columns instead of
multiplying a one-hot matrix, segments of many files are batched together sorted by length and
padded only to the longest one in the batch (padding is masked out of attention and pooling, so
this equals the reference's padding to 512), attention uses ``scaled_dot_product_attention``.
The opt-in ``precision`` option (bfloat16 / float16 autocast) does change the maths.

Layers (``layer`` option): by default the model's output, the projection above (``proj``). An
integer ``k`` instead gives the masked mean, per segment, of the encoder's hidden states after
``k`` layers (0: the embedding layer's output; no projection: it was trained on the last layer
only); ``all`` (0 … N, then ``proj``) or a list gives one space per layer, ``clamp2@LAYER``, from
one forward pass.

Inputs: every MIDI file the reference converter accepts (see ``embedders/lib/mtf.py``); unusual
ones (SMPTE division, no sounding note, ...) carry ``Embedding.info["notes"]``.
"""
from __future__ import annotations

import contextlib
import os
from collections.abc import Iterable, Iterator
from pathlib import Path
from typing import Any

import numpy as np

from . import register
from .base import (
    SYMBOLIC,
    ConfigurationError,
    Embedder,
    Embedding,
    InputError,
    WeightsError,
    resolve_device,
)
from .lib.layers import ALL, LayerSpaces, parse_layers
from .lib.weights import hf_cache_dir
from .lib.mtf import (
    PATCH_LENGTH,
    midi_to_mtf_and_notes,
    patchilize,
    read_mtf,
    segment_bounds,
    segment_weights,
)

HF_REPO_ID = "sander-wood/clamp2"
HF_FILENAME = ("weights_clamp2_h_size_768_lr_5e-05_batch_128_scale_1_t_length_128_t_model_"
               "FacebookAI_xlm-roberta-base_t_dropout_True_m3_True.pth")
HF_URL = f"https://huggingface.co/{HF_REPO_ID}/resolve/main/{HF_FILENAME}"
#: Files parsed and batched together by :meth:`CLaMP2Embedder.embed_many`.
FILES_PER_CHUNK = 128
#: A batch only takes a shorter segment while real patches fill at least this share of the
#: padded batch (segments are sorted by length, so batches hold segments of similar length).
MIN_FILL = 0.875

#: ``precision`` choices: float32 (default, reference parity), bfloat16 (CPU and CUDA autocast),
#: float16 (CUDA autocast only).
PRECISIONS = ("float32", "bfloat16", "float16")
#: Device types each reduced precision runs on.
PRECISION_DEVICES = {"bfloat16": ("cpu", "cuda"), "float16": ("cuda",)}

#: The ``layer`` naming the projected output (the default; ``None`` in the options).
PROJ = "proj"

MIDI_EXTENSIONS = (".mid", ".midi")
MTF_EXTENSIONS = (".mtf",)


# ---------------------------------------------------------------------------------------------
# weights

def _how_to_provide() -> str:
    return (f"Download {HF_FILENAME} from {HF_URL} (e.g. `hf download {HF_REPO_ID} "
            f"{HF_FILENAME}`, which puts it in the Hugging Face cache {hf_cache_dir()}), or pass "
            f"the file with --clamp2-weights PATH (option weights=PATH).")


def resolve_weights(explicit: str | os.PathLike | None = None) -> Path:
    """Path of the checkpoint: ``explicit``, else the Hugging Face cache (downloading if allowed).

    Raises
    ------
    WeightsError
        Missing explicit file; not cached while offline; download failure.
    """
    from .lib.weights import offline

    if explicit:
        path = Path(explicit).expanduser()
        if not path.is_file():
            raise WeightsError(f"CLaMP 2 weights file {str(path)!r} does not exist. {_how_to_provide()}")
        return path
    cache = hf_cache_dir()
    try:
        import huggingface_hub
    except ImportError as exc:  # pragma: no cover - listed in requirements
        raise WeightsError(f"huggingface_hub is not installed. {_how_to_provide()}") from exc
    try:
        cached = huggingface_hub.try_to_load_from_cache(HF_REPO_ID, HF_FILENAME, cache_dir=str(cache))
    except Exception:  # malformed cache folder: treat as not cached
        cached = None
    if isinstance(cached, str) and os.path.isfile(cached):
        return Path(cached)
    if offline():
        raise WeightsError(
            f"CLaMP 2 weights {HF_REPO_ID}/{HF_FILENAME} are not in the Hugging Face cache "
            f"({cache}) and downloads are off (HF_HUB_OFFLINE or EMBCOMPARE_OFFLINE is set). "
            f"{_how_to_provide()}")
    try:
        return Path(huggingface_hub.hf_hub_download(HF_REPO_ID, HF_FILENAME, cache_dir=str(cache)))
    except Exception as exc:
        raise WeightsError(f"could not download CLaMP 2 weights {HF_REPO_ID}/{HF_FILENAME}: "
                           f"{str(exc).strip()[:300]}. {_how_to_provide()}") from exc


def load_music_state(path: str | os.PathLike) -> dict:
    """The ``music_model.*`` / ``music_proj.*`` tensors of a CLaMP 2 checkpoint (CPU, float32).

    The file is memory-mapped (``mmap=True``, ``weights_only=True``); everything else in it (text
    model, optimizer state) is dropped right away.
    """
    import torch

    path = str(path)
    try:
        ckpt = torch.load(path, map_location="cpu", weights_only=True, mmap=True)
    except Exception as exc:
        msg = str(exc)
        if "mmap" in msg or "zipfile" in msg.lower() or "legacy" in msg.lower():
            try:  # old (non-zip) serialisation cannot be memory-mapped
                ckpt = torch.load(path, map_location="cpu", weights_only=True)
            except Exception as exc2:
                raise WeightsError(f"cannot read CLaMP 2 checkpoint {path}: {str(exc2).strip()[:200]} "
                                   f"(truncated or not a PyTorch file?). {_how_to_provide()}") from exc2
        else:
            raise WeightsError(f"cannot read CLaMP 2 checkpoint {path}: {msg.strip()[:200]} "
                               f"(truncated or not a PyTorch file?). {_how_to_provide()}") from exc
    state = ckpt
    if isinstance(ckpt, dict):
        for key in ("model", "state_dict", "model_state_dict"):
            if isinstance(ckpt.get(key), dict):
                state = ckpt[key]
                break
    if not isinstance(state, dict):
        raise WeightsError(f"{path} is not a CLaMP 2 checkpoint (no state dict inside)")
    out = {}
    for key, value in state.items():
        if not isinstance(key, str):
            continue
        k = key.removeprefix("module.")
        if k.startswith("music_model.") or k.startswith("music_proj."):
            if not torch.is_tensor(value):
                raise WeightsError(f"{path}: entry {key} is not a tensor")
            out[k] = value.detach().to(torch.float32).clone()
    del state, ckpt
    if not out:
        raise WeightsError(f"{path} holds no music_model.* / music_proj.* tensors: not a CLaMP 2 "
                           f"checkpoint (a CLaMP 3 file uses symbolic_model.*). {_how_to_provide()}")
    return out


def weighted_clip(segments: np.ndarray, weights: list[int]) -> np.ndarray:
    """``Σ w_k f_k / Σ w_k`` in float64, returned as float32."""
    w = np.asarray(weights, dtype=np.float64)
    return (w @ np.asarray(segments, dtype=np.float64) / w.sum()).astype(np.float32)


# ---------------------------------------------------------------------------------------------
# the embedder

@register
class CLaMP2Embedder(LayerSpaces, Embedder):
    """CLaMP 2 music encoder: MIDI / MTF → one vector per ≤512-patch segment, weighted clip mean.

    Options
    -------
    weights : str or None
        Path of the official checkpoint (``--clamp2-weights``); default: the Hugging Face cache
        (``sander-wood/clamp2``), downloaded there when downloads are allowed.
    device : str or None
        ``cpu``, ``cuda[:N]``, ``mps``; ``None`` picks the best available.
    batch_size : int
        Segments per forward pass for full 512-patch segments; shorter segments are packed up to
        the same number of patches (``batch_size × 512``), grouped with segments of similar length
        so that padding stays under 12.5 % of each batch.
    precision : str
        ``float32`` (default: the reference's numbers), or opt-in reduced precision for the
        encoder layers under ``torch.autocast``: ``bfloat16`` (CPU and CUDA) or ``float16`` (CUDA
        only). It changes the numbers (see docs/models.md for the measured cost), so it is part of
        the cache key; pooling and the projection stay in float32.
    layer : int, str, list or None
        ``None`` / ``proj`` (default): the projected output. ``k``: masked mean of the hidden
        states after ``k`` encoder layers (0: embeddings; negative counts from the last).
        ``all`` or a list (``4,8,proj``): one space per layer, ``clamp2@LAYER``.
    """

    name = "clamp2"
    modality = SYMBOLIC
    version = "1"
    extensions = MIDI_EXTENSIONS + MTF_EXTENSIONS
    option_defaults = {"weights": None, "device": None, "batch_size": 8, "precision": "float32",
                       "layer": None}
    option_types = {"weights": str, "device": str, "layer": str}
    description = ("CLaMP 2 symbolic encoder (M3 + music projection, sander-wood/clamp2): "
                   "MIDI→MTF text patches, 768-d, weighted mean of 512-patch segments (layer=all: one "
                   "space per encoder layer)")
    parallel_files = False

    def validate_options(self) -> None:
        bs = self.options["batch_size"]
        if isinstance(bs, bool) or not isinstance(bs, int) or bs < 1:
            raise ConfigurationError(f"clamp2 batch_size must be a positive integer, got {bs!r}")
        w = self.options["weights"]
        if w is not None and not isinstance(w, (str, os.PathLike)):
            raise ConfigurationError(f"clamp2 weights must be a file path, got {w!r}")
        dev = self.options["device"]
        if dev is not None and not isinstance(dev, str):
            raise ConfigurationError(f"clamp2 device must be a string, got {dev!r}")
        prec = self.options["precision"]
        if prec not in PRECISIONS:
            raise ConfigurationError(f"clamp2 precision must be one of {', '.join(PRECISIONS)}, "
                                     f"got {prec!r}")
        if dev not in (None, "", "auto"):  # an automatic device is checked once resolved
            self._check_precision(dev)
        layer = parse_layers(self.options["layer"])
        self.options["layer"] = None if layer == PROJ else layer  # the default, as a name
        for v in (layer if isinstance(layer, tuple) else (layer,)) if layer != ALL else ():
            if v not in (None, PROJ) and (isinstance(v, bool) or not isinstance(v, int)):
                raise ConfigurationError(f"clamp2 layer must be an integer, proj, a list of them "
                                         f"or all, got {v!r}")

    def _check_layers(self) -> None:
        """Every integer layer asked for exists in the loaded model (0 … num_layers)."""
        n = int(self._model.cfg["num_layers"])
        layer = self.options["layer"]
        for v in (layer if isinstance(layer, tuple) else (layer,)) if layer != ALL else ():
            if isinstance(v, int) and not -(n + 1) <= v <= n:
                raise ConfigurationError(f"clamp2 layer {v} is out of range: the model has "
                                         f"{n + 1} hidden states (0 … {n}, or negative from the "
                                         f"last), and proj")

    def selected_layers(self) -> list:
        self.load()
        layer = self.options["layer"]
        if layer == ALL:
            return list(range(int(self._model.cfg["num_layers"]) + 1)) + [PROJ]
        return list(layer) if isinstance(layer, tuple) else [layer]

    def layer_cache_options(self, base: dict, layer) -> dict:
        """The projection's space is keyed as a plain clamp2 run (no ``layer`` in its key)."""
        opts = {**base, "layer": layer}
        if layer in (None, PROJ):
            opts.pop("layer")
        return opts

    def _check_precision(self, device: str) -> None:
        prec = self.options["precision"]
        kind = str(device).split(":")[0]
        if prec != "float32" and kind not in PRECISION_DEVICES[prec]:
            hint = " (use bfloat16 on CPU)" if kind == "cpu" else ""
            raise ConfigurationError(f"clamp2 precision {prec} is not available on device "
                                     f"{device!r}: it runs on {' and '.join(PRECISION_DEVICES[prec])} "
                                     f"only{hint}")

    def cache_options(self) -> dict[str, Any]:
        """Cache key options; ``precision`` only when reduced (float32 keys stay as before)."""
        opts = super().cache_options()
        if opts.get("precision") == "float32":
            opts.pop("precision")
        if opts.get("layer", 0) is None:  # the default: keys stay as before the option
            opts.pop("layer")
        return opts

    @property
    def dim(self) -> int | None:
        if self.several_layers:
            return None
        if isinstance(self.options["layer"], int) and getattr(self, "_model", None) is not None:
            return int(self._model.cfg["hidden_size"])
        if getattr(self, "_model", None) is not None:
            return int(self._model.cfg["output_size"])
        return None

    @property
    def config(self) -> dict:
        """Model configuration inferred from the checkpoint (after :meth:`load`)."""
        self.load()
        return dict(self._model.cfg)

    def _load(self) -> None:
        import torch

        from .lib.clamp2_net import model_from_state

        self._device = resolve_device(self.options["device"])
        self._check_precision(self._device)
        self._weights_path = resolve_weights(self.options["weights"])
        state = load_music_state(self._weights_path)
        model = model_from_state(state)
        del state
        self._model = model.to(self._device)
        self._segment_length = min(PATCH_LENGTH, int(model.cfg["max_positions"]))
        self._torch = torch
        self._check_layers()

    @classmethod
    def from_state_dict(cls, state: dict, *, name: str = "<in-memory>", **options: Any) -> CLaMP2Embedder:
        """An embedder around checkpoint tensors already in memory (official key names).

        For benchmarks and tests; ``weights_identity`` is then ``name`` (nothing is hashed).
        """
        import torch

        from .lib.clamp2_net import model_from_state

        self = cls(**options)
        self._device = resolve_device(self.options["device"])
        self._check_precision(self._device)
        model = model_from_state(state)
        self._model = model.to(self._device)
        self._segment_length = min(PATCH_LENGTH, int(model.cfg["max_positions"]))
        self._torch = torch
        self._weights_path = None
        self._identity = str(name)
        self._check_layers()
        self._loaded = True
        return self

    def weights_identity(self) -> str | None:
        if getattr(self, "_identity", None) is not None:
            return self._identity
        path = getattr(self, "_weights_path", None)
        if path is None:
            self.load()
            path = self._weights_path
        from .lib.weights import weights_fingerprint

        return weights_fingerprint(path)

    # -- input side ---------------------------------------------------------------------------
    def patches(self, path: str) -> np.ndarray:
        """Patch ids [n_patches, patch_size] of a MIDI or MTF file (InputError if unusable)."""
        return self.patches_and_notes(path)[0]

    def patches_and_notes(self, path: str) -> tuple[np.ndarray, list[str]]:
        """Patch ids and the notes on unusual input (e.g. SMPTE division) of a MIDI or MTF file."""
        ext = os.path.splitext(path)[1].lower()
        notes: list[str] = []
        if ext in MTF_EXTENSIONS:
            text = read_mtf(path)
        else:
            text, notes = midi_to_mtf_and_notes(path)
        patch_size = self._model.cfg["patch_size"] if getattr(self, "_model", None) else 64
        try:
            return patchilize(text, patch_size, dtype=np.uint8), notes  # ids < 128: 8x less memory
        except ValueError as exc:
            raise InputError(path, str(exc)) from exc

    # -- model side ---------------------------------------------------------------------------
    def _run_segments(self, segs: list[np.ndarray]) -> list[list[np.ndarray]]:
        """Vectors of many segments (each [n_i, patch_size]), one per computed layer (see
        :meth:`_forward`); batched by length, in input order."""
        torch = self._torch
        out: list[np.ndarray | None] = [None] * len(segs)
        order = sorted(range(len(segs)), key=lambda i: -len(segs[i]))
        budget = self.options["batch_size"] * self._segment_length
        ps = self._model.cfg["patch_size"]
        i = 0
        with torch.inference_mode():
            while i < len(order):
                longest = max(1, len(segs[order[i]]))
                # grow the batch (longest first) within the patch budget while at least
                # MIN_FILL of the padded rows stay real: padding is wasted compute
                count, real = 1, longest
                while i + count < len(order) and (count + 1) * longest <= budget:
                    n = len(segs[order[i + count]])
                    if real + n < MIN_FILL * (count + 1) * longest:
                        break
                    count += 1
                    real += n
                idx = order[i:i + count]
                ids = np.zeros((count, longest, ps), dtype=np.int64)
                mask = np.zeros((count, longest), dtype=np.float32)
                for r, j in enumerate(idx):
                    n = len(segs[j])
                    ids[r, :n] = segs[j]
                    mask[r, :n] = 1.0
                vecs = self._forward(torch.from_numpy(ids).to(self._device),
                                     torch.from_numpy(mask).to(self._device))
                vecs = [v.float().cpu().numpy() for v in vecs]
                for r, j in enumerate(idx):
                    out[j] = [v[r] for v in vecs]
                i += count
        return out  # type: ignore[return-value]

    def _computed_layers(self) -> list:
        """The layers one forward pass gives, in order (``None``: the projection)."""
        return self.selected_layers() if self.several_layers else [self.options["layer"]]

    def _forward(self, ids, mask) -> list:
        """Segment vectors of every computed layer ([B, d] each, :meth:`_computed_layers`);
        with reduced ``precision`` only the encoder runs under autocast."""
        prec = self.options["precision"]
        layers = self._computed_layers()
        if prec == "float32" and layers == [None]:
            return [self._model(ids, mask)]
        torch = self._torch
        with (torch.autocast(torch.device(self._device).type, dtype=getattr(torch, prec))
              if prec != "float32" else contextlib.nullcontext()):
            states = self._model.hidden_states(ids, mask, every_layer=True)
        # the masked means and the projection (one small matrix product) in float32
        m = mask.to(torch.float32).unsqueeze(-1)
        out = []
        for layer in layers:
            x = states[-1 if layer in (None, PROJ) else layer].float()
            pooled = (x * m).sum(1) / m.sum(1)
            out.append(self._model.proj(pooled) if layer in (None, PROJ) else pooled)
        return out

    def _embed_patches(self, patches_by_file: list[np.ndarray],
                       notes_by_file: list[list[str]] | None = None) -> list[Embedding]:
        """Per file, its Embedding (one layer)."""
        self.refuse_several()
        layer = self.options["layer"]
        return [d[layer] for d in self._embed_patch_layers(patches_by_file, notes_by_file)]

    def _embed_patch_layers(self, patches_by_file: list[np.ndarray],
                            notes_by_file: list[list[str]] | None = None) -> list[dict]:
        """Per file, layer -> Embedding for every computed layer (one forward pass)."""
        L = self._segment_length
        if notes_by_file is None:
            notes_by_file = [[] for _ in patches_by_file]
        segs, owners = [], []
        for f, x in enumerate(patches_by_file):
            for a, b in segment_bounds(len(x), L):
                segs.append(x[a:b])
                owners.append(f)
        vecs = self._run_segments(segs)
        per_file: list[list[np.ndarray]] = [[] for _ in patches_by_file]
        for f, v in zip(owners, vecs):
            per_file[f].append(v)
        layers = self._computed_layers()
        result = []
        for x, vs, notes in zip(patches_by_file, per_file, notes_by_file):
            w = segment_weights(len(x), L)
            info = {"n_patches": len(x), "n_segments": len(vs), "segment_weights": w}
            if notes:  # unusual but accepted input (SMPTE division, no sounding notes, ...)
                info["notes"] = list(notes)
            by_layer = {}
            for i, layer in enumerate(layers):
                frames = np.stack([v[i] for v in vs]).astype(np.float32)
                by_layer[layer] = Embedding(
                    frames=frames, clip=weighted_clip(frames, w), timestamps=None,
                    info=info if layer is None else dict(info, layer=layer))
            result.append(by_layer)
        return result

    def _embed_file(self, path: str) -> Embedding:
        self.refuse_several()
        return self._embed_layers(path)[self.options["layer"]]

    def _embed_layers(self, path: str) -> dict:
        x, notes = self.patches_and_notes(path)
        return self._embed_patch_layers([x], [notes])[0]

    def embed_many(self, paths: Iterable[str]) -> Iterator[tuple[str, Embedding | Exception]]:
        """Embed many files, batching the segments of up to ``FILES_PER_CHUNK`` files together.

        Yields ``(path, Embedding)`` or ``(path, exception)``; a bad file never stops the others.
        """
        self.refuse_several()
        layer = self.options["layer"]
        for path, out in self._embed_chunks(paths):
            yield path, out if isinstance(out, Exception) else out[layer]

    def embed_many_spaces(self, paths: Iterable[str]
                          ) -> Iterator[tuple[str, dict[str, Embedding] | Exception]]:
        """:meth:`embed_many` for every space, batched across files the same way."""
        if not self.several_layers:
            yield from super().embed_many_spaces(paths)
            return
        spaces = self.space_layers()
        for path, out in self._embed_chunks(paths):
            yield path, (out if isinstance(out, Exception)
                         else {space: out[layer] for space, layer in spaces.items()})

    def _embed_chunks(self, paths: Iterable[str]) -> Iterator[tuple[str, dict | Exception]]:
        """``(path, {layer: Embedding})`` or ``(path, exception)``, ``FILES_PER_CHUNK`` files
        parsed and batched together at a time."""
        self.load()
        chunk: list[str] = []
        for path in paths:
            chunk.append(path)
            if len(chunk) >= FILES_PER_CHUNK:
                yield from self._embed_chunk(chunk)
                chunk = []
        if chunk:
            yield from self._embed_chunk(chunk)

    def _embed_chunk(self, paths: list[str]) -> Iterator[tuple[str, dict | Exception]]:
        good_paths, good, good_notes = [], [], []
        for path in paths:
            try:
                x, notes = self.patches_and_notes(str(path))
            except Exception as exc:  # one bad file must not end the run
                yield path, exc
                continue
            good.append(x)
            good_notes.append(notes)
            good_paths.append(path)
        if not good:
            return
        try:
            embs = self._embed_patch_layers(good, good_notes)
        except Exception:
            # a failure in a shared batch (e.g. out of memory): fall back to one file at a time
            for path, x, notes in zip(good_paths, good, good_notes):
                try:
                    yield path, self._embed_patch_layers([x], [notes])[0]
                except Exception as exc:
                    yield path, exc
            return
        yield from zip(good_paths, embs)

    def describe_weights(self) -> dict[str, Any]:
        """Where the weights came from and the inferred configuration (after :meth:`load`)."""
        self.load()
        return {"path": str(self._weights_path), "config": dict(self._model.cfg)}
