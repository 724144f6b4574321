import hashlib
import json
import os
import re
import shlex

from pipeline import jobs
from pipeline.annotations import AnnotationError, plan_splits, segment_file
from pipeline.protocols import run_view
from pipeline.recipes import (CLIP_IDENTITY, head_recipe, recorded_reuse, row_params, section_params,
                              student_params)
from pipeline.factory import is_weights_file
from pipeline.files import unwritable
from pipeline.freshness import (cache_gaps, file_digest, shard_members, stale_outputs,
                                summary_out_of_date)
from pipeline.heads.entry import run_heads
from pipeline.heads.user import HeadTypeError
from pipeline.layout import RunFolder, shard_path

DS = config["dataset"]
RUN = RunFolder.of_config(config)  # where every output of this run lies (pipeline/layout.py)
RESULTS = RUN.path
LOGS = f"{RESULTS}/logs"
BENCH = f"{RESULTS}/benchmarks"
SHARDS = list(range(config["shards"]))
ENV = "../../envs/pipeline.yaml"

# The DAG needs the split names before any job starts; they are read by the samples stage's own
# reader, so both agree on every file the stage accepts (and refuse the same files, by line).
try:
    SPLITS, VAL, _notes, _rows = plan_splits(DS, config["shards"])
except AnnotationError as e:  # named against the user's own config files
    sys.exit(f"error: {str(e).replace('config.yaml', ', '.join(map(str, workflow.overwrite_configfiles)) or 'config.yaml')}")
for _note in _notes:
    print(f"note: {_note}", file=sys.stderr)
TRAIN, EVAL = DS["train_split"], DS["eval_split"]
MOCLIP = RUN.student_dir
HEADS_DIR = RUN.heads_dir
SUMMARY = RUN.summary


# Each rule's params are its output's recipe (pipeline/recipes.py, the one place that says what
# decides an output), rendered there as the text Snakemake records and compares.
# A local checkpoint file is an input of every job that loads CLIP: replacing the file re-runs
# them, and a rule that makes it (the demo's demo_clip) runs first. An open_clip tag is no file.
CLIP_WEIGHTS = [config["clip"]["pretrained"]] if is_weights_file(config["clip"]["pretrained"]) else []


# extracted rows kept for re-made shards and other runs (pipeline/cache/reuse.py)
CACHE = config["cache"] or RUN.default_cache
if _why := unwritable(CACHE):  # before any job: an extraction job would do its work, then fail
    sys.exit(f"error: cache {CACHE}: {_why}; make it writable, or point cache: at a writable folder")
# The extraction rules' --reuse, as finished runs recorded it (pipeline/recipes.py)
PARAMS_BEFORE_CACHE = recorded_reuse(RUN.default_cache)

# Shards that cannot be current (pipeline/freshness.py), read once while the DAG is planned; the
# jobs a cluster runs plan nothing of their own.
_stale = stale_outputs(RESULTS, config, SPLITS, config["shards"]) \
    if getattr(workflow, "is_main_process", True) else []
STALE = {str(p): why for p, why, in_plan in _stale if in_plan}
if getattr(workflow, "is_main_process", True) and (_why := summary_out_of_date(SUMMARY)):
    STALE[SUMMARY] = _why  # a job marked it and did not finish: the report is made again
OUT_OF_PLAN = {str(p): why for p, why, in_plan in _stale if not in_plan}


def force_if_stale(*kinds, path=None):
    """An input function: the marker (:func:`stale_marker`) of each shard of ``kinds`` (or of
    ``path``). An output that cannot be current gets a new one, which rule `stale` writes, so
    the DAG plans to make it again (input files updated: Snakemake's own rule); nothing is
    removed while planning (Snakemake deletes the old file when the job starts, in a real run
    that holds the lock)."""
    def inputs(w):
        paths = [path] if path else [shard_path(RESULTS, kind, w.split, w.shard) for kind in kinds]
        return [m for p in paths if (m := stale_marker(p))]
    return inputs


def stale_marker(path):
    """A shard that cannot be current: a marker named by the stale file's identity (new for each
    stale file). Otherwise the last marker the shard had, older than the shard made after it, so
    its set of inputs stays the one Snakemake recorded; a shard never stale has none."""
    folder, name = Path(RESULTS) / ".stale" / Path(path).relative_to(RESULTS).parent, Path(path).name
    if path in STALE:
        st = os.stat(path)
        tag = hashlib.sha256(f"{st.st_ino}:{st.st_mtime_ns}:{st.st_size}".encode()).hexdigest()[:16]
        return str(folder / f"{name}.{tag}.why")
    earlier = sorted(folder.glob(f"{name}.*.why"), key=lambda p: p.stat().st_mtime) if folder.is_dir() else []
    return str(earlier[-1]) if earlier else None


