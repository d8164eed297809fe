"""Text queries: a description -> a short generated "query tune" -> a query file like any other.

A text-to-audio latent diffusion pipeline from ``diffusers`` (``AudioLDMPipeline`` or
``AudioLDM2Pipeline``) turns the text into a mono waveform; the waveform is written as a WAV file
and then searched with exactly as a file query is (``Recommender.recommend(path)``), so every
audio embedder becomes text-searchable without a text encoder of its own, and the cross-modal
search (audio -> MIDI) works the same way.

The pipeline comes from a local ``save_pretrained`` folder or a Hugging Face id resolved through
the Hugging Face cache (downloaded once when online; with ``HF_HUB_OFFLINE`` or
``EMBCOMPARE_OFFLINE`` set and the model absent, :class:`TextModelError` says how to provide it).

Generated queries are cached in the user cache folder (``text_queries/``) under a key made of the
model identity (hub id + snapshot commit, or fingerprints of a local folder's files), the text,
the length, the number of diffusion steps and the seed: the same request twice generates once.
The initial noise is drawn from a CPU generator seeded with ``seed``, so a seed names the same
starting point on every device.

``diffusers`` and ``torch`` are imported only inside the functions that generate.
"""
from __future__ import annotations

import hashlib
import json
import math
import os
from pathlib import Path

import numpy as np

from .index import SearchError

#: The model of ``--text-model`` when none is given (AudioLDM small, 16 kHz, ~1.1 GB).
DEFAULT_TEXT_MODEL = "cvssp/audioldm-s-full-v2"
DEFAULT_SECONDS = 5.0
#: diffusers' own default for AudioLDM; more steps cost time linearly.
DEFAULT_STEPS = 10
DEFAULT_SEED = 0
#: Pipelines whose ``__call__(prompt, audio_length_in_s=, num_inference_steps=, generator=)``
#: returns ``.audios`` [shape=(n, samples)] at ``vocoder.config.sampling_rate``.
PIPELINE_CLASSES = ("AudioLDMPipeline", "AudioLDM2Pipeline")
#: Subfolder of the user cache folder holding the generated queries.
CACHE_SUBDIR = "text_queries"
#: Bumped when the way audio is made from a request changes (the cached files go stale).
GENERATION_VERSION = 1
MAX_SECONDS = 60.0
LOCAL_OPTION = "--text-model PATH"
_WEIGHT_SUFFIXES = (".safetensors", ".bin")
_MODEL_FILES = _WEIGHT_SUFFIXES + (".json", ".txt", ".model")


class TextQueryError(SearchError):
    """A text query that cannot be made: a bad request or a model that is not available
    (a usage error: nothing was computed)."""


class TextModelError(TextQueryError):
    """The text-to-audio model is missing, not cached while offline, or not a known pipeline."""


def validate_request(text: str, *, seconds: float, steps: int, seed: int) -> None:
    """Raise :class:`TextQueryError` naming the first bad value of a request."""
    if not isinstance(text, str) or not text.strip():
        raise TextQueryError("the text of a text query is empty")
    if not (isinstance(seconds, (int, float)) and math.isfinite(seconds)
            and 0 < seconds <= MAX_SECONDS):
        raise TextQueryError(f"--text-seconds must be in (0, {MAX_SECONDS:g}], got {seconds}")
    if isinstance(steps, bool) or not isinstance(steps, int) or steps < 1:
        raise TextQueryError(f"--text-steps must be a positive integer, got {steps}")
    if isinstance(seed, bool) or not isinstance(seed, int) or not 0 <= seed < 2 ** 63:
        raise TextQueryError(f"--text-seed must be an integer in [0, 2**63), got {seed}")


def _pipeline_files(folder: Path) -> list[Path]:
    return sorted(p for p in folder.rglob("*") if p.is_file() and p.suffix in _MODEL_FILES)


def _check_pipeline_folder(folder: Path, model: str) -> None:
    from embedders.lib.hf_models import how_to_provide

    index = folder / "model_index.json"
    try:
        with open(index, encoding="utf-8") as fh:
            class_name = json.load(fh).get("_class_name")
    except (OSError, ValueError, AttributeError):
        raise TextModelError(f"text model {model!r}: {folder} holds no readable model_index.json "
                             f"(not a diffusers pipeline). {how_to_provide(model, LOCAL_OPTION)}")
    if class_name not in PIPELINE_CLASSES:
        raise TextModelError(f"text model {model!r} is a {class_name}, not a text-to-audio "
                             f"pipeline ({', '.join(PIPELINE_CLASSES)})")
    if not any(p.suffix in _WEIGHT_SUFFIXES for p in _pipeline_files(folder)):
        raise TextModelError(f"text model {model!r} has no weight file in {folder}. "
                             f"{how_to_provide(model, LOCAL_OPTION)}")


