"""Adapters on the real annotation formats (excerpts in tests/data) and every error path."""
import csv
from pathlib import Path

import pytest

from conftest import DATA, run_cli
from pipeline.annotations import AnnotationError, build_samples, read_samples, write_samples
from pipeline.annotations.readers import read_lines

AK, MN, LOTE = DATA / "animal_kingdom", DATA / "mammalnet", DATA / "lote_animal"


def touch_videos(folder: Path, list_file: Path, column=0, sep=None, skip=0) -> list[str]:
    names = []
    for _, line in read_lines(list_file)[skip:]:
        name = (line.split("\t")[0] if sep == "\t" else line.split(sep)[column]).strip()
        (folder / name).parent.mkdir(parents=True, exist_ok=True)
        (folder / name).touch()
        names.append(name)
    return names


def test_animal_kingdom_with_segments(tmp_path):
    touch_videos(tmp_path, AK / "train_multi.head400.txt")
    cfg = {"format": "animal_kingdom", "videos": str(tmp_path), "classes": str(AK / "ak_action.csv"),
           "splits": {"train": str(AK / "train_multi.head400.txt")},
           "segments": str(AK / "ak_action_segments.csv")}
    s = build_samples(cfg, shards=4)
    assert len(s.rows) == 400 and s.multilabel and not s.missing
    first = next(r for r in s.rows if r["video_id"] == "AACJGIQR")
    assert first["labels"] == sorted([102, 1, 39, 8, 120, 97]) and first["path"] == "AACJGIQR.mp4"
    assert len(s.classes.names) == 140
    assert (s.segments.count("head"), s.segments.count("middle"), s.segments.count("tail")) == (17, 29, 94)
    assert sorted({r["shard"] for r in s.rows}) == [0, 1, 2, 3]
    write_samples(s, tmp_path / "out")
    rows = read_samples(tmp_path / "out" / "samples.tsv")
    assert rows[0].keys() >= {"video_id", "path", "split", "shard", "labels", "species"}
    with open(tmp_path / "out" / "classes.tsv") as f:
        classes = list(csv.DictReader(f, delimiter="\t"))
    assert classes[4] == {"id": "4", "name": "Being carried", "segment": "tail"}


def test_animal_kingdom_species_pairs_case_and_apostrophes(tmp_path):
    touch_videos(tmp_path, AK / "train_all.head300.txt", sep="\t")
    lst = tmp_path / "list.txt"
    lst.write_text((AK / "train_all.head300.txt").read_text()
                   + "ZZAPOSTR.mp4\t[(\"Ashe's Spitting Cobra\", 'being carried'), ('bay's duiker', 'Eating')]\n")
    (tmp_path / "ZZAPOSTR.mp4").touch()
    cfg = {"format": "animal_kingdom_species", "videos": str(tmp_path),
           "classes": str(AK / "label_titlecase.csv"), "splits": {"train": str(lst)},
           "species": {"names": str(AK / "animal_label.csv"),
                       "relation": str(AK / "animal-action-relation.txt")}}
    s = build_samples(cfg)
    assert len(s.rows) == 301 and len(s.species.names) == 897
    row = {r["video_id"]: r for r in s.rows}
    crane = s.species.names.index("Common Crane")
    assert row["AAACXZTV"]["species"] == [crane] and row["AAACXZTV"]["labels"] == [2, 40]
    assert row["ZZAPOSTR"]["labels"] == [4, 40]
    assert row["ZZAPOSTR"]["species"] == sorted([48, 77])
    assert (0, 68) in s.relation  # Abalone -> [68]
    write_samples(s, tmp_path / "out")
    assert (tmp_path / "out" / "species.tsv").exists() and (tmp_path / "out" / "relation.tsv").exists()


