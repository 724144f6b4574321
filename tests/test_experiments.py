"""Experiments on cached features: heads by name with a type, a user's own head, grids and
seeds, side by side in one run (a copy of the session's demo run: only the new entries train).

End-to-end scenario: the demo run, copied; heads added (a second fusion entry, a user head from
examples/, a motion_linear grid with seeds); the run trains those and the report only; the
summary, experiments.csv, per_class.csv, metrics.json and predict --head show them."""
import csv
import json
import re

import pytest
import yaml

from conftest import copy_run, run_cli, snakemake

NEW = {"fusion_small": {"type": "fusion", "layers": 1, "epochs": 2, "frames": 8},
       "my_mlp": {"type": "examples/mlp_head.py:MLPHead", "hidden": 16, "epochs": 3, "frames": 8},
       "sweep": {"type": "motion_linear", "epochs": 2, "frames": 8,
                 "grid": {"lr": [1.0e-3, 1.0e-2]}, "seeds": [0, 1]}}


@pytest.fixture(scope="module")
def experiment(demo_run, tmp_path_factory):
    from conftest import ROOT
    import shutil
    work = copy_run(demo_run, tmp_path_factory.mktemp("exp") / "w")
    shutil.copytree(ROOT / "examples", work / "examples")
    cfg = yaml.safe_load((work / "config.yaml").read_text())
    cfg["heads"] = {**cfg["heads"], **NEW}
    (work / "config.yaml").write_text(yaml.safe_dump(cfg))
    before = {p.parent.name: p.stat().st_mtime_ns for p in (work / "results/demo/heads").glob("*/metrics.json")}
    proc = snakemake(work)
    return work, proc, before


@pytest.mark.slow
def test_new_entries_train_and_the_others_stay(experiment):
    work, proc, before = experiment
    heads = work / "results/demo/heads"
    after = {p.parent.name: p.stat().st_mtime_ns for p in heads.glob("*/metrics.json")}
    assert all(after[h] == t for h, t in before.items()), "an unchanged entry was trained again"
    new = set(after) - set(before)
    assert new == {"fusion_small", "my_mlp", "sweep.lr-0.001.seed-0", "sweep.lr-0.001.seed-1",
                   "sweep.lr-0.01.seed-0", "sweep.lr-0.01.seed-1"}, new
    m = json.loads((heads / "sweep.lr-0.01.seed-1" / "metrics.json").read_text())
    assert m["head"] == "sweep.lr-0.01.seed-1" and m["type"] == "motion_linear"
    e = m["entry"]
    assert e["group"] == "sweep" and e["varies"] == {"lr": 0.01, "seed": 1} and e["seed"] == 1
    assert e["settings"]["lr"] == 0.01 and e["settings"]["epochs"] == 2
    assert set(e["features"]) == {"motion"} and len(e["features"]["motion"]["settings_sha256"]) == 1
    assert json.loads((heads / "my_mlp" / "metrics.json").read_text())["type"] == "examples/mlp_head.py:MLPHead"


@pytest.mark.slow
def test_the_report_shows_every_entry(experiment):
    work, _, _ = experiment
    reports = work / "results/demo/reports"
    summary = (reports / "summary.md").read_text()
    for name in ("fusion_small", "my_mlp", "sweep.lr-0.001.seed-0", "fusion"):
        assert f"| {name} |" in summary, name
    assert "## Experiments" in summary
    row = next(line for line in summary.splitlines() if line.startswith("| sweep | motion_linear | lr=0.01 |"))
    assert "±" in row and "0, 1" in row
    rows = list(csv.DictReader(open(reports / "experiments.csv")))
    assert {r["name"] for r in rows} >= {"my_mlp", "sweep.lr-0.01.seed-1", "fusion"}
    per_class = list(csv.DictReader(open(reports / "per_class.csv")))
    assert "AP my_mlp" in per_class[0] and "AP sweep.lr-0.01.seed-0" in per_class[0]


