"""The bottom layer, imported by every other package and importing none of them.

``fsutil``: atomic file writes (nothing this tool writes is ever half-written);
``progress``: progress reporting that draws bars on a terminal and writes one line per stage in
a log.
"""
