"""Figures drawn to files: the per-head plots (per-class AP, precision-recall, training curves)
and the helpers every stage that draws uses (a display-less pyplot, a figure that says why
there is no plot)."""
from __future__ import annotations

import textwrap

SEGMENT_COLOURS = {"head": "#1f77b4", "middle": "#ff7f0e", "tail": "#2ca02c"}


def pyplot():
    """matplotlib's pyplot drawing to files (no display needed)."""
    import matplotlib
    matplotlib.use("Agg")
    import matplotlib.pyplot as plt
    return plt


def plot_message(text: str, path) -> None:
    """A figure that says why there is no plot (e.g. no video to evaluate)."""
    plt = pyplot()
    fig, ax = plt.subplots(figsize=(7, 2.5))
    ax.axis("off")
    ax.text(0.5, 0.5, "\n".join(textwrap.wrap(text, 70, replace_whitespace=False)),
            ha="center", va="center", wrap=True)
    fig.savefig(path, dpi=100)
    plt.close(fig)


def plot_per_class_ap(metrics: dict, class_names, segments, path) -> None:
    plt = pyplot()
    ap = [(a, n, s) for a, n, s in zip(metrics["per_class_ap"], class_names,
                                          segments or [None] * len(class_names)) if a is not None]
    ap.sort(key=lambda t: -t[0])
    fig, ax = plt.subplots(figsize=(max(5, 0.12 * len(ap) + 2), 3.8))
    colours = [SEGMENT_COLOURS.get(s, "#7f7f7f") for _, _, s in ap]
    ax.bar(range(len(ap)), [a for a, _, _ in ap], color=colours)
    if len(ap) <= 40:
        ax.set_xticks(range(len(ap)), [n for _, n, _ in ap], rotation=70, fontsize=7, ha="right")
    else:
        ax.set_xticks([])
        ax.set_xlabel(f"{len(ap)} classes, sorted")
    if segments:
        from matplotlib.patches import Patch
        present = [s for s in SEGMENT_COLOURS if s in set(segments)]
        ax.legend(handles=[Patch(color=SEGMENT_COLOURS[s], label=s) for s in present], fontsize=8)
    ax.set_ylabel("average precision")
    ax.set_ylim(0, 1)
    ax.set_title(f"{metrics['head']}: per-class AP on {metrics['split']} "
                 f"(macro mAP {metrics.get('mAP') or 0:.3f})")
    fig.tight_layout()
    fig.savefig(path, dpi=100)
    plt.close(fig)


def plot_pr_curves(scores, labels_onehot, metrics, class_names, path, n: int = 3) -> None:
    from sklearn.metrics import precision_recall_curve
    plt = pyplot()
    ap = [(a, c) for c, a in enumerate(metrics["per_class_ap"]) if a is not None]
    ap.sort()
    chosen = ap[-n:][::-1] + ap[:n] if len(ap) > 2 * n else ap[::-1]
    fig, ax = plt.subplots(figsize=(5.5, 4.2))
    for rank, (a, c) in enumerate(chosen):
        p, r, _ = precision_recall_curve(labels_onehot[:, c], scores[:, c])
        ax.step(r, p, where="post", ls="-" if rank < n else "--",
                label=f"{class_names[c]} (AP {a:.2f})")
    ax.set_xlabel("recall"), ax.set_ylabel("precision"), ax.set_ylim(0, 1.02)
    ax.set_title(f"{metrics['head']}: best (solid) and worst (dashed) classes")
    ax.legend(fontsize=7)
    fig.tight_layout()
    fig.savefig(path, dpi=100)
    plt.close(fig)


def plot_training(history: list[dict], name: str, path) -> None:
    plt = pyplot()
    fig, ax = plt.subplots(figsize=(5.5, 3.5))
    ep = [h["epoch"] for h in history]
    ax.plot(ep, [h["train_loss"] for h in history], label="train loss")
    ax.set_xlabel("epoch"), ax.set_ylabel("loss")
    if history and history[0].get("val_metric") is not None:
        ax2 = ax.twinx()
        ax2.plot(ep, [h["val_metric"] for h in history], "o-", color="#d62728", ms=3,
                 label="validation metric")
        ax2.set_ylabel("validation metric"), ax2.set_ylim(0, 1)
        ax2.legend(loc="upper right", fontsize=8)
    ax.legend(loc="upper left", fontsize=8)
    ax.set_title(f"{name}: training")
    fig.tight_layout()
    fig.savefig(path, dpi=100)
    plt.close(fig)
