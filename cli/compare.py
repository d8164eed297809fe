"""The comparison command: the original flags (``--dataset``, ``--emb-methods``, ``--plot``,
``--calc-metrics`` ...) embed a collection with several embedders and compare the spaces.

A thin layer: :func:`collection.embed_dataset` does the embedding and
:func:`analysis.run_analysis` the comparison; this module turns flags into their arguments.
"""
from __future__ import annotations

import argparse
import sys
import time
from pathlib import Path

from collection.sources import (DATASET, SourceError, add_source_arguments,
                                source_from_args)
from common.exits import (EXIT_FAILED, EXIT_INTERRUPTED, EXIT_OK,  # noqa: F401 (as before)
                          EXIT_USAGE, OneLineParser, fail, positive_int)
from common.exits import program_name
from common.fsutil import ensure_writable_folder

from .params import UsageError, expand_argv

#: ``--emb-methods`` keeps the meaning of the original tool: the two model embedders.
EMB_METHODS = {"openl3": ["openl3"], "clamp2": ["clamp2"], "both": ["openl3", "clamp2"]}
DEFAULT_EMBEDDERS = ["audio-stats", "midi-stats"]
PLOT_METHODS = {"tsne": ("tsne",), "pca": ("pca",), "both": ("pca", "tsne")}


def _positive_float(text: str) -> float:
    try:
        value = float(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"expected a positive number, got {text!r}") from None
    if not value > 0:
        raise argparse.ArgumentTypeError(f"expected a positive number, got {text!r}")
    return value


