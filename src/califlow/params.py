"""Parameters: defaults, validation and resolution of derived values.

The JSON schema in ``califlow/schemas/config.schema.yaml`` is the single source of the
parameter names, defaults and allowed values. This module fills defaults, validates a
configuration before any work starts (naming the key, the value and what is allowed), and
resolves the derived defaults (``BVsize``, ``min_pixel``, ...) in one
place so that every output can record the exact values it ran with.
"""

from __future__ import annotations

import copy
import math
from collections.abc import Mapping
from importlib import resources
from pathlib import Path
from typing import Any

import yaml

__all__ = [
    "ConfigError",
    "config_schema",
    "sessions_schema",
    "default_config",
    "validate_config",
    "resolve_config",
    "apply_neuron_size",
    "numeric_gsig",
    "load_config",
    "read_config_file",
    "parse_number_list",
    "round_half_up",
    "config_template",
    "parameter_table",
]


class ConfigError(ValueError):
    """A configuration value or a sessions sheet entry is not allowed."""


def _load_schema(name: str) -> dict:
    text = resources.files("califlow.schemas").joinpath(name).read_text()
    return yaml.safe_load(text)


_CONFIG_SCHEMA: dict | None = None
_SESSIONS_SCHEMA: dict | None = None


def config_schema() -> dict:
    """Return the configuration JSON schema (a fresh copy)."""
    global _CONFIG_SCHEMA
    if _CONFIG_SCHEMA is None:
        _CONFIG_SCHEMA = _load_schema("config.schema.yaml")
    return copy.deepcopy(_CONFIG_SCHEMA)


def sessions_schema() -> dict:
    """Return the sessions-sheet JSON schema (a fresh copy)."""
    global _SESSIONS_SCHEMA
    if _SESSIONS_SCHEMA is None:
        _SESSIONS_SCHEMA = _load_schema("sessions.schema.yaml")
    return copy.deepcopy(_SESSIONS_SCHEMA)


def _defaults_of(schema: Mapping) -> Any:
    if schema.get("type") == "object" and "properties" in schema:
        out = copy.deepcopy(schema.get("default", {})) or {}
        for key, sub in schema["properties"].items():
            if key in out:
                if isinstance(out[key], dict) and sub.get("type") == "object":
                    filled = _defaults_of(sub)
                    filled.update(out[key])
                    out[key] = filled
                continue
            if "default" in sub or sub.get("type") == "object":
                out[key] = _defaults_of(sub)
        return out
    return copy.deepcopy(schema.get("default"))


_DEFAULTS: dict | None = None


def default_config() -> dict:
    """Return the full default configuration (nested dict, a fresh copy)."""
    global _DEFAULTS
    if _DEFAULTS is None:
        _DEFAULTS = _defaults_of(config_schema())
    return copy.deepcopy(_DEFAULTS)


def _merge(base: dict, update: Mapping) -> dict:
    out = copy.deepcopy(base)
    for key, value in (update or {}).items():
        if isinstance(value, Mapping) and isinstance(out.get(key), dict):
            # free-form objects keep their keys; schema objects are merged key by key
            out[key] = _merge(out[key], value)
        else:
            out[key] = copy.deepcopy(value)
    return out


def _describe(schema: Mapping) -> str:
    parts = []
    if "enum" in schema:
        parts.append("one of " + ", ".join(repr(v) for v in schema["enum"]))
    types = schema.get("type")
    if types and "enum" not in schema:
        parts.append("type " + (" or ".join(types) if isinstance(types, list) else types))
    for key, word in (("minimum", ">="), ("exclusiveMinimum", ">"), ("maximum", "<="),
                      ("exclusiveMaximum", "<")):
        if key in schema:
            parts.append(f"{word} {schema[key]}")
    if "minItems" in schema or "maxItems" in schema:
        parts.append(f"{schema.get('minItems', 0)} to {schema.get('maxItems', 'any')} items")
    if "pattern" in schema:
        parts.append(f"matching {schema['pattern']}")
    return ", ".join(parts) or "see the schema"


def _format_error(err, root: str) -> str:
    path = ".".join(str(p) for p in err.absolute_path)
    where = f"{root} key '{path}'" if path else root
    if err.validator == "additionalProperties":
        allowed = sorted(err.schema.get("properties", {}))
        extra = sorted(set(err.instance) - set(allowed))
        return f"{where}: unknown key(s) {', '.join(map(repr, extra))}; allowed keys: {', '.join(allowed)}"
    if err.validator == "required":
        return f"{where}: {err.message}"
    return f"{where}: value {err.instance!r} is not allowed ({err.message}); allowed: {_describe(err.schema)}"


