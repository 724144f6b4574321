"""Where a run keeps its outputs: :class:`RunFolder`, the one layout the rules, the freshness
pass, the plan, the cache command, predict and the API use (``results/<name>/probe/<split>/
shard-<k>.tsv`` for the probe tables, ``results/<name>/features/<kind>/<split>/shard-<k>.h5``
for clip, flow, motion and flow_clip; the tables, text bank, student, heads and report beside)."""
from __future__ import annotations

from dataclasses import dataclass
from glob import glob
from pathlib import Path


# The one list of a run's feature streams: shards under features/<kind>/.
STREAMS = ("clip", "flow", "motion", "flow_clip")
EXTRACTED = STREAMS[:2]  # the kinds whose rows cost a decode: the cache keeps them
HEAD_INPUTS = ("clip", "motion")  # the shard kinds a head job is given (motion: student's or flow_clip)


def shard_path(results, kind: str, split="{split}", shard="{shard}") -> str:
    """One shard's path; the defaults leave Snakemake's wildcards, ``"*"`` makes a glob."""
    folder, ext = ("probe", "tsv") if kind == "probe" else (f"features/{kind}", "h5")
    return f"{results}/{folder}/{split}/shard-{shard}.{ext}"


@dataclass(frozen=True)
class RunFolder:
    """A run folder, ``results/<name>`` (relative or not, as given): every output's path. Paths
    are text, so that a rule's output patterns keep Snakemake's wildcards."""
    path: str

    @classmethod
    def of_config(cls, config: dict, workdir=None) -> "RunFolder":
        """The run folder of a config (under ``workdir``, or relative to where it runs)."""
        name = f"results/{config['dataset']['name']}"
        return cls(str(Path(workdir) / name) if workdir is not None else name)

    @property
    def name(self) -> str:
        return Path(self.path).name

    def shard(self, kind: str, split="{split}", shard="{shard}") -> str:
        return shard_path(self.path, kind, split, shard)

    def shards(self, kind: str, split="*") -> list[Path]:
        """The shards of ``kind`` on disk (every split unless one is named), in order."""
        return sorted(Path(p) for p in glob(self.shard(kind, split, "*")))

    def file(self, *parts: str) -> str:
        return "/".join((self.path,) + parts)

    @property
    def samples(self) -> str:
        return self.file("samples.tsv")

    @property
    def classes(self) -> str:
        return self.file("classes.tsv")

    @property
    def species(self) -> str:
        return self.file("species.tsv")

    @property
    def text_bank(self) -> str:
        return self.file("features", "text.h5")

    @property
    def default_cache(self) -> str:
        """Where extracted rows are kept unless the config's ``cache:`` says elsewhere."""
        return self.file("features", ".reuse")

    @property
    def student_dir(self) -> str:
        return self.file("models", "moclip")

    @property
    def student(self) -> str:
        return f"{self.student_dir}/student.pt"

    @property
    def heads_dir(self) -> str:
        return self.file("heads")

    def head(self, name: str) -> str:
        """A head's checkpoint (its metrics, predictions and plots lie beside it)."""
        return f"{self.heads_dir}/{name}/head.pt"

    def trained_heads(self) -> list[str]:
        return sorted(Path(p).parent.name for p in glob(self.head("*")))

    @property
    def summary(self) -> str:
        return self.file("reports", "summary.md")

    @property
    def devices(self) -> str:
        """The pool GPU jobs running side by side claim their devices from."""
        return self.file(".devices")


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
