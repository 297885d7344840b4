"use strict";
(function () {
  const SVG = "http://www.w3.org/2000/svg";
  const data = JSON.parse(document.getElementById("data").textContent);
  const col = Object.fromEntries(data.columns.map((c, i) => [c, i]));
  const K = data.rows.length;
  const original = data.rows.map((r) => r[col.status]);
  const notes = new Array(K).fill("");
  let selected = -1;
  let sortCol = null, sortDir = 1;

  function el(tag, attrs, text, ns) {
    const e = ns ? document.createElementNS(ns, tag) : document.createElement(tag);
    for (const [k, v] of Object.entries(attrs || {})) e.setAttribute(k, v);
    if (text !== undefined && text !== null) e.textContent = String(text);
    return e;
  }
  const status = (k) => data.rows[k][col.status];
  const cellId = (k) => data.rows[k][col.cell];

  // field of view: background image and one polygon per contour of every cell
  const fov = document.getElementById("fov");
  const [H, W] = data.shape;
  fov.setAttribute("viewBox", `0 0 ${W} ${H}`);
  fov.style.height = (512 * H / W) + "px";
  fov.appendChild(el("image", { href: data.image, x: 0, y: 0, width: W, height: H,
                                preserveAspectRatio: "none", style: "image-rendering: pixelated" }, null, SVG));
  const polys = data.contours.map((cs, k) => cs.map((pts) => {
    const p = el("polygon", { points: pts.map((q) => q.join(",")).join(" "), "data-cell": cellId(k) }, null, SVG);
    p.appendChild(el("title", {}, `cell ${cellId(k)}`, SVG));
    p.addEventListener("click", () => select(k));
    fov.appendChild(p);
    return p;
  }));

  // metrics table
  const thead = document.querySelector("#cells thead"), tbody = document.querySelector("#cells tbody");
  const hr = el("tr");
  data.columns.forEach((c) => {
    const th = el("th", { "data-col": c }, c);
    th.addEventListener("click", () => sortBy(c));
    hr.appendChild(th);
  });
  thead.appendChild(hr);
  const trs = data.rows.map((row, k) => {
    const tr = el("tr", { "data-cell": cellId(k) });
    row.forEach((v) => tr.appendChild(el("td", {}, v === null ? "" : v)));
    tr.addEventListener("click", () => select(k));
    tbody.appendChild(tr);
    return tr;
  });

  function sortBy(c) {
    sortDir = sortCol === c ? -sortDir : 1;
    sortCol = c;
    const i = col[c];
    const order = [...Array(K).keys()].sort((a, b) => {
      const x = data.rows[a][i], y = data.rows[b][i];
      if (x === y) return a - b;
      if (x === null || x === "") return 1;
      if (y === null || y === "") return -1;
      return (typeof x === "number" && typeof y === "number" ? x - y : String(x).localeCompare(String(y))) * sortDir;
    });
    order.forEach((k) => tbody.appendChild(trs[k]));
    thead.querySelectorAll("th").forEach((th) => {
      th.classList.toggle("asc", th.dataset.col === c && sortDir > 0);
      th.classList.toggle("desc", th.dataset.col === c && sortDir < 0);
    });
  }

  function refresh(k) {
    const s = status(k), hide = filter.value !== "all" && filter.value !== s;
    polys[k].forEach((p) => {
      p.setAttribute("class", [s, k === selected ? "selected" : "", hide ? "hidden" : ""].join(" ").trim());
    });
    trs[k].className = [s, k === selected ? "selected" : "", hide ? "hidden" : ""].join(" ").trim();
    const tds = trs[k].children;
    tds[col.status].textContent = s;
    tds[col.status].classList.toggle("changed", s !== original[k]);
    if (col.reason !== undefined) tds[col.reason].textContent = data.rows[k][col.reason] ?? "";
  }
  function summary() {
    const n = { accepted: 0, rejected: 0, undecided: 0 };
    for (let k = 0; k < K; k++) n[status(k)] = (n[status(k)] || 0) + 1;
    const changed = original.filter((s, k) => s !== status(k)).length;
    document.getElementById("summary").textContent =
      `${K} cells: ${n.accepted} accepted, ${n.rejected} rejected, ${n.undecided} undecided; ${changed} changed here`;
  }

  function traceSvg(k) {
    const t = data.traces, svg = el("svg", { id: "trace", viewBox: `0 0 ${t.n_bins} 1000`,
                                             preserveAspectRatio: "none" }, null, SVG);
    const band = (lo, hi, cls) => {
      const top = [], bottom = [];
      hi[k].forEach((v, i) => top.push(`${i},${999 - v}`, `${i + 1},${999 - v}`));
      lo[k].forEach((v, i) => bottom.push(`${i},${999 - v}`, `${i + 1},${999 - v}`));
      svg.appendChild(el("polygon", { class: cls, points: top.concat(bottom.reverse()).join(" ") }, null, SVG));
    };
    band(t.raw_min, t.raw_max, "raw");
    if (t.den_min) band(t.den_min, t.den_max, "den");
    data.sessions.slice(1).forEach((s) => {
      const x = s.start / t.n_frames * t.n_bins;
      svg.appendChild(el("line", { class: "boundary", x1: x, x2: x, y1: 0, y2: 1000 }, null, SVG));
    });
    return svg;
  }

  function select(k) {
    const prev = selected;
    selected = k;
    if (prev >= 0) refresh(prev);
    refresh(k);
    const wrap = document.getElementById("table-wrap"), tr = trs[k];
    if (tr.offsetTop < wrap.scrollTop || tr.offsetTop > wrap.scrollTop + wrap.clientHeight - tr.offsetHeight) {
      wrap.scrollTop = tr.offsetTop - wrap.clientHeight / 2;
    }
    const panel = document.getElementById("selected");
    panel.replaceChildren(el("h2", {}, `cell ${cellId(k)}`));
    const ctl = el("p");
    const sel = el("select", { id: "status" });
    ["accepted", "rejected", "undecided"].forEach((s) => {
      const o = el("option", { value: s }, s);
      if (s === status(k)) o.selected = true;
      sel.appendChild(o);
    });
    const note = el("input", { id: "note", type: "text", placeholder: "note (optional)", size: 30 });
    note.value = notes[k];
    const apply = () => {
      notes[k] = note.value;
      data.rows[k][col.status] = sel.value;
      if (col.reason !== undefined && (sel.value !== original[k] || note.value)) {
        data.rows[k][col.reason] = note.value ? `manual: ${note.value}` : "manual";
      }
      refresh(k); summary();
    };
    sel.addEventListener("change", apply);
    note.addEventListener("change", apply);
    ctl.append("status ", sel, " ", note);
    panel.appendChild(ctl);
    const crops = el("div", { class: "crops" });
    data.crops[k].png.forEach((src, j) => {
      const f = el("figure");
      f.appendChild(el("img", { src: src, alt: `cell ${cellId(k)} in ${data.sessions[j].name}` }));
      f.appendChild(el("figcaption", {}, data.sessions[j].name));
      crops.appendChild(f);
    });
    panel.appendChild(crops);
    if (data.traces) panel.appendChild(traceSvg(k));
    const m = el("div", { id: "metrics" });
    data.columns.forEach((c, i) => m.append(el("span", { class: "name" }, c), el("span", {}, data.rows[k][i] ?? "")));
    panel.appendChild(m);
  }

  function csvField(v) {
    const s = String(v ?? "");
    return /[",\n]/.test(s) ? `"${s.replace(/"/g, '""')}"` : s;
  }
  document.getElementById("download").addEventListener("click", () => {
    const lines = ["cell,status,reason"];
    for (let k = 0; k < K; k++) {
      const reason = col.reason !== undefined ? String(data.rows[k][col.reason] ?? "") : "";
      if (status(k) !== original[k] || notes[k] || reason.startsWith("manual")) {
        const note = notes[k] || reason.replace(/^manual:?\s*/, "");
        lines.push([cellId(k), status(k), note].map(csvField).join(","));
      }
    }
    const blob = new Blob([lines.join("\n") + "\n"], { type: "text/csv" });
    const a = el("a", { href: URL.createObjectURL(blob), download: "curation.csv" });
    document.body.appendChild(a); a.click(); a.remove();
  });

  const filter = document.getElementById("filter");
  filter.addEventListener("change", () => { for (let k = 0; k < K; k++) refresh(k); });
  for (let k = 0; k < K; k++) refresh(k);
  summary();
  if (K) select(0);
})();
