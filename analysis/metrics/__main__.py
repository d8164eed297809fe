"""``python -m analysis.metrics``: print the README's metrics table (from the registry)."""
from . import markdown_table

print(markdown_table())
