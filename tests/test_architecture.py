"""The house rules, checked: a ground floor that imports no stage, no import cycle (even inside
functions), no private
name used across modules, no module over 400 lines, a README for the user's path (at most 300
lines) whose links, and the docs' links, lead somewhere."""
import ast
import re
from pathlib import Path

from conftest import ROOT

PACKAGE = ROOT / "pipeline"
# Below every stage: devices and precision, files, shard paths, the stores, how models and
# weights are found. They import nothing above them.
GROUND = {"pipeline", "pipeline.compute", "pipeline.devices", "pipeline.files", "pipeline.layout",
          "pipeline.store", "pipeline.row_codecs", "pipeline.recipes", "pipeline.text_store", "pipeline.factory",
          "pipeline.weights",
          "pipeline.demo_convnet", "pipeline.errors", "pipeline.prompts"}
# the package names the data API (pipeline.open_run), imported only when it is called
REEXPORTED = {("pipeline", "pipeline.api")}


def _modules() -> dict[str, Path]:
    out = {}
    for path in PACKAGE.rglob("*.py"):
        parts = path.relative_to(ROOT).with_suffix("").parts
        out[".".join(parts[:-1] if parts[-1] == "__init__" else parts)] = path
    return out


def _imports(name: str, path: Path, modules) -> list[tuple[str, list[str], bool]]:
    """(module imported, names taken from it, at module level?) for each pipeline import."""
    package = name if path.name == "__init__.py" else name.rpartition(".")[0]
    tree = ast.parse(path.read_text())
    top = {id(n) for n in tree.body}
    found = []
    for node in ast.walk(tree):
        if isinstance(node, ast.ImportFrom):
            if node.level:
                base = package.split(".")[: len(package.split(".")) - node.level + 1]
                target = ".".join(base + ([node.module] if node.module else []))
            else:
                target = node.module or ""
            if not target.startswith("pipeline"):
                continue
            for alias in node.names:  # `from . import x` may name a module
                sub = f"{target}.{alias.name}"
                found.append((sub if sub in modules else target, [alias.name], id(node) in top))
        elif isinstance(node, ast.Import):
            found += [(a.name, [], id(node) in top) for a in node.names if a.name.startswith("pipeline")]
    return found


def test_the_ground_floor_imports_no_stage():
    modules = _modules()
    up = [(name, target) for name in sorted(GROUND) for target, _, _ in _imports(name, modules[name], modules)
          if target not in GROUND and (name, target) not in REEXPORTED]
    assert not up, f"arrows back up from the ground floor: {up}"


def test_only_the_report_command_imports_the_report_stage():
    """Training and prediction draw with pipeline.plots and write with pipeline.heads.scores;
    the last stage (report, analysis) is imported by its command alone."""
    modules = _modules()
    users = {name for name, path in modules.items() for target, _, _ in _imports(name, path, modules)
             if target in ("pipeline.report", "pipeline.analysis") and name != target}
    assert users <= {"pipeline.commands.heads", "pipeline.report"}, users


def test_no_import_cycle_even_inside_functions():
    """No circle of imports, at module level or inside functions (a function-level import
    hides a circle, it does not remove it); the package's lazy re-export of the data API
    aside."""
    modules = _modules()
    graph = {name: {t for t, _, _ in _imports(name, path, modules)
                    if t in modules and t != name and (name, t) not in REEXPORTED}
             for name, path in modules.items()}
    state: dict[str, int] = {}

    def visit(node, trail):
        state[node] = 1
        for nxt in graph[node]:
            if state.get(nxt) == 1:
                raise AssertionError("import cycle: " + " -> ".join(trail[trail.index(nxt):] + [nxt]))
            if not state.get(nxt):
                visit(nxt, trail + [nxt])
        state[node] = 2
    for name in sorted(graph):
        if not state.get(name):
            visit(name, [name])


def test_no_private_name_crosses_a_module():
    modules = _modules()
    crossing = [(name, target, n) for name, path in modules.items()
                for target, names, _ in _imports(name, path, modules) for n in names
                if n.startswith("_") and not n.startswith("__") and target != name]
    assert not crossing, crossing


def test_no_module_over_400_lines():
    long = {str(p.relative_to(ROOT)): n for p in PACKAGE.rglob("*.py")
            if (n := len(p.read_text().splitlines())) > 400}
    assert not long, long


def _anchor(heading: str) -> str:
    """GitHub's anchor of a heading."""
    text = re.sub(r"[^\w\- ]", "", heading.strip().lower())
    return text.replace(" ", "-")


