"""The report stage: every head side by side (``reports/summary.md``, ``heads.png``) with the
notes that read the table, and the evaluation split's counts (listed, missing, skipped)."""
from __future__ import annotations

import json
from pathlib import Path

from .heads.registry import HEAD_TYPES
from .plots import plot_message, pyplot

COLUMNS_MULTI = [("mAP", "macro mAP"), ("mAP_micro", "micro mAP")]
COLUMNS_SINGLE = [("top1", "top-1"), ("top5", "top-5"), ("mean_class_accuracy", "mean class acc."),
                  ("mAP", "macro mAP")]


def split_counts(split: str, missing_file, probe_tables, feature_files=()) -> dict:
    """Videos of ``split`` listed, missing (not found), skipped as unreadable by the probe,
    skipped by the extraction (they probed but did not decode: named, from the shards'
    ``skipped`` attribute) and, by the caller, evaluated."""
    import csv
    from .store import read_attrs
    from .video import read_probes
    with open(missing_file, newline="", encoding="utf-8") as f:
        missing = sum(r["split"] == split for r in csv.DictReader(f, delimiter="\t"))
    probes = [p for f in probe_tables for p in read_probes(f, readable_only=False)]
    skipped = [p for p in probes if not p.readable]
    undecodable = {}
    for path in feature_files:
        for vid, why in read_attrs(path).get("skipped") or []:
            undecodable.setdefault(vid, why)
    return {"listed": len(probes) + missing, "missing": missing, "skipped": len(skipped),
            "undecodable": sorted(undecodable.items()), "probe_tables": [str(f) for f in probe_tables]}


def counts_line(counts: dict, split: str, evaluated: int) -> str:
    """Every listed video of the split in exactly one count; the undecodable ones named."""
    bad = counts.get("undecodable") or []
    named = "; ".join(f"`{v}` ({why})" for v, why in bad[:10]) + ("; ..." if len(bad) > 10 else "")
    return (f"{counts['listed']} videos listed in this split: {counts['missing']} missing "
            f"(see `missing.tsv`), {counts['skipped']} skipped as unreadable (reasons in "
            f"`probe/{split}/shard-*.tsv`), {len(bad)} skipped by the extraction (they probed "
            f"but did not decode{': ' + named if bad else ''}), {evaluated} evaluated.")


def no_metrics_summary(rows: list[dict], out_dir: Path, counts: dict | None) -> Path:
    """The summary of a run whose evaluation split has no readable video: why, and the counts."""
    split = rows[0]["split"]
    lines = [f"# No metrics on split `{split}`", "", rows[0]["no_metrics"] + ".", ""]
    if counts:
        lines += [counts_line(counts, split, 0), ""]
    lines += [f"Heads trained, none evaluated: {', '.join(r['head'] for r in rows)}."]
    path = out_dir / "summary.md"
    path.write_text("\n".join(lines) + "\n")
    plot_message(f"No metrics on split {split!r}: {rows[0]['no_metrics']}", out_dir / "heads.png")
    return path