def resolve_text_model(model: str = DEFAULT_TEXT_MODEL, *, download: bool = True
                       ) -> tuple[Path, str]:
    """The folder of a text-to-audio pipeline and its identity for cache keys.

    Parameters
    ----------
    model : str
        A local folder written by ``save_pretrained`` or a Hugging Face id.
    download : bool
        False: a hub id is looked up in the Hugging Face cache only, even when online (``serve``
        never starts a download from a page).

    Returns
    -------
    folder : Path
    identity : str
        ``"<id>@<commit>"`` for a hub model; for a local folder ``"local:"`` and the
        fingerprints (relative name, size, SHA-256 prefix) of its weight and config files, so
        retrained weights under the same folder name are a new identity.

    Raises
    ------
    TextModelError
        Missing, not cached while offline, not downloadable, or not a known pipeline.
    """
    from embedders.lib.hf_models import how_to_provide
    from embedders.lib.weights import hf_cache_dir, offline, weights_fingerprint

    local = Path(model).expanduser()
    if local.is_dir():
        _check_pipeline_folder(local, model)
        return local, "local:" + ";".join(
            f"{p.relative_to(local).parent.as_posix()}/{weights_fingerprint(p)}"
            for p in _pipeline_files(local))
    if model.startswith(("/", ".", "~")) or model.count("/") > 1:
        raise TextModelError(f"text model folder {model!r} does not exist")
    hint = how_to_provide(model, LOCAL_OPTION)
    cache, is_offline = str(hf_cache_dir()), offline() or not download
    try:
        import huggingface_hub

        patterns = ["*.json", "*.safetensors", "*.txt", "*.model"]
        folder = Path(huggingface_hub.snapshot_download(
            model, cache_dir=cache, allow_patterns=patterns, local_files_only=is_offline))
        if not any(p.suffix == ".safetensors" for p in _pipeline_files(folder)):
            # .bin only where there is no safetensors file: both would double the download
            folder = Path(huggingface_hub.snapshot_download(
                model, cache_dir=cache, allow_patterns=patterns + ["*.bin"],
                local_files_only=is_offline))
    except Exception as exc:  # the hub's errors are many; each becomes one line
        if is_offline:
            why = ("downloads are off (HF_HUB_OFFLINE or EMBCOMPARE_OFFLINE is set)" if download
                   else "the server does not download models")
            raise TextModelError(f"text model {model!r} is not in the Hugging Face cache "
                                 f"({cache}) and {why}. {hint}") from exc
        reason = str(exc).strip().splitlines()[0][:300] if str(exc).strip() else type(exc).__name__
        raise TextModelError(f"could not get text model {model!r}: {reason}. {hint}") from exc
    _check_pipeline_folder(folder, model)
    return folder, f"{model}@{folder.name}"


def request_key(identity: str, text: str, *, seconds: float, steps: int, seed: int) -> str:
    """The cache key of a generated query (hex SHA-256 of the request, model identity first)."""
    request = [GENERATION_VERSION, identity, text, float(seconds), int(steps), int(seed)]
    return hashlib.sha256(json.dumps(request, ensure_ascii=False).encode("utf-8")).hexdigest()


def cached_query_path(key: str, *, folder: Path | None = None) -> Path:
    """Where the generated query of ``key`` lives: in ``folder``, by default the user cache
    folder's ``text_queries/`` (:func:`query_cache_dir`)."""
    return (folder or query_cache_dir()) / f"{key[:32]}.wav"


def query_cache_dir() -> Path:
    """The folder of the generated queries in the user cache folder (not created here)."""
    from embedders.lib.weights import cache_dir

    return cache_dir(CACHE_SUBDIR)


