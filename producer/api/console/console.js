// The smsbulk operator console: plain JavaScript over the /v1 JSON API, no
// library, no build step. The token is asked once and kept in this tab's
// sessionStorage (never localStorage, a cookie or a URL) and sent as the
// Bearer header. Every view polls its data every POLL_MS while it is shown.
"use strict";

(() => {
  const POLL_MS = 1000;
  const TOKEN_KEY = "smsbulk.token";
  const JOBS_LIMIT = 50;
  const STATUSES = ["pending", "accepted", "rejected", "failed", "expired", "cancelled", "unknown"];
  const RATE_WINDOW_MS = 5000;
  const CHART_MAX_FILLED = 2000;
  const numberFormat = new Intl.NumberFormat("en-US");

  const $ = (selector) => document.querySelector(selector);
  const count = (n) => numberFormat.format(n);

  let view = "jobs";
  let jobId = null;
  let polling = null;
  let busy = false;
  const samples = new Map(); // job id -> [[time ms, accepted]], for recipients/s now

  class ApiError extends Error {
    constructor(status, message) {
      super(message);
      this.status = status;
    }
  }

  // --- the API --------------------------------------------------------------

  const token = () => sessionStorage.getItem(TOKEN_KEY);

  const READABLE = {
    401: "The API refused the token (401)",
    404: "Not found (404)",
    409: "Not possible in the job's state (409)",
    413: "Too large (413)",
    422: "Refused (422)",
    503: "The service is unavailable (503)",
  };

  async function failure(response) {
    let detail = "";
    try {
      const body = await response.json();
      if (body.error) detail = body.error;
      else if (body.errors) detail = body.errors.map((e) => `${e.field}: ${e.msg}`).join("; ");
    } catch (ignored) {
      detail = response.statusText;
    }
    const lead = READABLE[response.status] || `Error ${response.status}`;
    return new ApiError(response.status, detail ? `${lead}: ${detail}` : lead);
  }

  async function request(method, path, body) {
    const headers = { Authorization: `Bearer ${token()}` };
    const options = { method, headers, cache: "no-store", credentials: "omit" };
    if (body !== undefined) {
      headers["Content-Type"] = "application/json";
      options.body = JSON.stringify(body);
    }
    let response;
    try {
      response = await fetch(path, options);
    } catch (error) {
      throw new ApiError(0, "The API cannot be reached: is smsbulk api running?");
    }
    if (response.status === 401) {
      signOut("The token was refused: enter the API token again.");
      throw new ApiError(401, READABLE[401]);
    }
    if (!response.ok) throw await failure(response);
    return response;
  }

  const getJson = async (path) => (await request("GET", path)).json();
  const postJson = async (path, body) => (await request("POST", path, body)).json();
  const jobPath = (id, rest = "") => `/v1/jobs/${encodeURIComponent(id)}${rest}`;

  // --- small DOM helpers ----------------------------------------------------

  function el(tag, attributes = {}, ...children) {
    const node = document.createElement(tag);
    for (const [name, value] of Object.entries(attributes)) {
      if (value === null || value === undefined || value === false) continue;
      if (name === "text") node.textContent = value;
      else if (name.startsWith("on")) node.addEventListener(name.slice(2), value);
      else node.setAttribute(name, value === true ? "" : value);
    }
    for (const child of children) node.append(child);
    return node;
  }

  function fill(tbody, rows) {
    tbody.replaceChildren(...rows);
  }

  function notice(message) {
    const box = $("#notice");
    box.textContent = message || "";
    box.hidden = !message;
  }

  function report(error) {
    if (error instanceof ApiError) {
      if (error.status !== 401) notice(error.message);
    } else {
      notice(`Unexpected problem: ${error.message}`);
    }
  }

  const finalCount = (status) =>
    STATUSES.filter((s) => s !== "pending").reduce((sum, s) => sum + (status.counts[s] || 0), 0);

  function progress(status) {
    const done = finalCount(status);
    const percent = status.total ? Math.floor((100 * done) / status.total) : 100;
    const bar = el("progress", { max: status.total || 1, value: done, "aria-label": `${percent}%` });
    return [bar, `${percent}%`];
  }

  function rateNow(status) {
    // Recipients accepted per second over the last RATE_WINDOW_MS of polls.
    const now = Date.now();
    const seen = samples.get(status.job_id) || [];
    seen.push([now, status.counts.accepted || 0]);
    while (seen.length > 2 && now - seen[0][0] > RATE_WINDOW_MS) seen.shift();
    samples.set(status.job_id, seen);
    if (status.state !== "running" && status.state !== "queued") return "0";
    if (seen.length < 2) return "…";
    const [firstAt, firstCount] = seen[0];
    const seconds = (now - firstAt) / 1000;
    return seconds > 0 ? count(Math.round((seen[seen.length - 1][1] - firstCount) / seconds)) : "…";
  }

  // --- sign in and out --------------------------------------------------------

  function signOut(message) {
    sessionStorage.removeItem(TOKEN_KEY);
    stopPolling();
    $("#nav").hidden = true;
    for (const section of document.querySelectorAll(".view")) section.hidden = true;
    notice("");
    $("#login").hidden = false;
    $("#login-message").textContent = message || "";
    $("#token").value = "";
    $("#token").focus();
  }

  async function signIn(event) {
    event.preventDefault();
    const given = $("#token").value.trim();
    if (!given) return;
    sessionStorage.setItem(TOKEN_KEY, given);
    $("#token").value = "";
    try {
      await getJson("/v1/jobs?limit=1");
    } catch (error) {
      if (error.status !== 401) {
        sessionStorage.removeItem(TOKEN_KEY);
        $("#login-message").textContent = error.message;
      }
      return;
    }
    $("#login-message").textContent = "";
    start();
  }

  function start() {
    $("#login").hidden = true;
    $("#nav").hidden = false;
    route();
  }

  // --- views ------------------------------------------------------------------

  function route() {
    if (!token()) {
      signOut("");
      return;
    }
    const hash = location.hash.replace(/^#/, "");
    if (hash.startsWith("job/")) {
      view = "job";
      jobId = decodeURIComponent(hash.slice(4));
    } else {
      view = ["jobs", "accounts", "optouts"].includes(hash) ? hash : "jobs";
      jobId = null;
    }
    for (const section of document.querySelectorAll(".view")) {
      section.hidden = section.id !== `view-${view}`;
    }
    for (const link of document.querySelectorAll("#nav a")) {
      link.classList.toggle("current", link.dataset.view === view);
      if (link.dataset.view === view) link.setAttribute("aria-current", "page");
      else link.removeAttribute("aria-current");
    }
    notice("");
    if (view === "job") {
      $("#job-id").textContent = jobId;
      $("#ref-results").hidden = true;
    }
    startPolling();
  }

  function startPolling() {
    stopPolling();
    refresh();
    polling = setInterval(refresh, POLL_MS);
  }

  function stopPolling() {
    if (polling !== null) clearInterval(polling);
    polling = null;
  }

  async function refresh() {
    if (busy || !token()) return;
    busy = true;
    try {
      if (view === "jobs") await showJobs();
      else if (view === "job") await showJob();
      else if (view === "accounts") await showAccounts();
      else if (view === "optouts") await showOptOuts();
    } catch (error) {
      report(error);
    } finally {
      busy = false;
    }
  }

  // Jobs: newest first.
  async function showJobs() {
    const { jobs } = await getJson(`/v1/jobs?limit=${JOBS_LIMIT}`);
    const wanted = $("#search").value.trim();
    const shown = wanted ? jobs.filter((s) => s.job_id.includes(wanted)) : jobs;
    fill($("#jobs-table tbody"), shown.map(jobRow));
    notice("");
  }

  function jobRow(status) {
    // Every status with recipients, in the table's order (pending first).
    const counts = STATUSES.filter((s) => status.counts[s]).map((s) =>
      el("span", { class: "count", "data-status": s }, `${s} `, el("strong", { text: count(status.counts[s]) })),
    );
    return el(
      "tr",
      { "data-job-id": status.job_id },
      el("td", {}, el("a", { href: `#job/${encodeURIComponent(status.job_id)}`, class: "mono", text: status.job_id })),
      el("td", { class: `state state-${status.state}`, text: status.state }),
      el("td", { class: "progress-cell" }, ...progress(status)),
      el("td", { class: "counts" }, ...counts),
      el("td", { class: "num", text: rateNow(status) }),
      el("td", { text: new Date(status.created_at).toLocaleString() }),
    );
  }

  async function search(event) {
    event.preventDefault();
    const wanted = $("#search").value.trim();
    const result = $("#search-result");
    result.textContent = "";
    if (!wanted) return refresh();
    try {
      const status = await getJson(jobPath(wanted));
      location.hash = `#job/${encodeURIComponent(status.job_id)}`;
      return;
    } catch (error) {
      if (error.status !== 404) return report(error);
    }
    // Not a job id: look for the client ref among the listed jobs.
    try {
      const { jobs } = await getJson(`/v1/jobs?limit=${JOBS_LIMIT}`);
      const found = [];
      for (const status of jobs) {
        const records = await results(status.job_id, wanted);
        for (const record of records) found.push(record);
      }
      if (!found.length) {
        result.textContent = `No job id or client ref "${wanted}" among the ${jobs.length} newest jobs.`;
        return;
      }
      result.replaceChildren(
        `Client ref "${wanted}": `,
        ...found.map((r) => el("a", { href: `#job/${encodeURIComponent(r.job_id)}`, class: "mono", text: `${r.job_id} #${r.index} (${r.status})` })),
      );
      await refresh();
    } catch (error) {
      report(error);
    }
  }

  async function results(id, ref) {
    const response = await request("GET", jobPath(id, `/results?ref=${encodeURIComponent(ref)}`));
    const text = await response.text();
    return text.split("\n").filter((line) => line).map((line) => JSON.parse(line));
  }

  // A job.
  async function showJob() {
    const id = jobId;
    const [status, timeline, errors] = await Promise.all([
      getJson(jobPath(id)),
      getJson(jobPath(id, "/timeline")),
      getJson(jobPath(id, "/errors")),
    ]);
    if (id !== jobId) return;
    showStatus(status);
    drawChart($("#chart"), timeline);
    fill($("#job-errors tbody"), errors.map((group) => el(
      "tr", {},
      el("td", { class: "mono", text: group.code ?? "—" }),
      el("td", { text: group.error ?? "" }),
      el("td", { class: "num", text: count(group.count) }),
      el("td", { text: Object.entries(group.statuses).map(([s, n]) => `${s} ${count(n)}`).join(", ") }),
    )));
    $("#job-errors").hidden = !errors.length;
    $("#no-errors").hidden = errors.length > 0;
  }

  function showStatus(status) {
    $("#job-state").textContent = status.state;
    $("#job-state").className = `state state-${status.state}`;
    $("#job-rate").textContent = `(${rateNow(status)} recipients/s)`;
    const done = finalCount(status);
    $("#job-progress").max = status.total || 1;
    $("#job-progress").value = done;
    const percent = status.total ? Math.floor((100 * done) / status.total) : 100;
    $("#job-progress").setAttribute("aria-label", `${percent}%`);
    $("#job-percent").textContent = `${percent}% (${count(done)} of ${count(status.total)})`;
    const head = $("#job-counts thead tr");
    const row = $("#job-counts tbody tr");
    head.replaceChildren(...STATUSES.map((s) => el("th", { text: s })));
    row.replaceChildren(...STATUSES.map((s) => el("td", { class: "num", "data-status": s, text: count(status.counts[s] || 0) })));
    const finals = STATUSES.filter((s) => s !== "pending");
    $("#job-accounts thead").replaceChildren(el("tr", {}, el("th", { text: "account" }), ...finals.map((s) => el("th", { text: s }))));
    fill($("#job-accounts tbody"), Object.entries(status.accounts).map(([name, counts]) => el(
      "tr", {}, el("td", { text: name }), ...finals.map((s) => el("td", { class: "num", text: count(counts[s] || 0) })),
    )));
    const ended = status.state === "completed" || status.state === "cancelled";
    const can = {
      pause: ["scheduled", "queued", "running"].includes(status.state),
      resume: status.state === "paused",
      cancel: !ended,
      retry: ended && ((status.counts.failed || 0) + (status.counts.unknown || 0)) > 0,
    };
    for (const button of document.querySelectorAll("#job-actions [data-action]")) {
      button.disabled = !can[button.dataset.action];
    }
  }

  async function act(event) {
    const button = event.target.closest("[data-action]");
    if (!button || !jobId) return;
    const action = button.dataset.action;
    try {
      const status = await postJson(jobPath(jobId, `/${action}`), action === "retry" ? {} : undefined);
      notice("");
      showStatus(status);
    } catch (error) {
      report(error);
    }
  }

  async function downloadCsv() {
    if (!jobId) return;
    try {
      const response = await request("GET", jobPath(jobId, "/results?format=csv"));
      const blob = await response.blob();
      const link = el("a", { href: URL.createObjectURL(blob), download: `${jobId}.csv` });
      document.body.append(link);
      link.click();
      link.remove();
      setTimeout(() => URL.revokeObjectURL(link.href), 10000);
    } catch (error) {
      report(error);
    }
  }

  async function findRef(event) {
    event.preventDefault();
    const wanted = $("#ref").value.trim();
    if (!wanted || !jobId) return;
    try {
      const records = await results(jobId, wanted);
      $("#ref-results").hidden = false;
      fill($("#ref-results tbody"), records.length ? records.map((r) => el(
        "tr", {},
        el("td", { class: "num", text: String(r.index) }),
        el("td", { class: "mono", text: r.to }),
        el("td", { text: r.status }),
        el("td", { text: r.provider }),
        el("td", { text: r.error ?? "" }),
      )) : [el("tr", {}, el("td", { colspan: 5, text: `No recipient with client ref "${wanted}".` }))]);
    } catch (error) {
      report(error);
    }
  }

  // The chart: an SVG line of recipients accepted per second, drawn by hand
  // (a few dozen lines; no library needed). Buckets that counted nothing
  // are not sent by the API: they are drawn as zero.
  function drawChart(box, points) {
    const NS = "http://www.w3.org/2000/svg";
    const width = 640;
    const height = 180;
    const pad = { left: 48, right: 12, top: 12, bottom: 24 };
    const svg = document.createElementNS(NS, "svg");
    const make = (tag, attributes) => {
      const node = document.createElementNS(NS, tag);
      for (const [name, value] of Object.entries(attributes)) node.setAttribute(name, value);
      return node;
    };
    svg.setAttribute("viewBox", `0 0 ${width} ${height}`);
    svg.setAttribute("role", "img");
    if (!points.length) {
      svg.setAttribute("aria-label", "No recipient accepted yet");
      const text = make("text", { x: width / 2, y: height / 2, "text-anchor": "middle", class: "axis" });
      text.textContent = "No recipient accepted yet";
      svg.append(text);
      box.replaceChildren(svg);
      return;
    }
    const step = points[0].s;
    let series = points.map((p) => [p.t, p.n]);
    const span = (points[points.length - 1].t - points[0].t) / step;
    if (span < CHART_MAX_FILLED) {
      const byStart = new Map(points.map((p) => [p.t, p.n]));
      series = [];
      for (let t = points[0].t; t <= points[points.length - 1].t; t += step) {
        series.push([t, byStart.get(t) || 0]);
      }
    }
    series.push([series[series.length - 1][0] + step, series[series.length - 1][1]]);
    const t0 = series[0][0];
    const t1 = Math.max(series[series.length - 1][0], t0 + 1);
    const top = Math.max(...series.map(([, n]) => n), 1);
    const x = (t) => pad.left + ((t - t0) / (t1 - t0)) * (width - pad.left - pad.right);
    const y = (n) => height - pad.bottom - (n / top) * (height - pad.top - pad.bottom);
    const line = series.map(([t, n]) => `${x(t).toFixed(1)},${y(n).toFixed(1)}`).join(" ");
    svg.setAttribute("aria-label", `Recipients accepted per second, at most ${count(Math.round(top))}`);
    svg.append(
      make("line", { x1: pad.left, y1: y(0), x2: width - pad.right, y2: y(0), class: "axis-line" }),
      make("line", { x1: pad.left, y1: y(top), x2: pad.left, y2: y(0), class: "axis-line" }),
      make("polyline", { points: line, class: "series" }),
    );
    const label = (x0, y0, text, anchor) => {
      const node = make("text", { x: x0, y: y0, "text-anchor": anchor, class: "axis" });
      node.textContent = text;
      svg.append(node);
    };
    label(pad.left - 6, y(top) + 4, count(Math.round(top)), "end");
    label(pad.left - 6, y(0) + 4, "0", "end");
    label(pad.left, height - 6, new Date(t0 * 1000).toLocaleTimeString(), "start");
    label(width - pad.right, height - 6, `${count(Math.round(t1 - t0))} s`, "end");
    box.replaceChildren(svg);
  }

  // Accounts.
  async function showAccounts() {
    const { accounts } = await getJson("/v1/accounts");
    fill($("#accounts-table tbody"), accounts.map((a) => {
      const limits = a.limits || {};
      const mps = limits.messages_per_second;
      const state = a.stopped ? `stopped: ${a.stopped}` : a.circuit === "open" ? "circuit open" : "ok";
      const daily = limits.daily_max_parts;
      return el(
        "tr", { "data-account": a.account },
        el("td", { text: a.account }),
        el("td", { text: a.kind }),
        el("td", { class: "num", text: mps ? `${count(a.parts_per_second)} of ${count(mps)}` : count(a.parts_per_second) }),
        el("td", { text: a.limits ? `${count(mps)} parts/s, ${count(limits.requests_per_second)} requests/s, batch ${count(limits.batch_size)}` : "not published yet (no worker started)" }),
        el("td", { class: "num", text: count(a.throttled_last_minute) }),
        el("td", { class: a.stopped || a.circuit === "open" ? "state state-bad" : "state", text: state }),
        el("td", { class: "num", text: daily ? `${count(a.parts_today)} of ${count(daily)}` : count(a.parts_today) }),
      );
    }));
  }

  // Opt-outs.
  async function showOptOuts() {
    const { numbers, count: total } = await getJson("/v1/optouts");
    $("#optout-count").textContent = count(total);
    fill($("#optouts-table tbody"), numbers.map((number) => el(
      "tr", { "data-number": number },
      el("td", { class: "mono", text: number }),
      el("td", {}, el("button", { type: "button", title: `Remove ${number}`, "data-remove": number, text: "Remove" })),
    )));
  }

  async function addOptOut(event) {
    event.preventDefault();
    const number = $("#optout-number").value.trim();
    const region = $("#optout-region").value.trim().toUpperCase();
    if (!number) return;
    try {
      await postJson("/v1/optouts", region ? { numbers: [number], region } : { numbers: [number] });
      $("#optout-number").value = "";
      notice("");
      await refresh();
    } catch (error) {
      report(error);
    }
  }

  async function removeOptOut(event) {
    const button = event.target.closest("[data-remove]");
    if (!button) return;
    try {
      await request("DELETE", `/v1/optouts/${encodeURIComponent(button.dataset.remove)}`);
      notice("");
      await refresh();
    } catch (error) {
      report(error);
    }
  }

  document.addEventListener("DOMContentLoaded", () => {
    $("#login-form").addEventListener("submit", signIn);
    $("#logout").addEventListener("click", () => signOut("Signed out."));
    $("#search-form").addEventListener("submit", search);
    $("#job-actions").addEventListener("click", act);
    $("#download-csv").addEventListener("click", downloadCsv);
    $("#ref-form").addEventListener("submit", findRef);
    $("#optout-form").addEventListener("submit", addOptOut);
    $("#optouts-table").addEventListener("click", removeOptOut);
    window.addEventListener("hashchange", route);
    if (token()) start();
    else signOut("");
  });
})();