@pytest.mark.slow
def test_predict_uses_a_user_head_by_name(experiment):
    work, _, _ = experiment
    video = next((work / "data/demo/videos").glob("*.mp4"))
    proc = run_cli("predict", video, "--run", "results/demo", "--head", "my_mlp", "--top-k", "2",
                   "--device", "cpu", cwd=work)
    assert video.name in proc.stdout


@pytest.fixture(scope="module")
def fresh(tmp_path_factory):
    """A copy of the workflow with the demo's config and examples/, nothing run: what a dry run
    that stops at the config needs (no training fixture)."""
    from conftest import ROOT, copy_workflow
    import shutil
    work = tmp_path_factory.mktemp("fresh")
    copy_workflow(work, demo_clip=False)
    shutil.copytree(ROOT / "examples", work / "examples")
    shutil.copy(ROOT / "config.yaml", work / "config.yaml")
    return work


@pytest.mark.parametrize("head_type, words", [
    ("examples/nowhere.py:MLPHead", "examples/nowhere.py: file not found"),
    ("examples/mlp_head.py:Missing", "has no 'Missing'"),
    ("json:JSONDecoder", "is not a torch.nn.Module class"),
    ("no_such_module:Head", "cannot import 'no_such_module'"),
])
def test_a_user_head_that_cannot_be_used_stops_the_run_at_start(fresh, tmp_path, head_type, words):
    work = fresh
    cfg = yaml.safe_load((work / "config.yaml").read_text())
    cfg["heads"] = {"bad": {"type": head_type}}
    (tmp_path / "bad.yaml").write_text(yaml.safe_dump(cfg))
    proc = snakemake(work, "-n", "--configfile", str(tmp_path / "bad.yaml"), check=False)
    out = proc.stdout + proc.stderr
    assert proc.returncode != 0 and f"heads.bad: type {head_type!r}" in out and words in out, out[-1500:]


def test_a_constructor_that_takes_other_arguments_is_named(fresh, tmp_path):
    work = fresh
    (work / "examples" / "wrong.py").write_text(
        "import torch\nclass Head(torch.nn.Module):\n    streams = ('rgb',)\n"
        "    def __init__(self, dim, n):\n        super().__init__()\n")
    cfg = yaml.safe_load((work / "config.yaml").read_text())
    cfg["heads"] = {"wrong": {"type": "examples/wrong.py:Head"}}
    (tmp_path / "wrong.yaml").write_text(yaml.safe_dump(cfg))
    proc = snakemake(work, "-n", "--configfile", str(tmp_path / "wrong.yaml"), check=False)
    assert "heads.wrong: type 'examples/wrong.py:Head': its constructor does not take the " \
           "documented arguments" in proc.stdout + proc.stderr


@pytest.mark.slow
def test_the_api_script_in_the_docs_runs(demo_run, tmp_path):
    """docs/api.md's script, as a user would paste it, in the demo's project folder."""
    import subprocess
    import sys
    from conftest import ROOT
    text = (ROOT / "docs" / "api.md").read_text()
    script = text.split("```python\n")[1].split("```")[0]
    (tmp_path / "mine.py").write_text(script)
    proc = subprocess.run([sys.executable, str(tmp_path / "mine.py")], cwd=demo_run,
                          capture_output=True, text=True, env={**__import__("os").environ,
                                                               "PYTHONPATH": str(ROOT)})
    assert proc.returncode == 0, proc.stderr[-2000:]
    assert "one step of your own training loop: loss" in proc.stdout


