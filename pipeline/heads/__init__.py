"""Heads trained on cached features: TFAM fusion, interleaved frames+motion, single-stream
baselines and linear probes (``models``, built from ``layers``), prompt classifiers against a
text bank (``prompt``), the features they read (``data``), one trainer (``trainer``), which
streams each head reads (``streams``, free of torch: the workflow reads it) and the stage that
trains one head (``run``)."""
