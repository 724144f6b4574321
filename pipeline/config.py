"""Validated access to config.yaml.

The JSON schema ``pipeline/resources/config.schema.yaml`` (inside the package, so the
Snakefile and ``python -m pipeline`` read the same file) is the single description of every key. Validation
fills defaults and turns the first problem into one line that names the key and what is allowed.
"""
from __future__ import annotations

import copy
import json
import re
from functools import lru_cache
from pathlib import Path

import jsonschema
import yaml
from .errors import PipelineError
from .recipes import schema_file



# Keys renamed since runs were configured: an old name is refused with its new one.
RENAMED_KEYS = {"heads": "attention_heads"}


class ConfigError(PipelineError, ValueError):
    pass


@lru_cache(maxsize=1)
def schema() -> dict:
    """The config schema, its list of data set formats taken from the readers."""
    from .annotations import FORMATS
    sch = copy.deepcopy(schema_file())
    sch["properties"]["dataset"]["properties"]["format"]["enum"] = list(FORMATS)
    return sch


def _with_defaults(cls):
    validate_properties = cls.VALIDATORS["properties"]

    def set_defaults(validator, properties, instance, sch):
        if isinstance(instance, dict):
            for key, sub in properties.items():
                if "default" in sub and key not in instance:
                    instance[key] = copy.deepcopy(sub["default"])
        yield from validate_properties(validator, properties, instance, sch)

    return jsonschema.validators.extend(cls, {"properties": set_defaults})


_Validator = _with_defaults(jsonschema.Draft7Validator)


def _key(path) -> str:
    return ".".join(str(p) for p in path) or "(top level)"


def _message(error: jsonschema.ValidationError, sch: dict, source: str) -> str:
    key = _key(error.absolute_path)
    if error.validator == "additionalProperties":
        allowed = sorted(error.schema.get("properties", {}))
        extra = sorted(set(error.instance) - set(allowed))
        name = ".".join(filter(None, [_key(error.absolute_path).replace("(top level)", ""), extra[0]]))
        renamed = RENAMED_KEYS.get(extra[0])
        if renamed in allowed:
            return f"{source}: key '{name}' is now called '{renamed}'; rename it in your config"
        return f"{source}: unknown key '{name}'; allowed keys here: {', '.join(allowed)}"
    if error.validator == "enum":
        return (f"{source}: key '{key}' is {error.instance!r}; allowed values: "
                f"{', '.join(map(repr, error.validator_value))}")
    if error.validator == "required":
        return f"{source}: {error.message} (in '{key}')"
    if error.validator == "type":
        want = error.validator_value
        want = " or ".join(want) if isinstance(want, list) else want
        return f"{source}: key '{key}' must be of type {want}; got {error.instance!r}"
    hint = error.schema.get("description", "")
    return f"{source}: key '{key}': {error.message}" + (f" ({hint})" if hint else "")


def _source_of(error: jsonschema.ValidationError, sources: dict | None, files: str) -> str:
    """``--config`` when the faulty value came from an override, else the config files."""
    path = tuple(error.absolute_path)
    if error.validator == "additionalProperties":
        path += tuple(sorted(set(error.instance) - set(error.schema.get("properties", {}))))[:1]
    near = [src for key, src in (sources or {}).items()
            if key[:len(path)] == path or path[:len(key)] == key]
    return "--config" if "--config" in near else files


def _whole_numbers(value, node: dict | None, source: str, path=(), sources: dict | None = None) -> None:
    """JSON Schema counts 2.0 as an integer: make it 2 where the schema says integer (a float
    would crash ``range``); refuse infinity and NaN, which YAML reads from 1.0e400 or .nan."""
    import math
    if isinstance(value, dict):
        props = (node or {}).get("properties", {})
        for key, sub in value.items():
            child = props.get(key) or (node or {}).get("additionalProperties")
            if isinstance(sub, float):
                if not math.isfinite(sub):
                    given = "--config" if (sources or {}).get(path + (key,)) == "--config" else source
                    raise ConfigError(f"{given}: key '{_key(path + (key,))}' is {sub}; give a "
                                      f"finite number")
                types = (child or {}).get("type", [])
                types = [types] if isinstance(types, str) else types
                if "integer" in types and "number" not in types and sub.is_integer():
                    value[key] = int(sub)
            else:
                _whole_numbers(sub, child if isinstance(child, dict) else None, source, path + (key,),
                               sources)