def build_parser() -> argparse.ArgumentParser:
    """The argument parser; ``--help`` documents every flag."""
    # Long on purpose: one declaration per flag, in the order --help lists them.
    p = OneLineParser(
        prog=program_name(),
        description="Embed a genre-labelled music collection (ROOT/<genre>/.../<file>) with "
                    "audio and symbolic embedders, cache the vectors, and compare the spaces "
                    "(maps, centroids, cosine matrices, variance, separability, cross-model "
                    "similarity, report).",
        epilog="Flags may also come from a params file (--params-file FILE: flags one or more "
               "per line, '#' comments); flags on the command line override the file.")
    io = p.add_argument_group("input and output")
    io.add_argument("--params-file", metavar="FILE",
                    help="read flags from FILE (may be given more than once)")
    io.add_argument("--dataset", metavar="DIR",
                    help="dataset folder: one sub-folder per class (genre) holding audio and/or "
                         "MIDI files, deeper folders allowed")
    add_source_arguments(io)  # --manifest / --mirdata instead of --dataset
    io.add_argument("--make-demo-corpus", action="store_true",
                    help="first synthesize the offline demo corpus into --dataset (only files "
                         "that are missing are made)")
    io.add_argument("--out", metavar="DIR",
                    help="output folder for manifest.csv, metrics.json, tables and the report "
                         "(default: results/<dataset folder name>)")
    io.add_argument("--emb-dir", metavar="DIR",
                    help="embeddings folder: the content-addressed cache and one "
                         "export/<embedder>/ folder per embedder (default: results/embeddings)")
    emb = p.add_argument_group("embedders")
    emb.add_argument("--emb-methods", choices=sorted(EMB_METHODS),
                     help="model embedders: openl3 (audio), clamp2 (MIDI) or both")
    emb.add_argument("--embedders", nargs="+", metavar="NAME",
                     help="registered embedders to use, e.g. audio-stats midi-stats openl3 "
                          "clamp2 (combined with --emb-methods; default when neither is given: "
                          f"{' '.join(DEFAULT_EMBEDDERS)})")
    emb.add_argument("--optional-embedders", nargs="+", metavar="NAME", default=[],
                     help="embedders to add when their weights can be found or fetched; one "
                          "whose weights are missing is dropped with one line and the run goes on")
    emb.add_argument("--list-embedders", action="store_true",
                     help="list the registered embedders with their options and exit")
    emb.add_argument("--set", dest="set_options", action="append", default=[],
                     metavar="NAME.OPTION=VALUE",
                     help="set any embedder option, e.g. --set openl3.resampler=soxr; the "
                          "value is read as the option's type (true/false for switches) "
                          "(repeatable)")
    emb.add_argument("--device", metavar="DEV",
                     help="torch device for model embedders: auto (default), cpu, cuda, cuda:N, mps")
    emb.add_argument("--batch-size", type=positive_int, metavar="N",
                     help="frames (OpenL3) or segments (CLaMP 2) per forward pass")
    emb.add_argument("--workers", type=positive_int, metavar="N",
                     help="worker processes for embedders that embed file by file, and for "
                          "the analysis of the embedders and pairs side by side (default 1; "
                          "the numbers are the same whatever N); with --engine ray: Ray "
                          "workers (default: one per CPU, or per --ray-gpus-per-worker GPUs, "
                          "of the cluster; the analysis then uses this machine's CPUs)")
    emb.add_argument("--engine", choices=("local", "ray"), default="local",
                     help="where files are embedded: this machine (default) or the actors of a "
                          "Ray cluster, which write to the same --emb-dir (needs `pip install "
                          "ray`; every node must mount the dataset and --emb-dir at the same paths)")
    emb.add_argument("--ray-address", metavar="ADDR",
                     help="with --engine ray: the cluster, auto or ray://HOST:PORT "
                          "(default: start Ray on this machine)")
    emb.add_argument("--ray-gpus-per-worker", type=_positive_float, metavar="G",
                     help="with --engine ray: GPUs each worker holds (default: CPU workers)")
    ol3 = p.add_argument_group("OpenL3 options")
    ol3.add_argument("--input-repr", choices=["linear", "mel128", "mel256"],
                     help="spectrogram front-end (default mel256)")
    ol3.add_argument("--embedding-size", type=int, choices=[512, 6144],
                     help="embedding dimension (default 6144)")
    ol3.add_argument("--content-type", choices=["music", "env"],
                     help="weights trained on music or environmental sound (default music)")
    ol3.add_argument("--hop-size", type=_positive_float, metavar="SECONDS",
                     help="hop between 1-s frames in seconds (default 0.1)")
    ol3.add_argument("--center", action=argparse.BooleanOptionalAction, default=None,
                     help="pad half a frame at the start so frame i is centered at i*hop "
                          "(default on)")
    ol3.add_argument("--openl3-weights", metavar="PATH",
                     help="official OpenL3 .h5 weight file, or a folder holding the official "
                          "file names")
    cl2 = p.add_argument_group("CLaMP 2 options")
    cl2.add_argument("--clamp2-weights", metavar="PATH", help="official CLaMP 2 .pth checkpoint")
    mnn = p.add_argument_group("musicnn options")
    mnn.add_argument("--musicnn-weights", metavar="DIR",
                     help="folder of the musicnn package (holding <MODEL>/.index and "
                          "<MODEL>/.data-00000-of-00001); default: user cache, installed "
                          "package, else the published wheel fetched once")
    an = p.add_argument_group("analysis")
    an.add_argument("--plot", nargs=3, metavar=("TITLE", "METHOD", "DIR"),
                    help="maps: plot title, method (tsne, pca or both) and folder for the plots")
    an.add_argument("--calc-metrics", nargs=2, metavar=("COS_DIR", "VAR_DIR"),
                    help="folders for the centroid-cosine heatmaps/CSVs and the variance CSVs")
    an.add_argument("--seed", type=int, default=0,
                    help="seed for t-SNE, bootstraps, folds and k-means (default 0)")
    an.add_argument("--bootstrap", type=positive_int, default=None, metavar="N",
                    help="bootstrap resamples for confidence intervals")
    an.add_argument("--hubness-reduction", choices=["none", "mp"], default="none",
                    help="mp: also report the recommendation metrics under mutual proximity "
                         "(Schnitzer et al. 2012), side by side with the plain ones")
    an.add_argument("--report-audio", choices=["link", "embed"], default="link",
                    help="how the report's interactive maps play audio: link (relative link to "
                         "the file, default; a MIDI item plays its pair's audio file) or embed "
                         "(first 5 s of each file, MIDI rendered by the built-in synthesizer, "
                         "mono 16 kHz Ogg, in the page; at most 8 MiB in all, the rest linked)")
    an.add_argument("--no-analysis", action="store_true",
                    help="only embed (manifest, cache, exports); skip maps, metrics and report")
    an.add_argument("--probes", action="store_true",
                    help="also run `main.py probe` on the collection's MIDI (attribute probes, "
                         "controlled changes on 100 pieces) into OUT/probes")
    p.add_argument("--no-index", action="store_true",
                   help="do not update the similar-item search index at the end of the run")
    p.add_argument("--quiet", action="store_true", help="no progress bars")
    return p