def test_the_readme_keeps_to_the_users_path_and_every_link_leads_somewhere():
    readme = ROOT / "README.md"
    assert len(readme.read_text().splitlines()) <= 300
    for page in [readme, *sorted((ROOT / "docs").glob("*.md"))]:
        for target in re.findall(r"\]\(([^)\s]+)\)", page.read_text()):
            if target.startswith("http"):
                continue
            file, _, anchor = target.partition("#")
            dest = (page.parent / file).resolve() if file else page
            assert dest.exists(), f"{page.name}: link to {target}: no such file"
            if anchor:
                headings = [_anchor(h) for h in re.findall(r"^#+ (.+)$", dest.read_text(), re.M)]
                assert anchor in headings, f"{page.name}: link to {target}: no such heading"


def _scan(skip: set, in_module, in_rule_line) -> list[str]:
    """``path:line what`` of every hit in the package's modules but ``skip`` (``in_module(node)``
    of each syntax-tree node: what it holds, or a false value) and in the workflow's rule files
    (``in_rule_line(line)``: the hits of one line)."""
    found = []
    for path in sorted(PACKAGE.rglob("*.py")):
        if path not in skip:
            found += [f"{path.relative_to(ROOT)}:{node.lineno} {what}"
                      for node in ast.walk(ast.parse(path.read_text())) if (what := in_module(node))]
    for path in sorted((ROOT / "workflow").rglob("*.smk")) + [ROOT / "Snakefile"]:
        for n, line in enumerate(path.read_text().splitlines(), 1):
            found += [f"{path.relative_to(ROOT)}:{n} {what}" for what in in_rule_line(line)]
    return found


def test_head_types_are_named_only_in_the_registry():
    """One registry of heads: no module of the package or rule of the workflow names a
    built-in head type but pipeline/heads/registry.py (what a type is and does is asked there)."""
    import yaml
    from pipeline.heads.registry import HEAD_TYPES
    schema = yaml.safe_load((PACKAGE / "resources" / "config.schema.yaml").read_text())
    assert set(schema["properties"]["heads"]["properties"]) == set(HEAD_TYPES)  # a section each
    found = _scan({PACKAGE / "heads" / "registry.py"},
                  lambda node: isinstance(node, ast.Constant) and node.value in HEAD_TYPES and repr(node.value),
                  lambda line: [repr(name) for name in HEAD_TYPES if re.search(rf"[\"']{name}[\"']", line)])
    assert not found, "head types named outside pipeline/heads/registry.py:\n" + "\n".join(found)


def test_a_head_entry_is_resolved_in_one_place():
    """A head entry is resolved once (pipeline/heads/entry.py: its type, class, streams, text
    and settings) and the stages take the object: no other module or rule imports a user's
    class, works out what a head reads, or fills a head's settings with defaults."""
    resolving = ("user_class", "head_params", "is_user_type", "streams", "reads_text",
                 "check_entries", "run_entries")
    allowed = {PACKAGE / "heads" / name for name in ("entry.py", "registry.py", "user.py")}
    allowed |= {PACKAGE / "config.py", PACKAGE / "protocols.py"}  # config checks, a record compared
    def called(node):
        name = getattr(node.func, "id", getattr(node.func, "attr", None)) if isinstance(node, ast.Call) else None
        return name in resolving and name

    found = _scan(allowed, called, lambda line: [name for name in resolving if re.search(rf"\b{name}\(", line)])
    assert not found, "head entries resolved outside pipeline/heads/entry.py:\n" + "\n".join(found)


def test_docs_heads_lists_every_trainer_key_a_user_head_takes():
    """docs/heads.md's trainer settings are the schema's trainer keys (with standardise and
    motion_source), and its built-in-only names are the registry's."""
    import re
    from pipeline.heads.registry import BUILT_IN_ONLY, config_trainer_keys
    text = (ROOT / "docs" / "heads.md").read_text()
    bullet = text.split("- **trainer settings**")[1].split("\n\n")[0]
    listed, refused = bullet.split("These go to the trainer")
    assert set(re.findall(r"`(\w+)`", listed)) == set(config_trainer_keys())
    assert set(re.findall(r"`(\w+)`", refused)) == set(BUILT_IN_ONLY)


def test_no_function_in_the_package_is_longer_than_60_lines():
    long = []
    for path in sorted((ROOT / "pipeline").rglob("*.py")):
        for node in ast.walk(ast.parse(path.read_text())):
            if isinstance(node, (ast.FunctionDef, ast.AsyncFunctionDef)) and \
                    node.end_lineno - node.lineno + 1 > 60:
                long.append(f"{path.relative_to(ROOT)}:{node.lineno} {node.name} "
                            f"({node.end_lineno - node.lineno + 1} lines)")
    assert not long, long
