"""The rules' conda environment (``snakemake --sdm conda``) and the exact pins.

No conda is needed: the environment is "created" by Snakemake's own ``Env.create``
(snakemake/deployment/conda.py), with only the conda commands replaced. Snakemake copies the
env file to ``<conda-prefix>/<hash>.yaml`` (conda then runs pip from that folder, so local pip
paths resolve there) and the post-deploy script to ``<conda-prefix>/<hash>.post-deploy.sh``,
which it runs for real here, in the "environment", from the run's working directory. The
tests check that califlow ends up installed from this repository.
"""

from __future__ import annotations

import importlib.util
import os
import re
import types
from pathlib import Path

import pytest
import yaml
from packaging.requirements import Requirement
from packaging.utils import canonicalize_name
from snakemake.deployment.conda import Env
from snakemake.exceptions import CreateCondaEnvironmentException
from snakemake.shell import shell
from snakemake.sourcecache import LocalSourceFile, SourceCache, infer_source_file

REPO = Path(__file__).resolve().parents[1]
ENV_FILE = REPO / "envs" / "califlow.yaml"


def _lock():
    spec = importlib.util.spec_from_file_location("califlow_envs_lock", REPO / "envs" / "lock.py")
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


def _conda_directives() -> list[tuple[Path, str]]:
    """``(rule file, path as written)`` of every ``conda:`` directive in workflow/rules."""
    found = []
    for smk in sorted((REPO / "workflow" / "rules").glob("*.smk")):
        found += [(smk, m) for m in re.findall(r"^\s*conda:\s*\n\s*[\"']([^\"']+)[\"']", smk.read_text(), re.M)]
    return found


def _is_califlow_source(folder: Path) -> bool:
    pyproject = folder / "pyproject.toml"
    return pyproject.is_file() and re.search(r'^name = "califlow"', pyproject.read_text(), re.M) is not None


class _FakeConda:
    """What Env needs of snakemake's Conda: the platform, and a command run in the env."""

    platform = "linux-64"

    def shellcmd(self, env_address, cmd):
        return f'PATH="{env_address}/bin:$PATH"; export PATH; {cmd}'


def _deploy(env_file: Path, *, workdir: Path, conda_prefix: Path, monkeypatch) -> list[Path]:
    """Create the env of ``env_file`` the way Snakemake does; the folders califlow is installed from."""
    workflow = types.SimpleNamespace(
        sourcecache=SourceCache(conda_prefix.parent / "source_cache"),
        persistence=types.SimpleNamespace(conda_env_path=str(conda_prefix),
                                          conda_env_archive_path=str(conda_prefix.parent / "conda-archive")),
        deployment_settings=types.SimpleNamespace(apptainer_args=""),
        runtime_paths=[],
    )
    env = Env(workflow, env_file=infer_source_file(str(env_file)), envs_dir=str(conda_prefix))
    env._conda = _FakeConda()  # the lazy property's cache: no conda binary is looked up
    installs: list[Path] = []
    log = conda_prefix.parent / "python-calls.log"
    real_check_output = shell.check_output

    def check_output(cmd, **kwargs):
        if not re.search(r"\bconda (env )?create\b", cmd):
            return real_check_output(cmd, **kwargs)  # the post-deploy script, for real
        target_file, prefix = re.search(r'--file "([^"]+)" --prefix "([^"]+)"', cmd).groups()
        # conda env create: pip installs the pip list with the env file's folder as cwd
        spec = yaml.safe_load(Path(target_file).read_text())
        pip = next((d["pip"] for d in spec["dependencies"] if isinstance(d, dict) and "pip" in d), [])
        for entry in pip:
            local = re.sub(r"^(-e|--editable)\s+", "", entry.strip())
            if local.startswith((".", "/", "file:")) or local != entry.strip():
                installs.append((Path(target_file).parent / local.removeprefix("file:")).resolve())
        # a "python" that records its calls, for the post-deploy script
        (Path(prefix) / "bin").mkdir(parents=True)
        stub = Path(prefix) / "bin" / "python"
        stub.write_text(f'#!/bin/sh\nprintf "%s\\0" "$PWD" "$@" >> "{log}"\nprintf "\\n" >> "{log}"\n')
        stub.chmod(0o755)
        return ""

    monkeypatch.setattr(shell, "check_output", check_output)
    monkeypatch.chdir(workdir)
    env_path = env.create()
    assert Path(env_path).parent == conda_prefix
    if env.post_deploy_file:
        assert (Path(env_path + ".post-deploy.sh")).is_file()  # where Snakemake ran it from
    for line in log.read_text().splitlines() if log.exists() else []:
        cwd, *args = line.rstrip("\0").split("\0")
        if args[:3] == ["-m", "pip", "install"]:
            installs.append((Path(cwd) / args[-1]).resolve())
    return installs