def parse_args(argv: list[str]) -> argparse.Namespace:
    """Expand params files and parse; :class:`UsageError` on any problem."""
    args = build_parser().parse_args(expand_argv(list(argv)))
    if args.list_embedders:
        return args
    try:
        args.source = source_from_args(args)
    except SourceError as exc:
        raise UsageError(f"{exc}; a --params-file may set it" if "required" in str(exc)
                         else str(exc)) from None
    if args.make_demo_corpus and args.source.kind != DATASET:
        raise UsageError("--make-demo-corpus needs --dataset DIR")
    if args.plot and args.plot[1] not in PLOT_METHODS:
        raise UsageError(f"--plot METHOD must be tsne, pca or both, got {args.plot[1]!r}")
    return args


def embedder_options(args: argparse.Namespace, names: list[str]) -> dict[str, dict]:
    """Per-embedder option dicts from the flags (only options the embedder knows are passed).

    ``--set NAME.OPTION=VALUE`` values are read as the option's declared type
    (:meth:`embedders.Embedder.coerce_option`); a wrong one is a :class:`UsageError`.
    """
    from embedders import ConfigurationError, get_embedder_class, parse_option_setting

    generic = {"device": args.device, "batch_size": args.batch_size}
    specific = {
        "openl3": {"input_repr": args.input_repr, "embedding_size": args.embedding_size,
                   "content_type": args.content_type, "hop_size": args.hop_size,
                   "center": args.center, "weights": args.openl3_weights},
        "clamp2": {"weights": args.clamp2_weights},
        "musicnn": {"weights": getattr(args, "musicnn_weights", None)},
    }
    out: dict[str, dict] = {}
    for name in names:
        known = get_embedder_class(name).option_defaults
        opts = {k: v for k, v in {**generic, **specific.get(name, {})}.items()
                if v is not None and k in known}
        out[name] = opts
    for item in args.set_options:
        try:
            emb_name, key, value = parse_option_setting(item, out)
        except ConfigurationError as exc:
            raise UsageError(str(exc)) from None
        out[emb_name][key] = value
    return out


def selected_embedders(args: argparse.Namespace) -> list[str]:
    names: list[str] = []
    if args.emb_methods:
        names.extend(EMB_METHODS[args.emb_methods])
    if args.embedders:
        names.extend(args.embedders)
    if not names:
        names = list(DEFAULT_EMBEDDERS)
    names.extend(getattr(args, "optional_embedders", None) or [])
    return list(dict.fromkeys(names))  # de-duplicate, keep order


def _check_writable(folder: Path, flag: str) -> None:
    try:
        ensure_writable_folder(folder)
    except OSError as exc:
        raise UsageError(f"{flag} folder {str(folder)!r} cannot be written: "
                         f"{exc.strerror or exc}") from None


class RunPlan:
    """Everything decided from the flags before any work starts."""

    def __init__(self, args: argparse.Namespace):
        from embedders import ConfigurationError, get_embedder

        self.args = args
        self.source = getattr(args, "source", None) or source_from_args(args)
        # a folder tree is scanned by the pipeline, as always; other inputs are read in run()
        self.dataset = (Path(args.dataset).expanduser() if self.source.kind == DATASET
                        else None)
        name = self.source.name
        self.out = Path(args.out) if args.out else Path("results") / name
        self.emb_dir = Path(args.emb_dir) if args.emb_dir else Path("results") / "embeddings"
        self.plot_title, plot_method, plot_dir = (args.plot if args.plot
                                                  else (name, "both", str(self.out / "plots")))
        self.plot_methods = PLOT_METHODS[plot_method]
        self.plot_dir = Path(plot_dir)
        cos_dir, var_dir = (args.calc_metrics if args.calc_metrics
                            else (str(self.out / "cosine"), str(self.out / "variance")))
        self.cos_dir, self.var_dir = Path(cos_dir), Path(var_dir)
        self.names = selected_embedders(args)
        try:
            options = embedder_options(args, self.names)
            self.embedders = [get_embedder(n, **options[n]) for n in self.names]
        except ConfigurationError as exc:
            raise UsageError(str(exc)) from None

    @property
    def workers(self) -> int:
        """Worker processes, or Ray workers (0: one per CPU or GPU share of the cluster)."""
        return self.args.workers or (0 if self.args.engine == "ray" else 1)

    @property
    def engine_options(self) -> dict:
        return ({"address": self.args.ray_address,
                 "gpus_per_worker": self.args.ray_gpus_per_worker or 0.0}
                if self.args.engine == "ray" else {})

    def check(self) -> None:
        """Configuration checks that need the file system; before any work."""
        if self.args.engine == "ray":
            from collection.ray_engine import RayEngineError, require_ray
            try:
                require_ray()
            except RayEngineError as exc:
                raise UsageError(str(exc)) from None
        elif self.args.ray_address or self.args.ray_gpus_per_worker:
            raise UsageError("--ray-address and --ray-gpus-per-worker need --engine ray")
        if self.dataset is not None and not self.args.make_demo_corpus:
            if not self.dataset.exists():
                raise UsageError(f"dataset folder {str(self.dataset)!r} does not exist")
            if not self.dataset.is_dir():
                raise UsageError(f"dataset path {str(self.dataset)!r} is not a folder")
        for folder, flag in ((self.out, "--out"), (self.emb_dir, "--emb-dir"),
                             (self.plot_dir, "--plot DIR"), (self.cos_dir, "--calc-metrics COS_DIR"),
                             (self.var_dir, "--calc-metrics VAR_DIR")):
            _check_writable(folder, flag)

    def config(self) -> dict:
        """The run configuration, for the report."""
        dataset = str(self.dataset) if self.dataset is not None else self.source.to_config()
        return {"dataset": dataset, "out": str(self.out), "emb_dir": str(self.emb_dir),
                "embedders": {e.name: dict(e.options) for e in self.embedders},
                "plot": {"title": self.plot_title, "methods": list(self.plot_methods),
                         "dir": str(self.plot_dir)},
                "calc_metrics": {"cos_dir": str(self.cos_dir), "var_dir": str(self.var_dir)},
                "seed": self.args.seed, "workers": self.workers, "engine": self.args.engine}