# The cache must hold the rows of every current shard, and shards outside the plan are set
# aside into it (pipeline/freshness.py: cache_gaps). The Snakefile's onstart does it before any
# job when a run has jobs; rule cache_adopt does it when the run has nothing else to do.
CACHE_GAPS = cache_gaps(RESULTS, CACHE) if getattr(workflow, "is_main_process", True) else []


def samples_table(w):
    """samples.tsv once its checkpoint is done; ancient: its content, not its time, decides."""
    return ancient(checkpoints.samples.get().output.samples)


def shard_videos(w):
    """What a probe shard reads (ids, paths, file sizes and mtimes): its rerun trigger."""
    return shard_members(checkpoints.samples.get().output.samples, DS["videos"], w.split, w.shard)


def probe_table(w):
    return ancient(checkpoints.probe.get(split=w.split, shard=w.shard).output[0])


def probe_content(w):
    """The probe table's content (videos, fingerprints, frame plans): the extraction's trigger."""
    return file_digest(checkpoints.probe.get(split=w.split, shard=w.shard).output[0])


def shard_pattern(kind):
    """The path pattern of one shard of ``kind`` (wildcards split and shard; pipeline/layout.py)."""
    return shard_path(RESULTS, kind)


def per_shard(kind):
    """Every shard of ``kind``, every split."""
    return [path for split in SPLITS for path in split_shards(kind, split)]


def gpus(rule_uses_gpu=True):
    return config["cluster"]["gpus"] if rule_uses_gpu and config["device"] != "cpu" else 0


def mem_mb(rule, *parts):
    """The memory of one rule's jobs, growing with the attempt (pipeline/jobs.py)."""
    return lambda wildcards, attempt: jobs.mem_mb(config["cluster"], rule, *parts, attempt=attempt)


def job_threads(rule, *parts):
    return jobs.threads(config["cluster"], rule, *parts)


def runtime(rule, *parts):
    """Minutes of one rule's jobs: grows with the videos of the job's shard (its first input,
    a table) and the attempt (pipeline/jobs.py)."""
    def minutes(wildcards, input, attempt):
        path = Path(input[0]) if input else None
        n = sum(1 for _ in open(path)) - 1 if path and path.suffix == ".tsv" and path.exists() else 0
        return jobs.runtime_min(config["cluster"], rule, *parts, videos=n, attempt=attempt)
    return minutes


def split_shards(kind, split):
    """All shards of one kind (clip, flow, motion features; probe tables) for one split."""
    return [shard_path(RESULTS, kind, split, k) for k in SHARDS]


def annotation_inputs():
    if DS["format"] == "demo":
        return [DS["annotations"], DS["classes"]] + [(DS.get("species") or {}).get(k) for k in ("names", "relation") if (DS.get("species") or {}).get(k)]
    files = [DS["classes"]] + ([DS["annotations"]] if DS.get("annotations") else [])
    files += list((DS.get("splits") or {}).values())
    files += [str(segment_file(f)) for f in [DS.get("segments")] if f]
    files += [(DS.get("species") or {}).get(k) for k in ("names", "relation") if (DS.get("species") or {}).get(k)]
    return files


# The run's heads by name, each resolved once (grids and seeds expanded; a user's head imported
# and built now, so that a head that cannot be built stops the run before any job).
try:
    HEADS = run_heads(config, check=True)
except HeadTypeError as e:
    sys.exit(f"error: {e}")
HEAD_NAMES = list(HEADS)
# The student is distilled only when a head reads its stream (motion_source: student, the default).
USES_STUDENT = any(h.motion_source == "student" for h in HEADS.values())


def head_inputs(w):
    head = HEADS[w.head]
    kinds = (["clip"] if head.rgb else []) + (["motion"] if head.motion else [])
    roles = {"train": TRAIN, "eval": EVAL, **({"val": VAL} if VAL else {})}
    # the motion stream: the student's, or the frozen CLIP's on the flow images (flow_clip)
    folder = {"clip": "clip", "motion": (head.motion_source or "").replace("student", "motion")}
    files = {f"{k}_{role}": split_shards(folder[k], split) for k in kinds for role, split in roles.items()}
    if head.reads_text:
        files["text"] = RUN.text_bank
    if head.code:  # a user's head in a file: editing it re-runs
        files["code"] = head.code
    return files


def head_args(w, input):
    args = [f"--{key.replace('_', '-')} {' '.join(map(shlex.quote, input[key]))}"
            for key in input.keys() if key.startswith(("clip_", "motion_"))]
    return " ".join(args + ([f"--text {shlex.quote(input.text)}"] if "text" in input.keys() else []))