def test_rules_use_the_califlow_env():
    directives = _conda_directives()
    assert directives, "no conda: directive found in workflow/rules"
    for smk, path in directives:
        # Snakemake resolves a conda: path against the folder of the .smk file
        assert (smk.parent / path).resolve() == ENV_FILE, (smk.name, path)


def test_env_file_has_no_local_pip_path():
    spec = yaml.safe_load(ENV_FILE.read_text())
    pip = next(d["pip"] for d in spec["dependencies"] if isinstance(d, dict) and "pip" in d)
    for entry in pip:
        assert Requirement(entry).name, entry  # a requirement, not '-e ..' or a path


def test_post_deploy_script_is_found_next_to_the_env_file(tmp_path):
    workflow = types.SimpleNamespace(sourcecache=SourceCache(tmp_path / "cache"),
                                     persistence=types.SimpleNamespace(conda_env_path=str(tmp_path)),
                                     deployment_settings=types.SimpleNamespace(apptainer_args=""), runtime_paths=[])
    for smk, path in _conda_directives():
        env = Env(workflow, env_file=infer_source_file(os.path.join(smk.parent, path)))
        assert isinstance(env.post_deploy_file, LocalSourceFile)
        assert Path(env.post_deploy_file.get_path_or_uri(secret_free=True)).resolve() == ENV_FILE.with_suffix(
            ".post-deploy.sh")


@pytest.mark.parametrize("where", ["repository", "inside the repository (--directory)", "elsewhere"])
def test_conda_env_installs_califlow_from_this_repository(where, tmp_path, monkeypatch):
    monkeypatch.delenv("CALIFLOW_SOURCE_DIR", raising=False)
    if where == "repository":
        workdir, prefix = REPO, tmp_path / "conda"  # like --conda-prefix: nothing written to the repo
    elif where == "elsewhere":
        workdir = tmp_path / "run"
        workdir.mkdir()
        prefix = workdir / ".snakemake" / "conda"  # Snakemake's default prefix
        monkeypatch.setenv("CALIFLOW_SOURCE_DIR", str(REPO))
    else:
        workdir, prefix = REPO / "workflow", tmp_path / "conda"
    prefix.mkdir(parents=True)
    installs = _deploy(ENV_FILE, workdir=workdir, conda_prefix=prefix, monkeypatch=monkeypatch)
    assert installs == [REPO]
    assert _is_califlow_source(installs[0])


def test_conda_env_outside_the_repository_names_the_fix(tmp_path, monkeypatch):
    monkeypatch.delenv("CALIFLOW_SOURCE_DIR", raising=False)
    prefix = tmp_path / ".snakemake" / "conda"
    prefix.mkdir(parents=True)
    with pytest.raises(CreateCondaEnvironmentException, match="CALIFLOW_SOURCE_DIR"):
        _deploy(ENV_FILE, workdir=tmp_path, conda_prefix=prefix, monkeypatch=monkeypatch)


def test_a_relative_pip_path_resolves_against_the_conda_prefix(tmp_path, monkeypatch):
    """The former layout ('-e ..' in the pip list) installs from .snakemake/, not the repository."""
    repo = tmp_path / "repo"
    (repo / "envs").mkdir(parents=True)
    (repo / "pyproject.toml").write_text('[project]\nname = "califlow"\n')
    old = repo / "envs" / "califlow.yaml"
    old.write_text("channels: [conda-forge]\ndependencies:\n  - python=3.11\n  - pip\n  - pip:\n      - \"-e ..\"\n")
    prefix = repo / ".snakemake" / "conda"
    prefix.mkdir(parents=True)
    installs = _deploy(old, workdir=repo, conda_prefix=prefix, monkeypatch=monkeypatch)
    assert installs == [repo / ".snakemake"]
    assert not _is_califlow_source(installs[0])


def test_env_file_pins_the_constraints():
    lock = _lock()
    runtime, extra = lock.read_constraints()
    assert runtime and extra
    assert lock.env_pins() == runtime
    assert not set(runtime) & set(extra)
    assert not {"califlow", "pip", "setuptools", "wheel"} & (set(runtime) | set(extra))


def test_constraints_satisfy_pyproject_ranges():
    import tomllib

    project = tomllib.loads((REPO / "pyproject.toml").read_text())["project"]
    runtime, extra = _lock().read_constraints()
    every = {**runtime, **extra}
    for spec, pins in [(r, runtime) for r in project["dependencies"]] + [
            (r, every) for reqs in project["optional-dependencies"].values() for r in reqs]:
        req = Requirement(spec)
        name = canonicalize_name(req.name)
        assert name in pins, f"{req.name} ({spec}) is not pinned in envs/constraints.txt"
        assert req.specifier.contains(pins[name], prereleases=True), f"{name}=={pins[name]} is outside {spec}"
