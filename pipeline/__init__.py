"""Motion-aware CLIP features and action classifiers for animal videos."""
__version__ = "0.1.0"