HEAD_NAME = re.compile(r"[A-Za-z0-9][A-Za-z0-9_.+-]*")  # an entry's name is its folder


def _user_settings(name: str, entry: dict, grid: dict, sch: dict, src: str) -> None:
    """A user head's settings: those named like the trainer's keys are the trainer's, checked
    against the same schema as a built-in head's; names only a built-in head's trainer reads are
    refused (they would never reach the class); the rest go to the class."""
    from .heads.registry import BUILT_IN_ONLY, ENTRY_KEYS
    defs = sch["definitions"]
    pipeline_keys = {**defs["trainer_keys"], **defs["standardise_key"], **defs["motion_source_key"]}
    given = {k: v for k, v in entry.items() if k not in ENTRY_KEYS}
    for key in sorted(set(given) | set(grid)):
        if key in BUILT_IN_ONLY:
            raise ConfigError(f"{src}: key 'heads.{name}.{key}': a setting of the built-in heads' "
                              f"trainer, which never reaches your class; give your setting another "
                              f"name (docs/heads.md lists the trainer's keys)")
    check = {"type": "object", "properties": pipeline_keys}
    for trial in [given] + [{**given, k: v} for k, values in grid.items() for v in values]:
        mine = {k: v for k, v in trial.items() if k in pipeline_keys}
        errors = sorted(_Validator(check).iter_errors(copy.deepcopy(mine)), key=lambda e: list(e.absolute_path))
        if errors:
            errors[0].path.extendleft([name, "heads"])
            raise ConfigError(_message(errors[0], sch, src))


def _head_entries(heads, sch: dict, source: str, sources: dict | None) -> dict:
    """``heads:`` entries by any name, each checked against its type's settings (``type``,
    ``grid`` and ``seeds`` are the entry's own; a user type's settings go to its class)."""
    from .heads.registry import BASELINE
    types = sch["properties"]["heads"]["properties"]
    if not isinstance(heads, dict):
        raise ConfigError(f"{source}: key 'heads' must be a mapping of names to head settings")
    for name, entry in heads.items():
        entry = {} if entry is None else entry
        where = f"heads.{name}"
        src = "--config" if any(k[:2] == ("heads", name) and v == "--config"
                                for k, v in (sources or {}).items()) else source
        if not isinstance(name, str) or not HEAD_NAME.fullmatch(name) or name in (".", ".."):
            raise ConfigError(f"{src}: head name {name!r} under 'heads': a name is its folder "
                              f"(heads/<name>/): letters, digits and _ . + - only, starting with a "
                              f"letter or digit (e.g. fusion_lr3)")
        if not isinstance(entry, dict):
            raise ConfigError(f"{src}: key '{where}' must be a mapping of settings; got {entry!r}")
        head_type = entry.get("type") or name
        if not isinstance(head_type, str) or (":" not in head_type and head_type not in types):
            raise ConfigError(f"{src}: key '{where}': unknown head type {head_type!r}; a type "
                              f"is one of {', '.join(types)}, or your own class as module:Class "
                              f"or path/to/file.py:Class (docs/heads.md); a name that is no "
                              f"type needs 'type:'")
        if name == BASELINE and head_type != BASELINE:
            raise ConfigError(f"{src}: key '{where}': {BASELINE!r} names CLIP's zero-shot "
                              f"baseline, which every run reports; give this {head_type} entry "
                              f"another name")
        grid, seeds = entry.get("grid", {}), entry.get("seeds", [])
        if not isinstance(grid, dict) or not all(isinstance(v, list) and v for v in grid.values()):
            raise ConfigError(f"{src}: key '{where}.grid' maps settings to non-empty lists of values")
        if not isinstance(seeds, list) or not all(isinstance(x, int) and not isinstance(x, bool)
                                                  and x >= 0 for x in seeds):
            raise ConfigError(f"{src}: key '{where}.seeds' is a list of integers 0 or more "
                              f"(got {seeds!r})")
        if seeds and "seed" in grid:
            raise ConfigError(f"{src}: key '{where}': seeds are given twice (seeds: and "
                              f"grid.seed); keep one")
        if ":" in head_type:  # a user's class: the pipeline's keys checked here, the rest its own
            _user_settings(name, entry, grid, sch, src)
            continue
        settings = {k: v for k, v in entry.items() if k not in ("type", "grid", "seeds")}
        trials = [settings] + [{**settings, key: value} for key, values in grid.items() for value in values]
        trials += [{**settings, "seed": x} for x in seeds]
        for trial in trials:
            errors = sorted(_Validator(types[head_type]).iter_errors(copy.deepcopy(trial)),
                            key=lambda e: list(e.absolute_path))
            if errors:
                errors[0].path.extendleft([name, "heads"])
                raise ConfigError(_message(errors[0], sch, _source_of(errors[0], sources, source)))
    return heads