def summary(metrics_files, out_dir, linear_probe_file=None, segments_source: str | None = None,
            counts: dict | None = None, analysis: list[str] = (), run: dict | None = None,
            presets: Path | None = None) -> Path:
    """reports/summary.md (every head side by side, with the notes that read it, then the
    ``analysis`` lines of :func:`pipeline.analysis.analyse`) and heads.png. ``run`` (the run's
    :func:`pipeline.protocols.run_view`) and ``presets`` (the folder of the presets) decide which
    published numbers a row may be set beside."""
    out_dir = Path(out_dir)
    out_dir.mkdir(parents=True, exist_ok=True)
    rows = summary_rows(metrics_files)
    if not rows:
        raise ValueError("no head metrics to summarise")
    if all(r.get("no_metrics") for r in rows):
        experiments(rows, ("mAP", "macro mAP"), out_dir / "experiments.csv")  # every entry, no metric
        return no_metrics_summary(rows, out_dir, counts)
    rows = [r for r in rows if not r.get("no_metrics")]
    multilabel = "mAP_micro" in rows[0]
    cols, segs, species = _columns(rows, multilabel)
    main_col = next(c for c in cols if not c[0].startswith("val:"))  # what the eval split reports
    main = main_col[0]
    by_val = all((r.get("val") or {}).get(main) is not None for r in rows)
    order = sorted(rows, key=lambda r: -(((r.get("val") or {}).get(main) if by_val else r.get(main)) or 0))
    chance = rows[0].get("chance")
    if chance:  # what uniform scores get: the floor every row is read against
        order.append({**chance, "head": "*chance (uniform scores)*",
                      "species_top1": species and species["chance"]})
    lines = [f"# Heads compared on split `{rows[0]['split']}` ({rows[0]['n_videos']} videos)", ""]
    if counts:
        lines += [counts_line(counts, rows[0]["split"], rows[0]["n_videos"]), ""]
    lines += [
             "Macro mAP averages per-class AP over classes with a positive (Animal Kingdom's "
             "definition); micro mAP pools all (video, class) pairs (what ViMoCLIP reports)."
             if multilabel else "Single-label: top-1/top-5 accuracy, mean per-class accuracy.", ""]
    if segs:
        lines += [f"Segment mAP uses {segments_source or 'the data set segment file'}.", ""]
    lines += ["| head | " + " | ".join(c[1] for c in cols) + " | compare with |",
              "|---" * (len(cols) + 2) + "|"]
    for r in order:
        got = [(r.get("val") or {}).get(k[4:]) if k.startswith("val:") else r.get(k) for k, _ in cols]
        cells = ["-" if v is None else f"{100 * v:.2f}" for v in got]
        name = r["head"] + (f" [{r['variant']}]" if r.get("variant") else "")
        lines.append(f"| {name} | " + " | ".join(cells) + f" | {compare_with(r, run, presets)} |")
    lines += ["", "Values in percent. " + ("Rows are ordered by the validation split's score, "
              "which is what to choose a head or a setting by; the evaluation split's columns are "
              "only reported." if by_val else "Rows are ordered by the evaluation split's score "
              "(not every row has a validation score): read it as a report, not as a choice.")
              + " Plots per head: `heads/<head>/*.png`; comparison: `reports/heads.png`."]
    lines += summary_notes(rows, species, linear_probe_file)
    lines += experiments(rows, main_col, out_dir / "experiments.csv")
    lines += list(analysis)
    lines += _mixed_precision(rows)
    path = out_dir / "summary.md"
    path.write_text("\n".join(lines) + "\n")
    plot_heads(order, main_col, chance, rows[0]["split"],
               out_dir / "heads.png")
    return path


def _columns(rows: list[dict], multilabel: bool) -> tuple[list, list, dict | None]:
    """The table's (key, title) columns (the validation score first, when rows have one), the
    segment keys and the species metrics (each row given its ``species_top1``)."""
    cols = list(COLUMNS_MULTI if multilabel else COLUMNS_SINGLE)
    segs = [k for k in rows[0] if k.startswith("mAP_") and k not in ("mAP_micro",)]
    cols += [(s, f"{s[4:]} mAP") for s in segs]
    species = next((r["species"] for r in rows if r.get("species")), None)
    if species:
        cols.append(("species_top1", "species top-1"))
        for r in rows:
            r["species_top1"] = (r.get("species") or {}).get("top1")
    if any(r.get("val") for r in rows):  # what to choose by, beside what is reported
        split = next(r["val"]["split"] for r in rows if r.get("val"))
        cols.insert(0, (f"val:{cols[0][0]}", f"val {cols[0][1]} (`{split}`)"))
    return cols, segs, species


def _mixed_precision(rows: list[dict]) -> list[str]:
    mixed = sorted({s for r in rows for s in r.get("mixed_precision") or []})
    if not mixed:
        return []
    return ["", f"**Mixed precision**: the features of split(s) {', '.join(mixed)} were "
            f"computed with several device types or precisions "
            f"({'; '.join(', '.join(rows[0]['precision'][s]) for s in mixed)}); shards made "
            f"on different machines differ slightly. Set `clip.precision` and make them again "
            f"on one kind of device for numbers to publish."]