def validate_config(config: Mapping) -> dict:
    """Fill defaults and validate a configuration.

    Parameters
    ----------
    config : mapping
        Partial or complete configuration (as loaded from ``config.yaml``).

    Returns
    -------
    dict
        The complete configuration with every default filled in.

    Raises
    ------
    ConfigError
        Naming the key, the value and what is allowed, for the first problem found.
    """
    import jsonschema

    full = _merge(default_config(), config or {})
    validator = jsonschema.Draft202012Validator(config_schema())
    errors = sorted(validator.iter_errors(full), key=lambda e: list(e.absolute_path))
    if errors:
        raise ConfigError("; ".join(_format_error(e, "config") for e in errors[:5]))
    _check_semantics(full)
    return full


def _check_semantics(cfg: dict) -> None:
    ds = cfg["downsampling"]
    if len(ds["BVsize"]) == 1:
        raise ConfigError(f"config key 'downsampling.BVsize': value {ds['BVsize']!r} is not allowed; "
                          "allowed: [] (automatic) or [min, max]")
    if len(ds["BVsize"]) == 2 and ds["BVsize"][0] > ds["BVsize"][1]:
        raise ConfigError(f"config key 'downsampling.BVsize': value {ds['BVsize']!r} is not allowed; "
                          "allowed: [min, max] with min <= max")
    lo, hi = cfg["motion_correction"]["non_rigid_batch_size"]
    if lo > hi:
        raise ConfigError(f"config key 'motion_correction.non_rigid_batch_size': value {[lo, hi]!r} "
                          "is not allowed; allowed: [min, max] with min <= max")
    fmin, fmax = cfg["spike_extraction"]["noise_range"]
    if fmin >= fmax:
        raise ConfigError(f"config key 'spike_extraction.noise_range': value {[fmin, fmax]!r} is not "
                          "allowed; allowed: [fmin, fmax] with 0 <= fmin < fmax <= 0.5")
    cn = cfg["cnmfe"]
    mp = cn["min_pixel"]
    if isinstance(mp, list) and len(mp) > 1:
        raise ConfigError(f"config key 'cnmfe.min_pixel': value {mp!r} is not allowed; "
                          "allowed: [] (automatic) or an integer >= 1")
    if isinstance(mp, int) and not isinstance(mp, bool) and mp < 1:
        raise ConfigError(f"config key 'cnmfe.min_pixel': value {mp!r} is not allowed; allowed: >= 1")
    gen = cfg["general"]
    if gen["output_files"] and len(gen["output_files"]) != len(gen["input_files"]):
        raise ConfigError("config key 'general.output_files': must be empty or name every entry of "
                          f"general.input_files ({len(gen['input_files'])} entries, got "
                          f"{len(gen['output_files'])})")
    se = cfg["spike_extraction"]
    for key in ("bl", "c1", "sn"):
        _parse_auto_number(se[key], f"spike_extraction.{key}")
    parse_number_list(se["g"], "spike_extraction.g", allow_auto=True)


def _parse_auto_number(value, key: str) -> float | None:
    if value is None:
        return None
    if isinstance(value, str):
        if value.strip().lower() in ("auto", ""):
            return None
        try:
            return float(value)
        except ValueError:
            raise ConfigError(f"config key '{key}': value {value!r} is not allowed; "
                              "allowed: 'auto' or a number") from None
    return float(value)


def parse_number_list(value, key: str = "g", allow_auto: bool = True) -> list[float] | None:
    """Parse ``"auto"``, a number, ``"1.7,-0.71"`` or a list into a list of floats.

    Returns None for ``"auto"`` when ``allow_auto``.
    """
    if value is None:
        return None
    if isinstance(value, str):
        text = value.strip()
        if allow_auto and text.lower() in ("auto", ""):
            return None
        try:
            return [float(v) for v in text.replace(";", ",").split(",") if v.strip()]
        except ValueError:
            raise ConfigError(f"config key '{key}': value {value!r} is not allowed; "
                              "allowed: 'auto' or comma-separated numbers such as '1.7,-0.71'") from None
    if isinstance(value, (int, float)) and not isinstance(value, bool):
        return [float(value)]
    if isinstance(value, (list, tuple)):
        try:
            return [float(v) for v in value]
        except (TypeError, ValueError):
            raise ConfigError(f"config key '{key}': value {value!r} is not allowed; "
                              "allowed: a list of numbers") from None
    raise ConfigError(f"config key '{key}': value {value!r} is not allowed")