@pytest.mark.slow
def test_export_writes_an_array_per_video_and_an_index(demo_run, tmp_path):
    import numpy as np
    run_cli("export", "--run", "results/demo", "--split", "test", "--stream", "motion",
            "--out", tmp_path / "npy", cwd=demo_run)
    index = list(csv.DictReader(open(tmp_path / "npy" / "index.csv")))
    assert len(index) == 24 and all(r["labels"] for r in index)
    first = np.load(tmp_path / "npy" / index[0]["file"])
    assert first.shape[0] == int(index[0]["rows"]) and first.ndim == 2
    run_cli("export", "--run", "results/demo", "--split", "test", "--stream", "clip",
            "--format", "npz", "--out", tmp_path / "npz", cwd=demo_run)
    with np.load(tmp_path / "npz" / "clip.npz") as z:
        assert len(z.files) == 24
    # again into the npy folder, another split: nothing of the first export stays beside it
    run_cli("export", "--run", "results/demo", "--split", "val", "--stream", "motion",
            "--out", tmp_path / "npy", cwd=demo_run)
    index = list(csv.DictReader(open(tmp_path / "npy" / "index.csv")))
    assert sorted(p.name for p in (tmp_path / "npy").iterdir()) == sorted([r["file"] for r in index] + ["index.csv"])
    for bad, out, words in (("nosuch", tmp_path / "never", "no split 'nosuch'"),
                            ("test", tmp_path / "npz" / "clip.npz", "is a file"),
                            ("test", demo_run / "results" / "demo", "holds files and no earlier export")):
        proc = run_cli("export", "--run", "results/demo", "--split", bad, "--stream", "clip",
                       "--out", out, cwd=demo_run, check=False)
        assert proc.returncode == 2 and words in proc.stderr and proc.stderr.count("\n") == 1, proc.stderr
    assert not (tmp_path / "never").exists()


def test_tracking_tensorboard_writes_event_files_and_none_writes_nothing(tmp_path, monkeypatch):
    from pipeline.runtime import RUNTIME_ENV
    from pipeline.tracking import track
    history = [{"epoch": e, "train_loss": 1.0 / e, "val_metric": 0.1 * e, "val_loss": None}
               for e in range(1, 4)]
    assert track(history, tmp_path / "off", "head/x") is None and not (tmp_path / "off").exists()
    monkeypatch.setenv(RUNTIME_ENV, json.dumps({"tracking": "tensorboard"}))
    folder = track(history, tmp_path / "tb", "head/x")
    from tensorboard.backend.event_processing.event_accumulator import EventAccumulator
    acc = EventAccumulator(str(folder))
    acc.Reload()
    assert set(acc.Tags()["scalars"]) == {"head/x/train_loss", "head/x/val_metric"}
    assert [e.step for e in acc.Scalars("head/x/train_loss")] == [1, 2, 3]


def test_curves_are_written_while_a_head_trains(tmp_path, monkeypatch):
    """Each epoch's row reaches the event file as the epoch ends, before training is over."""
    import numpy as np
    import torch
    from tensorboard.backend.event_processing.event_accumulator import EventAccumulator
    from pipeline.runtime import RUNTIME_ENV
    from pipeline.heads.data import Ragged, SplitFeatures
    from pipeline.heads.entry import as_resolved, head_params
    from pipeline.heads.trainer import train_head
    from pipeline.tracking import tracker
    monkeypatch.setenv(RUNTIME_ENV, json.dumps({"tracking": "tensorboard"}))
    rng, lengths = np.random.default_rng(0), np.full(8, 5)
    split = SplitFeatures([f"v{i}" for i in range(8)], None,
                          Ragged.from_padded(rng.standard_normal((8, 5, 6)).astype(np.float32), lengths),
                          lengths, np.eye(2, dtype=np.float32)[np.arange(8) % 2], {})
    curves, seen = tracker(tmp_path / "tb", "head/live"), []

    def on_epoch(row):
        curves(row)
        acc = EventAccumulator(str(tmp_path / "tb"))
        acc.Reload()
        seen.append([e.step for e in acc.Scalars("head/live/train_loss")])
    train_head(as_resolved("motion_linear", head_params("motion_linear", {"epochs": 3, "batch_size": 4, "frames": 3})),
               split, None, 2, True, torch.device("cpu"), progress=False, on_epoch=on_epoch)
    curves.close()
    assert seen == [[1], [1, 2], [1, 2, 3]]


def test_the_tensorboard_viewer_runs_in_the_projects_install():
    import subprocess
    import sys
    from pathlib import Path
    proc = subprocess.run([str(Path(sys.executable).parent / "tensorboard"), "--version"],
                          capture_output=True, text=True, timeout=120)
    assert proc.returncode == 0 and proc.stdout.strip(), proc.stderr[-1000:]


