"""The edges of the cache, the config and the command line (reliability sweep 5): each bad
input is one line that names it and says what to do, and a look changes no file.

Unit scenarios, no workflow: a cache that is a file or cannot be written; prune's size limit;
an infinite value given on the command line; what an operating-system error is called; a
broken pipe; the random-weights note of a student skeleton."""
import errno
import logging
import os
import subprocess
import sys

import pytest

from conftest import ROOT
from pipeline.cli import os_error_advice
from pipeline.config import ConfigError, resolve_config
from pipeline.files import unwritable


def _cli(*args, cwd=ROOT, **kw):
    return subprocess.run([sys.executable, "-m", "pipeline", *map(str, args)], cwd=cwd,
                          capture_output=True, text=True, **kw)


def test_a_cache_that_is_a_file_is_refused_when_the_config_is_read(tmp_path):
    (tmp_path / "cache").write_text("not a folder")
    with pytest.raises(ConfigError, match=r"^--config: key 'cache' is .*cache, a file, not a folder"):
        resolve_config([ROOT / "config.yaml"], {"cache": str(tmp_path / "cache")})
    proc = _cli("config", "--config", f"cache={tmp_path / 'cache'}")
    assert proc.returncode != 0 and proc.stderr.count("\n") == 1 and "a file, not a folder" in proc.stderr


def test_an_unwritable_cache_is_named_before_any_job(tmp_path):
    """As root, permissions do not stop a write, an immutable folder does (chattr +i)."""
    assert unwritable(tmp_path / "new" / "deeper") is None  # made when the first shard lands
    (tmp_path / "file").write_text("")
    assert "is a file" in unwritable(tmp_path / "file" / "cache")
    locked = tmp_path / "locked"
    locked.mkdir()
    if os.geteuid() != 0:
        locked.chmod(0o555)
    elif subprocess.run(["chattr", "+i", str(locked)], capture_output=True).returncode != 0:
        pytest.skip("no chattr here to make a folder unwritable for root")
    try:
        assert "cannot be written" in unwritable(locked)
        assert list(locked.iterdir()) == []  # the check made no file
    finally:
        subprocess.run(["chattr", "-i", str(locked)], capture_output=True)
        locked.chmod(0o755)


@pytest.mark.slow
def test_a_dry_run_names_an_unwritable_cache(tmp_path):
    """Before any job runs (a dry run too): one line naming the cache and what to do."""
    from conftest import copy_workflow, demo_config, snakemake
    (tmp_path / "work").mkdir()
    work = copy_workflow(tmp_path / "work", demo_clip=False)
    locked = tmp_path / "locked"
    locked.mkdir()
    if subprocess.run(["chattr", "+i", str(locked)], capture_output=True).returncode != 0:
        pytest.skip("no chattr here to make a folder unwritable")
    try:
        import yaml
        (work / "config.yaml").write_text(yaml.safe_dump(demo_config(cache=str(locked))))
        proc = snakemake(work, "-n", check=False)
    finally:
        subprocess.run(["chattr", "-i", str(locked)], capture_output=True)
    assert proc.returncode != 0
    assert f"error: cache {locked}: {locked} cannot be written" in proc.stderr, proc.stderr[-2000:]


def test_infinity_from_the_command_line_is_blamed_on_it():
    with pytest.raises(ConfigError, match=r"^--config: key 'flow\.bound' is inf"):
        resolve_config([ROOT / "config.yaml"], {"flow": {"bound": float("inf")}})  # as Snakemake parses 1e400


@pytest.mark.parametrize("value", ["nan", "inf", "-1", "lots"])
def test_prune_refuses_a_size_that_is_not_a_size(value):
    proc = _cli("cache", "prune", "--dry-run", "--max-gb", value)
    assert proc.returncode == 2 and "--max-gb" in proc.stderr and "Traceback" not in proc.stderr


@pytest.mark.parametrize("code, words", [(errno.ENOSPC, "free space"), (errno.EACCES, "write access"),
                                         (errno.EPERM, "write access"), (errno.EROFS, "read-only"),
                                         (errno.ENOTDIR, "a file stands where a folder"),
                                         (errno.EEXIST, "already stands"), (errno.EIO, "fix the device")])
def test_an_os_error_is_called_what_it_is(code, words):
    assert words in os_error_advice(OSError(code, os.strerror(code), "x"))
    assert "free space" not in os_error_advice(OSError(errno.EACCES, "no")) or code == errno.ENOSPC


def test_a_closed_pipe_ends_a_command_quietly():
    proc = subprocess.run(f"{sys.executable} -m pipeline --help | head -c 10", shell=True, cwd=ROOT,
                          capture_output=True, text=True)
    assert proc.stderr == "" and proc.stdout
    reader = subprocess.Popen([sys.executable, "-m", "pipeline", "config"], cwd=ROOT,
                              stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
    reader.stdout.read(5)
    reader.stdout.close()  # the reader stops reading, as `head` does
    err = reader.stderr.read()
    assert reader.wait() == 0 and "Traceback" not in err and "free space" not in err, err


def test_a_student_skeleton_loads_without_a_random_weights_note(caplog, micro_clip):
    """Trained weights are loaded into it right after: no note may say they are random."""
    from pipeline.factory import load_clip
    with caplog.at_level(logging.INFO):
        load_clip(micro_clip, None, quiet=True)
    assert not [r for r in caplog.records if "random" in r.getMessage().lower()]
    with caplog.at_level(logging.INFO):
        load_clip(micro_clip, None)  # random weights that stay are announced, by us
    assert any("RANDOM WEIGHTS" in r.getMessage() for r in caplog.records)