def compare_with(row: dict, run: dict | None = None, presets: Path | None = None) -> str:
    """Which published number a row may be set beside: cited only where the row's settings are
    that paper's protocol on this data set (:mod:`pipeline.protocols`: the preset's values,
    compared with the row's entry and ``run``, the run's :func:`~pipeline.protocols.run_view`);
    otherwise the settings that differ, or why no number exists."""
    from .protocols import cell, differences, protocol_for
    head = row["head"]
    if head.startswith("*"):
        return ""
    kind = row.get("type", head.split(" (")[0])  # the head type; rows saved before types: the name
    paper = HEAD_TYPES.get(kind, {}).get("paper")
    protocol = protocol_for(paper, ((run or {}).get("dataset") or {}).get("format"))
    if paper == "clip":
        return "CLIP zero-shot"
    if paper == "animal_clip" and row.get("species_source") != "oracle":
        if head.endswith("(oracle species)"):
            return "Animal-CLIP's test-time setting (trained on predicted species: an ablation)"
        return "none: Animal-CLIP's number uses the true species (oracle row); frozen video features"
    if protocol is not None and not (presets and Path(presets, f"{protocol['preset']}.yaml").is_file()):
        return f"none: its protocol's preset (configs/{protocol['preset']}.yaml) is not here to compare with"
    if protocol is not None:
        if "settings" not in (row.get("entry") or {}):
            return "none: this row's settings are not recorded (train the head again to compare)"
        return cell(protocol, differences(protocol, row["entry"]["settings"], run, presets))
    if paper == "vimoclip":
        return "ViMoCLIP's head (its paper reports Animal Kingdom only: no number to set beside this one)"
    if paper == "animal_clip":
        return "Animal-CLIP's head (no published number on this data set format)"
    if paper == "animalmotionclip":
        return "none: AnimalMotionCLIP fine-tunes X-CLIP end to end; this head trains on frozen features"
    return "-"


def summary_rows(metrics_files) -> list[dict]:
    """One row per head's metrics.json (a path, or its content); a head with an oracle-species
    ablation gives two, labelled."""
    rows = []
    for p in metrics_files:
        m = p if isinstance(p, dict) else json.loads(Path(p).read_text())
        if m.get("species_source") == "oracle":  # trained and tested on the true species
            rows.append({**m, "head": f"{m['head']} (oracle species)"})
        elif "oracle_species" in m:  # the oracle is an ablation: its own, labelled row
            rows.append({**m, "head": f"{m['head']} (predicted species)"})
            rows.append({**m, **m["oracle_species"], "head": f"{m['head']} (oracle species)",
                         "species": None})
        else:
            rows.append(m)
    return rows


def summary_notes(rows: list[dict], species, linear_probe_file) -> list[str]:
    """What the species, oracle, base-to-novel and linear-probe figures mean, where present."""
    lines = []
    if species:
        lines += ["", "Species top-1: the best-scored species is one of the video's annotated "
                  "species. Zero-shot heads score species from the species bank (CLIP text of "
                  "each species name and description), trained prompt heads add a learnt "
                  "correction."]
    if any("oracle_species" in r for r in rows):
        lines += ["", "*Oracle species* rows are given the ground-truth species of each test video "
                  "(an upper bound, not a result); *predicted species* rows use the head's own "
                  "species prediction."]
    if any(r.get("species_source") == "oracle" for r in rows):
        lines += ["", "Rows trained and tested on the annotated species (`species_train: oracle`, "
                  "Animal-CLIP's protocol) are named *(oracle species)* too; set them beside "
                  "Animal-CLIP's numbers, not beside heads that predict species."]
    softmax = sorted({r["head"] for r in rows if r.get("eval_scores") == "softmax"})
    if softmax:
        lines += ["", f"mAP of {', '.join(softmax)} ranks a softmax over each video's classes "
                  f"(`eval_scores: softmax`, Animal-CLIP's evaluation); the other rows rank the "
                  f"logits, which can order videos differently per class."]
    for r in rows:
        b2n = r.get("base_to_novel")
        if b2n and "oracle" not in r["head"]:
            lines += ["", f"Base-to-novel ({r['head']}): {b2n['base_classes']} base classes "
                      f"{100 * b2n['base']:.2f} (chance {100 * b2n.get('base_chance', 0):.2f}), "
                      f"{b2n['novel_classes']} novel classes (never trained on) "
                      f"{100 * b2n['novel']:.2f} (chance {100 * b2n.get('novel_chance', 0):.2f}), "
                      f"harmonic mean {100 * b2n['harmonic_mean']:.2f}"
                      + (f"; the novel classes drawn with novel_seed {b2n['novel_seed']}, whatever "
                         f"the head's seed." if "novel_seed" in b2n else ".")]
    if linear_probe_file and Path(linear_probe_file).exists() and json.loads(Path(linear_probe_file).read_text()).get("no_metrics"):
        lines += ["", f"Linear probe: none ({json.loads(Path(linear_probe_file).read_text())['no_metrics']})."]
    elif linear_probe_file and Path(linear_probe_file).exists():
        p = json.loads(Path(linear_probe_file).read_text())
        lines += ["", f"Linear probe on time-pooled embeddings ({p['metric']}): CLIP frames "
                  f"{100 * p['clip']:.2f}, MoCLIP motion {100 * p['motion']:.2f}."]
    return lines


