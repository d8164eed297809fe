"""``python -m analysis.metrics``: print the metrics table of docs/analysis.md (from the registry)."""
from . import markdown_table

print(markdown_table())