def list_embedders() -> str:
    from embedders import available_embedders

    lines = []
    for name, cls in available_embedders().items():
        opts = ", ".join(f"{k}={v!r}" for k, v in cls.option_defaults.items())
        lines.append(f"{name} ({cls.modality}, version {cls.version}): {cls.description}\n"
                     f"    options: {opts or 'none'}")
    return "\n".join(lines)


def print_summary(result, analysis_seconds: float | None, out=None) -> None:
    """A short table: files embedded, skipped, cached, time per embedder."""
    out = out or sys.stdout
    summ = result.summary()
    print(f"\nDataset {summ['root']}: {summ['n_files']} files, {summ['n_usable']} usable, "
          f"{len(summ['classes'])} classes, {summ['n_pairs']} audio/MIDI pairs", file=out)
    print(f"{'embedder':<14}{'found':>7}{'embedded':>10}{'computed':>10}{'cached':>8}"
          f"{'skipped':>9}{'seconds':>9}", file=out)
    for name, e in summ["embedders"].items():
        print(f"{name:<14}{e['found']:>7}{e['embedded']:>10}{e['computed']:>10}{e['cached']:>8}"
              f"{e['skipped']:>9}{e['seconds']:>9.1f}", file=out)
    if summ["skipped"]:
        print(f"{len(summ['skipped'])} skipped (reasons in {result.manifest_path}), e.g.:", file=out)
        for path, reason in summ["skipped"][:5]:
            print(f"  {path}: {reason}", file=out)
    for name, n in summ.get("seen_in_training", {}).items():
        print(f"{name}: {n} item(s) it was trained on are left out of the analysis "
              f"(no leakage into separability, probes, retrieval)", file=out)
    for name, counts in summ.get("note_counts", {}).items():
        if counts:
            listed = ", ".join(f"{note}: {n}" for note, n in sorted(counts.items()))
            print(f"{name}: {sum(counts.values())} file(s) embedded with a note ({listed}; "
                  f"see the manifest's note column)", file=out)
    for path, reason in summ["damaged_cache_entries"]:
        print(f"damaged cache entry recomputed: {path} ({reason})", file=out)
    for warning in summ["warnings"]:
        print(f"warning: {warning}", file=out)
    if analysis_seconds is not None:
        print(f"analysis: {analysis_seconds:.1f} s", file=out)


def run_probe_section(args: argparse.Namespace, plan: "RunPlan", result) -> Path | None:
    """``--probes``: the probe run on the vectors just computed, into OUT/probes (returned);
    no MIDI: one line, go on (None)."""
    from probe.run import NoMidiError, run_probes
    try:
        run_probes(plan.dataset, plan.embedders, out=plan.out / "probes", emb_dir=plan.emb_dir,
                   sets=result.analysis_sets(), seed=args.seed, workers=plan.workers,
                   engine=args.engine, engine_options=plan.engine_options,
                   progress=not args.quiet)
        print(f"probes in {plan.out / 'probes'} (probe.json, probe_report.html)")
        return plan.out / "probes"
    except NoMidiError as exc:
        print(f"note: probes skipped: {exc}", file=sys.stderr)
        return None


