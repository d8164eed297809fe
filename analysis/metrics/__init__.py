"""Every reported metric, registered once: ``analysis.metrics.registry`` holds one
:class:`~analysis.metrics.registry.Metric` per name -- kind, function, fixed parameters,
interval method, chance level, direction, how to read it, cost -- and the name lists of
:mod:`analysis.schema`, the CSV columns, the report's tables and help, the README's metrics table
and ``parameters`` in metrics.json are all derived from it.

Layout
------
``registry``       the Metric record, :func:`register`, lookups, the README table
``context``        EmbedderContext / PairContext / SetContext (shared results computed once),
                   Measured, entry, guard
``separability``   silhouette, k-NN, linear probe, k-means agreement, variance ratios
``recommendation`` precision@k, coverage, hubness (and their mutual-proximity twins)
``frechet``        class x class Fréchet distances, FD∞ class vs rest, set vs reference
``cka``, ``rsa``, ``neighbourhood``, ``centroids``, ``retrieval``   between two spaces

Adding a metric
---------------
1. Write ``def my_metric(ctx: EmbedderContext) -> Measured`` (or a PairContext / SetContext
   one) in the family module it belongs to (a new module: import it below). Put work several
   metrics share behind ``ctx.once(key, compute)``; keep the numeric kernel a pure function on
   arrays in an ``analysis/<topic>.py`` module.
2. Register it under its function::

       register("my_metric", kind="embedder", fn=my_metric, interval="bootstrap ...",
                cost="O(n dim)", higher_is_better=True, params={...},
                read="One sentence on how to read it.")

   ``section=`` picks its report table, ``chance=`` its chance level, ``p_value=True`` makes
   it a p-value (no interval), ``when=("hubness_reduction", "mp")`` computes it only in runs
   with that option.
3. Test it (a known answer), run ``python -m analysis.metrics > /tmp/t.md`` and paste the
   table into docs/analysis.md (tests/test_registry.py says when it is stale), and add the new entry
   to CHANGED in tests/test_metrics_unchanged.py ("...: new metric").

A metric of a new kind of input (e.g. the paired comparison of two embedders on their shared
items): add its name to ``registry.KINDS`` (and a section to ``SECTIONS`` for its report
table), its context class to ``context.py`` (validated arrays + ``once`` for shared work), an
``evaluate_<kind>`` in :mod:`analysis.evaluate` that calls ``_evaluate(kind, ctx)``, and
register the metrics as above. A kernel module elsewhere in ``analysis/`` (e.g.
``analysis/paired.py``) stays a pure function on arrays; the family module here wraps it.

Order: registration order is report order; the imports below fix it.
"""
from .registry import (KINDS, SECTIONS, Metric, context_default, get, markdown_table,  # noqa
                       metrics, names, register)
from .context import (EmbedderContext, Measured, PairContext, SetContext,  # noqa: F401
                      entry, guard)
from . import separability, recommendation, frechet  # noqa: F401,E402  (embedder metrics)
from . import cka, rsa, neighbourhood, centroids, retrieval  # noqa: F401,E402  (pair metrics)

__all__ = ["KINDS", "SECTIONS", "Metric", "context_default", "get", "markdown_table", "metrics",
           "names",
           "register", "EmbedderContext", "PairContext", "SetContext", "Measured", "entry",
           "guard"]
