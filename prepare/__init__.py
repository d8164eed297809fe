"""Building the collections a study needs, from collections one has: ``python main.py prepare
transcribe | instruments | render | crop SRC --out DST``.

``commands`` holds the four subcommands as functions, ``jobs`` what they share (cache, resume,
workers, ``prepare_manifest.csv``), ``basic_pitch`` the transcription model (ONNX Runtime) and
its note creation, ``heuristic`` the peak-picking baseline, ``midi_ops`` MIDI cropping and
splitting, ``cli`` the command line. Ranked beside ``collection``: it may import ``common``,
``embedders`` and ``collection``, never ``analysis`` or ``cli``.
"""
