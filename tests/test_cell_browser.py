"""The cell browser (cells.html): its data against known footprints and traces, and the page
itself in headless Chromium (select, sort, filter, curate, download a manual table)."""

from __future__ import annotations

import json
import re
import shutil

import numpy as np
import pandas as pd
import pytest
import zarr

from califlow.cell_browser import _envelope, browser_data, contours, crop_box, trace_data, write_cell_browser
from califlow.curation import apply_manual, read_manual

H, W, T = 64, 80, 400
CENTRES = [(20, 20), (40, 60), (45, 25)]


def _footprint(centre, radius):
    yy, xx = np.mgrid[:H, :W]
    r2 = (yy - centre[0]) ** 2 + (xx - centre[1]) ** 2
    return np.where(r2 <= radius ** 2, 1.0 - 0.5 * r2 / radius ** 2, 0.0).astype(np.float32)


@pytest.fixture
def extraction(tmp_path):
    """A small cnmfe.zarr (3 cells, 2 sessions of 200 frames) and its cells.csv."""
    rng = np.random.default_rng(0)
    A = np.stack([_footprint(c, 5) for c in CENTRES])
    A_sessions = np.stack([A, A * np.array([1.0, 1.0, 0.2], np.float32)[:, None, None]])
    C = np.zeros((3, T), np.float32)
    for k, t0 in enumerate([50, 250, 120]):
        C[k, t0:] = np.exp(-np.arange(T - t0) / 20.0)
    C_raw = C + rng.normal(0, 0.05, C.shape).astype(np.float32)
    g = zarr.open_group(tmp_path / "cnmfe.zarr", mode="w")
    for name, arr in {"A": A, "A_sessions": A_sessions, "C": C, "C_raw": C_raw, "Cn": A.max(0)}.items():
        g.create_array(name, data=arr)
    g.attrs["sessions"] = [{"name": "day1", "start": 0, "stop": 200}, {"name": "day2", "start": 200, "stop": 400}]
    cells = pd.DataFrame({"cell": [0, 1, 2], "area_px": [79, 79, 79], "snr": [12.5, 30.0, 3.1],
                          "status": ["accepted", "accepted", "rejected"],
                          "reason": ["", "", "low_snr </script><b>x</b>"]})
    cells.to_csv(tmp_path / "cells.csv", index=False)
    return tmp_path


def _shoelace(poly):
    p = np.asarray(poly)
    return 0.5 * abs(np.dot(p[:, 0], np.roll(p[:, 1], 1)) - np.dot(p[:, 1], np.roll(p[:, 0], 1)))


def test_contour_outlines_the_half_maximum_region():
    a = _footprint((30, 40), 10)  # 1 - r^2 / 2R^2 >= 0.5 * 1  <=>  r <= R: the whole disk
    (poly,) = contours(a)
    assert abs(_shoelace(poly) - np.pi * 10 ** 2) / (np.pi * 10 ** 2) < 0.12
    assert np.allclose(np.mean(poly, axis=0), [40.5, 30.5], atol=0.6)  # [x, y] of the pixel centres
    two = _footprint((15, 15), 4) + _footprint((45, 60), 4)
    assert len(contours(two)) == 2
    assert contours(np.zeros((10, 10), np.float32)) == []


def test_envelope_and_scaled_traces_match_brute_force():
    rng = np.random.default_rng(1)
    C = rng.normal(size=(4, 1003)).astype(np.float32)
    lo, hi = _envelope(C, 100)
    edges = np.linspace(0, 1003, 101).astype(int)
    for b in (0, 37, 99):
        assert np.allclose(lo[:, b], C[:, edges[b]:edges[b + 1]].min(axis=1))
        assert np.allclose(hi[:, b], C[:, edges[b]:edges[b + 1]].max(axis=1))
    t = trace_data(C, None)
    raw_max = np.array(t["raw_max"])
    assert t["n_frames"] == 1003 and raw_max.shape == (4, t["n_bins"])
    assert raw_max.max(axis=1).tolist() == [999] * 4 and np.array(t["raw_min"]).min(axis=1).tolist() == [0] * 4
    bins = np.unique(np.linspace(0, 1003, t["n_bins"] + 1).astype(int))
    assert raw_max[0][np.searchsorted(bins, int(np.argmax(C[0])), side="right") - 1] == 999


