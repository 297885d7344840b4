"""Configuration: defaults, validation messages, derived values, the generated config.yaml."""

import math
from pathlib import Path

import pytest
import yaml

from califlow import params
from califlow.params import ConfigError

REPO = Path(__file__).resolve().parents[1]
SEED_DEFAULTS = {
    # the seed tables (../shared/seeds): name -> default, by group
    "general": {"gSig": 2.5, "sf": 10, "input_files": [], "output_files": []},
    "downsampling": {"BVsize": [], "spatial_ds": 1, "temporal_ds": 1, "file_extension": "avi"},
    "preprocessing": {"neuron_enhance": True, "noise_scale": True, "detrend": 1},
    "motion_correction": {"reference_projection_rigid": "BV", "do_non_rigid": False,
                          "non_rigid_pyramid": ["BV", "BV", "neuron"], "non_rigid_batch_size": [20, 60]},
    "inter_session_alignment": {"do_alignment": True, "projections": "BV+neuron", "final_neurons": False,
                                "Force_BV": 0},
    "cnmfe": {"memory_size_to_use": None, "memory_size_per_patch": 16, "patch_dims": [64, 64],
              "w_overlap": 32, "batch_sz": 0, "min_corr": 0.1, "min_pnr": 6, "min_pixel": [],
              "with_dendrites": True, "spatial_constraints": {"connected": False, "circular": False},
              "spatial_algorithm": "hals_thresh", "deconv_flag": True,
              "deconv_options": {"type": "ar1", "method": "foopsi", "smin": -5, "optimize_pars": True,
                                 "max_tau": 100},
              "merge_thr_spatial": [0.8, 0.4, -math.inf]},
    "spike_extraction": {"bl": "auto", "c1": "auto", "g": "auto", "sn": "auto", "p": 1,
                         "method_deconvolution": "oasis", "bas_nonneg": True, "noise_method": "logmexp",
                         "noise_range": [0.25, 0.5], "s_min": None, "optimize_g": False,
                         "fudge_factor": 0.96, "lags": 5, "solvers": ["ECOS", "SCS"]},
}


def test_every_seed_parameter_has_its_default():
    cfg = params.default_config()
    for group, values in SEED_DEFAULTS.items():
        for name, default in values.items():
            assert name in cfg[group], f"{group}.{name} missing"
            assert cfg[group][name] == default, f"{group}.{name}: {cfg[group][name]!r} != {default!r}"


def test_config_yaml_is_the_generated_template():
    text = (REPO / "config" / "config.yaml").read_text()
    assert text == params.config_template(), "regenerate with: califlow config -o config/config.yaml"
    assert yaml.safe_load(text) == params.default_config()


def test_resolve_derived_defaults():
    cfg = params.resolve_config({"general": {"gSig": 3}})
    assert cfg["downsampling"]["BVsize"] == [pytest.approx(1.8), pytest.approx(2.7)]
    assert cfg["cnmfe"]["min_pixel"] == 9
    assert "gSiz" not in cfg["cnmfe"]  # derived by CnmfeOptions, not a config key
    assert cfg["cnmfe"]["memory_size_to_use"] is None  # resolved inside the job (califlow.host)
    assert cfg["spike_extraction"]["g"] is None and cfg["spike_extraction"]["bl"] is None
    cfg = params.resolve_config({"general": {"gSig": 2.5}, "spike_extraction": {"g": "1.7,-0.71", "sn": "0.3"}})
    assert cfg["cnmfe"]["min_pixel"] == 6  # MATLAB round(6.25) = 6
    assert cfg["spike_extraction"]["g"] == [1.7, -0.71]
    assert cfg["spike_extraction"]["sn"] == 0.3
    assert params.round_half_up(2.5) == 3 and params.round_half_up(5.0) == 5


@pytest.mark.parametrize("cfg, fragment", [
    ({"cnmfe": {"min_corr": 1.5}}, "'cnmfe.min_corr': value 1.5"),
    ({"cnmfe": {"minn_corr": 0.2}}, "unknown key(s) 'minn_corr'"),
    ({"motion_correction": {"reference_projection_rigid": "bv"}}, "one of 'BV', 'neuron'"),
    ({"downsampling": {"spatial_ds": 0}}, "'downsampling.spatial_ds': value 0"),
    ({"downsampling": {"BVsize": [3, 1]}}, "min <= max"),
    ({"general": {"gSig": -1}}, "'general.gSig'"),
    ({"spike_extraction": {"g": "0.9,x"}}, "'spike_extraction.g'"),
    ({"spike_extraction": {"noise_range": [0.5, 0.25]}}, "fmin < fmax"),
    ({"general": {"input_files": ["a"], "output_files": ["x", "y"]}}, "general.output_files"),
])
def test_bad_values_name_key_value_and_allowed(cfg, fragment):
    with pytest.raises(ConfigError) as err:
        params.resolve_config(cfg)
    assert fragment in str(err.value)


def test_load_config_errors(tmp_path):
    with pytest.raises(ConfigError, match="does not exist"):
        params.load_config(tmp_path / "nope.yaml")
    bad = tmp_path / "bad.yaml"
    bad.write_text("cnmfe: [1, 2\n")
    with pytest.raises(ConfigError, match="not valid YAML"):
        params.load_config(bad)


def test_parameter_table_lists_everything():
    table = params.parameter_table()
    for group, values in SEED_DEFAULTS.items():
        for name in values:
            assert f"| {group} | `{name}` |" in table


def test_readme_parameter_table_is_current():
    from califlow import _readme

    text = (REPO / "README.md").read_text()
    assert _readme.render(text) == text, "regenerate with: python -m califlow._readme README.md"


def test_resolve_is_idempotent():
    once = params.resolve_config({"general": {"gSig": 3}, "spike_extraction": {"g": "0.9"}})
    assert params.resolve_config(once) == once