def test_mammalnet_with_bom_and_genus(tmp_path):
    touch_videos(tmp_path, MN / "mn_train.head300.csv", sep=" ")
    s = build_samples({"format": "mammalnet", "videos": str(tmp_path),
                       "classes": str(MN / "behavior_to_id.csv"),
                       "splits": {"train": str(MN / "mn_train.head300.csv")}})
    assert len(s.rows) == 300 and not s.multilabel
    assert s.classes.names[0] == "drinks water"  # BOM stripped from the header
    assert {r["video_id"] for r in s.rows} >= {"trimmed_videos/SMN6WFVy-Ys"}
    # The composition list carries the genus id as a third column.
    touch_videos(tmp_path, MN / "composition_train.head300.txt", sep=" ")
    s = build_samples({"format": "mammalnet", "videos": str(tmp_path),
                       "classes": str(MN / "mn_action.csv"),
                       "splits": {"train": str(MN / "composition_train.head300.txt")},
                       "species": {"names": str(MN / "genus_to_id.csv"),
                                   "relation": str(MN / "relation.txt")}})
    row = {r["video_id"]: r for r in s.rows}
    assert row["dXTXKZMdlHM"]["labels"] == [1] and row["dXTXKZMdlHM"]["species"] == [5]
    assert len(s.species.names) == 173


def test_lote_crlf(tmp_path):
    touch_videos(tmp_path, LOTE / "LoTE_train.head300.txt", sep=" ")
    s = build_samples({"format": "lote", "videos": str(tmp_path), "classes": str(LOTE / "LoTE_label.csv"),
                       "splits": {"train": str(LOTE / "LoTE_train.head300.txt")},
                       "species": {"names": str(LOTE / "animal_label.csv"),
                                   "relation": str(LOTE / "relation.txt")}})
    row = {r["video_id"]: r for r in s.rows}
    assert row["Parental/PseudoisNayaur1673"] == {**row["Parental/PseudoisNayaur1673"],
                                                   "labels": [0], "species": [1]}
    assert not any("\r" in r["path"] for r in s.rows)
    assert len(s.classes.names) == 21 and len(s.species.names) == 11


def test_csv_by_name_or_id_and_missing_videos(tmp_path):
    (tmp_path / "classes.csv").write_text("id,name\n0,Walking\n1,Eating\n")
    (tmp_path / "ann.csv").write_text("video,split,labels\na b/ü 1.mp4,train,walking;1\nb.mp4,val,0\n"
                                      "gone.mp4,val,Eating\n")
    (tmp_path / "a b").mkdir()
    (tmp_path / "a b" / "ü 1.mp4").touch()
    (tmp_path / "b.mp4").touch()
    s = build_samples({"format": "csv", "videos": str(tmp_path), "classes": str(tmp_path / "classes.csv"),
                       "annotations": str(tmp_path / "ann.csv")}, shards=2)
    assert [(r["video_id"], r["labels"]) for r in s.rows] == [("a b/ü 1", [0, 1]), ("b", [0])]
    assert [m["video_id"] for m in s.missing] == ["gone"] and s.missing[0]["line"] == 4
    write_samples(s, tmp_path / "out")
    assert "gone.mp4" in (tmp_path / "out" / "missing.tsv").read_text()


def _ak(tmp_path, lines: str, touch=("A.mp4", "B.mp4")):
    lst = tmp_path / "train.txt"
    lst.write_text(lines)
    for t in touch:
        (tmp_path / t).touch()
    return {"format": "animal_kingdom", "videos": str(tmp_path), "classes": str(AK / "ak_action.csv"),
            "splits": {"train": str(lst)}}


@pytest.mark.parametrize("lines, words", [
    ("A.mp4 1 2\nB.mp4 140\n", ["train.txt, line 2", "label id 140", "0..139"]),
    ("A.mp4 1\nB.mp4 x\n", ["line 2", "not an integer"]),
    ("A.mp4 1\nB.mp4\n", ["line 2", "expected '<video file> <label id> ...'"]),
    ("A.mp4 1\n  A.mp4 3\n", ["line 2", "listed twice", "line 1"]),
    ("\n\n", ["lists no video"]),
])
def test_errors_name_file_and_line(tmp_path, lines, words):
    with pytest.raises(AnnotationError) as e:
        build_samples(_ak(tmp_path, lines))
    for w in words:
        assert w in str(e.value)


