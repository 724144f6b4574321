"""Where motion helps (stage ``report``): the heads compared class by class, their confusions,
the evaluation videos each gets most wrong, and how often they agree.

Reads each head's evaluation scores (``heads/<head>/scores.npz``, written beside metrics.json)
and writes, into the reports folder: ``per_class.csv`` and ``per_class.png``, ``confusion.png``
(single-label: true against predicted; multi-label: which absent classes outscore each true
class), ``worst_videos.csv`` and ``agreement.png``; :func:`analyse` returns the
lines ``summary.md`` adds. How to read them: docs/analysis.md.
"""
from __future__ import annotations

import csv
import shlex
from pathlib import Path

import numpy as np

from .heads.registry import HEAD_TYPES
from .heads.scores import read_scores
from .plots import plot_message, pyplot

WORST = 20  # videos per head in worst_videos.csv


# ---------------------------------------------------------------- per class

def per_class(heads: dict, metrics: dict, classes: list[dict], train_counts: np.ndarray) -> tuple[list, dict]:
    """Rows of per_class.csv, sorted by the gain of the best motion-aware head (by its main
    metric) over the best frames baseline (``rgb_only``; else the best head that reads frames only); and the
    two heads compared."""
    main = "mAP" if next(iter(heads.values()))["multilabel"] else "top1"
    # chosen on the validation split when every head has its score there
    by_val = all((metrics[h].get("val") or {}).get(main) is not None for h in heads)
    ranked = sorted(heads, key=lambda h: -((metrics[h]["val"][main] if by_val else metrics[h].get(main)) or 0))
    motion = [h for h in ranked if heads[h]["motion"]]
    frames_only = [h for h in ranked if not heads[h]["motion"]]
    baselines = [h for h in frames_only if HEAD_TYPES.get(metrics[h].get("type", h), {}).get("frames_baseline")]
    base = (baselines or frames_only or [None])[0]
    best = motion[0] if motion else None
    rows = []
    for c, cls in enumerate(classes):
        ap = {h: metrics[h]["per_class_ap"][c] for h in ranked}
        gain = None if best is None or base is None or ap[best] is None or ap[base] is None \
            else ap[best] - ap[base]
        rows.append({"class": cls["name"], "segment": cls.get("segment", ""),
                     "train_videos": int(train_counts[c]), "gain": gain, **ap})
    rows.sort(key=lambda r: (r["gain"] is None, -(r["gain"] or 0)))
    return rows, {"best": best, "base": base, "heads": ranked,
                  "chosen_on": metrics[ranked[0]]["val"]["split"] if by_val and ranked else None}


def write_per_class(rows: list[dict], heads: list[str], path) -> None:
    with open(path, "w", newline="") as f:
        w = csv.writer(f)
        w.writerow(["class", "segment", "train_videos", "gain"] + [f"AP {h}" for h in heads])
        for r in rows:
            w.writerow([r["class"], r["segment"], r["train_videos"], _num(r["gain"])]
                       + [_num(r[h]) for h in heads])


def plot_per_class(rows: list[dict], pair: dict, path) -> None:
    """Each class's AP under the baseline and the best motion-aware head, sorted by the gain."""
    best, base = pair["best"], pair["base"]
    rows = [r for r in rows if r["gain"] is not None]
    if not rows:
        plot_message("per-class comparison: needs a motion-aware head and a frames-only head "
                     "with classes that have test positives", path)
        return
    plt = pyplot()
    n = len(rows)
    fig, ax = plt.subplots(figsize=(8, max(3, 0.22 * n + 1.2)))
    y = np.arange(n)[::-1]
    for r, yy in zip(rows, y):
        colour = "tab:green" if r["gain"] >= 0 else "tab:red"
        ax.plot([r[base], r[best]], [yy, yy], color=colour, lw=2, zorder=1)
    ax.scatter([r[base] for r in rows], y, color="grey", label=base, zorder=2, s=18)
    ax.scatter([r[best] for r in rows], y, color="black", label=best, zorder=3, s=18)
    ax.set_yticks(y, [f"{r['class']} ({r['train_videos']})" for r in rows], fontsize=7 if n > 40 else 9)
    ax.set_xlabel("average precision on the evaluation split")
    ax.set_xlim(0, 1)
    ax.set_title(f"Where motion helps: {best} against {base}\n(green: gain, red: loss; "
                 f"training videos in brackets)", fontsize=10)
    # beside the axes, clear of the x-axis label and of the points
    ax.legend(loc="upper left", bbox_to_anchor=(1.01, 1.0), fontsize=8, frameon=False)
    fig.tight_layout()
    fig.savefig(path, dpi=110)
    plt.close(fig)