def round_half_up(x: float) -> int:
    """Round positive values half away from zero (MATLAB ``round``), e.g. 2.5 -> 3."""
    return int(math.floor(x + 0.5))


def resolve_config(config: Mapping) -> dict:
    """Validate and resolve derived defaults.

    Derived values (written into every output's attrs), from gSig and the measured neuron
    diameter (:mod:`califlow.sizes`):

    - ``downsampling.BVsize`` = [0.6, 0.9] * gSig when empty;
    - ``cnmfe.min_pixel`` = round(gSig^2) when empty;
    - ``spike_extraction`` 'auto' strings become None and ``g`` a list of floats.

    The result is a valid configuration again: ``resolve_config(resolve_config(c)) ==
    resolve_config(c)``. Nothing here depends on the machine: ``cnmfe.memory_size_to_use: null``
    stays null and is resolved inside the CNMF-E job (:func:`califlow.resources.memory_budget_gb`).
    With ``general.gSig: auto`` the gSig-derived values stay empty until
    :func:`apply_neuron_size` sets gSig from a measurement.
    """
    cfg = validate_config(config)
    _derive_sizes(cfg)
    cfg["inter_session_alignment"]["Force_BV"] = bool(cfg["inter_session_alignment"]["Force_BV"])
    se = cfg["spike_extraction"]
    for key in ("bl", "c1", "sn"):
        se[key] = _parse_auto_number(se[key], f"spike_extraction.{key}")
    se["g"] = parse_number_list(se["g"], "spike_extraction.g")
    og = se["optimize_g"]
    se["optimize_g"] = 10 if og is True else int(og)  # true = refit on 10 isolated events
    return cfg


def _derive_sizes(cfg: dict) -> None:
    """Fill the gSig-derived defaults of a validated config in place (nothing while gSig is 'auto')."""
    from califlow import sizes

    gen = cfg["general"]
    if gen["gSig"] == "auto":
        return
    gsig = float(gen["gSig"])
    if not cfg["downsampling"]["BVsize"]:
        cfg["downsampling"]["BVsize"] = sizes.bv_size(gsig)
    cn = cfg["cnmfe"]
    mp = cn["min_pixel"]
    if mp in ([], None):
        cn["min_pixel"] = sizes.min_pixel(gsig)
    elif isinstance(mp, list):
        cn["min_pixel"] = int(mp[0])


def numeric_gsig(cfg: Mapping) -> float:
    """``general.gSig`` of a resolved config as a number.

    Raises
    ------
    ConfigError
        When gSig is still 'auto' (the caller must apply a measured neuron size first).
    """
    value = cfg["general"]["gSig"]
    if value == "auto":
        raise ConfigError("config key 'general.gSig' is 'auto' but no neuron size was measured for these data; "
                          "run the neuron_size step (results/ANIMAL/neuron_size.json) or set gSig to a number")
    return float(value)


def apply_neuron_size(config: Mapping, size: Mapping | None) -> dict:
    """Resolved config whose gSig follows the measured neuron size (:mod:`califlow.sizes`).

    Parameters
    ----------
    config : mapping
        A configuration (resolved or not).
    size : mapping or None
        A :class:`califlow.neuron_size.NeuronSize` as a dict (``diameter``, ``gsig``,
        ``reason``), e.g. the ``measured`` entry of ``neuron_size.json``; None when none was
        measured.

    Returns
    -------
    dict
        ``general.neuron_diameter`` = the measured diameter when it was empty; ``general.gSig``
        = the measured gSig when it was 'auto', else :func:`califlow.sizes.effective_gsig`
        of the configured one (clipped to the data's floor and ceiling); the values derived
        from gSig follow it unless they were set by hand.

    Raises
    ------
    ConfigError
        gSig is 'auto' and no neuron size is known (the measurement's reason is given).
    """
    from califlow import sizes

    cfg = validate_config(config)
    gen = cfg["general"]
    diameter = float(size["diameter"]) if size and size.get("diameter") is not None else float("nan")
    if gen.get("neuron_diameter") is None and math.isfinite(diameter):
        gen["neuron_diameter"] = round(diameter, 3)
    known = gen.get("neuron_diameter")
    if gen["gSig"] == "auto":
        if known is None:
            why = (size or {}).get("reason") or "no measurement was given"
            raise ConfigError(f"config key 'general.gSig' is 'auto' but the neuron size could not be measured "
                              f"({why}); set gSig to a number")
        new = round(float(known) / sizes.DIAMETER_PER_GSIG, 3)
    else:
        old = float(gen["gSig"])
        new = round(sizes.effective_gsig(old, known), 3)
        if new != old:
            _forget_derived(cfg, old)
    gen["gSig"] = new
    return resolve_config(cfg)


