"""``python main.py prepare SUBCOMMAND SRC --out DST [...]``: build the collections a study
needs (see docs/prepare.md)."""
from __future__ import annotations

import argparse
import sys

from common.exits import (EXIT_FAILED, EXIT_INTERRUPTED, EXIT_OK, EXIT_USAGE, OneLineParser,
                          UsageError, fail)
from common.exits import program_name


def _common(p: argparse.ArgumentParser) -> None:
    from collection.sources import add_source_arguments

    p.add_argument("src", metavar="SRC", nargs="?",
                   help="source collection folder (never modified); or --manifest / --mirdata")
    add_source_arguments(p.add_argument_group("source as a list instead of SRC (outputs in "
                                              "DST/<label>/<file name>)"))
    p.add_argument("--out", "-o", metavar="DST", required=True,
                   help="output collection (a genre-labelled tree; prepare_manifest.csv in it)")
    p.add_argument("--workers", type=int, default=1, help="files processed at once (default 1)")
    p.add_argument("--quiet", action="store_true", help="no progress or skip lines")


def _render_flags(p: argparse.ArgumentParser) -> None:
    p.add_argument("--soundfont", metavar="SF2",
                   help="General MIDI soundfont for FluidSynth (default: pretty_midi's TimGM6mb)")
    p.add_argument("--synth", choices=("auto", "fluidsynth", "builtin"), default="auto",
                   help="renderer (auto: FluidSynth when installed, else the built-in one)")
    p.add_argument("--sample-rate", type=int, default=22050, help="rendered audio rate (Hz)")


def build_parser() -> argparse.ArgumentParser:
    parser = OneLineParser(prog=program_name("prepare"), description="Build paired audio/MIDI "
                           "collections from a source collection.")
    sub = parser.add_subparsers(dest="command", required=True, parser_class=OneLineParser)

    t = sub.add_parser("transcribe", help="MIDI for every audio file (basic-pitch or heuristic)")
    _common(t)
    t.add_argument("--method", choices=("basic-pitch", "heuristic"), default="basic-pitch")
    t.add_argument("--model", metavar="PATH",
                   help="basic-pitch nmp.onnx or its folder (default: cache, installed "
                        "basic-pitch package, else downloaded once from PyPI)")
    t.add_argument("--onset-threshold", type=float, default=0.5)
    t.add_argument("--frame-threshold", type=float, default=0.3)
    t.add_argument("--minimum-note-length", type=float, default=127.70, help="milliseconds")
    t.add_argument("--minimum-frequency", type=float, default=None, help="Hz")
    t.add_argument("--maximum-frequency", type=float, default=None, help="Hz")
    t.add_argument("--multiple-pitch-bends", action="store_true")
    t.add_argument("--no-melodia-trick", action="store_true")
    t.add_argument("--midi-tempo", type=float, default=120.0)
    t.add_argument("--save-model-output", action="store_true",
                   help="also write <stem>.model_output.npz (note, onset, contour)")
    t.add_argument("--link", action="store_true",
                   help="link the audio into DST instead of copying it")

    i = sub.add_parser("instruments", help="one file per instrument part of multitrack MIDI, "
                                           "rendered; class = instrument")
    _common(i)
    i.add_argument("--by", choices=("family", "track", "channel"), default="family")
    i.add_argument("--labels", choices=("family", "program"), default="family")
    i.add_argument("--min-notes", type=int, default=10)
    _render_flags(i)

    r = sub.add_parser("render", help="audio for every MIDI file")
    _common(r)
    _render_flags(r)

    c = sub.add_parser("crop", help="cut audio/MIDI pairs at the same times")
    _common(c)
    c.add_argument("--seconds", type=float, default=3.0, help="window length (default 3)")
    c.add_argument("--offset", type=float, default=0.0, help="start of the (first) window")
    c.add_argument("--windows", type=int, default=None,
                   help="N random windows per piece (with --seed), or at most N with --hop")
    c.add_argument("--seed", type=int, default=0)
    c.add_argument("--hop", type=float, default=None, help="consecutive windows every HOP s")
    return parser


def _source(args):
    """SRC as given: the folder, or the files a manifest or mirdata dataset lists."""
    from collection.sources import DATASET, SourceError, source_from_args
    from .jobs import PrepareError, listed_sources

    try:
        source = source_from_args(args, dataset=args.src, dataset_flag="SRC")
        if source.kind == DATASET:
            return args.src
        scan = source.scan(log=None if args.quiet else lambda m: print(m, file=sys.stderr))
    except SourceError as exc:
        raise PrepareError(str(exc)) from None
    for warning in scan.warnings:
        print(f"warning: {warning}", file=sys.stderr)
    return listed_sources(scan)


def main(argv: list[str] | None = None) -> int:
    """Run ``prepare``; returns the exit status (0 ok, 1 failed, 2 usage, 130 interrupted)."""
    from embedders.base import WeightsError
    from . import commands
    from .jobs import SKIPPED, PrepareError

    argv = sys.argv[1:] if argv is None else list(argv)
    try:
        args = build_parser().parse_args(argv)
    except UsageError as exc:
        return fail("main.py prepare", exc, EXIT_USAGE)
    common = {"workers": args.workers, "progress": not args.quiet}
    try:
        args.src = _source(args)
        if args.workers < 1:
            raise ValueError(f"--workers must be >= 1, got {args.workers}")
        if args.command == "transcribe":
            from .basic_pitch import NoteOptions
            notes = NoteOptions(onset_threshold=args.onset_threshold,
                                frame_threshold=args.frame_threshold,
                                minimum_note_length=args.minimum_note_length,
                                minimum_frequency=args.minimum_frequency,
                                maximum_frequency=args.maximum_frequency,
                                multiple_pitch_bends=args.multiple_pitch_bends,
                                melodia_trick=not args.no_melodia_trick,
                                midi_tempo=args.midi_tempo)
            outcomes = commands.transcribe(args.src, args.out, method=args.method,
                                           note_options=notes, model=args.model,
                                           save_model_output=args.save_model_output,
                                           link=args.link, **common)
        elif args.command == "render":
            outcomes = commands.render(args.src, args.out, synth=args.synth,
                                       soundfont=args.soundfont, sample_rate=args.sample_rate,
                                       **common)
        elif args.command == "instruments":
            outcomes = commands.instruments(args.src, args.out, by=args.by, labels=args.labels,
                                            min_notes=args.min_notes, synth=args.synth,
                                            soundfont=args.soundfont,
                                            sample_rate=args.sample_rate, **common)
        else:
            outcomes = commands.crop(args.src, args.out, seconds=args.seconds,
                                     offset=args.offset, windows=args.windows, hop=args.hop,
                                     seed=args.seed, **common)
    except (PrepareError, WeightsError, ValueError) as exc:
        return fail(f"main.py prepare {args.command}", exc, EXIT_USAGE)
    except KeyboardInterrupt:
        print("\ninterrupted: finished files are kept; run the same command again to resume",
              file=sys.stderr)
        return EXIT_INTERRUPTED
    except OSError as exc:
        return fail(f"main.py prepare {args.command}", exc, EXIT_FAILED, kind="failed")
    if not args.quiet:
        n_skip = sum(o.status == SKIPPED for o in outcomes)
        n_cached = sum(o.status == "cached" for o in outcomes)
        print(f"prepare {args.command}: {len(outcomes) - n_skip - n_cached} made, "
              f"{n_cached} cached, {n_skip} skipped -> {args.out}/prepare_manifest.csv")
    return EXIT_OK
