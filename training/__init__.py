"""Training your own encoders on a collection: ``python main.py train --method ...``.

``methods`` (the registry: one module per method, its network settings, inputs and loss),
``data`` (collection -> cached features, seeded split by pair id), ``augment`` (SimSiam's
views), ``losses`` (negative cosine with stop-gradient, InfoNCE), ``runner`` (the loop, run
folder, checkpoints, resume), ``cli`` (the subcommand). The networks themselves live in
``embedders/lib/trained_nets.py`` so the ``trained`` embedder can rebuild them without
importing this package (rank 2: it may import common, embedders and collection).
"""
