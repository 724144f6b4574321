"""What each rule's jobs ask a scheduler for (the ``cluster:`` section): memory, CPUs, minutes.

The workflow's rules and ``python -m pipeline plan`` both read them here, so the plan states
what the run will ask for. A rule that does the work of others (``extract`` does clip's and
flow's) and that a table does not name gets the largest of theirs (the sum, for minutes).
"""
from __future__ import annotations


def base_mem_mb(cluster: dict, rule: str, *parts: str) -> int:
    table = cluster["mem_mb"]
    if parts and table.get(rule) is None:
        return max(base_mem_mb(cluster, p) for p in parts)
    return table.get(rule, table.get("default", 4000))


def mem_mb(cluster: dict, rule: str, *parts: str, attempt: int = 1) -> int:
    """A retry asks for ``mem_retry_factor`` times more per attempt: an OOM-killed job does not
    fail the same way twice."""
    return int(base_mem_mb(cluster, rule, *parts) * cluster["mem_retry_factor"] ** (attempt - 1))


def threads(cluster: dict, rule: str, *parts: str) -> int:
    table = cluster["threads"]
    if parts and table.get(rule) is None:
        return max(threads(cluster, p) for p in parts)
    return table.get(rule, table.get("default", 1))


def runtime_min(cluster: dict, rule: str, *parts: str, videos: int = 0, attempt: int = 1) -> int:
    """The base minutes plus the per-video seconds times the videos of the job's shard."""
    base_table, video_table = cluster["runtime_min"], cluster["runtime_per_video_s"]
    default = base_table.get("default", 30)
    if not parts or base_table.get(rule) is not None:
        base = base_table.get(rule, default)
    else:
        base = max(base_table.get(p, default) for p in parts)
    per_video = video_table.get(rule, sum(video_table.get(p, 0) for p in parts))
    return int((base + per_video * videos / 60) * attempt)
