"""One recipe per output (pipeline/recipes.py): what decides an output is written there only,
and a run finished by an earlier main stays current. The fixture is a demo run's record, made
by main at d3d96ad (2026-12-07): the config it ran, its rules' params as Snakemake's metadata
holds them (the text Snakemake compares), and a clip and a flow shard's attributes."""
import ast
import json
import re

from conftest import ROOT
from pipeline.config import resolve_config
from pipeline.heads.entry import run_heads
from pipeline.recipes import (CLIP_IDENTITY, differs, expected_attrs, head_recipe, row_params,
                              section_params, student_params)

RECORD = ROOT / "tests" / "data" / "recorded_demo_run"


def _record():
    config, _ = resolve_config([RECORD / "config.yaml"], {})
    return config, json.loads((RECORD / "recorded.json").read_text())


def test_a_finished_runs_recorded_params_are_todays_recipes():
    """Snakemake re-runs a job whose params text changed: every recipe of the recorded run's
    config, computed by today's code, is the text its job recorded."""
    config, recorded = _record()
    want = {"results/demo/features/clip/test/shard-0.h5": [row_params(config, "clip", "clip"),
                                                          row_params(config, "flow", "flow"),
                                                          row_params(config, "clip", "sampling")],
            "results/demo/features/text.h5": [section_params(config, "text", kind="text"),
                                              section_params(config, "clip", keys=CLIP_IDENTITY)],
            "results/demo/models/moclip/student.pt": [student_params(config)],
            "results/demo/features/motion/test/shard-0.h5": [
                student_params(config), section_params(config, "moclip", keys=("export",))],
            **{f"results/demo/heads/{name}/head.pt": [head_recipe(h)]
               for name, h in run_heads(config).items()}}
    assert len(want) == 12 and set(want) == set(recorded["params"])
    for path, texts in want.items():
        for text in texts:
            assert repr(text) in recorded["params"][path]["params"], (path, text)


def test_a_finished_runs_shards_are_current_and_a_changed_setting_is_named():
    config, recorded = _record()
    for kind in ("clip", "flow"):
        assert differs(recorded["attrs"][kind], expected_attrs(config)[kind]) is None, kind
    config["flow"]["bound"] = 8
    assert differs(recorded["attrs"]["flow"], expected_attrs(config)["flow"]) == \
        "made with flow.bound=4, the config says 8"


def test_raising_a_recipes_version_makes_again_what_the_earlier_version_made(monkeypatch):
    """A change of the code that changes flow rows raises the flow recipe's version: the flow
    rule's params change (Snakemake re-runs it), a recorded flow shard is named stale with the
    versions, the cache keys flow rows apart; clip rows, the student and heads are untouched."""
    import pipeline.recipes as recipes
    config, recorded = _record()
    before = {"flow": row_params(config, "flow", "flow"), "clip": row_params(config, "clip", "clip"),
              "student": student_params(config),
              "cache": recipes.settings_sha256("flow", (2, 8, 8), "uint8", {"model": "dis"})}
    monkeypatch.setitem(recipes.RECIPE_VERSIONS, "flow", 2)
    assert row_params(config, "flow", "flow") != before["flow"]
    assert row_params(config, "clip", "clip") == before["clip"]
    assert student_params(config) == before["student"]
    assert recipes.settings_sha256("flow", (2, 8, 8), "uint8", {"model": "dis"}) != before["cache"]
    assert differs(recorded["attrs"]["flow"], expected_attrs(config)["flow"]) == \
        "made by version 1 of the flow recipe; this pipeline makes version 2"
    assert differs(recorded["attrs"]["clip"], expected_attrs(config)["clip"]) is None
    # the job reads the settings, not the version, from its params
    assert recipes.settings_of(row_params(config, "flow", "flow")) == json.loads(before["flow"])
    monkeypatch.setitem(recipes.RECIPE_VERSIONS, "head", 3)
    heads = run_heads(config)
    assert all('"recipe": 3' in head_recipe(h) for h in heads.values())
    assert recipes.entry_of(json.loads(head_recipe(heads["fusion"])))[0] == heads["fusion"].given


DECIDING = {"NEUTRAL_DEFAULTS", "RECIPE_VERSIONS", "VERSION_KEY", "RENDERING_MARK", "versioned",
            "ENTRY_KEY", "recorded_reuse",
            "settings_of", "entry_of", "CLIP_IDENTITY", "STUDENT_FLOW_KEYS", "HEAD_INPUT_KEYS",
            "NOT_SETTINGS", "FLOW_QUANTISATION", "row_settings", "expected_attrs",
            "settings_sha256", "trigger_view", "student_params", "head_recipe", "row_params",
            "section_params", "compact_json", "differs", "runtime_keys"}


def test_the_recipes_module_is_the_only_place_that_says_what_decides_an_output():
    """No other module or rule file defines what decides an output (the names above), nor keeps
    its own list of a shard's deciding attributes."""
    found = []
    for path in sorted((ROOT / "pipeline").rglob("*.py")):
        if path.name == "recipes.py" and path.parent.name == "pipeline":
            continue
        for node in ast.walk(ast.parse(path.read_text())):
            names = [node.name] if isinstance(node, (ast.FunctionDef, ast.ClassDef)) else \
                [t.id for t in getattr(node, "targets", []) if isinstance(t, ast.Name)]
            found += [f"{path.relative_to(ROOT)}:{node.lineno} {n}" for n in names if n in DECIDING]
    for path in [ROOT / "Snakefile", *sorted((ROOT / "workflow" / "rules").glob("*.smk"))]:
        for m in re.finditer(r"^(?:def (\w+)|(\w+) =)", path.read_text(), re.M):
            if (m.group(1) or m.group(2)) in DECIDING:
                found.append(f"{path.relative_to(ROOT)} {m.group(0)}")
    assert not found, found