# ---------------------------------------------------------------- confusions

def confusion(h: dict) -> np.ndarray:
    """Single-label: (true, predicted top-1) counts. Multi-label: (true class c, absent class
    d) counts of the evaluation videos with c whose score of d, a class they do not have, is
    above their score of c."""
    n = len(h["class_names"])
    m = np.zeros((n, n), np.int64)
    if not h["multilabel"]:
        np.add.at(m, (h["onehot"].argmax(1), h["scores"].argmax(1)), 1)
        return m
    onehot, scores = h["onehot"], h["scores"]
    for c in range(n):
        rows = onehot[:, c]
        if rows.any():
            above = (scores[rows] > scores[rows, c:c + 1]) & ~onehot[rows]
            m[c] = above.sum(0)
    return m


def confusion_totals(h: dict) -> np.ndarray:
    """What each cell of :func:`confusion` counts out of: the row's videos (single-label), or
    the videos with c and without d (multi-label)."""
    onehot = h["onehot"].astype(np.int64)
    if not h["multilabel"]:
        return np.repeat(onehot.sum(0)[:, None], onehot.shape[1], axis=1)
    return onehot.T @ (1 - onehot)


def confused_pairs(m: np.ndarray, names: list[str], k: int = 3) -> list[tuple[str, str, int]]:
    off = m.copy()
    np.fill_diagonal(off, 0)
    order = np.argsort(-off, axis=None)[:k]
    return [(names[i], names[j], int(off[i, j])) for i, j in zip(*np.unravel_index(order, off.shape))
            if off[i, j] > 0]