@pytest.mark.parametrize("heads, words", [
    ({1: {"type": "fusion"}}, "head name 1 under 'heads'"),
    ({"": {"type": "fusion"}}, "head name '' under 'heads'"),
    ({"..": {"type": "fusion"}}, "head name '..'"),
    ({"../../../escape": {"type": "fusion"}}, "head name '../../../escape'"),
    ({"a/b": {"type": "fusion"}}, "head name 'a/b'"),
    ({"fusion ": {"type": "fusion"}}, "head name 'fusion '"),
    ({"zero_shot": {"type": "rgb_linear"}}, "'zero_shot' names CLIP's zero-shot baseline"),
    ({"x": {"type": "fusion", "seeds": [-1]}}, "'heads.x.seeds' is a list of integers 0 or more"),
    ({"x": {"type": "fusion", "seeds": [1], "grid": {"seed": [2]}}}, "seeds are given twice"),
    ({"x": {"type": "examples/mlp_head.py:MLPHead", "loss": "focla"}}, "key 'heads.x.loss' is 'focla'; allowed values"),
    ({"x": {"type": "examples/mlp_head.py:MLPHead", "epochs": "two"}}, "key 'heads.x.epochs' must be of type integer"),
    ({"x": {"type": "m:C", "grid": {"lr": [0.1, -1]}}}, "key 'heads.x.lr'"),
    ({"x": {"type": "examples/mlp_head.py:MLPHead", "pooling": "max"}},
     "key 'heads.x.pooling': a setting of the built-in heads' trainer, which never reaches your class")])
def test_an_entry_that_would_run_wrongly_is_refused_when_the_config_is_read(heads, words):
    """Names are folders (one safe component each), never the baseline's for another type;
    seeds are non-negative and given once: refused by `config`, a dry run and `plan` alike."""
    from pipeline.config import ConfigError, validate_config
    cfg = {"dataset": {"name": "x", "format": "csv", "videos": "v", "classes": "c.csv", "annotations": "a.csv"}}
    with pytest.raises(ConfigError, match=re.escape(words)):
        validate_config({**cfg, "heads": heads})
    validate_config({**cfg, "heads": {"fusion_lr3.b+1": {"type": "fusion"}, "zero_shot": {}}})


def test_a_setting_a_user_class_refuses_stops_the_run_at_start(tmp_path):
    """The class is built once, with the run's embedding size, when the entries are checked
    (config, dry run, plan): its own refusal names the entry; the trainer's keys never reach it."""
    from pipeline.config import validate_config
    from pipeline.heads.entry import run_heads
    from pipeline.heads.user import HeadTypeError
    (tmp_path / "colour.py").write_text(COLOUR)
    cfg = {"dataset": {"name": "x", "format": "csv", "videos": "v", "classes": "c.csv", "annotations": "a.csv"},
           "heads": {"mine": {"type": "colour.py:H", "colour": "red", "epochs": 2}}}
    with pytest.raises(HeadTypeError, match=r"heads\.mine: .*its constructor refused the entry's settings "
                                            r"\{'colour': 'red'\} \(ValueError: colour must be blue, not red\)"):
        run_heads(validate_config(cfg), tmp_path, check=True)
    cfg["heads"]["mine"]["colour"] = "blue"
    head = run_heads(validate_config(cfg), tmp_path, check=True)["mine"]
    assert head.given["epochs"] == 2 and head.cls.__name__ == "H" and head.params["epochs"] == 2


COLOUR = '''
import torch


class H(torch.nn.Module):
    streams = ("rgb",)

    def __init__(self, *, rgb_dim, motion_dim, class_names, settings):
        super().__init__()
        assert rgb_dim == 512 and "epochs" not in settings  # ViT-B-32's size; the trainer's key stays out
        if settings.get("colour", "blue") != "blue":
            raise ValueError(f"colour must be blue, not {settings['colour']}")
        self.net = torch.nn.Linear(rgb_dim, len(class_names))

    def forward(self, rgb, motion, mask):
        return self.net(rgb.mean(1))
'''


