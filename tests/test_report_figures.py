"""What a user sees in the report: alignment overlays, footprint labels, the configuration
page, quiet store opens and the spike tool's summaries."""

from __future__ import annotations

import logging
import re
import warnings

import numpy as np
import pytest

from califlow import qc
from califlow.align.pipeline import Alignment
from califlow.align.qc import overlay_figure, overlay_rgb, save_overlays, session_colours
from califlow.params import resolve_config

REPO_ROOT = __import__("pathlib").Path(__file__).resolve().parents[1]


# ------------------------------------------------------------------ alignment overlays
def _alignment(n: int, shape=(40, 48)) -> Alignment:
    rng = np.random.default_rng(n)
    imgs = rng.random((n,) + shape).astype(np.float32)
    names = [f"session_{i:02d}_day{i + 1}" for i in range(n)]
    qc_images = {st: {"bv": imgs, "neuron": imgs[::-1].copy()} for st in ("none", "non-rigid")}
    metrics = {st: {ch: {"mean_corr": 0.9} for ch in ("bv", "neuron")} for st in qc_images}
    return Alignment(names=names, maps=np.zeros((n, 2) + shape, np.float32), session_shapes=[shape] * n,
                     path="BV", bv_score=3.0, fallback=False, translations=np.zeros((n, 2)),
                     offsets=np.zeros((n, 2)), box=(0, shape[0], 0, shape[1]), fov={}, metrics=metrics,
                     info={"qc_sessions": names}, qc=qc_images)


@pytest.mark.parametrize("n", [2, 4, 8])
def test_overlay_shows_every_session_with_a_legend_and_a_title_that_fits(n, tmp_path):
    al = _alignment(n)
    title = "before alignment: " + ", ".join(al.names)
    fig = overlay_figure(al, stages=["none"], title=title)
    assert len(fig.legends) == 1
    legend = fig.legends[0]
    assert [t.get_text() for t in legend.get_texts()] == al.names
    colours = {tuple(np.round(h.get_facecolor()[:3], 3)) for h in legend.legend_handles}
    assert len(colours) == n  # one colour per session
    fig.canvas.draw()
    renderer = fig.canvas.get_renderer()
    box, page = fig._suptitle.get_window_extent(renderer), fig.bbox
    assert box.x0 >= page.x0 and box.x1 <= page.x1 and box.y1 <= page.y1  # not clipped
    assert fig._suptitle.get_text().replace("\n", " ") == title
    import matplotlib.pyplot as plt

    plt.close(fig)
    save_overlays(al, tmp_path / "qc.png", title=title)
    assert (tmp_path / "qc.png").read_bytes()[:4] == b"\x89PNG"


@pytest.mark.parametrize("n", [1, 2, 3, 4, 5, 8])
def test_overlay_of_equal_images_is_grey(n):
    img = np.random.default_rng(0).random((30, 30)).astype(np.float32)
    rgb = overlay_rgb(np.stack([img] * n))
    assert rgb.shape == (30, 30, 3)
    np.testing.assert_allclose(rgb[..., 0], rgb[..., 1], atol=1e-6)
    np.testing.assert_allclose(rgb[..., 1], rgb[..., 2], atol=1e-6)
    assert len({tuple(c) for c in session_colours(n)}) == n


def test_two_and_three_session_overlays_keep_their_colours():
    a, b, c = np.random.default_rng(1).random((3, 20, 20)).astype(np.float32)
    two, three = overlay_rgb(np.stack([a, b])), overlay_rgb(np.stack([a, b, c]))
    np.testing.assert_allclose(two[..., 0], two[..., 2])  # magenta / green
    assert not np.allclose(two[..., 0], two[..., 1])
    assert not np.allclose(three[..., 0], three[..., 1]) and not np.allclose(three[..., 1], three[..., 2])


def test_a_four_session_alignment_overlays_all_four():
    from califlow.align import align_options, align_sessions

    rng = np.random.default_rng(0)
    base = rng.random((64, 64)).astype(np.float32)
    proj = [{"bv": base, "cn": base, "mean": base, "pnr": base} for _ in range(4)]
    al = align_sessions(proj, [f"d{i}" for i in range(4)],
                        align_options({"inter_session_alignment": {"do_alignment": False}}))
    fig = overlay_figure(al, stages=["none"])
    assert [t.get_text() for t in fig.legends[0].get_texts()] == ["d0", "d1", "d2", "d3"]


# ------------------------------------------------------------------ footprints
def test_every_cell_is_numbered_on_the_footprints_figure(tmp_path):
    rng = np.random.default_rng(3)
    H, W, K = 90, 110, 80  # more than the 60 labels of before
    yy, xx = np.mgrid[:H, :W]
    A = np.stack([np.exp(-((yy - rng.uniform(5, H - 5)) ** 2 + (xx - rng.uniform(5, W - 5)) ** 2) / 8)
                  for _ in range(K)])
    fig = qc.footprints_plot(A, rng.random((H, W)))
    ax = fig.axes[0]
    labels = [t.get_text() for t in ax.texts]
    assert len(labels) == K and sorted(labels, key=int) == [str(k) for k in range(K)]
    assert all(0 <= t.get_position()[0] <= W - 1 and 0 <= t.get_position()[1] <= H - 1 for t in ax.texts)
    assert all(t.get_fontsize() >= 3.5 for t in ax.texts)
    import matplotlib.pyplot as plt

    plt.close(fig)
    assert qc.footprints_figure(A, rng.random((H, W)), tmp_path / "f.png").stat().st_size > 5000


