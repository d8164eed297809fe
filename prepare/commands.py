"""The four ``prepare`` subcommands as library functions: SRC folder in, DST folder out, the
list of :class:`~prepare.jobs.Outcome` returned (one per source file or pair).

Each function checks its arguments first (``ValueError`` / :class:`~prepare.jobs.PrepareError`
before any work), then runs its jobs through :class:`~prepare.jobs.Runner` (cache, resume,
workers, manifest). Output files are written atomically.
"""
from __future__ import annotations

import os
import shutil
import threading
import zlib
from pathlib import Path

import numpy as np

from collection import demo_corpus
from common.fsutil import atomic_path
from embedders.base import InputError
from embedders.lib.audio_io import AUDIO_EXTENSIONS, audio_info
from .jobs import SKIPPED, Job, Outcome, Runner, SourceFile, check_dirs, list_sources

MIDI_EXTENSIONS = (".mid", ".midi")
RENDER_SAMPLE_RATE = 22050
SYNTHS = ("auto", "fluidsynth", "builtin")


def _is_audio(s: SourceFile) -> bool:
    return s.path.suffix.lower() in AUDIO_EXTENSIONS


def _is_midi(s: SourceFile) -> bool:
    return s.path.suffix.lower() in MIDI_EXTENSIONS


def _skip(source: SourceFile, reason: str) -> Outcome:
    return Outcome(Job([source]), SKIPPED, reason=reason)


def _select(sources, keep, reason: str) -> tuple[list[Job], list[Outcome]]:
    jobs, skipped = [], []
    for s in sources:
        if not s.label:
            skipped.append(_skip(s, "not inside a class folder (SRC/<class>/...)"))
        elif keep(s):
            jobs.append(Job([s]))
        else:
            skipped.append(_skip(s, reason))
    return jobs, skipped


def _out(dst: Path, rel: str, suffix: str) -> Path:
    """``DST/<rel without extension><suffix>``."""
    return dst / (rel.rsplit(".", 1)[0] + suffix)


def _copy_or_link(src: Path, dest: Path, link: bool) -> Path:
    """Copy ``src`` to ``dest`` (or make ``dest`` a symbolic link to it), atomically."""
    if not link:
        with atomic_path(dest, suffix=".tmp" + dest.suffix) as tmp:
            shutil.copyfile(src, tmp)
        return dest
    dest.parent.mkdir(parents=True, exist_ok=True)
    tmp = dest.with_name(f".{dest.name}.{os.getpid()}.{threading.get_ident()}.link")
    if tmp.is_symlink() or tmp.exists():
        tmp.unlink()
    os.symlink(src.resolve(), tmp)
    os.replace(tmp, dest)  # a rename: readers see the old file or the whole link
    return dest


def _write_midi(obj, dest: Path) -> Path:
    """Write a mido.MidiFile or pretty_midi.PrettyMIDI atomically."""
    with atomic_path(dest, suffix=".tmp.mid") as tmp:
        if hasattr(obj, "save"):
            obj.save(str(tmp))
        else:
            obj.write(str(tmp))
    return dest


# -- render ------------------------------------------------------------------------------------