def test_checking_a_user_head_writes_nothing_beside_its_file(tmp_path):
    """The check imports the user's file (the dry run does it too): no __pycache__ appears."""
    from conftest import ROOT
    from pipeline.heads.user import user_class
    import shutil
    shutil.copy(ROOT / "examples" / "mlp_head.py", tmp_path / "mine.py")
    assert user_class("mine.py:MLPHead", tmp_path).__name__ == "MLPHead"
    assert sorted(p.name for p in tmp_path.iterdir()) == ["mine.py"]


def _metrics(tmp_path, head, test, val, **extra):
    path = tmp_path / f"{head}.json"
    entry = {"group": head.split(".")[0], "varies": extra.pop("varies", {}), "seed": extra.pop("seed", None)}
    path.write_text(json.dumps({"split": "test", "n_videos": 4, "mAP": test, "mAP_micro": test,
                                "per_class_ap": [test, test], "chance": {"mAP": 0.2, "mAP_micro": 0.2},
                                "head": head, "type": extra.pop("type", "motion_linear"), "entry": entry,
                                **({"val": {"split": "val", "mAP": val, "mAP_micro": val}} if val else {}),
                                **extra}))
    return path


def test_sweeps_are_chosen_on_validation_and_reported_on_test(tmp_path):
    """The summary orders rows by the validation score and carries it beside the test score;
    experiments.csv has both; the Experiments section gives both over seeds."""
    from pipeline.report import summary
    files = [_metrics(tmp_path, "sweep.lr-1.seed-0", 0.90, 0.40, varies={"lr": 1, "seed": 0}, seed=0),
             _metrics(tmp_path, "sweep.lr-1.seed-1", 0.80, 0.42, varies={"lr": 1, "seed": 1}, seed=1),
             _metrics(tmp_path, "sweep.lr-2.seed-0", 0.50, 0.70, varies={"lr": 2, "seed": 0}, seed=0),
             _metrics(tmp_path, "sweep.lr-2.seed-1", 0.52, 0.72, varies={"lr": 2, "seed": 1}, seed=1)]
    text = summary(files, tmp_path / "rep").read_text()
    table = [line for line in text.splitlines() if line.startswith("| sweep.")]
    assert [line.split(" | ")[0] for line in table] == [
        "| sweep.lr-2.seed-1", "| sweep.lr-2.seed-0", "| sweep.lr-1.seed-1", "| sweep.lr-1.seed-0"]
    assert "val macro mAP (`val`)" in text and "ordered by the validation split's score" in text
    assert "| sweep | motion_linear | lr=2 | 0, 1 | 71.00 ± 1.41 | 51.00 ± 1.41 |" in text
    rows = list(csv.DictReader(open(tmp_path / "rep" / "experiments.csv")))
    assert rows[0]["val_split"] == "val" and float(rows[0]["val_mAP"]) == 0.40 and float(rows[0]["mAP"]) == 0.90


def test_an_oracle_prompt_heads_sweep_is_reported(tmp_path):
    """A head trained and tested on the true species has only its oracle row: the Experiments
    section and experiments.csv report it (an oracle *ablation* row beside a predicted one is not
    the entry's row)."""
    from pipeline.report import summary
    files = [_metrics(tmp_path, f"prompt.seed-{s}", 0.6 + s / 10, 0.5, type="prompt", species_source="oracle",
                      varies={"seed": s}, seed=s) for s in (0, 1)]
    text = summary(files, tmp_path / "rep").read_text()
    assert "| prompt | prompt | - | 0, 1 | 50.00 ± 0.00 | 65.00 ± 7.07 |" in text, text
    rows = list(csv.DictReader(open(tmp_path / "rep" / "experiments.csv")))
    assert [r["mAP"] for r in rows] == ["0.6", "0.7"]