def validate_config(config: dict, source: str = "config.yaml", sources: dict | None = None) -> dict:
    """Return a validated deep copy of ``config`` with defaults filled; raise ConfigError.
    ``sources`` (leaf path -> where it was set) names ``--config`` in an error it caused."""
    config = copy.deepcopy(dict(config))
    sch = schema()
    heads = config.pop("heads", None)  # entries by any name: checked against their types below
    errors = sorted(_Validator(sch).iter_errors(config), key=lambda e: list(e.absolute_path))
    if errors:
        raise ConfigError(_message(errors[0], sch, _source_of(errors[0], sources, source)))
    # Defaults of nested objects whose parent was defaulted are filled by a second pass.
    _Validator(sch).validate(config)
    if heads is not None:
        config["heads"] = _head_entries(heads, sch, source, sources)
    _whole_numbers(config, sch, source, sources=sources)
    if config.get("cache") and Path(config["cache"]).exists() and not Path(config["cache"]).is_dir():
        given = "--config" if (sources or {}).get(("cache",)) == "--config" else source
        raise ConfigError(f"{given}: key 'cache' is {config['cache']}, a file, not a folder; point "
                          f"it at a folder (or leave it out: each run keeps its own)")
    from .annotations import list_key
    fmt = config["dataset"]["format"]
    key, what = list_key(fmt)
    if not config["dataset"].get(key):
        raise ConfigError(f"{source}: key 'dataset.{key}' is required for format {fmt!r} ({what})")
    return config


def _read_yaml(path: Path) -> dict:
    try:
        raw = yaml.safe_load(path.read_text()) or {}
    except FileNotFoundError:
        raise ConfigError(f"{path}: config file not found") from None
    except yaml.YAMLError as e:
        raise ConfigError(f"{path}: not valid YAML: {e}") from None
    if not isinstance(raw, dict):
        raise ConfigError(f"{path}: a config file is a mapping of sections (dataset:, clip:, ...)")
    return raw


def _merge(base: dict, new: dict, sources: dict, source: str, path=()) -> None:
    """Deep-merge ``new`` into ``base``, recording the source of every leaf it sets (a leaf:
    anything but a non-empty mapping)."""
    for key, value in new.items():
        here = path + (key,)
        if isinstance(value, dict) and value:
            if not isinstance(base.get(key), dict):
                base[key] = {}
                for k in [k for k in sources if k[:len(here)] == here]:
                    del sources[k]
            _merge(base[key], value, sources, source, here)
        else:
            base[key] = copy.deepcopy(value)
            for k in [k for k in sources if k[:len(here)] == here]:
                del sources[k]
            sources[here] = source


def _schema_node(sch: dict | None, key):
    if not isinstance(sch, dict):
        return None
    props = sch.get("properties", {})
    if key in props:
        return props[key]
    extra = sch.get("additionalProperties")
    return extra if isinstance(extra, dict) else None