def plot_confusions(heads: dict, order: list[str], path) -> None:
    multilabel = heads[order[0]]["multilabel"]
    plt = pyplot()
    n = len(order)
    cols = min(3, n)
    rows_ = -(-n // cols)
    names = heads[order[0]]["class_names"]
    size = max(3.2, 0.25 * len(names) + 1.5)
    fig, axes = plt.subplots(rows_, cols, figsize=(size * cols, size * rows_), squeeze=False)
    for ax, head in zip(axes.flat, order):
        m = confusion(heads[head])
        norm = m / np.maximum(confusion_totals(heads[head]), 1)
        ax.imshow(norm, cmap="Blues", vmin=0, vmax=1)
        ax.set_title(head, fontsize=10)
        if len(names) <= 30:
            ax.set_xticks(range(len(names)), names, rotation=90, fontsize=7)
            ax.set_yticks(range(len(names)), names, fontsize=7)
            for i, j in zip(*np.nonzero(m)):
                ax.text(j, i, str(m[i, j]), ha="center", va="center", fontsize=6,
                        color="white" if norm[i, j] > 0.5 else "black")
        ax.set_xlabel("absent class scored above it" if multilabel else "predicted (top-1)", fontsize=8)
        ax.set_ylabel("true class", fontsize=8)
    for ax in list(axes.flat)[n:]:
        ax.axis("off")
    fig.suptitle("Absent classes that outscore a true class (share of its videos without them)"
                 if multilabel else "Confusion matrices (rows: true class, normalised per row)")
    fig.tight_layout()
    fig.savefig(path, dpi=100)
    plt.close(fig)


# ---------------------------------------------------------------- worst videos

def video_losses(h: dict) -> np.ndarray:
    """Each video's loss under the head's own scores: the summed binary cross-entropy over
    classes (multi-label), minus the log-probability of the true class (single-label)."""
    p = np.clip(h["scores"], 1e-7, 1 - 1e-7)
    if h["multilabel"]:
        y = h["onehot"]
        return -(np.where(y, np.log(p), np.log(1 - p))).sum(1)
    return -np.log(p[h["onehot"]])


def worst_videos(heads: dict, order: list[str], paths: dict, videos_root: str, run: str) -> list[dict]:
    rows = []
    for head in order:
        h = heads[head]
        loss = video_losses(h)
        for rank, i in enumerate(np.argsort(-loss)[:WORST], 1):
            top = np.argsort(-h["scores"][i])[:3]
            vid = h["video_ids"][i]
            video = str(Path(videos_root) / paths[vid]) if vid in paths else vid
            rows.append({"head": head, "rank": rank, "video_id": vid, "loss": float(loss[i]),
                         "labels": ";".join(h["class_names"][c] for c in np.flatnonzero(h["onehot"][i])),
                         **{f"top{k + 1}": h["class_names"][c] for k, c in enumerate(top)},
                         **{f"score{k + 1}": float(h["scores"][i, c]) for k, c in enumerate(top)},
                         "command": f"python -m pipeline predict {shlex.quote(video)} --run "
                                    f"{shlex.quote(run)} --head {head} --timeline"})
    return rows


def write_rows(rows: list[dict], path, columns: list[str]) -> None:
    with open(path, "w", newline="") as f:
        w = csv.DictWriter(f, fieldnames=columns, extrasaction="ignore")
        w.writeheader()
        w.writerows({k: (_num(v) if isinstance(v, float) else v) for k, v in r.items()} for r in rows)


WORST_COLUMNS = ["head", "rank", "video_id", "loss", "labels", "top1", "score1", "top2", "score2",
                 "top3", "score3", "command"]


# ---------------------------------------------------------------- agreement

def agreement(heads: dict, order: list[str]) -> dict:
    """Top-1 agreement of every pair of heads, and the top-1 accuracy (the top class is a true
    label) where all heads agree and where they do not; a majority vote's accuracy beside the
    best head's, as an ensemble hint."""
    ids = heads[order[0]]["video_ids"]
    aligned = [h for h in order if heads[h]["video_ids"] == ids]
    top = np.stack([heads[h]["scores"].argmax(1) for h in aligned])
    onehot = heads[aligned[0]]["onehot"]
    right = np.stack([onehot[np.arange(len(ids)), t] for t in top])
    pair = (top[:, None, :] == top[None, :, :]).mean(-1)
    agree = (top == top[:1]).all(0)
    votes = np.stack([np.bincount(top[:, i], minlength=onehot.shape[1]) for i in range(len(ids))])
    vote = onehot[np.arange(len(ids)), votes.argmax(1)]  # ties: the lowest class id
    return {"heads": aligned, "pairwise": pair, "all_agree": float(agree.mean()),
            "accuracy_agree": float(right[0][agree].mean()) if agree.any() else None,
            "accuracy_disagree": float(right[:, ~agree].mean()) if (~agree).any() else None,
            "accuracy": {h: float(r.mean()) for h, r in zip(aligned, right)},
            "majority_vote": float(vote.mean())}


def plot_agreement(a: dict, path) -> None:
    plt = pyplot()
    n = len(a["heads"])
    fig, ax = plt.subplots(figsize=(max(6.0, 1.0 * n + 2.5), 0.9 * n + 2))
    ax.imshow(a["pairwise"], cmap="Greens", vmin=0, vmax=1)
    ax.set_xticks(range(n), a["heads"], rotation=45, ha="right")
    ax.set_yticks(range(n), [f"{h} ({100 * a['accuracy'][h]:.0f}%)" for h in a["heads"]])
    for i in range(n):
        for j in range(n):
            ax.text(j, i, f"{100 * a['pairwise'][i, j]:.0f}", ha="center", va="center", fontsize=8,
                    color="white" if a["pairwise"][i, j] > 0.6 else "black")
    ax.set_title(f"Top-1 agreement (%); all heads agree on {100 * a['all_agree']:.0f}% of the\n"
                 f"videos (in brackets: each head's top-1 accuracy)", fontsize=9)
    fig.tight_layout()
    fig.savefig(path, dpi=110)
    plt.close(fig)


# ---------------------------------------------------------------- all of it

def analyse(score_files, metrics: dict, classes: list[dict], samples: list[dict], train_split: str,
            out_dir, videos_root: str = "", run: str = "results/NAME") -> list[str]:
    """Write the analysis files into ``out_dir``; the lines summary.md adds."""
    out_dir = Path(out_dir)
    heads = {h: v for h, v in read_scores(score_files).items() if h in metrics}
    files = ("per_class.csv", "per_class.png", "confusion.png", "worst_videos.csv", "agreement.png")
    if not heads:
        for name in files:
            plot_message("no head evaluated any video", out_dir / name) if name.endswith(".png") \
                else (out_dir / name).write_text("")
        return []
    n = len(classes)
    counts = np.zeros(n, np.int64)
    for s in samples:
        if s["split"] == train_split:
            for c in set(s["labels"]):
                counts[c] += 1
    rows, pair = per_class(heads, metrics, classes, counts)
    order = pair["heads"]
    write_per_class(rows, order, out_dir / "per_class.csv")
    plot_per_class(rows, pair, out_dir / "per_class.png")
    multilabel = heads[order[0]]["multilabel"]
    lines = ["", "## Where motion helps", ""] + _gain_lines(rows, pair)
    plot_confusions(heads, order[:3], out_dir / "confusion.png")  # the best heads
    names = heads[order[0]]["class_names"]
    lines += ["", ("Most confused (true → absent class scored above it, videos), "
                   if multilabel else "Most confused (true → predicted, videos), ")
              + "`reports/confusion.png`:", ""]
    for head in order[:3]:
        pairs = confused_pairs(confusion(heads[head]), names)
        lines.append(f"- {head}: " + ("; ".join(f"{a} → {b} ({k})" for a, b, k in pairs) or "none"))
    paths = {s["video_id"]: s["path"] for s in samples}
    write_rows(worst_videos(heads, order, paths, videos_root, run), out_dir / "worst_videos.csv", WORST_COLUMNS)
    lines += ["", f"The {WORST} evaluation videos each head gets most wrong, with a `predict "
              f"--timeline` command for each: `reports/worst_videos.csv`."]
    if len(order) > 1:
        a = agreement(heads, order)
        plot_agreement(a, out_dir / "agreement.png")
        best_single = max(a["accuracy"].values())
        lines += ["", f"**Agreement** (`reports/agreement.png`): all {len(a['heads'])} heads give the "
                  f"same top-1 class on {100 * a['all_agree']:.0f}% of the videos; top-1 accuracy "
                  f"there {_pct(a['accuracy_agree'])}, elsewhere {_pct(a['accuracy_disagree'])} "
                  f"(mean over heads)."
                  + (f" A majority vote of their top-1 classes gets {_pct(a['majority_vote'])} "
                     f"against {_pct(best_single)} for the best head alone."
                     if len(a["heads"]) > 2 else "")]
    else:
        plot_message("agreement needs two heads or more", out_dir / "agreement.png")
    return lines


def _gain_lines(rows: list[dict], pair: dict) -> list[str]:
    """The classes motion helps and hurts most (the best motion-aware head against the frames
    baseline), or where to look when a run has no such pair."""
    if not (pair["best"] and pair["base"]):
        return ["Per-class AP of every head: `reports/per_class.csv` (the comparison needs a "
                "motion-aware head and one that reads frames only)."]
    scored = [r for r in rows if r["gain"] is not None]
    helps = [r for r in scored if r["gain"] > 0][:5]
    hurts = [r for r in reversed(scored) if r["gain"] < 0][:5]
    chosen = (f"on the validation split `{pair['chosen_on']}`" if pair.get("chosen_on") else
              "on the evaluation split: the run has no validation score to choose by")
    return [f"Per-class AP of `{pair['best']}` (the best motion-aware head, {chosen}) against "
            f"`{pair['base']}`: higher on {sum(r['gain'] > 0 for r in scored)} of "
            f"{len(scored)} classes (`reports/per_class.csv`, `per_class.png`).", "",
            "- helps most: " + (", ".join(f"{r['class']} ({100 * r['gain']:+.1f})" for r in helps)
                                or "no class"),
            "- hurts most: " + (", ".join(f"{r['class']} ({100 * r['gain']:+.1f})" for r in hurts)
                                or "no class")]


def _num(v):
    return "" if v is None else f"{v:.6g}"


def _pct(v):
    return "-" if v is None else f"{100 * v:.1f}%"
