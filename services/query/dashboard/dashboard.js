// The citylake dashboard: device map, live values, active alerts, lake stats.
//
// Everything the service returns is data, and much of it comes from devices
// (a GB28181 camera names itself): it reaches the page only as text nodes and
// attribute values (createElement, append, setAttribute), never as markup.
// Nothing here assigns innerHTML or similar; a test checks that.
"use strict";

(() => {
  const FAST_REFRESH_MS = 5000; // live values and alerts
  const SLOW_REFRESH_MS = 30000; // the map's devices and the lake stats change slowly
  const REQUEST_TIMEOUT_MS = 8000;
  const CITY_ROWS = 100; // devices listed for the city-wide metric
  const KEY_STORAGE = "citylake-api-key";
  const SVG_NS = "http://www.w3.org/2000/svg";
  const MAP = { width: 1000, height: 640, pad: 60 };
  const LABEL_LIMIT = 30; // more devices than this and names would only hide each other
  const QUALITY = ["good", "uncertain", "bad"];

  const state = {
    key: null,
    devices: new Map(), // device_id -> device of /v1/dashboard/devices
    selected: null,
    pinned: false, // the card stays after a click, goes after a hover
    metric: null,
    metrics: new Set(), // every metric seen on a device so far
    latest: new Map(), // device_id -> {at, readings|null}
    problems: new Map(), // panel -> message
  };

  // ---- DOM helpers: text and attributes only ----------------------------

  function el(tag, attrs, ...children) {
    const node = document.createElement(tag);
    for (const [name, value] of Object.entries(attrs || {})) node.setAttribute(name, String(value));
    node.append(...children.map((c) => (c instanceof Node ? c : String(c ?? ""))));
    return node;
  }

  function svg(tag, attrs, ...children) {
    const node = document.createElementNS(SVG_NS, tag);
    for (const [name, value] of Object.entries(attrs || {})) node.setAttribute(name, String(value));
    node.append(...children.map((c) => (c instanceof Node ? c : String(c ?? ""))));
    return node;
  }

  const $ = (id) => document.getElementById(id);

  // Classes come from a fixed list, never from the data itself.
  function statusClass(status) {
    const s = String(status || "").toLowerCase();
    return s === "online" || s === "offline" ? `status-${s}` : "status-unknown";
  }

  function severityClass(severity) {
    const s = String(severity || "").toLowerCase();
    return ["critical", "major", "warning", "minor", "info"].includes(s) ? `severity-${s}` : "severity-other";
  }

  function deviceLabel(id) {
    const device = state.devices.get(id);
    return device && device.name ? `${device.name} (${id})` : id;
  }

  function formatValue(reading) {
    if (reading.value === null || reading.value === undefined) return reading.text ?? "";
    const v = reading.value;
    return Math.abs(v) >= 1000 || Number.isInteger(v) ? v.toFixed(0) : String(Number(v.toFixed(3)));
  }

  // Local time, short: the time alone for today, else date and minute. The
  // full instant is in the cell's title.
  function formatTime(iso) {
    if (!iso) return "";
    const at = new Date(iso);
    if (Number.isNaN(at.getTime())) return String(iso);
    const two = (n) => String(n).padStart(2, "0");
    const time = `${two(at.getHours())}:${two(at.getMinutes())}`;
    if (at.toDateString() === new Date().toDateString()) return `${time}:${two(at.getSeconds())}`;
    return `${at.getFullYear()}-${two(at.getMonth() + 1)}-${two(at.getDate())} ${time}`;
  }

  function timeCell(iso) {
    return el("td", { class: "time", title: iso || "" }, formatTime(iso));
  }

  function formatBytes(n) {
    const units = ["B", "KiB", "MiB", "GiB", "TiB"];
    let value = n;
    let unit = 0;
    while (value >= 1024 && unit < units.length - 1) {
      value /= 1024;
      unit += 1;
    }
    return unit === 0 ? `${value} B` : `${value.toFixed(1)} ${units[unit]}`;
  }

  // ---- The API key --------------------------------------------------------

  function storage() {
    try {
      return window.sessionStorage;
    } catch {
      return null; // storage disabled: the key lives as long as the page
    }
  }

  function remember(key) {
    try {
      storage()?.setItem(KEY_STORAGE, key);
    } catch {
      // storage full or refused: the key still works until the page is closed
    }
  }

  // The key arrives as #key=... (never sent to the server) or ?key=...; it is
  // kept for this tab and taken out of the address bar, so it is not left in
  // history, bookmarks or a screenshot of the URL.
  function takeKey() {
    const url = new URL(window.location.href);
    const hash = new URLSearchParams(url.hash.slice(1));
    const given = hash.get("key") || url.searchParams.get("key");
    if (given) {
      remember(given);
      hash.delete("key");
      url.searchParams.delete("key");
      url.hash = hash.toString();
      window.history.replaceState(null, "", url.toString());
      return given;
    }
    return storage()?.getItem(KEY_STORAGE) ?? null;
  }

  class HttpError extends Error {
    constructor(status, detail) {
      super(detail);
      this.status = status;
    }
  }

  async function getJson(path) {
    const headers = { Accept: "application/json" };
    if (state.key) headers["X-API-Key"] = state.key;
    const abort = new AbortController();
    const timer = setTimeout(() => abort.abort(), REQUEST_TIMEOUT_MS);
    try {
      const response = await fetch(path, { headers, signal: abort.signal, cache: "no-store" });
      if (!response.ok) {
        let detail = response.statusText;
        try {
          detail = (await response.json()).detail || detail;
        } catch {
          // not JSON: the status text says enough
        }
        throw new HttpError(response.status, typeof detail === "string" ? detail : JSON.stringify(detail));
      }
      return await response.json();
    } finally {
      clearTimeout(timer);
    }
  }

  // ---- Problems and refreshing -------------------------------------------

  function showProblems() {
    const box = $("problem");
    const messages = [...new Set(state.problems.values())];
    box.hidden = messages.length === 0;
    box.replaceChildren(messages.join(" · "));
  }

  function report(panel, error) {
    if (error === null) {
      state.problems.delete(panel);
    } else if (error instanceof HttpError && error.status === 401) {
      state.problems.set(panel, "this service needs an API key");
      $("key-form").hidden = false;
    } else {
      const reason = error.name === "AbortError" ? "no answer in time" : error.message;
      state.problems.set(panel, `${panel}: ${reason}`);
    }
    showProblems();
    if (error === null) $("updated").replaceChildren(`updated ${new Date().toLocaleTimeString()}`);
  }

  // ---- The map -------------------------------------------------------------

  // Equirectangular, with longitude shrunk by cos(latitude) so a city's
  // streets keep their shape; at city scale that is as good as Web Mercator.
  function projection(bounds) {
    let { min_lon: minLon, min_lat: minLat, max_lon: maxLon, max_lat: maxLat } = bounds;
    const minSpan = 0.005; // about 500 m: one device, or a row of them, still gets a frame
    if (maxLon - minLon < minSpan) {
      const centre = (minLon + maxLon) / 2;
      [minLon, maxLon] = [centre - minSpan / 2, centre + minSpan / 2];
    }
    if (maxLat - minLat < minSpan) {
      const centre = (minLat + maxLat) / 2;
      [minLat, maxLat] = [centre - minSpan / 2, centre + minSpan / 2];
    }
    const kx = Math.max(0.01, Math.cos((((minLat + maxLat) / 2) * Math.PI) / 180));
    const scale = Math.min(
      (MAP.width - 2 * MAP.pad) / ((maxLon - minLon) * kx),
      (MAP.height - 2 * MAP.pad) / (maxLat - minLat),
    );
    const ox = (MAP.width - (maxLon - minLon) * kx * scale) / 2;
    const oy = (MAP.height - (maxLat - minLat) * scale) / 2;
    return {
      x: (lon) => ox + (lon - minLon) * kx * scale,
      y: (lat) => MAP.height - oy - (lat - minLat) * scale,
      lon: (x) => minLon + (x - ox) / (kx * scale),
      lat: (y) => minLat + (MAP.height - oy - y) / scale,
    };
  }

  function niceStep(span) {
    const steps = [0.0005, 0.001, 0.002, 0.005, 0.01, 0.02, 0.05, 0.1, 0.2, 0.5, 1, 2, 5, 10, 20, 30, 45];
    return steps.find((s) => span / s <= 8) ?? 90;
  }

  function graticule(p) {
    const group = svg("g", { class: "graticule" });
    const [west, east] = [p.lon(0), p.lon(MAP.width)];
    const [south, north] = [p.lat(MAP.height), p.lat(0)];
    const step = niceStep(Math.max(east - west, north - south));
    const digits = Math.max(0, -Math.floor(Math.log10(step)));
    // Integer multiples of the step, so the labels carry no rounding noise;
    // none so close to the right or bottom edge that it would be clipped.
    for (let i = Math.ceil(west / step); i * step <= east; i += 1) {
      const x = p.x(i * step);
      group.append(svg("line", { x1: x, y1: 0, x2: x, y2: MAP.height }));
      if (x < MAP.width - 70) {
        group.append(svg("text", { x: x + 4, y: MAP.height - 8 }, `${(i * step).toFixed(digits)}°`));
      }
    }
    for (let i = Math.ceil(south / step); i * step <= north; i += 1) {
      const y = p.y(i * step);
      group.append(svg("line", { x1: 0, y1: y, x2: MAP.width, y2: y }));
      if (y > 20 && y < MAP.height - 30) {
        group.append(svg("text", { x: 6, y: y - 4 }, `${(i * step).toFixed(digits)}°`));
      }
    }
    return group;
  }

  function drawMap(body) {
    const map = $("map");
    const located = body.devices.filter((d) => d.longitude !== null && d.latitude !== null);
    map.replaceChildren(svg("rect", { class: "sea", x: 0, y: 0, width: MAP.width, height: MAP.height }));
    if (body.bounds === null || located.length === 0) {
      const message =
        body.total === 0 ? "The registry has no devices yet" : "No device in the registry has a position";
      map.append(svg("text", { class: "empty", x: MAP.width / 2, y: MAP.height / 2 }, message));
      return;
    }
    const p = projection(body.bounds);
    const rings = svg("g", { class: "rings" });
    const markers = svg("g", { class: "markers" });
    const labels = svg("g", { class: "labels" });
    for (const d of located) {
      const [cx, cy] = [p.x(d.longitude).toFixed(1), p.y(d.latitude).toFixed(1)];
      if (d.active_alerts > 0) rings.append(svg("circle", { class: "alert-ring", cx, cy, r: 16 }));
      const marker = svg("circle", {
        class: `marker ${statusClass(d.status)}${d.device_id === state.selected ? " selected" : ""}`,
        cx,
        cy,
        r: 9,
        tabindex: 0,
        "data-device-id": d.device_id,
      });
      marker.append(svg("title", {}, `${deviceLabel(d.device_id)} — ${d.status || "status unknown"}`));
      markers.append(marker);
      if (located.length <= LABEL_LIMIT) {
        // Right of the marker, or left of it near the right edge.
        const left = Number(cx) > MAP.width * 0.7;
        const at = {
          x: Number(cx) + (left ? -20 : 20),
          y: Number(cy) + 5,
          "text-anchor": left ? "end" : "start",
        };
        labels.append(svg("text", at, d.name || d.device_id));
      }
    }
    map.append(graticule(p), rings, labels, markers);
  }

  function markerOf(target) {
    return target instanceof Element ? target.closest("circle.marker") : null;
  }

  function markSelected() {
    for (const marker of $("map").querySelectorAll("circle.marker")) {
      marker.classList.toggle("selected", marker.getAttribute("data-device-id") === state.selected);
    }
  }

  // ---- The card: a device and its latest values, beside its marker --------

  async function latestOf(id, maxAgeMs) {
    const cached = state.latest.get(id);
    if (cached && Date.now() - cached.at < maxAgeMs) return cached.readings;
    let readings = null;
    try {
      readings = (await getJson(`v1/devices/${encodeURIComponent(id)}/latest`)).readings;
    } catch (error) {
      if (!(error instanceof HttpError && error.status === 404)) throw error;
      // 404: the device has no readings in the lake yet
    }
    state.latest.set(id, { at: Date.now(), readings });
    for (const r of readings || []) state.metrics.add(r.metric);
    return readings;
  }

  function readingsList(readings) {
    if (readings === null) return el("p", { class: "muted" }, "no readings in the lake yet");
    const list = el("ul", { class: "readings" });
    for (const r of readings) {
      list.append(
        el("li", {}, el("span", { class: "metric" }, r.metric), ` ${formatValue(r)} ${r.unit ?? ""}`),
      );
    }
    return list;
  }

  function deviceFacts(device, id) {
    const facts = el("dl", {});
    const add = (term, value) => {
      if (value !== null && value !== undefined && value !== "") {
        facts.append(el("dt", {}, term), el("dd", {}, value));
      }
    };
    add("id", id);
    if (device) {
      add("status", device.status || "never reported");
      add("type", device.type);
      add("protocol", device.protocol);
      add("address", device.address);
      add("civil code", device.civil_code);
      add("last seen", formatTime(device.last_seen));
      add("active alerts", device.active_alerts || null);
    } else {
      add("registry", "not in the registry");
    }
    return facts;
  }

  async function showCard(marker) {
    const id = marker.getAttribute("data-device-id");
    const device = state.devices.get(id);
    const card = $("card");
    card.replaceChildren(
      el("strong", {}, device?.name || id),
      deviceFacts(device, id),
      el("p", { class: "muted" }, "…"),
    );
    const frame = $("map-frame").getBoundingClientRect();
    const dot = marker.getBoundingClientRect();
    // Beside the marker, flipped to its left in the right half of the map.
    const left = dot.right - frame.left + 8;
    card.style.left = left > frame.width / 2 ? "" : `${left}px`;
    card.style.right = left > frame.width / 2 ? `${frame.right - dot.left + 8}px` : "";
    card.style.top = `${Math.max(0, dot.top - frame.top - 10)}px`;
    card.hidden = false;
    card.setAttribute("data-device-id", id);
    const readings = await latestOf(id, FAST_REFRESH_MS);
    if (card.getAttribute("data-device-id") === id) card.lastChild.replaceWith(readingsList(readings));
  }

  function hideCard() {
    state.pinned = false;
    $("card").hidden = true;
    $("card").removeAttribute("data-device-id");
  }

  // ---- Panels --------------------------------------------------------------

  async function refreshDevices() {
    const body = await getJson("v1/dashboard/devices");
    state.devices = new Map(body.devices.map((d) => [d.device_id, d]));
    const unplaced = body.total - body.located;
    const shown = body.truncated ? `, first ${body.devices.length} shown` : "";
    $("device-count").replaceChildren(
      `${body.total} in the registry, ${body.located} on the map` +
        (unplaced > 0 ? `, ${unplaced} without a position` : "") +
        shown,
    );
    drawMap(body);
    fillDeviceSelect();
  }

  function fillDeviceSelect() {
    const select = $("device-select");
    const ids = [...state.devices.keys()];
    if (state.selected !== null && !state.devices.has(state.selected)) ids.unshift(state.selected);
    select.replaceChildren(...ids.map((id) => el("option", { value: id }, deviceLabel(id))));
    if (state.selected !== null) select.value = state.selected;
  }

  function fillMetricSelect() {
    const select = $("metric-select");
    const metrics = [...state.metrics].sort();
    if (state.metric === null && metrics.length > 0) state.metric = metrics[0];
    if (state.metric !== null && !state.metrics.has(state.metric)) metrics.unshift(state.metric);
    const current = [...select.options].map((o) => o.value).join("\n");
    if (current !== metrics.join("\n")) {
      select.replaceChildren(...metrics.map((m) => el("option", { value: m }, m)));
    }
    if (state.metric !== null) select.value = state.metric;
  }

  async function refreshSelected() {
    const id = state.selected;
    if (id === null) return;
    const readings = await latestOf(id, 0);
    if (id !== state.selected) return; // another device was chosen meanwhile
    $("device-detail").replaceChildren(
      el("strong", {}, state.devices.get(id)?.name || id),
      deviceFacts(state.devices.get(id), id),
    );
    const body = $("device-latest").tBodies[0];
    if (readings === null) {
      body.replaceChildren(
        el("tr", {}, el("td", { colspan: 5, class: "muted" }, "no readings in the lake yet")),
      );
    } else {
      body.replaceChildren(
        ...readings.map((r) =>
          el(
            "tr",
            { "data-metric": r.metric },
            el("td", {}, r.metric),
            el("td", { class: "num" }, formatValue(r)),
            el("td", {}, r.unit ?? ""),
            timeCell(r.ts),
            el("td", {}, QUALITY[r.quality] ?? String(r.quality)),
          ),
        ),
      );
    }
    fillMetricSelect();
  }

  async function refreshCityMetric() {
    const metric = state.metric;
    if (metric === null) return;
    const page = await getJson(`v1/metrics/${encodeURIComponent(metric)}/latest?limit=${CITY_ROWS}`);
    if (metric !== state.metric) return;
    const numbers = page.items.map((i) => i.value).filter((v) => typeof v === "number");
    const more = page.next_cursor ? `first ${page.items.length} devices` : `${page.items.length} devices`;
    let summary = `${metric}: ${more}`;
    if (numbers.length > 0) {
      const mean = numbers.reduce((a, b) => a + b, 0) / numbers.length;
      const fmt = (v) => formatValue({ value: v });
      const [low, high] = [Math.min(...numbers), Math.max(...numbers)];
      summary += ` · min ${fmt(low)} · mean ${fmt(mean)} · max ${fmt(high)}`;
    }
    $("metric-summary").replaceChildren(summary);
    $("metric-latest").tBodies[0].replaceChildren(
      ...page.items.map((item) =>
        el(
          "tr",
          { "data-device-id": item.device_id, class: "pickable" },
          el("td", {}, deviceLabel(item.device_id)),
          el("td", { class: "num" }, formatValue(item)),
          el("td", {}, item.unit ?? ""),
          timeCell(item.ts),
        ),
      ),
    );
  }

  async function refreshLive() {
    await refreshSelected();
    await refreshCityMetric();
  }

  async function refreshAlerts() {
    const body = await getJson("v1/dashboard/alerts?state=active&limit=100");
    $("alert-count").replaceChildren(
      body.total > body.alerts.length
        ? `${body.total}, newest ${body.alerts.length} shown`
        : String(body.total),
    );
    const list = $("alerts");
    if (body.alerts.length === 0) {
      list.replaceChildren(el("li", { class: "muted" }, "no active alerts"));
      return body;
    }
    list.replaceChildren(
      ...body.alerts.map((a) => {
        const what = a.metric
          ? `${a.metric} = ${a.value === null ? "?" : formatValue({ value: a.value })}`
          : "";
        return el(
          "li",
          {
            "data-alert-id": a.alert_id,
            "data-device-id": a.device_id,
            class: `pickable ${severityClass(a.severity)}`,
          },
          el("span", { class: "severity" }, a.severity),
          el("span", { class: "rule" }, a.rule),
          el("span", { class: "device" }, a.device_name ? `${a.device_name} (${a.device_id})` : a.device_id),
          el("span", { class: "what" }, what),
          el("span", { class: "since muted" }, `since ${formatTime(a.started_at)}`),
          a.message ? el("span", { class: "message" }, a.message) : "",
        );
      }),
    );
    return body;
  }

  async function refreshLake() {
    const body = await getJson("v1/dashboard/lake");
    $("lake-stats").tBodies[0].replaceChildren(
      ...body.tables.map((t) =>
        el(
          "tr",
          { "data-table": t.table },
          el("td", {}, t.table),
          el("td", { class: "num" }, t.files.toLocaleString()),
          el("td", { class: "num" }, t.rows.toLocaleString()),
          el("td", { class: "num" }, formatBytes(t.bytes)),
          timeCell(t.first),
          timeCell(t.last),
        ),
      ),
    );
  }

  // ---- Choosing a device -----------------------------------------------------

  let refreshLiveNow = async () => {};

  function select(id) {
    if (id === null || id === state.selected) return;
    state.selected = id;
    markSelected();
    fillDeviceSelect();
    refreshLiveNow();
  }

  function wire() {
    const map = $("map");
    map.addEventListener("mouseover", (event) => {
      const marker = markerOf(event.target);
      if (marker && !state.pinned) showCard(marker).catch((error) => report("card", error));
    });
    map.addEventListener("mouseout", (event) => {
      if (markerOf(event.target) && !state.pinned) hideCard();
    });
    map.addEventListener("click", (event) => {
      const marker = markerOf(event.target);
      if (!marker) {
        hideCard();
        return;
      }
      state.pinned = true;
      select(marker.getAttribute("data-device-id"));
      showCard(marker).catch((error) => report("card", error));
    });
    map.addEventListener("keydown", (event) => {
      const marker = markerOf(event.target);
      if (marker && (event.key === "Enter" || event.key === " ")) {
        event.preventDefault();
        marker.dispatchEvent(new MouseEvent("click", { bubbles: true }));
      }
    });
    $("device-select").addEventListener("change", (event) => select(event.target.value));
    $("metric-select").addEventListener("change", (event) => {
      state.metric = event.target.value;
      refreshLiveNow();
    });
    for (const id of ["alerts", "metric-latest"]) {
      $(id).addEventListener("click", (event) => {
        const row = event.target instanceof Element ? event.target.closest("[data-device-id]") : null;
        if (row) select(row.getAttribute("data-device-id"));
      });
    }
    $("key-form").addEventListener("submit", (event) => {
      event.preventDefault();
      state.key = $("key-input").value;
      remember(state.key);
      $("key-input").value = "";
      $("key-form").hidden = true;
      start();
    });
  }

  let timers = [];

  async function start() {
    for (const timer of timers) clearInterval(timer);
    timers = [];
    const devices = schedule(SLOW_REFRESH_MS, "devices", refreshDevices);
    const alerts = schedule(FAST_REFRESH_MS, "alerts", refreshAlerts);
    const lake = schedule(SLOW_REFRESH_MS, "lake", refreshLake);
    refreshLiveNow = schedule(FAST_REFRESH_MS, "live values", refreshLive);
    await Promise.allSettled([devices(), alerts(), lake()]);
    if (state.selected === null) {
      // The address's ?device=, else the device of the newest active alert,
      // else the first device on the map, else the first in the registry.
      const wanted = new URL(window.location.href).searchParams.get("device");
      const alerted = $("alerts").querySelector("li[data-device-id]")?.getAttribute("data-device-id");
      const onMap = $("map").querySelector("circle.marker")?.getAttribute("data-device-id");
      const first = state.devices.keys().next().value;
      select(wanted || alerted || onMap || first || null);
    } else {
      refreshLiveNow();
    }
  }

  // Runs ``task`` every ``ms`` and returns a function that runs it now. A task
  // never overlaps itself: a tick while it runs is skipped, so a slow lake
  // does not pile up requests; a call while it runs (a device just chosen)
  // runs it once more right after, so the choice shows at once.
  function schedule(ms, panel, task) {
    let running = false;
    let again = false;
    const run = async (now) => {
      if (running) {
        again = again || now;
        return;
      }
      running = true;
      try {
        do {
          again = false;
          try {
            await task();
            report(panel, null);
          } catch (error) {
            report(panel, error);
          }
        } while (again);
      } finally {
        running = false;
      }
    };
    timers.push(setInterval(() => run(false), ms));
    return () => run(true);
  }

  document.addEventListener("DOMContentLoaded", () => {
    state.key = takeKey();
    state.metric = new URL(window.location.href).searchParams.get("metric");
    wire();
    start();
  });
})();