def plot_heads(order: list[dict], column: tuple[str, str], chance, split: str, path) -> None:
    """Each head's main metric as a bar, chance as a dashed line."""
    plt = pyplot()
    fig, ax = plt.subplots(figsize=(6, 0.4 * len(order) + 1.5))
    key = column[0]
    bars = [r for r in order if not r["head"].startswith("*")]
    ax.barh([r["head"] for r in bars][::-1], [r.get(key) or 0 for r in bars][::-1], color="#1f77b4")
    if chance and chance.get(key) is not None:
        ax.axvline(chance[key], color="#7f7f7f", ls="--", label="chance")
        ax.legend(fontsize=8, loc="lower right")
    ax.set_xlabel(column[1]), ax.set_xlim(0, 1)
    ax.set_title(f"heads on {split}")
    fig.tight_layout()
    fig.savefig(path, dpi=100)
    plt.close(fig)


def experiments(rows: list[dict], column: tuple[str, str], csv_path: Path) -> list[str]:
    """reports/experiments.csv (every entry: name, type, group, what its expansion varies, seed,
    metrics) and, for entries expanded from a grid or seeds, a summary section: each setting
    that differs between siblings, and over seeds the mean and standard deviation."""
    import csv
    key, label = column
    # each entry's reported row: an oracle-species *ablation* row is not one (its head reports
    # the predicted-species row), a head trained and tested on the true species is
    entries = [r for r in rows if r.get("entry") and not (r["head"].endswith("(oracle species)")
                                                          and "oracle_species" in r)]
    metric_keys = sorted({k for r in entries for k, v in r.items() if _is_metric(k, v)})
    val_keys = sorted({k for r in entries for k, v in (r.get("val") or {}).items() if _is_metric(k, v)})
    with open(csv_path, "w", newline="") as f:
        w = csv.writer(f)
        w.writerow(["name", "type", "group", "varies", "seed", "val_split", *[f"val_{k}" for k in val_keys],
                    *metric_keys])
        for r in rows:
            e, val = r.get("entry") or {}, r.get("val") or {}
            w.writerow([r["head"], r.get("type", r["head"]), e.get("group", r["head"]),
                        json.dumps(e.get("varies", {}), sort_keys=True), e.get("seed", ""),
                        val.get("split", ""), *[val.get(k, "") for k in val_keys],
                        *[r.get(k, "") for k in metric_keys]])
    groups: dict = {}
    for r in entries:
        if r["entry"].get("varies"):
            groups.setdefault(r["entry"]["group"], []).append(r)
    if not groups:
        return []
    val_split = next((r["val"]["split"] for r in entries if r.get("val")), None)
    lines = ["", "## Experiments", "",
             f"Entries expanded from a grid or seeds (`reports/experiments.csv` lists every "
             f"entry); {label} in percent, mean ± standard deviation over seeds"
             + (f", on the validation split `{val_split}` (choose by it) and the evaluation split "
                f"`{entries[0].get('split')}` (report it)." if val_split else
                "; the run has no validation split, so these numbers are for reporting, not for "
                "choosing a setting."), "",
             "| entry | type | settings that differ | seeds | val " + label + " | " + label + " |",
             "|---|---|---|---|---|---|"]
    for group, members in sorted(groups.items()):
        by_setting: dict = {}
        for r in members:
            varies = {k: v for k, v in r["entry"]["varies"].items() if k != "seed"}
            by_setting.setdefault(json.dumps(varies, sort_keys=True), []).append(r)
        for varies, runs in sorted(by_setting.items()):
            seeds = [r["entry"]["varies"].get("seed") for r in runs if "seed" in r["entry"]["varies"]]
            shown = ", ".join(f"{k}={v}" for k, v in json.loads(varies).items()) or "-"
            val = _spread([(r.get("val") or {}).get(key) for r in runs])
            lines.append(f"| {group} | {runs[0].get('type', group)} | {shown} | "
                         f"{', '.join(map(str, seeds)) or '-'} | {val} | {_spread([r.get(key) for r in runs])} |")
    return lines


def _is_metric(key: str, value) -> bool:
    return isinstance(value, float) and (key.startswith(("mAP", "top")) or key == "mean_class_accuracy")


def _spread(values: list) -> str:
    """Mean ± standard deviation of a metric over seeds, in percent."""
    import statistics
    values = [100 * v for v in values if v is not None]
    return (f"{statistics.mean(values):.2f} ± {statistics.stdev(values):.2f}" if len(values) > 1
            else (f"{values[0]:.2f}" if values else "-"))