# ------------------------------------------------------------------ configuration page
def test_configuration_page_lists_every_parameter_and_the_sessions(tmp_path):
    cfg = resolve_config({"general": {"gSig": 3.0}, "cnmfe": {"min_pnr": 8}})
    sessions = [{"animal": "m1", "session": "s1", "path": "data/m1/s1", "fps": None}]
    page = qc.configuration_page(cfg, tmp_path / "configuration.html", sessions=sessions).read_text()
    for key in ("general.gSig", "cnmfe.min_pnr", "spike_extraction.s_min", "keep_intermediates"):
        assert f"<code>{key}</code>" in page, key
    changed = re.findall(r'<tr class="changed"><td><code>([^<]+)</code>', page)
    assert "general.gSig" in changed and "cnmfe.min_pnr" in changed and "spike_extraction.p" not in changed
    assert "data/m1/s1" in page and "<h2>sessions</h2>" in page


def test_the_report_has_the_configuration_section_its_front_page_promises():
    rules = (REPO_ROOT / "workflow" / "rules" / "export.smk").read_text()
    rule = rules[rules.index("rule report_configuration:"):]
    category = re.search(r'category="([^"]*Configuration[^"]*)"', rule).group(1)
    assert '"results/configuration.html"' in rule and "log:" in rule and "benchmark:" in rule
    assert (REPO_ROOT / "workflow" / "report" / "configuration.rst").exists()
    assert f'"{category}"' in (REPO_ROOT / "workflow" / "report" / "workflow.rst").read_text()
    assert 'COHORT_TARGETS.append("results/configuration.html")' in rules


# ------------------------------------------------------------------ stores
def test_a_store_with_snakemakes_timestamp_opens_and_lists_without_warning(tmp_path):
    from califlow.io.store import SNAKEMAKE_TIMESTAMP, open_group

    g = open_group(tmp_path / "x.zarr", "w")
    g.create_array("a", shape=(3,), dtype="f4")
    g.create_group("sub")
    (tmp_path / "x.zarr" / SNAKEMAKE_TIMESTAMP).write_text("")  # as Snakemake leaves it
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        g = open_group(tmp_path / "x.zarr")
        assert sorted(g.keys()) == ["a", "sub"] and len(g) == 2
        assert "a" in g and g["a"].shape == (3,)
        assert sorted(open_group(tmp_path / "x.zarr", "r+").group_keys()) == ["sub"]


# ------------------------------------------------------------------ spike tool summaries
def _csv(tmp_path):
    rng = np.random.default_rng(0)
    t = np.arange(600) / 20.0
    Y = np.abs(rng.normal(0, 1, (2, 600))).cumsum(axis=1) % 5
    src = tmp_path / "traces.csv"
    src.write_text("Time(s)/Cell Status,C0,C1\n,accepted,accepted\n"
                   + "".join(f"{ti:.3f},{a:.5f},{b:.5f}\n" for ti, a, b in zip(t, *Y)))
    return src


def test_the_cli_prints_each_summary_once(tmp_path):
    """On a real console (a subprocess: in pytest the root logger has handlers of its own)."""
    import subprocess
    import sys

    proc = subprocess.run([sys.executable, "-m", "califlow.cli", "deconvolve", str(_csv(tmp_path)), "--out",
                           str(tmp_path / "o"), "--g", "0.95"], capture_output=True, text=True, timeout=600)
    assert proc.returncode == 0, proc.stderr
    console = proc.stdout + proc.stderr
    assert console.count("traces: 2 cells (0 failed)") == 1, console
    assert "traces: 2 cells (0 failed)" in proc.stdout


def test_a_workflow_job_logs_each_summary_once_and_shows_it_once(tmp_path, capsys):
    import types

    smk = types.SimpleNamespace(input=[str(_csv(tmp_path))], output=[str(tmp_path / "spikes")],
                                log=[str(tmp_path / "job.log")], threads=1, wildcards=types.SimpleNamespace(),
                                params=types.SimpleNamespace(spike_extraction={"g": [0.95]}), config={})
    import importlib.util

    spec = importlib.util.spec_from_file_location("spike_script", REPO_ROOT / "scripts" / "spike_extraction.py")
    script = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(script)
    script.main(smk)
    logged = (tmp_path / "job.log").read_text()
    captured = capsys.readouterr()
    assert logged.count("2 cells (0 failed)") == 1, logged
    assert (captured.out + captured.err).count("2 cells (0 failed)") == 1, captured
    assert not logging.getLogger("califlow").handlers