def load_pipeline(folder: Path, device: str):
    """The diffusers pipeline in ``folder`` on ``device`` (progress bars off)."""
    try:
        from diffusers import DiffusionPipeline
    except ImportError as exc:
        raise TextModelError("text queries need diffusers: pip install 'diffusers>=0.42.1,<0.43'") \
            from exc
    from diffusers.utils import logging as diffusers_logging
    from transformers.utils import logging as transformers_logging

    # their loading bars and notices (AudioLDMPipeline's deprecation, accelerate) would bury the
    # command's one-line messages; errors still raise
    for lib in (diffusers_logging, transformers_logging):
        lib.set_verbosity_error()
        lib.disable_progress_bar()
    pipe = DiffusionPipeline.from_pretrained(str(folder))
    pipe.set_progress_bar_config(disable=True)
    return pipe.to(device)


def generate_waveform(pipe, text: str, *, seconds: float, steps: int, seed: int
                      ) -> tuple[np.ndarray, int]:
    """Run ``pipe`` on ``text``: ``(waveform, sample_rate)``, the waveform
    ``np.ndarray [shape=(round(seconds * sample_rate),)]`` (float32, within [-1, 1]).

    The pipeline rounds lengths to its latent grid; the waveform is cut or zero-padded to the
    requested length so a request gets what it asked for.
    """
    import torch

    sample_rate = int(pipe.vocoder.config.sampling_rate)
    generator = torch.Generator(device="cpu").manual_seed(int(seed))
    with torch.inference_mode():
        out = pipe(text, audio_length_in_s=float(seconds), num_inference_steps=int(steps),
                   generator=generator, output_type="np")
    audio = np.asarray(out.audios, dtype=np.float32).reshape(-1)
    n = int(round(seconds * sample_rate))
    audio = np.pad(audio[:n], (0, max(0, n - audio.shape[0])))
    return np.clip(np.nan_to_num(audio), -1.0, 1.0), sample_rate


def text_query_audio(text: str, *, model: str = DEFAULT_TEXT_MODEL,
                     seconds: float = DEFAULT_SECONDS, steps: int = DEFAULT_STEPS,
                     seed: int = DEFAULT_SEED, device: str | None = None,
                     log=None) -> Path:
    """The WAV file generated from ``text`` (made once per request, then read from the cache).

    Parameters
    ----------
    text : str
        The description, e.g. ``"calm solo piano, slow"``.
    model : str
        Hugging Face id or local ``save_pretrained`` folder of an AudioLDM / AudioLDM 2 pipeline.
    seconds : float
        Length of the generated audio (the file has exactly ``round(seconds * sr)`` samples).
    steps : int
        Diffusion steps.
    seed : int
        Seed of the initial noise: the same request gives the same audio.
    device : str or None
        ``auto``/None (CUDA when present), ``cpu``, ``cuda``, ``cuda:N`` or ``mps``.
    log : callable or None
        Called with one line before a (slow) generation; not on a cache hit.

    Returns
    -------
    Path
        A 16-bit mono WAV in the user cache folder (``text_queries/``); a JSON file beside it
        records the request.

    Raises
    ------
    TextQueryError
        A bad request; :class:`TextModelError` for a model that is not available.
    """
    validate_request(text, seconds=seconds, steps=steps, seed=seed)
    folder, identity = resolve_text_model(model)
    dest = cached_query_path(request_key(identity, text, seconds=seconds, steps=steps,
                                         seed=seed))
    if dest.is_file():
        return dest
    return generate_query_file(dest, folder, text, model=model, identity=identity,
                               seconds=seconds, steps=steps, seed=seed, device=device, log=log)


def generate_query_file(dest: Path, folder: Path, text: str, *, model: str, identity: str,
                        seconds: float, steps: int, seed: int, device: str | None = None,
                        log=None) -> Path:
    """Generate ``text`` with the pipeline in ``folder`` and write it to ``dest`` (no cache
    look-up: the caller made ``dest`` from :func:`request_key` and found it absent).

    ``model`` and ``identity`` are recorded in the JSON beside the WAV; the other parameters are
    those of :func:`text_query_audio` (already validated). Returns ``dest``.
    """
    from embedders import EmbedderError
    from embedders.base import resolve_device

    try:
        dev = resolve_device(device)
    except EmbedderError as exc:
        raise TextQueryError(str(exc)) from exc
    if log is not None:
        log(f"generating {seconds:g} s of query audio with {model} on {dev} ({steps} steps)")
    waveform, sample_rate = generate_waveform(load_pipeline(folder, dev), text, seconds=seconds,
                                              steps=steps, seed=seed)
    _write_query(Path(dest), waveform, sample_rate, {
        "text": text, "model": model, "identity": identity, "seconds": seconds, "steps": steps,
        "seed": seed, "device": dev, "sample_rate": sample_rate})
    return Path(dest)