def _load_embedders(plan, args: argparse.Namespace) -> None:
    """Load every embedder of the plan before any work; an optional one (e.g. the demo's
    learned model) without its weights is dropped with one note, any other problem is a
    :class:`UsageError`."""
    from embedders import EmbedderError, WeightsError

    optional = set(getattr(args, "optional_embedders", None) or []) - set(args.embedders or [])
    try:
        for emb in list(plan.embedders):
            try:
                emb.load()
            except WeightsError as exc:
                if emb.name not in optional:
                    raise
                print(f"note: {' '.join(str(exc).split())} -- running the other embedders "
                      f"without {emb.name}", file=sys.stderr)
                plan.embedders.remove(emb)
    except (WeightsError, EmbedderError) as exc:
        raise UsageError(str(exc)) from None


def analysis_workers(workers: int) -> int:
    """Processes of the analysis: --workers, capped at this machine's CPUs (0, Ray's "one per
    CPU of the cluster", means this machine's)."""
    import os
    cpus = os.cpu_count() or 1
    return max(1, min(workers or cpus, cpus))


def run(args: argparse.Namespace) -> int:
    """Carry out a parsed command line; returns the exit status."""
    from collection import StoreError, embed_dataset
    from collection.ray_engine import RayClusterLostError, RayEngineError  # imports no ray

    plan = RunPlan(args)
    plan.check()
    progress = not args.quiet
    scan = None
    if plan.dataset is None:  # a manifest or a mirdata dataset: read (and checked) before work
        try:
            scan = plan.source.scan(log=lambda msg: print(msg, file=sys.stderr))
        except SourceError as exc:
            raise UsageError(str(exc)) from None
    if args.make_demo_corpus:
        from collection.demo_corpus import build_demo_corpus
        info = build_demo_corpus(plan.dataset)
        print(f"demo corpus in {plan.dataset} (synth: {info.get('synth', '?')})")
    _load_embedders(plan, args)
    try:
        result = embed_dataset(plan.dataset or scan.root, plan.embedders, emb_dir=plan.emb_dir,
                               out_dir=plan.out, workers=plan.workers, progress=progress,
                               engine=args.engine, engine_options=plan.engine_options,
                               scan=scan)
    except StoreError as exc:
        return fail("main.py", exc, EXIT_FAILED)
    except RayClusterLostError as exc:  # mid-run; the files embedded are in the store
        return fail("main.py", exc, EXIT_FAILED)
    except RayEngineError as exc:  # e.g. GPUs asked of a cluster that has none
        raise UsageError(str(exc)) from None
    analysis_seconds = None
    # the probes first, so that the comparison's report carries their section
    probe_dir = run_probe_section(args, plan, result) if getattr(args, "probes", False) else None
    if not args.no_analysis:
        from analysis import run_analysis
        t0 = time.perf_counter()
        kwargs = {"progress": not args.quiet,
                  "hubness_reduction": None if args.hubness_reduction == "none" else "mp",
                  "report_audio": getattr(args, "report_audio", "link"),
                  "workers": analysis_workers(plan.workers)}
        if args.bootstrap is not None:
            kwargs["n_bootstrap"] = args.bootstrap
        run_analysis(list(result.analysis_sets().values()), plan.out, plot_dir=plan.plot_dir,
                     cos_dir=plan.cos_dir, var_dir=plan.var_dir, title=plan.plot_title,
                     methods=plan.plot_methods, seed=args.seed,
                     dataset_summary=result.summary(), run_config=plan.config(),
                     probe_dir=probe_dir, **kwargs)
        analysis_seconds = time.perf_counter() - t0
    print_summary(result, analysis_seconds)
    if not args.no_index:  # the search index follows the exports (python main.py recommend)
        from search.cli import index_after_run
        index_after_run(plan.emb_dir, list(result.runs), quiet=args.quiet)  # one per space
    print(f"outputs in {plan.out} (manifest.csv"
          f"{', metrics.json, report.html' if not args.no_analysis else ''}); "
          f"embeddings in {plan.emb_dir}")
    return EXIT_OK