class Renderer:
    """MIDI -> WAV with FluidSynth and a General MIDI soundfont, else the demo corpus's built-in
    synthesizer (said once)."""

    def __init__(self, *, synth: str = "auto", soundfont: str | os.PathLike | None = None,
                 sample_rate: int = RENDER_SAMPLE_RATE, verbose: bool = True):
        if synth not in SYNTHS:
            raise ValueError(f"synth must be one of {', '.join(SYNTHS)}, got {synth!r}")
        if soundfont is not None and not Path(soundfont).is_file():
            raise ValueError(f"soundfont {soundfont} does not exist")
        if not 8000 <= int(sample_rate) <= 192000:
            raise ValueError(f"sample rate must be within 8000..192000 Hz, got {sample_rate}")
        have_fs = shutil.which("fluidsynth") is not None and (
            soundfont is not None or demo_corpus.soundfont_path() is not None)
        if synth == "fluidsynth" and not have_fs:
            raise ValueError("--synth fluidsynth needs the fluidsynth program on PATH and a "
                             "soundfont (--soundfont, or pretty_midi's TimGM6mb.sf2)")
        self.synth = synth if synth != "auto" else ("fluidsynth" if have_fs else "builtin")
        if synth == "auto" and not have_fs and verbose:
            print("note: fluidsynth not found; rendering with the built-in synthesizer "
                  "(apt-get install fluidsynth for General MIDI sound)", flush=True)
        self.soundfont = str(soundfont or demo_corpus.soundfont_path() or "")
        self.sample_rate = int(sample_rate)

    def identity(self) -> dict:
        """What changes the rendered audio (part of cache keys)."""
        sf_id = None
        if self.synth == "fluidsynth":
            st = os.stat(self.soundfont)
            sf_id = f"{Path(self.soundfont).name}:{st.st_size}"
        return {"synth": self.synth, "soundfont": sf_id, "sample_rate": self.sample_rate}

    def render(self, midi_path: Path, wav_path: Path) -> Path:
        """Render ``midi_path`` to ``wav_path`` atomically; InputError when it cannot."""
        import soundfile as sf

        with atomic_path(wav_path, suffix=".tmp.wav") as tmp:
            if self.synth == "fluidsynth":
                try:
                    demo_corpus.render_fluidsynth(midi_path, tmp, self.sample_rate,
                                                  soundfont=self.soundfont)
                except (RuntimeError, OSError) as exc:
                    raise InputError(midi_path, str(exc).splitlines()[0][:300]) from exc
            else:
                import pretty_midi
                try:
                    pm = pretty_midi.PrettyMIDI(str(midi_path))
                except Exception as exc:
                    raise InputError(midi_path, f"pretty_midi cannot read it ({exc})") from exc
                audio = demo_corpus.synthesize(pm, self.sample_rate)
                sf.write(str(tmp), audio, self.sample_rate, subtype="PCM_16", format="WAV")
        return wav_path


def render(src, dst, *, synth: str = "auto", soundfont=None,
           sample_rate: int = RENDER_SAMPLE_RATE, workers: int = 1,
           progress: bool = True) -> list[Outcome]:
    """Audio for a MIDI collection: each MIDI file is copied to DST with a rendered ``.wav``
    beside it (the two form a pair)."""
    from .midi_ops import read_midi

    src, dst = check_dirs(src, dst)
    renderer = Renderer(synth=synth, soundfont=soundfont, sample_rate=sample_rate,
                        verbose=progress)
    jobs, skipped = _select(list_sources(src), _is_midi, "not a MIDI file")

    def work(job: Job, dst: Path) -> list[Path]:
        s = job.main
        read_midi(s.path)  # a clear reason for unreadable files
        mid = _copy_or_link(s.path, dst / s.rel, link=False)
        return [mid, renderer.render(mid, _out(dst, s.rel, ".wav"))]

    runner = Runner(dst, "render", 1, renderer.identity(), workers=workers, progress=progress)
    return runner.run(jobs, work, skipped, desc="rendering MIDI")


# -- instruments -------------------------------------------------------------------------------

def instruments(src, dst, *, by: str = "family", labels: str = "family", min_notes: int = 10,
                synth: str = "auto", soundfont=None, sample_rate: int = RENDER_SAMPLE_RATE,
                workers: int = 1, progress: bool = True) -> list[Outcome]:
    """Instrument sets: every multitrack MIDI file is split into parts (see
    :func:`prepare.midi_ops.split_parts`); each part with at least ``min_notes`` notes is
    written to ``DST/<instrument class>/<genre>__<stem>__<part>.mid`` and rendered beside it."""
    from .midi_ops import read_midi, split_parts

    if by not in ("family", "track", "channel"):
        raise ValueError(f"--by must be family, track or channel, got {by!r}")
    if labels not in ("family", "program"):
        raise ValueError(f"--labels must be family or program, got {labels!r}")
    if min_notes < 1:
        raise ValueError(f"--min-notes must be >= 1, got {min_notes}")
    src, dst = check_dirs(src, dst)
    renderer = Renderer(synth=synth, soundfont=soundfont, sample_rate=sample_rate,
                        verbose=progress)
    jobs, skipped = _select(list_sources(src), _is_midi, "not a MIDI file")

    def work(job: Job, dst: Path) -> list[Path]:
        s = job.main
        parts = split_parts(read_midi(s.path), by=by, labels=labels, min_notes=min_notes)
        if not parts:
            raise InputError(s.path, f"no instrument part with at least {min_notes} notes")
        stem = s.rel.rsplit(".", 1)[0].replace("/", "__")
        outputs = []
        for part in parts:
            mid = _write_midi(part.midi, dst / part.label / f"{stem}__{part.name}.mid")
            outputs += [mid, renderer.render(mid, mid.with_suffix(".wav"))]
        return outputs

    options = {"by": by, "labels": labels, "min_notes": min_notes, **renderer.identity()}
    runner = Runner(dst, "instruments", 1, options, workers=workers, progress=progress)
    return runner.run(jobs, work, skipped, desc="splitting instruments")