def _tiny_run(tmp_path, lengths=(8, 5, 13, 3)):
    """A run folder by hand: classes, samples, probe tables and clip + motion shards of a train
    and a test split (no workflow)."""
    import numpy as np
    from pipeline.files import write_tsv
    from pipeline.store import FeatureWriter
    run, rng = tmp_path / "results" / "tiny", np.random.default_rng(0)
    write_tsv(run / "classes.tsv", ["id", "name"], [[0, "run"], [1, "eat"]])
    rows = []
    for split in ("train", "test"):
        write_tsv(run / "probe" / split / "shard-0.tsv", ["video_id"], [])
        writers = {k: FeatureWriter(run / "features" / k / split / "shard-0.h5", k, (6,), np.float16,
                                    {"model": "m"}) for k in ("clip", "motion")}
        for i, n in enumerate(lengths):
            vid = f"{split}{i}"
            for k, w in writers.items():
                w.add(vid, np.arange(n) * 2, np.arange(n) / 5.0,
                      (rng.standard_normal((n, 6)) * 3 + 7).astype(np.float16), "fp")
            rows.append([vid, f"{vid}.mp4", split, 0, str(i % 2), ""])
        for w in writers.values():
            w.close()
    write_tsv(run / "samples.tsv", ["video_id", "path", "split", "shard", "labels", "species"], rows)
    return run


def test_the_api_gives_what_a_built_in_head_sees(tmp_path):
    """Row for row: the same frames (each segment's centre) and the same standardisation (the
    training split's statistics) as the heads' evaluation batches."""
    import numpy as np
    import pipeline
    from pipeline.heads.data import batches, eval_plan, load_split
    run = pipeline.open_run(_tiny_run(tmp_path))
    data = run.dataset("test", streams=("clip", "motion"), frames=4)
    samples = {r["video_id"]: r for r in run.samples()}
    feats = lambda split: load_split([run.path / f"features/clip/{split}/shard-0.h5"],
                                     [run.path / f"features/motion/{split}/shard-0.h5"], samples, 2, True)
    train, test = feats("train"), feats("test")
    stats = {"clip": train.rgb.mean_std(), "motion": train.motion.mean_std()}
    plan = eval_plan(test, {"frames": 4})
    for sel, (rgb, motion, mask, _, _) in zip(plan, batches(test, 4, plan)):
        for b, i in enumerate(sel):
            item = data[[r["video_id"] for r in data.rows].index(test.video_ids[i])]
            for stream, got in (("clip", rgb), ("motion", motion)):
                mean, std = stats[stream]
                want = (got[b][mask[b]].numpy() - mean) / np.maximum(std, 1e-6)
                assert np.allclose(item[stream].numpy(), want, atol=1e-5), (test.video_ids[i], stream)
    assert data[0]["clip"].shape[0] == 4 and data[[r["video_id"] for r in data.rows].index("test3")]["clip"].shape[0] == 3
    raw = run.dataset("test", streams=("clip",), frames=None, standardise=False)
    assert float(raw[0]["clip"].mean()) > 5  # as stored


@pytest.mark.parametrize("kwargs, words", [({"streams": "clip"}, "a tuple of stream names"),
                                           ({"streams": ("clip", "rgb")}, "a tuple of stream names"),
                                           ({"frames": 0}, "a positive number of rows"),
                                           ({"frames": -1}, "a positive number of rows"),
                                           ({"frames": 2.5}, "a positive number of rows"),
                                           ({"train_split": "nosuch"}, "no split 'nosuch'")])
def test_the_api_refuses_arguments_it_cannot_honour(tmp_path, kwargs, words):
    import pipeline
    run = pipeline.open_run(_tiny_run(tmp_path))
    with pytest.raises(ValueError, match=re.escape(words)):
        run.dataset("test", **kwargs)


def test_the_api_names_a_missing_shard_and_streams_that_disagree(tmp_path):
    import h5py
    import pipeline
    from pipeline.store import StoreError
    path = _tiny_run(tmp_path)
    with h5py.File(path / "features/motion/test/shard-0.h5", "a") as f:
        f["frame_index"][0] = 99  # a motion row of another frame than the clip row
    data = pipeline.open_run(path).dataset("test", streams=("clip", "motion"))
    with pytest.raises(StoreError, match="its motion rows describe other frames than its clip rows"):
        data[0]
    (path / "features/clip/train/shard-0.h5").unlink()
    (path / "probe/train/shard-1.tsv").write_text("video_id\n")
    with pytest.raises(StoreError, match="no clip shards of split 'train'"):
        pipeline.open_run(path).dataset("train")
    with pytest.raises(StoreError, match=r"motion train/shard-1\.h5 is missing \(1 of 2 shards\)"):
        pipeline.open_run(path).dataset("train", streams=("motion",), standardise=False)


