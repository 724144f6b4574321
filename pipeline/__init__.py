"""Motion-aware CLIP features and action classifiers for animal videos."""
__version__ = "0.1.0"


def open_run(path):
    """A finished run's classes, samples and features for your own code (pipeline/api.py)."""
    from .api import open_run as _open
    return _open(path)