def test_unknown_class_name_and_species(tmp_path):
    lst = tmp_path / "l.txt"
    lst.write_text("A.mp4\t[('Common Crane', 'Flying backwards')]\n")
    cfg = {"format": "animal_kingdom_species", "videos": str(tmp_path),
           "classes": str(AK / "ak_action.csv"), "splits": {"train": str(lst)},
           "species": {"names": str(AK / "animal_label.csv")}}
    with pytest.raises(AnnotationError, match=r"l.txt, line 1: unknown action name 'Flying backwards'"):
        build_samples(cfg)
    lst.write_text("A.mp4\t[('Dragon', 'Eating')]\n")
    with pytest.raises(AnnotationError, match="unknown species name 'Dragon'"):
        build_samples(cfg)
    lst.write_text("A.mp4\t[('Dragon', 'Eating'\n")
    with pytest.raises(AnnotationError, match="line 1: expected"):
        build_samples(cfg)


def test_nothing_found_fails_the_stage(tmp_path):
    cfg = _ak(tmp_path, "A.mp4 1\nB.mp4 2\n", touch=())
    with pytest.raises(AnnotationError, match="none of the 2 listed videos was found"):
        build_samples(cfg)


def test_samples_command_reports_errors_without_traceback(tmp_path):
    import json
    cfg = _ak(tmp_path, "A.mp4 1\nB.mp4 999\n")
    proc = run_cli("samples", "--params", json.dumps(cfg), "--out", tmp_path / "out", check=False)
    assert proc.returncode == 2
    assert "line 2" in proc.stderr and "Traceback" not in proc.stderr


def test_segments_are_matched_by_name_not_id(tmp_path, caplog):
    from pipeline.annotations.readers import read_name_table, read_segments
    classes = read_name_table(AK / "ak_action.csv")
    segments = read_segments(AK / "ak_action_segments.csv", classes)
    # The segment file swaps ids 49/50; by name "Flapping tail" (267 train videos) is middle.
    assert classes.names[49] == "Flapping tail" and segments[49] == "middle"
    assert classes.names[50] == "Flapping its ears" and segments[50] == "tail"
    assert "matched by name" in caplog.text


def _csv_set(tmp_path, classes: str, rows: str, videos=("a.mp4", "b.mp4")):
    (tmp_path / "v").mkdir(exist_ok=True)
    for v in videos:
        (tmp_path / "v" / v).touch()
    (tmp_path / "classes.csv").write_text(classes)
    (tmp_path / "ann.csv").write_bytes(rows.encode() if isinstance(rows, str) else rows)
    return {"format": "csv", "videos": str(tmp_path / "v"), "classes": str(tmp_path / "classes.csv"),
            "annotations": str(tmp_path / "ann.csv")}


def test_a_class_named_like_a_number_is_read_by_name(tmp_path):
    cfg = _csv_set(tmp_path, "id,name\n0,walking\n1,eating\n2,flying\n3,2\n",
                   "video,split,labels\na.mp4,train,2\nb.mp4,train,walking\n")
    rows = {r["path"]: r["labels"] for r in build_samples(cfg).rows}
    assert rows == {"a.mp4": [3], "b.mp4": [0]}  # "2" is the class named "2" (id 3), not id 2
    # a number that is no name, where names are numbers that are not their ids: ambiguous
    cfg = _csv_set(tmp_path, "id,name\n0,walking\n1,eating\n2,flying\n3,2\n",
                   "video,split,labels\na.mp4,train,1\n")
    with pytest.raises(AnnotationError, match=r"ann.csv, line 2: label '1' is ambiguous"):
        build_samples(cfg)
    # plain ids still work when no name is numeric
    cfg = _csv_set(tmp_path, "id,name\n0,walking\n1,eating\n", "video,split,labels\na.mp4,train,1\n")
    assert build_samples(cfg).rows[0]["labels"] == [1]


def test_files_differing_only_in_suffix_keep_it_in_their_ids(tmp_path, caplog):
    cfg = _csv_set(tmp_path, "id,name\n0,walking\n",
                   "video,split,labels\nclip.mkv,train,0\nclip.mov,train,0\nother.mp4,train,0\n",
                   videos=("clip.mkv", "clip.mov", "other.mp4"))
    ids = sorted(r["video_id"] for r in build_samples(cfg).rows)
    assert ids == ["clip.mkv", "clip.mov", "other"]
    assert "differ only in their suffix" in caplog.text
    cfg = _csv_set(tmp_path, "id,name\n0,walking\n", "video,split,labels\na.mp4,train,0\na.mp4,test,0\n")
    with pytest.raises(AnnotationError, match="line 3: video 'a.mp4' is listed twice"):
        build_samples(cfg)