# -- crop --------------------------------------------------------------------------------------

def window_starts(duration: float, *, seconds: float, offset: float = 0.0,
                  windows: int | None = None, hop: float | None = None, seed: int = 0,
                  name: str = "") -> list[float]:
    """Start times (s) of the windows cut from a piece of ``duration`` seconds.

    ``hop`` given: consecutive windows from ``offset`` every ``hop`` seconds (at most
    ``windows``); else ``windows`` given: that many random starts, uniform over the piece,
    seeded by ``seed`` and ``name`` (so each file gets its own, reproducible windows), sorted;
    else one window at ``offset``. Only windows that fit entirely are returned.
    """
    if hop is not None:
        starts = list(np.arange(offset, duration - seconds + 1e-9, hop))
        return [float(s) for s in (starts[:windows] if windows else starts)]
    if windows:
        room = duration - seconds
        if room < 0:
            return []
        rng = np.random.default_rng([seed, zlib.crc32(name.encode())])
        return sorted(float(s) for s in rng.uniform(0, room, windows))
    return [float(offset)] if offset + seconds <= duration + 1e-9 else []


def crop_audio(path: Path, dest: Path, start: float, seconds: float) -> Path:
    """Write ``[start, start + seconds)`` of an audio file as WAV (source sample rate, channels
    and, where WAV allows it, sample format)."""
    import soundfile as sf

    with sf.SoundFile(str(path)) as snd:
        sr = snd.samplerate
        subtype = snd.subtype if sf.check_format("WAV", snd.subtype) else "FLOAT"
        snd.seek(int(round(start * sr)))
        data = snd.read(int(round(seconds * sr)), dtype="float64", always_2d=True)
    with atomic_path(dest, suffix=".tmp.wav") as tmp:
        sf.write(str(tmp), data, sr, subtype=subtype, format="WAV")
    return dest


def _pair_jobs(src: Path) -> tuple[list[Job], list[Outcome]]:
    """One job per audio/MIDI pair (same folder, same stem) and per unpaired audio or MIDI
    file; the outcomes of the files that cannot be cut."""
    by_stem: dict[str, list[SourceFile]] = {}
    skipped = []
    for s in list_sources(src):
        if not s.label:
            skipped.append(_skip(s, "not inside a class folder (SRC/<class>/...)"))
        elif _is_audio(s) or _is_midi(s):
            by_stem.setdefault(s.rel.rsplit(".", 1)[0], []).append(s)
        else:
            skipped.append(_skip(s, "neither audio nor MIDI"))
    jobs = []
    for stem, group in sorted(by_stem.items()):
        audio = [s for s in group if _is_audio(s)]
        midi = [s for s in group if _is_midi(s)]
        if audio and midi:
            jobs.append(Job([audio[0], midi[0]], "pair"))
            group = audio[1:] + midi[1:]  # e.g. song.wav and song.flac: extra ones alone
        jobs += [Job([s], "audio" if _is_audio(s) else "midi") for s in group]
    return jobs, skipped


