"""The schema is the only source of a default, and nothing machine-dependent is resolved outside a job."""

from __future__ import annotations

import ast
from pathlib import Path

import pytest

from califlow import params
from califlow.host import cgroup_memory_gb, memory_budget_gb, with_memory_budget

REPO = Path(__file__).resolve().parents[1]

#: (file, function or class, parameter) whose literal default equals a schema default of the
#: same name but means something else; each with the reason.
NOT_CONFIG_DEFAULTS = {
    ("califlow/simulate/animal.py", "simulate_animal", "seed"): "the simulator's own random seed",
    ("califlow/simulate/variants.py", "with_pixel_pnr", "seed"): "the simulator's own random seed",
    ("califlow/simulate/writers.py", "write_cohort", "seed"): "the simulator's own random seed",
    ("califlow/simulate/writers.py", "write_cohort", "preset"): "the simulator's own preset argument",
    ("califlow/align/simulated.py", "projections_from_ground_truth", "seed"): "a test-image random seed",
    ("califlow/deconv/oasis.py", "oasis_ar1", "s_min"): "OASIS kernel: 0 = no minimum spike size",
    ("califlow/deconv/oasis.py", "oasis_ar2", "s_min"): "OASIS kernel: 0 = no minimum spike size",
    ("califlow/deconv/oasis.py", "oasis_with_baseline", "s_min"): "OASIS kernel: 0 = no minimum spike size",
    ("califlow/deconv/foopsi.py", "_cnmfe_options", "type"): "CaImAn-style partial deconv_options",
    ("califlow/deconv/foopsi.py", "_cnmfe_options", "method"): "CaImAn-style partial deconv_options",
    ("califlow/deconv/foopsi.py", "_cnmfe_options", "smin"): "CaImAn-style partial deconv_options",
}


def _schema_defaults() -> dict[str, list]:
    """Normalised parameter name (lower case, no underscores) -> the schema defaults of that name."""
    out: dict[str, list] = {}

    def walk(schema):
        for key, sub in schema.get("properties", {}).items():
            if sub.get("type") == "object" and "properties" in sub:
                walk(sub)
            elif sub.get("default") is not None:
                out.setdefault(key.lower().replace("_", ""), []).append(sub["default"])

    walk(params.config_schema())
    return out


def _same(node: ast.AST, defaults: list) -> bool:
    try:
        value = ast.literal_eval(node)
    except (ValueError, TypeError, SyntaxError, MemoryError, RecursionError):
        return False
    def norm(v):
        return list(v) if isinstance(v, (list, tuple)) else v

    return value is not None and any(norm(value) == norm(d) and isinstance(value, bool) == isinstance(d, bool)
                                     for d in defaults)


def _written_defaults(tree: ast.AST, defaults: dict[str, list]):
    """(owner, name, line) of every literal default equal to a same-named schema default."""
    def key(name):
        return name.lower().replace("_", "")

    for node in ast.walk(tree):
        if isinstance(node, (ast.FunctionDef, ast.AsyncFunctionDef)):
            a = node.args
            pos = a.posonlyargs + a.args
            pairs = list(zip(pos[len(pos) - len(a.defaults):], a.defaults))
            pairs += [(k, d) for k, d in zip(a.kwonlyargs, a.kw_defaults) if d is not None]
            for arg, d in pairs:
                if key(arg.arg) in defaults and _same(d, defaults[key(arg.arg)]):
                    yield node.name, arg.arg, node.lineno
            for call in ast.walk(node):  # mapping.get("key", fallback)
                if (isinstance(call, ast.Call) and isinstance(call.func, ast.Attribute) and call.func.attr == "get"
                        and len(call.args) == 2 and isinstance(call.args[0], ast.Constant)
                        and isinstance(call.args[0].value, str) and key(call.args[0].value) in defaults
                        and _same(call.args[1], defaults[key(call.args[0].value)])):
                    yield node.name, call.args[0].value, call.lineno
        elif isinstance(node, ast.ClassDef):
            for st in node.body:
                if (isinstance(st, ast.AnnAssign) and st.value is not None and isinstance(st.target, ast.Name)
                        and key(st.target.id) in defaults and _same(st.value, defaults[key(st.target.id)])):
                    yield node.name, st.target.id, st.lineno


