"""Where a run keeps its shards: the one pattern the rules, the freshness pass, the plan and
predict all use (``results/<name>/probe/<split>/shard-<k>.tsv`` for the probe tables,
``results/<name>/features/<kind>/<split>/shard-<k>.h5`` for clip, flow, motion and flow_clip)."""
from __future__ import annotations

from pathlib import Path


# The one list of a run's feature streams: shards under features/<kind>/.
STREAMS = ("clip", "flow", "motion", "flow_clip")
EXTRACTED = STREAMS[:2]  # the kinds whose rows cost a decode: the cache keeps them
HEAD_INPUTS = ("clip", "motion")  # the shard kinds a head job is given (motion: student's or flow_clip)


def shard_path(results, kind: str, split="{split}", shard="{shard}") -> str:
    """One shard's path; the defaults leave Snakemake's wildcards, ``"*"`` makes a glob."""
    folder, ext = ("probe", "tsv") if kind == "probe" else (f"features/{kind}", "h5")
    return f"{results}/{folder}/{split}/shard-{shard}.{ext}"


def results_of(shard) -> Path | None:
    """The run folder (``results/<name>``) a feature shard lies in, or None for a file outside
    a run's layout (a test's, a hand-made one)."""
    path = Path(shard).absolute()
    if len(path.parents) < 5 or path.parents[2].name != "features" or not path.name.startswith("shard-"):
        return None
    return path.parents[3]


def run_of_head(checkpoint) -> Path:
    """The run folder of a head's checkpoint (``results/<name>/heads/<head>/head.pt``)."""
    return Path(checkpoint).resolve().parents[2]


def project_of_text(text_bank) -> Path:
    """The project folder of a run's text bank (``<project>/results/<name>/features/text.h5``):
    where the config's relative paths (a local CLIP checkpoint) are read from."""
    return Path(text_bank).resolve().parents[3]