def _forget_derived(cfg: dict, gsig: float) -> None:
    """Empty the gSig-derived values that still hold what ``gsig`` derived (so they follow a new gSig)."""
    from califlow import sizes

    ds, cn = cfg["downsampling"], cfg["cnmfe"]
    if list(ds["BVsize"]) == sizes.bv_size(gsig):
        ds["BVsize"] = []
    if cn["min_pixel"] == sizes.min_pixel(gsig):
        cn["min_pixel"] = []


def read_config_file(path: str | Path) -> dict:
    """Read a YAML config file as it is (not validated), with clear errors."""
    p = Path(path)
    if not p.exists():
        raise ConfigError(f"config file {p} does not exist")
    try:
        cfg = yaml.safe_load(p.read_text()) or {}
    except yaml.YAMLError as exc:
        raise ConfigError(f"config file {p} is not valid YAML: {exc}") from None
    if not isinstance(cfg, dict):
        raise ConfigError(f"config file {p} must hold a mapping of parameter groups")
    return cfg


def load_config(path: str | Path | None = None, overrides: Mapping | None = None) -> dict:
    """Read a YAML config (or the defaults), apply overrides, validate and resolve it."""
    cfg: dict = read_config_file(path) if path is not None else {}
    if overrides:
        cfg = _merge(cfg, overrides)
    return resolve_config(cfg)


def _yaml_scalar(value) -> str:
    if value is None:
        return "null"
    if isinstance(value, bool):
        return "true" if value else "false"
    if isinstance(value, float):
        if math.isinf(value):
            return ".inf" if value > 0 else "-.inf"
        return repr(value)
    if isinstance(value, (list, tuple)):
        return "[" + ", ".join(_yaml_scalar(v) for v in value) + "]"
    if isinstance(value, dict):
        return "{" + ", ".join(f"{k}: {_yaml_scalar(v)}" for k, v in value.items()) + "}"
    if isinstance(value, str):
        return yaml.safe_dump(value, default_style=None).strip().removesuffix("...").strip()
    return str(value)


def config_template() -> str:
    """Render the default configuration as commented YAML (the content of config/config.yaml).

    Every parameter appears with its default and the schema's one-line description, grouped
    as CaliAli and the spike-extraction tool group them.
    """
    schema = config_schema()
    defaults = default_config()
    lines = [
        "# califlow configuration. Every parameter with its default and a one-line description.",
        "# Generated from src/califlow/schemas/config.schema.yaml by `califlow config`;",
        "# edit values here, and the schema to add parameters. Pixel sizes are in pixels of the",
        "# spatially downsampled movie unless stated otherwise.",
        "",
    ]

    def comment(text: str, indent: str) -> None:
        import textwrap

        for line in textwrap.wrap(" ".join(text.split()), width=92 - len(indent)):
            lines.append(f"{indent}# {line}")

    for key, sub in schema["properties"].items():
        if sub.get("type") == "object" and "properties" in sub:
            if "description" in sub:
                comment(sub["description"], "")
            lines.append(f"{key}:")
            for name, prop in sub["properties"].items():
                if "description" in prop:
                    comment(prop["description"], "  ")
                lines.append(f"  {name}: {_yaml_scalar(defaults[key][name])}")
            lines.append("")
        else:
            if "description" in sub:
                comment(sub["description"], "")
            lines.append(f"{key}: {_yaml_scalar(defaults[key])}")
            lines.append("")
    return "\n".join(lines).rstrip() + "\n"


def parameter_table() -> str:
    """Markdown table of every parameter (group, name, default, description) for the README."""
    schema = config_schema()
    defaults = default_config()
    rows = ["| group | parameter | default | description |", "|---|---|---|---|"]
    for key, sub in schema["properties"].items():
        if sub.get("type") == "object" and "properties" in sub:
            for name, prop in sub["properties"].items():
                rows.append(f"| {key} | `{name}` | `{_yaml_scalar(defaults[key][name])}` | "
                            f"{' '.join(prop.get('description', '').split())} |")
        else:
            rows.append(f"| – | `{key}` | `{_yaml_scalar(defaults[key])}` | "
                        f"{' '.join(sub.get('description', '').split())} |")
    return "\n".join(rows)