def test_no_default_is_written_outside_the_schema():
    """A literal default equal to the schema's default of a same-named parameter is a second source."""
    defaults = _schema_defaults()
    found = set()
    files = sorted((REPO / "src" / "califlow").rglob("*.py")) + sorted((REPO / "scripts").glob("*.py"))
    for f in files:
        rel = str(f.relative_to(REPO / "src")) if "src" in f.parts else str(f.relative_to(REPO))
        for owner, name, line in _written_defaults(ast.parse(f.read_text()), defaults):
            if (rel, owner, name) not in NOT_CONFIG_DEFAULTS:
                found.add(f"{rel}:{line} {owner}: {name}")
    assert not found, "defaults written outside the schema (read them from it):\n" + "\n".join(sorted(found))


def test_the_scan_finds_a_second_default():
    """The scan of the test above sees a signature default, a dataclass field and a .get fallback."""
    tree = ast.parse("def f(x, *, min_pnr=6.0, gSig=2.5): return cfg.get('merge_thr', 0.65)\n"
                     "class O:\n    max_iter: int = 4\n")
    names = {name for _, name, _ in _written_defaults(tree, _schema_defaults())}
    assert names == {"min_pnr", "gSig", "merge_thr", "max_iter"}


@pytest.mark.parametrize("config", [
    {},
    {"general": {"gSig": 3.2}, "cnmfe": {"min_pixel": [7]}},
    {"general": {"gSig": "auto"}},
    {"spike_extraction": {"g": "1.7,-0.71", "sn": "0.5", "optimize_g": True},
     "inter_session_alignment": {"Force_BV": 1}},
])
def test_resolve_config_is_idempotent(config):
    once = params.resolve_config(config)
    assert params.resolve_config(once) == once
    assert params.validate_config(once) == once  # a resolved config is a valid config


def test_resolution_never_asks_the_machine(monkeypatch):
    """resolve_config (what reaches a rule's params) is the same whatever RAM the host has."""
    import psutil

    def no_host_query():
        raise AssertionError("resolve_config asked the host for its memory")

    monkeypatch.setattr(psutil, "virtual_memory", no_host_query)
    cfg = params.resolve_config({"general": {"gSig": 3.0}})
    assert cfg["cnmfe"]["memory_size_to_use"] is None


def test_the_job_resolves_its_memory_budget(monkeypatch, tmp_path):
    import califlow.host as host

    monkeypatch.setattr(host, "physical_memory_gb", lambda: 64.0)
    monkeypatch.setattr(host, "cgroup_memory_gb", lambda: None)
    assert memory_budget_gb(12.0, 4000) == (12.0, "config")  # a configured value wins
    assert memory_budget_gb(None, 5000) == (4.0, "resources.mem_mb")  # the request less 1 GB
    assert memory_budget_gb(None, None) == (64.0, "physical memory")
    monkeypatch.setattr(host, "cgroup_memory_gb", lambda: 2.5)
    assert memory_budget_gb(None, 5000) == (2.5, "cgroup")
    cfg = with_memory_budget(params.resolve_config({}), 5000)
    assert cfg["cnmfe"]["memory_size_to_use"] == 2.5
    assert params.validate_config(cfg)["cnmfe"]["memory_size_to_use"] == 2.5  # still a valid config


def test_cgroup_limit_is_read(tmp_path):
    limited, unlimited = tmp_path / "memory.max", tmp_path / "max"
    limited.write_text("2147483648\n")
    unlimited.write_text("max\n")
    assert cgroup_memory_gb((str(tmp_path / "absent"), str(limited))) == pytest.approx(2.147483648)
    assert cgroup_memory_gb((str(unlimited),)) is None