def test_latin1_annotation_file_is_named_with_its_line(tmp_path):
    cfg = _csv_set(tmp_path, "id,name\n0,walking\n",
                   "video,split,labels\na.mp4,train,0\nb\xe9.mp4,train,0\n".encode("latin-1"))
    with pytest.raises(AnnotationError, match=r"ann.csv, line 3: not UTF-8 text"):
        build_samples(cfg)


def test_splits_differing_only_in_case_are_warned_about(tmp_path, caplog):
    cfg = _csv_set(tmp_path, "id,name\n0,walking\n",
                   "Video, Split, Labels\na.mp4,train,0\nb.mp4,Train,0\n   \n")
    s = build_samples(cfg)
    assert {r["split"] for r in s.rows} == {"train", "Train"}
    assert "differ only in case" in caplog.text and "['Train', 'train']" in caplog.text


def test_animal_clips_segments_are_shipped_and_split_the_140_classes_18_32_90(tmp_path, caplog):
    import logging
    touch_videos(tmp_path, AK / "train_multi.head400.txt")
    cfg = {"format": "animal_kingdom", "videos": str(tmp_path), "classes": str(AK / "ak_action.csv"),
           "splits": {"train": str(AK / "train_multi.head400.txt")}, "segments": "animal_clip_ak"}
    with caplog.at_level(logging.WARNING, logger="pipeline"):
        s = build_samples(cfg)
    assert (s.segments.count("head"), s.segments.count("middle"), s.segments.count("tail")) == (18, 32, 90)
    names = s.classes.names
    # matched by name, ignoring case (Animal-CLIP writes "Flapping Tail")
    assert s.segments[names.index("Flapping tail")] == "middle"
    assert s.segments[names.index("Flapping its ears")] == "tail"
    assert s.segments[names.index("Eating")] == "head" and s.segments[names.index("Abseiling")] == "tail"
    assert not [r for r in caplog.records if "matched by name" in r.message]  # same ids as ak_action.csv
    ours = build_samples({**cfg, "segments": str(AK / "ak_action_segments.csv")}).segments
    assert sum(a != b for a, b in zip(ours, s.segments)) > 0  # another definition than AK's own


@pytest.mark.parametrize("fmt, folder, classes, listing, counts, head", [
    ("mammalnet", MN, "behavior_to_id.csv", "mn_train.head300.csv", (2, 3, 7), ["eats food", "fights against other animals"]),
    ("lote", LOTE, "LoTE_label.csv", "LoTE_train.head300.txt", (3, 6, 12), ["Feeding", "Resting", "Walking"])])
def test_animal_clips_segments_of_mammalnet_and_lote_are_shipped(tmp_path, fmt, folder, classes, listing,
                                                                   counts, head):
    """Animal-CLIP's lt_acc splits (utils/tools.py): MammalNet 2/3/7, LoTE 3/6/12 classes."""
    touch_videos(tmp_path, folder / listing, sep=" ")
    s = build_samples({"format": fmt, "videos": str(tmp_path), "classes": str(folder / classes),
                       "splits": {"train": str(folder / listing)}, "segments": f"animal_clip_{fmt}"})
    assert (s.segments.count("head"), s.segments.count("middle"), s.segments.count("tail")) == counts
    assert [n for n, seg in zip(s.classes.names, s.segments) if seg == "head"] == head


def test_mammalnet_lists_that_name_the_video_folder_find_their_videos(tmp_path):
    """MammalNet's own lists write trimmed_videos/X.mp4; the preset's videos: is that folder."""
    folder = tmp_path / "trimmed_videos"
    folder.mkdir()
    for line in (MN / "mn_train.head300.csv").read_text(encoding="utf-8-sig").splitlines()[:20]:
        (folder / line.split()[0].split("/", 1)[1]).touch()
    s = build_samples({"format": "mammalnet", "videos": str(folder), "classes": str(MN / "behavior_to_id.csv"),
                       "splits": {"train": str(MN / "mn_train.head300.csv")}})
    assert len(s.rows) == 20 and all((folder / r["path"]).is_file() for r in s.rows)
    assert s.rows[0]["video_id"].startswith("trimmed_videos/")  # ids as the list names them
    assert len(s.missing) == 280