def typed_overrides(overrides: dict) -> dict:
    """``--config`` values with the types the schema gives them. Snakemake reads a nested value
    (``clip={batch_size: 32}``) as text, '32' and 'null' included; each text is read as YAML
    where the schema takes the result (32, None) and not the text, so a split named "2019"
    stays text while a batch size becomes a number."""
    heads = schema()["properties"]["heads"]
    defs = schema()["definitions"]
    user = {"type": "object", "properties": {**defs["trainer_keys"], **defs["standardise_key"],
                                             **defs["motion_source_key"]}}

    def entry_node(name, entry):  # a head entry by any name: its type's schema (a user type: the trainer's keys)
        kind = entry.get("type") if isinstance(entry, dict) and isinstance(entry.get("type"), str) else name
        return heads["properties"].get(kind, user)

    def typed(value, node):
        if isinstance(value, dict) and node is heads:
            return {k: typed(v, entry_node(k, v)) for k, v in value.items()}
        if isinstance(value, dict):
            return {k: typed(v, _schema_node(node, k)) for k, v in value.items()}
        if isinstance(value, list):
            return [typed(v, (node or {}).get("items")) for v in value]
        if not isinstance(value, str) or node is None:
            return value
        try:
            parsed = yaml.safe_load(value)
            if isinstance(parsed, str):
                parsed = float(parsed)  # 1e-3, which YAML 1.1 leaves as text
        except (yaml.YAMLError, ValueError):
            return value
        check = jsonschema.Draft7Validator(node)
        return value if check.is_valid(value) and not check.is_valid(parsed) else parsed
    return typed(copy.deepcopy(dict(overrides)), schema())


def parse_overrides(items) -> dict:
    """``--config KEY=VALUE ...`` as snakemake reads them (values are YAML)."""
    overrides = {}
    for item in items or []:
        key, sep, value = item.partition("=")
        if not sep or not key:
            raise ConfigError(f"--config {item!r}: expected KEY=VALUE (e.g. shards=8)")
        try:
            overrides[key] = yaml.safe_load(value)
        except yaml.YAMLError:
            raise ConfigError(f"--config {item!r}: the value is not valid YAML") from None
    return overrides


def resolve_config(files, overrides: dict | None = None, default="config.yaml") -> tuple[dict, dict]:
    """The config a run uses, and where each value came from.

    ``files`` (``--configfile``, merged in order) *replace* the default job's ``default`` file
    entirely: every key they do not set takes the schema's default, so nothing of the demo
    reaches a user's config. Without files, ``default`` is read. ``overrides`` (``--config``)
    go on top. Returns ``(config, sources)`` with ``sources[("clip", "model")]`` = a file name,
    ``--config`` or ``schema default``. The Snakefile and ``python -m pipeline config`` both
    call this, so what the command prints is what the run uses.
    """
    files = [Path(f) for f in files] or [Path(default)]
    merged: dict = {}
    sources: dict = {}
    for f in files:
        _merge(merged, _read_yaml(f), sources, str(f))
    _merge(merged, typed_overrides(overrides or {}), sources, "--config")
    config = validate_config(merged, ", ".join(map(str, files)), sources)

    def fill(value, path):
        if isinstance(value, dict) and value:
            for k, v in value.items():
                fill(v, path + (k,))
        else:
            sources.setdefault(path, "schema default")
    for key, value in config.items():
        fill(value, (key,))
    return config, sources


def format_config(config: dict, sources: dict) -> str:
    """The resolved config as YAML, each value followed by ``# <where it came from>``."""
    lines: list[str] = []

    def emit(value, path, indent):
        pad = "  " * indent
        if isinstance(value, dict) and value:
            lines.append(f"{pad}{path[-1]}:")
            for k, v in value.items():
                emit(v, path + (k,), indent + 1)
            return
        text = yaml.safe_dump(value, default_flow_style=True, width=10**6, sort_keys=False).strip()
        text = text.removesuffix("...").strip()
        lines.append(f"{pad}{path[-1]}: {text}  # {sources.get(path, 'schema default')}")
    for key, value in config.items():
        emit(value, (key,), 0)
    return "\n".join(lines) + "\n"


def load_config(path: str | Path) -> dict:
    path = Path(path)
    return validate_config(_read_yaml(path), str(path))


def _checked(sub: dict, given, source: str) -> dict:
    """``given`` (a dict or its JSON text) validated against ``sub``, defaults filled."""
    if isinstance(given, str):
        given = json.loads(given)
    given = copy.deepcopy(given or {})
    errors = list(_Validator(sub).iter_errors(given))
    if errors:
        raise ConfigError(_message(errors[0], sub, source))
    return given


def head_section(name: str, given: dict | str | None = None) -> dict:
    """A head's parameters checked against that head's own schema (``heads.<name>``)."""
    return _checked(schema()["properties"]["heads"]["properties"][name], given, f"heads.{name}")


def section(name: str, given: dict | str | None = None) -> dict:
    """One section (e.g. ``clip``) with defaults filled, from a dict or its JSON text."""
    return _checked(schema()["properties"][name], given, f"{name} parameters")
