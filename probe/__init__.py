"""What each embedding captures: musical attributes read from the MIDI side of a collection,
and controlled changes of the MIDI (or of its rendering) measured in every space.

``attributes``: key (Krumhansl–Kessler profiles), tempo, density, ... of a MIDI file;
``interventions``: the MIDI variants and audio deformations, cached as files; ``run``: a whole
probe run (:func:`run_probes`, for the ``probe`` subcommand, a comparison run and notebooks);
``outputs``: probe.json, CSVs, heatmaps, report; ``cli``: ``python main.py probe``. The metrics
themselves are pure functions in :mod:`analysis.probing`. Ranked beside ``search`` (4): it uses
``collection``, ``prepare`` (rendering) and ``analysis``.

>>> from probe import run_probes                                  # doctest: +SKIP
"""
from .attributes import ATTRIBUTES, MidiReadError, ProbeError, midi_attributes
from .interventions import INTERVENTIONS, VariantError
from .run import NoMidiError, UnknownNameError, run_probes

__all__ = ["ATTRIBUTES", "INTERVENTIONS", "MidiReadError", "NoMidiError", "ProbeError",
           "UnknownNameError", "VariantError", "midi_attributes", "run_probes"]
