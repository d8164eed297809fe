#!/usr/bin/env python
"""Command line: embed a genre-labelled collection with several models and compare the spaces.

    python main.py --params-file ex_params.txt
    python main.py --dataset dataset/songs --embedders audio-stats midi-stats --out results/songs

A params file holds the same flags, one or more per line, with ``#`` comments and blank lines; a
flag given on the command line overrides the file. Exit status: 0 on success (files skipped for
bad content do not fail a run), 2 for a usage or configuration error (nothing was computed),
1 when the run itself fails, 130 when interrupted (finished work is kept; run again to resume).

This file only dispatches: the command line lives in the :mod:`cli` package, over the libraries
(:func:`collection.embed_dataset`, :func:`analysis.run_analysis`) a notebook can call directly.
"""
import sys

from cli import main

if __name__ == "__main__":
    sys.exit(main())