def test_crop_box_holds_the_footprint_and_stays_inside_the_image():
    a = _footprint((2, 78), 4)
    ys, xs = crop_box(a[:H, :W], diameter=8)
    assert ys.start == 0 and xs.stop == W
    assert (a[ys, xs] > 0).sum() == (a > 0).sum()
    assert ys.stop - ys.start >= 2 * 1.5 * 8


def test_browser_data_carries_every_cell_session_and_escapes_the_page(extraction):
    data = browser_data(extraction / "cnmfe.zarr", extraction / "cells.csv")
    assert data["shape"] == [H, W] and [s["name"] for s in data["sessions"]] == ["day1", "day2"]
    assert len(data["contours"]) == len(data["crops"]) == len(data["rows"]) == 3
    for (cy, cx), crop in zip(CENTRES, data["crops"]):
        y0, y1, x0, x1 = crop["box"]
        assert y0 <= cy < y1 and x0 <= cx < x1 and len(crop["png"]) == 2
    den = np.array(data["traces"]["den_max"])
    assert np.argmax(den[1]) == np.argmax(den[1] >= 999)  # the second cell fires at frame 250
    assert abs(np.argmax(den[1]) / data["traces"]["n_bins"] - 250 / T) < 0.01
    page = write_cell_browser(extraction / "cells.html", extraction / "cnmfe.zarr", extraction / "cells.csv",
                              title="m1 <cells>").read_text()
    assert "<title>m1 &lt;cells&gt;</title>" in page
    payload = re.search(r'<script type="application/json" id="data">(.*?)</script>', page, re.S).group(1)
    assert json.loads(payload)["rows"][2][-1] == "low_snr </script><b>x</b>"


def test_browser_refuses_a_cells_table_of_another_extraction(extraction):
    pd.read_csv(extraction / "cells.csv").iloc[:2].to_csv(extraction / "short.csv", index=False)
    with pytest.raises(ValueError, match="short.csv: 2 rows for 3 cells"):
        browser_data(extraction / "cnmfe.zarr", extraction / "short.csv")


def _chromium():
    sync_api = pytest.importorskip("playwright.sync_api")
    exe = shutil.which("chromium") or shutil.which("chromium-browser")
    if exe is None:
        pytest.skip("no Chromium (Debian package chromium)")
    return sync_api, exe


def test_page_in_a_real_browser_curates_and_downloads_a_manual_table(extraction, tmp_path):
    sync_api, exe = _chromium()
    page_path = write_cell_browser(tmp_path / "cells.html", extraction / "cnmfe.zarr", extraction / "cells.csv")
    errors = []
    with sync_api.sync_playwright() as p:
        browser = p.chromium.launch(executable_path=exe, args=["--no-sandbox", "--disable-gpu",
                                                               "--disable-background-networking"])
        page = browser.new_page(viewport={"width": 1300, "height": 900}, accept_downloads=True)
        page.on("console", lambda m: errors.append(m.text) if m.type == "error" else None)
        page.on("pageerror", lambda e: errors.append(str(e)))
        page.goto(page_path.as_uri())
        assert page.locator("#fov polygon").count() == 3
        assert page.locator("#fov polygon.rejected").count() == 1
        page.click('#fov polygon[data-cell="1"]')
        assert page.inner_text("#selected h2") == "cell 1"
        assert page.locator("#selected .crops img").count() == 2
        assert page.locator("#trace line.boundary").count() == 1
        page.click('#cells th[data-col="snr"]')
        assert page.eval_on_selector_all("#cells tbody tr", "rs => rs.map(r => r.dataset.cell)") == ["2", "0", "1"]
        page.click('#cells tr[data-cell="0"]')
        page.select_option("#status", "rejected")
        page.fill("#note", "a double of cell 1")
        page.press("#note", "Enter")
        page.locator("#note").blur()
        assert "2 rejected" in page.inner_text("#summary") and "1 changed here" in page.inner_text("#summary")
        page.select_option("#filter", "rejected")
        assert page.locator("#cells tbody tr:not(.hidden)").count() == 2
        with page.expect_download() as info:
            page.click("#download")
        info.value.save_as(tmp_path / "manual.csv")
        page.screenshot(path=str(tmp_path / "browser.png"))
        browser.close()
    assert errors == []
    manual = read_manual(tmp_path / "manual.csv", 3)
    assert manual.to_dict("records") == [{"cell": 0, "status": "rejected", "reason": "a double of cell 1"}]
    cells = apply_manual(pd.read_csv(extraction / "cells.csv", keep_default_na=False), manual)
    assert cells.loc[0, ["status", "reason"]].tolist() == ["rejected", "manual: a double of cell 1"]
