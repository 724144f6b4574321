"""The repository itself: one list of dependencies for pip and the jobs' conda env, the
package found by the rules, its own words, and jobs that use the CPUs they were given."""
import shutil

import pytest
import yaml

from conftest import ROOT


def test_the_conda_env_holds_dependencies_only():
    env = yaml.safe_load((ROOT / "envs" / "pipeline.yaml").read_text())
    pip = [d for d in env["dependencies"] if isinstance(d, dict)][0]["pip"]
    assert not [p for p in pip if p.startswith(("-e", ".", "/"))], pip


@pytest.mark.slow
def test_a_rules_job_runs_the_workflows_own_package(tmp_path):
    """A job's `python -m pipeline` imports the package beside the Snakefile it runs, not an
    installed one (a conda env holds the dependencies only), also from a project folder of its
    own (`-d`): a copy whose package marks its import is the one the samples job ran."""
    from conftest import copy_workflow, snakemake
    (tmp_path / "wf").mkdir()
    work = copy_workflow(tmp_path / "wf", demo_clip=False)
    project = tmp_path / "project"
    project.mkdir()
    shutil.copy(ROOT / "config.yaml", project / "config.yaml")
    mark = tmp_path / "imported"
    init = work / "pipeline" / "__init__.py"
    init.write_text(init.read_text() + f"\nimport sys as _s\nif _s.argv[:1] == ['-m']:\n"
                    f"    open({str(mark)!r}, 'a').write(__file__ + '\\n')\n")
    snakemake(tmp_path, "-s", work / "Snakefile", "-d", project, "results/demo/samples.tsv")
    assert mark.read_text().splitlines()[0] == str(init), mark.read_text()


def test_the_repository_says_things_in_its_own_words_without_symlinks():
    import subprocess
    files = subprocess.run(["git", "ls-files", "-s"], cwd=ROOT, capture_output=True, text=True).stdout
    assert not [line for line in files.splitlines() if line.startswith("120000")], "symlinks"
    hits = subprocess.run(["git", "grep", "-l", "DESIGN" + ".md"], cwd=ROOT, capture_output=True, text=True)
    assert hits.stdout == "", hits.stdout


def test_a_job_uses_its_own_cpus_not_the_nodes(monkeypatch):
    import os
    from pipeline.config import section
    from pipeline.devices import job_cpus
    from pipeline.features.common import decode_workers
    import torch
    cores = len(os.sched_getaffinity(0))
    monkeypatch.delenv("SLURM_CPUS_PER_TASK", raising=False)
    monkeypatch.setenv("PIPELINE_THREADS", "64")
    assert job_cpus() == cores  # the affinity bounds what Snakemake says
    monkeypatch.setenv("PIPELINE_THREADS", "3")
    monkeypatch.setenv("SLURM_CPUS_PER_TASK", "2")
    assert job_cpus() == min(2, cores)
    # a 32-core node, a job given 4 of them: decoding beside a GPU takes the job's CPUs
    # (one left for the model's thread), not the node's
    monkeypatch.setattr(os, "sched_getaffinity", lambda pid: set(range(32)))
    monkeypatch.setattr(os, "cpu_count", lambda: 32)
    monkeypatch.delenv("SLURM_CPUS_PER_TASK")
    monkeypatch.setenv("PIPELINE_THREADS", "4")
    assert decode_workers(section("clip", {}), torch.device("cuda")) == 3


def test_the_conda_env_and_pyproject_list_the_same_dependencies():
    """One list of dependencies: the jobs' conda env holds pyproject's, less Snakemake (the
    jobs run under it, they do not import it)."""
    import tomllib
    deps = tomllib.loads((ROOT / "pyproject.toml").read_text())["project"]["dependencies"]
    env = yaml.safe_load((ROOT / "envs" / "pipeline.yaml").read_text())
    pip = [d for d in env["dependencies"] if isinstance(d, dict)][0]["pip"]
    assert sorted(pip) == sorted(d for d in deps if not d.startswith("snakemake")), (pip, deps)


def test_the_readmes_dataset_example_is_valid_and_lists_the_presets_files():
    """The README's Animal Kingdom `dataset:` names the files the preset names, and validates."""
    import re
    from pipeline.config import validate_config
    block = re.search(r"```yaml\n(dataset:\n.*?)```", (ROOT / "README.md").read_text(), re.S)[1]
    example = validate_config(yaml.safe_load(block))["dataset"]
    preset = yaml.safe_load((ROOT / "configs" / "animal_kingdom.yaml").read_text())["dataset"]
    given = yaml.safe_load(block)
    for key in given["dataset"]:  # every value the block states is the preset's
        assert example[key] == preset[key], key
    assert set(given) == {"dataset"}  # nothing beside it that the preset does not say
    for key in ("format", "videos", "classes", "segments", "splits", "val_split", "eval_split"):
        assert key in given["dataset"], key


def test_the_readme_names_every_gpu_rule_and_the_reference_every_speed_setting():
    """Lists the docs give that the code also has: the rules that ask for GPUs (README) and
    the schema's x-runtime keys (docs/reference.md)."""
    import re
    from pipeline.runtime import runtime_keys
    asks = set()
    for smk in (ROOT / "workflow" / "rules").glob("*.smk"):
        for name, body in re.findall(r"^\s*rule (\w+):\n(.*?)(?=^\s*rule |\Z)", smk.read_text(), re.M | re.S):
            if re.search(r"gpu=gpus\(", body):
                asks.add(name)
    text = " ".join((ROOT / "README.md").read_text().split())
    listed = re.search(r"GPU rules \(([^)]*)\) ask for", text)[1]
    named = {w.split()[0] for w in listed.split(", ")}
    assert named == asks, (named, asks)
    reference = " ".join((ROOT / "docs" / "reference.md").read_text().split())
    for section, keys in runtime_keys().items():
        for key in keys:
            assert f"`{section + '.' if section else ''}{key}`" in reference or \
                (key == "decode_workers" and "the `decode_workers`" in reference), (section, key)
