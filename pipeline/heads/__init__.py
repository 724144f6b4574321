"""Heads trained on cached features: the one table of head types and the expansion of a
config's ``heads:`` (``registry``, free of torch: the workflow reads it), TFAM fusion,
interleaved frames+motion, single-stream baselines and linear probes (``models``, built from
``layers``), prompt classifiers against a text bank (``prompt``), the features they read
(``data``), one trainer (``trainer``) and the stage that trains one head (``run``)."""