def _write_query(dest: Path, waveform: np.ndarray, sample_rate: int, request: dict) -> None:
    """The WAV (16-bit) and, beside it, the JSON of its request; each written atomically."""
    import soundfile as sf

    from common.fsutil import atomic_path, atomic_write_text

    with atomic_path(dest, suffix=".wav") as tmp:
        sf.write(str(tmp), waveform, sample_rate, format="WAV", subtype="PCM_16")
    atomic_write_text(dest.with_suffix(".json"), json.dumps(request, ensure_ascii=False,
                                                            indent=1))


def save_query_copy(src: Path, dest: str | os.PathLike) -> Path:
    """Copy the generated query to ``dest`` (atomically) so the user can listen to it."""
    from common.fsutil import atomic_write_bytes

    return atomic_write_bytes(dest, Path(src).read_bytes())


class TextGenerationError(SearchError):
    """The pipeline itself failed while generating (out of memory, a broken model file)."""


def add_text_query_arguments(parser) -> None:
    """The ``--text`` flags of ``main.py recommend`` (the query file becomes optional)."""
    parser.add_argument("--text", default=None, metavar="TEXT",
                        help="describe the sound instead of giving a file: a query tune is "
                             "generated from it (text-to-audio, diffusers) and searched with")
    parser.add_argument("--text-model", default=DEFAULT_TEXT_MODEL, metavar="ID_OR_PATH",
                        help=f"AudioLDM / AudioLDM 2 pipeline: Hugging Face id or local "
                             f"save_pretrained folder (default {DEFAULT_TEXT_MODEL})")
    parser.add_argument("--text-seconds", type=float, default=DEFAULT_SECONDS, metavar="S",
                        help=f"length of the generated query (default {DEFAULT_SECONDS:g})")
    parser.add_argument("--text-steps", type=int, default=DEFAULT_STEPS, metavar="N",
                        help=f"diffusion steps (default {DEFAULT_STEPS}; time grows linearly)")
    parser.add_argument("--text-seed", type=int, default=DEFAULT_SEED, metavar="N",
                        help=f"seed of the generation (default {DEFAULT_SEED})")
    parser.add_argument("--save-query", default=None, metavar="FILE.wav",
                        help="also write the generated query here, to listen to it")
    parser.add_argument("--device", default=None, metavar="DEV",
                        help="torch device for the text-to-audio model: auto (default), cpu, "
                             "cuda, cuda:N, mps")


def query_file_from_args(args) -> str:
    """The query file of parsed ``recommend`` arguments: ``args.query``, or the audio generated
    from ``args.text`` (saved to ``args.save_query`` when given; its path said on stderr).

    Raises
    ------
    TextQueryError
        Both or neither of a file and ``--text``; a bad request; a model not available.
    TextGenerationError
        The pipeline failed while generating.
    """
    import sys

    if (args.query is None) == (args.text is None):
        raise TextQueryError("give either a query file or --text TEXT (exactly one)")
    if args.text is None:
        if args.save_query:
            raise TextQueryError("--save-query saves a generated query: it needs --text")
        return args.query
    if args.save_query and Path(args.save_query).suffix.lower() != ".wav":
        raise TextQueryError(f"--save-query {args.save_query}: the query is written as WAV "
                             f"(give a .wav name)")
    try:
        path = text_query_audio(args.text, model=args.text_model, seconds=args.text_seconds,
                                steps=args.text_steps, seed=args.text_seed, device=args.device,
                                log=lambda line: print(line, file=sys.stderr, flush=True))
    except SearchError:
        raise
    except Exception as exc:  # the pipeline's own failures: one line, the work failed
        reason = str(exc).strip().splitlines()[0][:300] if str(exc).strip() else type(exc).__name__
        raise TextGenerationError(f"text model {args.text_model!r} failed to generate the "
                                  f"query: {reason}") from exc
    if args.save_query:
        try:
            path = save_query_copy(path, args.save_query)
        except OSError as exc:
            raise TextQueryError(f"--save-query {args.save_query}: cannot write "
                                 f"({exc.strerror or exc})") from exc
    print(f"query audio generated from the text: {path}", file=sys.stderr)
    return str(path)