def crop(src, dst, *, seconds: float = 3.0, offset: float = 0.0, windows: int | None = None,
         hop: float | None = None, seed: int = 0, workers: int = 1,
         progress: bool = True) -> list[Outcome]:
    """Cut every audio/MIDI pair (same folder, same stem) at the same times; unpaired audio or
    MIDI files are cut alone. Window ``k`` of ``<stem>`` becomes ``<stem>__t<ms>ms.wav`` and
    ``.mid`` (``<ms>`` = its start in milliseconds), so the cut pieces pair up again."""
    from .midi_ops import crop_midi, read_midi

    if not seconds > 0:
        raise ValueError(f"--seconds must be > 0, got {seconds}")
    if offset < 0:
        raise ValueError(f"--offset must be >= 0, got {offset}")
    if windows is not None and windows < 1:
        raise ValueError(f"--windows must be >= 1, got {windows}")
    if hop is not None and not hop > 0:
        raise ValueError(f"--hop must be > 0, got {hop}")
    src, dst = check_dirs(src, dst)
    jobs, skipped = _pair_jobs(src)

    def work(job: Job, dst: Path) -> list[Path]:
        audio = next((s for s in job.sources if _is_audio(s)), None)
        midi_src = next((s for s in job.sources if _is_midi(s)), None)
        mid = read_midi(midi_src.path) if midi_src else None
        if audio is not None:
            sr, _, n = audio_info(audio.path)
            if n == 0:
                raise InputError(audio.path, "audio has 0 samples")
            duration = n / sr
        else:
            duration = mid.length
        starts = window_starts(duration, seconds=seconds, offset=offset, windows=windows,
                               hop=hop, seed=seed, name=job.main.rel)
        if not starts:
            raise InputError(job.main.path, f"{duration:.2f} s is too short for a "
                                            f"{seconds:g} s window at {offset:g} s")
        stem = job.main.rel.rsplit(".", 1)[0]
        outputs = []
        for start in starts:
            base = dst / f"{stem}__t{int(round(start * 1000)):07d}ms"
            if audio is not None:
                outputs.append(crop_audio(audio.path, base.with_suffix(".wav"), start, seconds))
            if mid is not None:
                outputs.append(_write_midi(crop_midi(mid, start, start + seconds),
                                           base.with_suffix(".mid")))
        return outputs

    options = {"seconds": seconds, "offset": offset, "windows": windows, "hop": hop,
               "seed": seed}
    runner = Runner(dst, "crop", 1, options, workers=workers, progress=progress)
    return runner.run(jobs, work, skipped, desc="cropping")


# -- transcribe --------------------------------------------------------------------------------

METHODS = ("basic-pitch", "heuristic")


def transcribe(src, dst, *, method: str = "basic-pitch", note_options=None, model=None,
               save_model_output: bool = False, link: bool = False, workers: int = 1,
               progress: bool = True) -> list[Outcome]:
    """MIDI for an audio collection: each audio file gets ``<stem>.mid`` beside a copy (or, with
    ``link``, a symbolic link) of itself in DST, so the two form a pair.

    Parameters
    ----------
    method : {"basic-pitch", "heuristic"}
    note_options : prepare.basic_pitch.NoteOptions, optional
        basic-pitch's note creation options (defaults as the reference).
    model : str or Path, optional
        The basic-pitch ONNX file or its folder (see :func:`prepare.basic_pitch.resolve_model`).
    save_model_output : bool
        Also write ``<stem>.model_output.npz`` (``note``, ``onset``, ``contour``).
    """
    from . import basic_pitch as bp

    if method not in METHODS:
        raise ValueError(f"--method must be one of {', '.join(METHODS)}, got {method!r}")
    note_options = note_options or bp.NoteOptions()
    note_options.validate()
    if save_model_output and method != "basic-pitch":
        raise ValueError("--save-model-output needs --method basic-pitch")
    src, dst = check_dirs(src, dst)
    options = {"method": method, "link": link}
    if method == "basic-pitch":
        net = bp.BasicPitchModel(model)
        options.update(model=net.identity, save_model_output=save_model_output,
                       notes=vars(note_options))
    jobs, skipped = _select(list_sources(src), _is_audio, "not an audio file")

    def work(job: Job, dst: Path) -> list[Path]:
        s = job.main
        audio = bp.load_audio(s.path)
        outputs = []
        midi_path = _out(dst, s.rel, ".mid")
        if method == "basic-pitch":
            output = net.predict_audio(audio)
            if save_model_output:
                npz = _out(dst, s.rel, ".model_output.npz")
                with atomic_path(npz, suffix=".tmp.npz") as tmp:
                    np.savez_compressed(tmp, **output)
                outputs.append(npz)
            notes = bp.model_output_to_notes({k: v.copy() for k, v in output.items()},
                                             note_options)
            pm = bp.notes_to_midi(notes, multiple_pitch_bends=note_options.multiple_pitch_bends,
                                  midi_tempo=note_options.midi_tempo)
        else:
            from .heuristic import heuristic_midi, transcribe_heuristic
            pm = heuristic_midi(*transcribe_heuristic(audio, sr=bp.SAMPLE_RATE))
        outputs.insert(0, _write_midi(pm, midi_path))
        outputs.insert(0, _copy_or_link(s.path, dst / s.rel, link))
        return outputs

    runner = Runner(dst, "transcribe", 1, options, workers=workers, progress=progress)
    return runner.run(jobs, work, skipped, desc=f"transcribing ({method})")
