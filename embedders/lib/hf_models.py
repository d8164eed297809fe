"""Hugging Face ``transformers`` models on disk: a hub id or a local folder -> the folder holding
its files, and the identity that names it in cache keys.

Shared by the ``hf-audio`` embedder and ``main.py train --method finetune`` (which starts from
the same published weights). A hub id is resolved through the Hugging Face cache with
``huggingface_hub`` (``HF_HUB_OFFLINE`` / ``EMBCOMPARE_OFFLINE`` turn downloads off; a model
that is not cached then gives one error saying how to get it); a local folder is one written by
``save_pretrained``. Imports nothing heavy at module level (``huggingface_hub`` and
``transformers`` only inside the functions).
"""
from __future__ import annotations

import json
import os
from pathlib import Path

from ..base import WeightsError
from .weights import hf_cache_dir

#: Files of a model folder whose content changes the numbers: named in the cache key.
WEIGHT_SUFFIXES = (".safetensors", ".bin", ".pt", ".pth")
CONFIG_FILES = ("config.json", "preprocessor_config.json")


def conv_frames(n_samples: int, *, receptive_field: int, stride: int) -> int:
    """Frames a convolutional front-end (no padding) makes of ``n_samples`` samples."""
    return 0 if n_samples < receptive_field else (n_samples - receptive_field) // stride + 1


def conv_geometry(kernels, strides) -> tuple[int, int]:
    """``(receptive_field, stride)`` in samples of a stack of unpadded 1-D convolutions.

    >>> conv_geometry((10, 3, 3, 3, 3, 2, 2), (5, 2, 2, 2, 2, 2, 2))  # wav2vec 2.0
    (400, 320)
    """
    field, jump = 1, 1
    for k, s in zip(kernels, strides):
        field += (int(k) - 1) * jump
        jump *= int(s)
    return field, jump


def how_to_provide(model: str, local_option: str) -> str:
    """The sentence telling a user how to make ``model`` available (``local_option``: the flag
    that takes a local folder, e.g. ``--set hf-audio.model=PATH`` or ``--model PATH``)."""
    return (f"Download it while online (e.g. `hf download {model}`, which fills the "
            f"Hugging Face cache {hf_cache_dir()}), or pass a local folder written by "
            f"save_pretrained with {local_option}.")


def resolve_model(model: str, *, revision: str | None = None, who: str = "hf-audio",
                  local_option: str = "--set hf-audio.model=PATH") -> tuple[Path, str]:
    """The folder holding a model's files, and its identity for cache keys.

    Parameters
    ----------
    model : str
        A local folder (as ``save_pretrained`` writes it) or a Hugging Face id.
    revision : str or None
        Branch, tag or commit of a Hugging Face id (default: the hub's default branch).
    who, local_option : str
        How error messages name the user of the model and the option that takes a folder.

    Returns
    -------
    folder : Path
    identity : str
        ``"<id>@<commit hash>"`` for a hub model (the cache's snapshot folder is named by the
        commit), ``"local:"`` followed by the fingerprints of the folder's weight and config
        files otherwise.

    Raises
    ------
    WeightsError
        Missing folder or files; not cached while offline; download failure.
    """
    from .weights import offline, weights_fingerprint

    local = Path(model).expanduser()
    if local.is_dir():
        files = sorted(p for p in local.iterdir()
                       if p.is_file() and (p.suffix in WEIGHT_SUFFIXES or p.name in CONFIG_FILES))
        if not any(p.suffix in WEIGHT_SUFFIXES for p in files):
            raise WeightsError(f"{who} model folder {str(local)!r} holds no weight file "
                               f"({', '.join('*' + s for s in WEIGHT_SUFFIXES)})")
        return local, "local:" + ";".join(weights_fingerprint(p) for p in files)
    # a hub id is "name" or "owner/name"; anything else can only have been meant as a folder
    if model.startswith(("/", ".", "~")) or model.count("/") > 1 or (os.sep != "/" and os.sep in model):
        raise WeightsError(f"{who} model folder {model!r} does not exist")

    hint = how_to_provide(model, local_option)
    try:
        import huggingface_hub
    except ImportError as exc:  # pragma: no cover - listed in requirements
        raise WeightsError(f"huggingface_hub is not installed. {hint}") from exc
    cache = str(hf_cache_dir())
    # configs, feature extractor, safetensors and any model code; .bin only if there is no
    # safetensors file (repositories often hold both: downloading both doubles the size)
    patterns = ["*.json", "*.safetensors", "*.py", "*.txt"]
    is_offline = offline()
    try:
        folder = Path(huggingface_hub.snapshot_download(
            model, revision=revision, cache_dir=cache, allow_patterns=patterns,
            local_files_only=is_offline))
        if not any(p.suffix in WEIGHT_SUFFIXES for p in folder.iterdir()):
            folder = Path(huggingface_hub.snapshot_download(
                model, revision=revision, cache_dir=cache, allow_patterns=patterns + ["*.bin"],
                local_files_only=is_offline))
    except Exception as exc:
        if is_offline:
            raise WeightsError(
                f"{who} model {model!r}{'@' + revision if revision else ''} is not in the "
                f"Hugging Face cache ({cache}) and downloads are off (HF_HUB_OFFLINE or "
                f"EMBCOMPARE_OFFLINE is set). {hint}") from exc
        raise WeightsError(f"could not get {who} model {model!r}: "
                           f"{str(exc).strip().splitlines()[0][:300] if str(exc).strip() else type(exc).__name__}. "
                           f"{hint}") from exc
    if not any(p.suffix in WEIGHT_SUFFIXES for p in folder.iterdir()):
        raise WeightsError(f"{who} model {model!r} has no weight file in {folder}. {hint}")
    return folder, f"{model}@{folder.name}"


def read_model_config(folder: Path) -> dict:
    """``config.json`` of a model folder as a dict (``{}`` if missing or unreadable)."""
    try:
        with open(Path(folder) / "config.json", encoding="utf-8") as fh:
            cfg = json.load(fh)
    except (OSError, ValueError):
        return {}
    return cfg if isinstance(cfg, dict) else {}


def needs_remote_code(folder: Path) -> bool:
    """Whether a model folder's config asks for the model's own Python code (``auto_map`` with a
    ``model_type`` transformers does not know)."""
    cfg = read_model_config(folder)
    if not cfg.get("auto_map"):
        return False
    from transformers import CONFIG_MAPPING

    return cfg.get("model_type") not in CONFIG_MAPPING
