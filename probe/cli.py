"""``python main.py probe``: what each embedding captures (attribute probes, controlled changes).

Exit status: 0 done, 1 failed (weights, disk), 2 usage (bad flags, unknown names, no MIDI in
the collection), 130 interrupted (``cli.main``: run the same command again to resume).
"""
from __future__ import annotations

import argparse
import sys
from pathlib import Path

from common.exits import positive_int
from common.exits import program_name

from .attributes import ATTRIBUTES, KEY_SOURCES
from .interventions import INTERVENTIONS

EXIT_OK, EXIT_FAILED, EXIT_USAGE = 0, 1, 2


class UsageLine(Exception):
    """A usage error: one line, exit 2, nothing computed."""


class _Parser(argparse.ArgumentParser):
    def error(self, message):  # one clear line instead of argparse's usage dump
        raise UsageLine(message)


def build_parser() -> argparse.ArgumentParser:
    p = _Parser(prog=program_name("probe"),
                description="Attribute probes read from the MIDI, and controlled changes "
                            "rendered to audio, for every embedder.")
    p.add_argument("--dataset", required=True, metavar="DATA",
                   help="collection folder (DATA/<label>/...), with MIDI files")
    p.add_argument("--embedders", nargs="+", required=True, metavar="NAME")
    p.add_argument("--out", required=True, metavar="DIR")
    p.add_argument("--emb-dir", metavar="DIR", help="embedding cache (default DIR/embeddings)")
    p.add_argument("--variant-dir", metavar="DIR",
                   help="variant files (default EMB_DIR/probe_variants)")
    p.add_argument("--pieces", type=positive_int, default=100,
                   help="pieces for the controlled changes, stratified by label (default 100)")
    p.add_argument("--interventions", nargs="+", metavar="NAME",
                   help=f"default all: {' '.join(INTERVENTIONS)}")
    p.add_argument("--attributes", nargs="+", metavar="NAME",
                   help=f"default all: {' '.join(ATTRIBUTES)}")
    p.add_argument("--key-source", default="profile",
                   help="key from the pitch-class 'profile' (Krumhansl-Kessler; default) or "
                        "the MIDI key 'signature' event")
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--synth", choices=("auto", "fluidsynth", "builtin"), default="auto")
    p.add_argument("--soundfont", metavar="SF2")
    p.add_argument("--workers", type=int, default=1,
                   help="processes for rendering and per-file embedders (with --engine ray: "
                        "Ray workers, 0 = one per CPU)")
    p.add_argument("--engine", choices=("local", "ray"), default="local")
    p.add_argument("--ray-address", metavar="ADDR")
    p.add_argument("--ray-gpus-per-worker", type=float, default=0.0, metavar="G")
    p.add_argument("--set", dest="set_options", action="append", default=[],
                   metavar="NAME.OPTION=VALUE", help="an embedder option (repeatable)")
    p.add_argument("--retry-failed", action="store_true",
                   help="try again the variants that failed in an earlier run")
    p.add_argument("--quiet", action="store_true", help="no progress bars")
    return p


def make_embedders(names: list[str], set_options: list[str]) -> list:
    """Construct the embedders (cheap); UsageLine on an unknown name or option."""
    from embedders import (ConfigurationError, get_embedder, get_embedder_class,
                           parse_option_setting)

    if len(set(names)) != len(names):
        raise UsageLine(f"--embedders names a model twice: {' '.join(names)}")
    options: dict[str, dict] = {n: {} for n in names}
    try:
        for n in names:
            get_embedder_class(n)
        for item in set_options:
            emb, key, value = parse_option_setting(item, options)
            options[emb][key] = value
        return [get_embedder(n, **options[n]) for n in names]
    except ConfigurationError as exc:
        raise UsageLine(str(exc)) from None


def main(argv: list[str] | None = None) -> int:
    """Run ``probe`` with ``argv`` (without the word ``probe``); the exit status."""
    from embedders import EmbedderError
    from prepare.commands import Renderer
    from .run import NoMidiError, UnknownNameError, check_names, run_probes

    try:
        args = build_parser().parse_args(argv)
        check_names(args.interventions, args.attributes, key_source=args.key_source)
        if not Path(args.dataset).is_dir():
            raise UsageLine(f"--dataset {args.dataset}: no such folder")
        if args.engine != "ray" and (args.ray_address or args.ray_gpus_per_worker):
            raise UsageLine("--ray-address and --ray-gpus-per-worker need --engine ray")
        embedders = make_embedders(args.embedders, args.set_options)
        try:  # --synth fluidsynth without FluidSynth, a missing soundfont: before any work
            Renderer(synth=args.synth, soundfont=args.soundfont, verbose=False)
        except ValueError as exc:
            raise UsageLine(str(exc)) from None
    except (UsageLine, UnknownNameError) as exc:
        print(f"main.py probe: error: {exc}", file=sys.stderr)
        return EXIT_USAGE
    engine_options = ({"address": args.ray_address, "gpus_per_worker": args.ray_gpus_per_worker}
                      if args.engine == "ray" else None)
    try:
        probe = run_probes(args.dataset, embedders, out=args.out, emb_dir=args.emb_dir,
                           variant_dir=args.variant_dir, pieces=args.pieces,
                           interventions=args.interventions, attributes=args.attributes,
                           seed=args.seed, synth=args.synth, soundfont=args.soundfont,
                           key_source=args.key_source, workers=args.workers,
                           engine=args.engine, engine_options=engine_options,
                           retry_failed=args.retry_failed, progress=not args.quiet)
    except NoMidiError as exc:
        print(f"main.py probe: error: {exc}", file=sys.stderr)
        return EXIT_USAGE
    except (EmbedderError, OSError, ValueError) as exc:
        print(f"main.py probe: failed: {exc}", file=sys.stderr)
        return EXIT_FAILED
    print_summary(probe)
    return EXIT_OK


def print_summary(probe: dict, out=None) -> None:
    """A few lines: where the files are, what was skipped, how long each step took."""
    out = out or sys.stdout
    p = probe["params"]
    secs = p["seconds"]
    print(f"probe: {len(p['embedders'])} embedders, {p['pieces']} pieces, "
          f"{len(p['interventions'])} interventions; variants made now {p['variants_made']}, "
          f"failed {p['variants_failed']}; {secs['total']:.1f} s "
          f"(variants {secs['variants']:.1f} s)", file=out)
    for s in probe["skipped"][:20]:
        print(f"  skipped: {s['what']}: {s['reason']}", file=out)
    if len(probe["skipped"]) > 20:
        print(f"  ... and {len(probe['skipped']) - 20} more skipped (probe.json)", file=out)
    files = [f for f in probe.get("files", []) if f.endswith(("probe.json", "probe_report.html"))]
    for f in files:
        print(f"  wrote {f}", file=out)
