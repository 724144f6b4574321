"""Files are written whole or not at all."""
import pytest

from pipeline.annotations import label_targets
from pipeline.files import local_path, replacing, write_tsv


def test_replacing_publishes_only_a_finished_file(tmp_path):
    out = tmp_path / "sub" / "table.tsv"
    write_tsv(out, ["a", "b"], [[1, "x"], [2, "y"]])
    assert out.read_text() == "a\tb\n1\tx\n2\ty\n"
    with pytest.raises(RuntimeError):
        with replacing(out) as partial:
            partial.write_text("half")
            raise RuntimeError("killed mid-write")
    assert out.read_text() == "a\tb\n1\tx\n2\ty\n"  # the old file stays, no partial is left
    assert sorted(p.name for p in out.parent.iterdir()) == ["table.tsv"]


def test_local_path_finds_a_run_relative_file(tmp_path):
    (tmp_path / "data").mkdir()
    (tmp_path / "data" / "w.pt").write_text("x")
    assert local_path("data/w.pt", tmp_path) == str(tmp_path / "data" / "w.pt")
    assert local_path("openai", tmp_path) == "openai"  # a tag, not a file
    assert local_path(None, tmp_path) is None


def test_label_targets():
    multi = label_targets([[0, 2], [1]], 3, True)
    assert multi.dtype.name == "float32" and multi.tolist() == [[1, 0, 1], [0, 1, 0]]
    single = label_targets([[2], [0]], 3, False)
    assert single.dtype.name == "int64" and single.tolist() == [2, 0]
