"""The ``index``, ``recommend`` and ``serve`` subcommands (``python main.py NAME ...``).

Exit status: 0 done; 2 for a usage error, a query file that cannot be read or embedded, or no
index yet, locally or on the Qdrant server (the message says which command builds or pushes it);
1 when the work itself fails (a Qdrant server that does not answer or refuses a request, an index
held by another process, a full disk).
"""
from __future__ import annotations

import argparse
import functools
import json
import os
import sys

from common.exits import EXIT_FAILED, EXIT_OK, EXIT_USAGE, OneLineParser, UsageError, fail
from common.exits import program_name

from .index import DamagedExportError, DamagedIndexError, SearchError

#: The most results ``recommend -k`` asks for (fewer come back from a smaller index).
MAX_K = 100_000


def _fail(msg: object, status: int) -> int:
    return fail("main.py", msg, status)


def _usage_in_one_line(command):
    """A subcommand whose flag errors are one line and :data:`EXIT_USAGE` (the parser, a
    :class:`~common.exits.OneLineParser`, names the subcommand)."""
    @functools.wraps(command)
    def run(argv: list[str]) -> int:
        try:
            return command(argv)
        except UsageError as exc:
            return fail("main.py", exc, EXIT_USAGE)
    return run


def _common(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("--emb-dir", default=os.path.join("results", "embeddings"),
                        help="the embeddings folder (default results/embeddings)")
    parser.add_argument("--qdrant-url", default=None,
                        help="a Qdrant server or cluster instead of the embedded index "
                             "(API key from QDRANT_API_KEY)")


@_usage_in_one_line
def index_main(argv: list[str]) -> int:
    """``python main.py index --emb-dir DIR [--embedders NAME ...] [--qdrant-url URL]``"""
    from .index import IndexMissingError, build_indexes, index_root

    p = OneLineParser(prog=program_name("index"),
                      description="Build or update the vector index of every "
                                  "embedder's export (incremental, resumable).")
    _common(p)
    p.add_argument("--embedders", nargs="+", default=None,
                   help="embedders to index (default: every export in --emb-dir)")
    p.add_argument("--hnsw", choices=("auto", "now", "background", "off"), default="auto",
                   help="when to build the HNSW graph: auto = now for up to 2,000 items, else "
                        "in a background process (queries are exact until it is swapped in)")
    p.add_argument("--quiet", action="store_true")
    args = p.parse_args(argv)
    say = (lambda msg: None) if args.quiet else (lambda msg: print(msg, file=sys.stderr))
    try:
        if args.qdrant_url:
            from .remote import push_index, server_info

            server_info(args.qdrant_url)  # before anything local happens
        damaged = []  # one line each; the other embedders are still indexed
        results = build_indexes(args.emb_dir, args.embedders, hnsw=args.hnsw, log=say,
                                on_error=lambda name, exc: damaged.append(str(exc)))
        for message in damaged:
            _fail(message, EXIT_USAGE)
        if not results and not damaged:
            raise IndexMissingError(f"{args.emb_dir}: no export to index; run 'python main.py "
                                    f"--dataset DATA --emb-dir {args.emb_dir}' first")
        for name, r in results.items():
            say(f"index {name}: {r['n_items']} items (+{r['added']} -{r['removed']}"
                f"{', rebuilt' if r['rebuilt'] else ''}; HNSW {r['hnsw']})")
        if args.qdrant_url:
            for name in results:  # one line as each is pushed
                r = push_index(args.emb_dir, name, args.qdrant_url)
                say(f"pushed {name}: {r['points']} points to {args.qdrant_url}" if r["pushed"]
                    else f"{name}: the copy on {args.qdrant_url} is up to date "
                         f"({r['points']} points)")
        say(f"indexes in {index_root(args.emb_dir)}")
    except (IndexMissingError, DamagedExportError) as exc:
        return _fail(str(exc), EXIT_USAGE)
    except (SearchError, OSError) as exc:
        return _fail(str(exc), EXIT_FAILED)
    return EXIT_USAGE if damaged else EXIT_OK


def index_after_run(emb_dir, names: list[str], *, quiet: bool = False) -> bool:
    """Update the indexes of a run's embedders; a problem is one line, never a failed run
    (the embeddings are complete; 'main.py index' can be run again)."""
    from .index import build_indexes

    try:
        results = build_indexes(emb_dir, names,
                                log=(lambda m: None) if quiet else (lambda m: print(m)))
    except (SearchError, OSError, ImportError) as exc:
        print(f"note: search index not updated ({exc}); run 'python main.py index --emb-dir "
              f"{emb_dir}'", file=sys.stderr)
        return False
    if not quiet:
        print("search index: " + ", ".join(f"{n} {r['n_items']} items" for n, r in
                                            results.items() if "__to__" not in n)
              + f" (python main.py recommend FILE --emb-dir {emb_dir} --embedder NAME)")
    return True


def _table(results) -> str:
    rows = [("rank", "score", "label", "path")] + [
        (str(r.rank), f"{r.score:.4f}", r.label, r.path) for r in results]
    widths = [max(len(row[i]) for row in rows) for i in range(3)]
    return "\n".join(f"{a:>{widths[0]}}  {b:>{widths[1]}}  {c:<{widths[2]}}  {d}"
                     for a, b, c, d in rows)


@_usage_in_one_line
def recommend_main(argv: list[str]) -> int:
    """``python main.py recommend QUERY|--text TEXT --emb-dir DIR --embedder NAME [-k 10] ...``"""
    from .index import IndexMissingError
    from .recommend import QueryError, Recommender
    from .text_query import TextQueryError, add_text_query_arguments, query_file_from_args

    p = OneLineParser(prog=program_name("recommend"),
                      description="The items of the collection nearest to a file.")
    p.add_argument("query", nargs="?", help="any audio or MIDI file, in the collection or not")
    _common(p)
    add_text_query_arguments(p)
    p.add_argument("--embedder", required=True, help="the embedding space to search")
    p.add_argument("-k", type=int, default=10, help="how many results (default 10)")
    p.add_argument("--cross-modal", action="store_true",
                   help="return the other modality (audio for MIDI, MIDI for audio)")
    p.add_argument("--target-embedder", default=None,
                   help="with --cross-modal: the other space, when there are several")
    p.add_argument("--exclude-same-piece", action="store_true",
                   help="leave out the query's pair partner (the same piece)")
    p.add_argument("--label", default=None, help="only results with this label")
    p.add_argument("--hubness-reduction", choices=("none", "mp"), default="none",
                   help="mp: re-rank by mutual proximity (Schnitzer et al. 2012)")
    p.add_argument("--json", action="store_true", help="a JSON list instead of a table")
    p.add_argument("--set", dest="set_options", action="append", default=[],
                   metavar="NAME.OPTION=VALUE",
                   help="an option of the query embedder overriding the index's (repeatable), "
                        "e.g. --set hf-audio.model=PATH for a local model folder, which the "
                        "index does not record; NAME is the embedder (hf-audio for hf-audio@6)")
    args = p.parse_args(argv)
    if not 1 <= args.k <= MAX_K:
        return _fail(f"-k must be between 1 and {MAX_K}, got {args.k}", EXIT_USAGE)
    try:
        options = _query_options(args.embedder, args.set_options)
    except SearchError as exc:
        return _fail(str(exc), EXIT_USAGE)
    try:  # --text: the generated query tune is the query file from here on
        args.query = query_file_from_args(args)
    except TextQueryError as exc:
        return _fail(str(exc), EXIT_USAGE)
    except SearchError as exc:
        return _fail(str(exc), EXIT_FAILED)
    try:
        if args.qdrant_url:
            from .remote import RemoteRecommender as cls
            extra = {"url": args.qdrant_url}
        else:
            cls, extra = Recommender, {}
        rec = cls(args.emb_dir, embedder=args.embedder, target_embedder=args.target_embedder,
                  hubness_reduction=args.hubness_reduction, options=options, **extra)
        results = rec.recommend(args.query, k=args.k, cross_modal=args.cross_modal,
                                exclude_same_piece=args.exclude_same_piece, label=args.label)
    except (QueryError, IndexMissingError, DamagedIndexError, DamagedExportError) as exc:
        return _fail(str(exc), EXIT_USAGE)
    except SearchError as exc:
        return _fail(str(exc), EXIT_FAILED)
    if args.json:
        print(json.dumps([r.to_dict() for r in results], indent=1))
    else:
        print(_table(results))
    return EXIT_OK


def _query_options(space: str, set_options: list[str]) -> dict:
    """The ``--set`` options of the query embedder of ``space`` (``NAME`` or ``NAME@LAYER``:
    options of ``NAME``); SearchError (one line) for a bad one."""
    from embedders import ConfigurationError, parse_option_setting
    from embedders.base import SPACE_SEPARATOR

    base = space.partition(SPACE_SEPARATOR)[0]
    options = {}
    for item in set_options:
        try:
            _, key, value = parse_option_setting(item, [base])
        except ConfigurationError as exc:
            raise SearchError(str(exc)) from None
        options[key] = value
    return options


@_usage_in_one_line
def serve_main(argv: list[str]) -> int:
    """``python main.py serve --emb-dir DIR [--port 8501] [--host 127.0.0.1] [--allow-host
    NAME ...] [--text-model ID_OR_PATH] [--device DEV]``"""
    from .text_query import DEFAULT_TEXT_MODEL

    p = OneLineParser(prog=program_name("serve"),
                      description="A local web page: the collection's map, a player and the "
                                  "nearest neighbours of an item or an uploaded file.")
    p.add_argument("--emb-dir", default=os.path.join("results", "embeddings"))
    p.add_argument("--port", type=int, default=8501)
    p.add_argument("--host", default="127.0.0.1",
                   help="address to bind (default 127.0.0.1: this machine only)")
    p.add_argument("--allow-host", action="append", default=[], metavar="NAME",
                   help="a host name the page may be reached by besides the loopback names "
                        "and --host (the Host header is checked against DNS rebinding)")
    p.add_argument("--text-model", default=DEFAULT_TEXT_MODEL, metavar="ID_OR_PATH",
                   help=f"text-to-audio pipeline of the page's text queries: Hugging Face id "
                        f"(in the Hugging Face cache: serve never downloads it) or local "
                        f"save_pretrained folder; 'none' turns them off (default "
                        f"{DEFAULT_TEXT_MODEL})")
    p.add_argument("--device", default=None, metavar="DEV",
                   help="torch device for the text-to-audio model: auto (default), cpu, cuda, "
                        "cuda:N, mps")
    args = p.parse_args(argv)
    if not 0 <= args.port <= 65535:
        return _fail(f"--port must be from 0 to 65535, got {args.port}", EXIT_USAGE)
    try:
        from .serve import serve

        return serve(args.emb_dir, host=args.host, port=args.port, allow_hosts=args.allow_host,
                     text_model=None if args.text_model.lower() == "none" else args.text_model,
                     device=args.device)
    except ImportError as exc:
        return _fail(f"serve needs starlette and uvicorn ({exc}); pip install -r "
                     f"requirements.txt", EXIT_FAILED)
    except SearchError as exc:
        return _fail(str(exc), EXIT_USAGE)
    except OSError as exc:
        return _fail(f"cannot serve on {args.host}:{args.port} ({exc.strerror or exc})",
                     EXIT_FAILED)