BAD_HEADS = '''
import torch


class Wide(torch.nn.Module):
    streams = ("rgb",)

    def __init__(self, *, rgb_dim, motion_dim, class_names, settings):
        super().__init__()
        self.net = torch.nn.Linear(rgb_dim, len(class_names) + 1)

    def forward(self, rgb, motion, mask):
        return self.net(rgb.mean(1))


class Flat(Wide):
    def forward(self, rgb, motion, mask):
        return self.net(rgb.mean(1))[:, 0]


class Blows(Wide):
    def forward(self, rgb, motion, mask):
        return self.net(rgb.mean(1))[:, :-1] / 0.0
'''


@pytest.mark.parametrize("cls, words", [("Wide", r"logits of shape \(4, 3\) in epoch 1; it must return \(videos, classes\) = \(4, 2\)"),
                                        ("Flat", r"logits of shape \(4,\) in epoch 1"),
                                        ("Blows", r"NaN or infinite logits in epoch 1")])
def test_logits_a_head_cannot_train_on_stop_it_naming_the_entry_and_epoch(tmp_path, cls, words):
    import numpy as np
    import torch
    from pipeline.heads.data import Ragged, SplitFeatures
    from pipeline.heads.entry import resolve_head
    from pipeline.heads.trainer import HeadOutputError, train_head
    (tmp_path / "bad.py").write_text(BAD_HEADS)
    rng = np.random.default_rng(0)
    lengths = np.full(8, 5)
    split = SplitFeatures([f"v{i}" for i in range(8)], Ragged.from_padded(rng.standard_normal((8, 5, 6)).astype(np.float32), lengths),
                          None, lengths, np.eye(2, dtype=np.float32)[np.arange(8) % 2], {})
    head_type = f"{tmp_path / 'bad.py'}:{cls}"
    head = resolve_head("mine", {"epochs": 2, "batch_size": 4, "frames": 3}, head_type)
    with pytest.raises(HeadOutputError, match=r"^heads\.mine: .*" + words):
        train_head(head, split, None, 2, True, torch.device("cpu"), progress=False)


def test_grids_and_seeds_expand_into_named_entries():
    from pipeline.heads.registry import expand
    got = expand({"sweep": {"type": "motion_linear", "epochs": 2, "grid": {"lr": [0.001, 0.01]}, "seeds": [0, 1]},
                  "fusion": {}})
    assert list(got) == ["sweep.lr-0.001.seed-0", "sweep.lr-0.001.seed-1", "sweep.lr-0.01.seed-0",
                         "sweep.lr-0.01.seed-1", "fusion"]
    e = got["sweep.lr-0.01.seed-1"]
    assert e == {"type": "motion_linear", "settings": {"epochs": 2, "lr": 0.01, "seed": 1},
                 "group": "sweep", "varies": {"lr": 0.01, "seed": 1}}
    assert got["fusion"] == {"type": "fusion", "settings": {}, "group": "fusion", "varies": {}}


def test_collate_pads_each_stream_to_the_batch_and_masks_the_padding():
    import torch
    from pipeline.api import collate
    items = [{"video_id": "a", "clip": torch.ones(3, 4), "motion": torch.ones(3, 2),
              "labels": torch.tensor([1.0, 0.0]), "species": torch.zeros(1)},
             {"video_id": "b", "clip": torch.ones(5, 4), "motion": torch.ones(5, 2),
              "labels": torch.tensor([0.0, 1.0]), "species": torch.ones(1)}]
    batch = collate(items)
    assert batch["video_id"] == ["a", "b"] and batch["clip"].shape == (2, 5, 4) and batch["motion"].shape == (2, 5, 2)
    assert batch["mask"].tolist() == [[True] * 3 + [False] * 2, [True] * 5]
    assert float(batch["clip"][0, 3:].abs().sum()) == 0.0 and batch["labels"].shape == (2, 2)
