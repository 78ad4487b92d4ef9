// The analytics page: the figures of GET /api/analytics (botkit/analytics.py, docs/analytics.md)
// as key figures, uPlot charts (vendored, /static/vendor) and tables. Text only, never HTML.
"use strict";

(() => {
  const { el, api } = window.BotkitStaff;
  const $ = (id) => document.getElementById(id);
  const DAY = 86400;
  const state = { me: null, charts: [], report: null };

  // The same formatting as `botkit report` (botkit/app/cli/report.py): tests compare them.
  function share(value) {
    return value === null || value === undefined ? "-" : (100 * value).toFixed(1) + "%";
  }
  function seconds(value) {
    if (value === null || value === undefined) return "-";
    if (value < 120) return value.toFixed(1) + " s";
    return value < 7200 ? (value / 60).toFixed(1) + " min" : (value / 3600).toFixed(1) + " h";
  }
  const plural = (n, one, many) => n + " " + (n === 1 ? one : many || one + "s");

  function isoDay(date) { return date.toISOString().slice(0, 10); }
  function todayUTC() { const d = new Date(); return new Date(Date.UTC(d.getUTCFullYear(), d.getUTCMonth(), d.getUTCDate())); }

  function setStatus(text, kind) {
    const node = $("status");
    node.textContent = text || "";
    node.className = "status" + (kind ? " " + kind : "");
  }

  // -- the range: the query string is the page's state -------------------------------------------
  function readRange() {
    const q = new URLSearchParams(location.search);
    if (!q.has("since") && !q.has("until")) {
      const until = todayUTC();
      const since = new Date(until.getTime() - 29 * DAY * 1000);
      return { since: isoDay(since), until: isoDay(until), bucket: q.get("bucket") || "day" };
    }
    return { since: q.get("since") || "", until: q.get("until") || "", bucket: q.get("bucket") || "day" };
  }

  function showRange(range) {
    $("since").value = range.since;
    $("until").value = range.until;
    $("bucket").value = range.bucket === "week" ? "week" : "day";
  }

  function rangeFromForm() {
    return { since: $("since").value, until: $("until").value, bucket: $("bucket").value };
  }

  async function load(range, push) {
    const query = new URLSearchParams({ since: range.since, until: range.until, bucket: range.bucket });
    if (push) history.replaceState(null, "", "/analytics?" + query.toString());
    setStatus("Loading…");
    document.body.dataset.loading = "1";
    try {
      const report = await api("GET", "/api/analytics?" + query.toString());
      state.report = report;
      render(report);
      setStatus("");
    } catch (error) {
      setStatus(error.message, "error");
    } finally {
      delete document.body.dataset.loading;
    }
  }

  // -- rendering ---------------------------------------------------------------------------------
  function kpi(id, value, note) {
    $("kpi-" + id).textContent = String(value);
    $("kpi-" + id + "-note").textContent = note || "";
  }

  function render(r) {
    const c = r.conversations, t = r.times, s = r.satisfaction, f = r.feedback;
    const since = r.range.since ? r.range.since.slice(0, 10) : "start";
    const until = r.range.until ? isoDay(new Date(Date.parse(r.range.until) - 1)) : "now";
    $("range-label").textContent = since + " – " + until + " (UTC), by " + r.range.bucket;
    kpi("conversations", c.total, c.contained + " contained · " + c.handed_off + " handed off");
    kpi("containment", share(c.containment), "resolved without a person");
    const top = r.handoffs.by_reason[0];
    kpi("handoffs", r.handoffs.total, top ? "most: " + top.name + " (" + top.count + ")" : "");
    kpi("turns", r.turns.total, r.turns.customer + " customer · " + r.turns.bot + " bot · " + r.turns.agent + " agent");
    kpi("first-response", seconds(t.first_response.median_s),
        "p90 " + seconds(t.first_response.p90_s) + " · " + plural(t.first_response.count, "conversation"));
    kpi("agent-first-response", seconds(t.agent_first_response.median_s),
        "p90 " + seconds(t.agent_first_response.p90_s) + " · " + plural(t.agent_first_response.count, "hand-off"));
    kpi("resolution", seconds(t.resolution.median_s),
        "p90 " + seconds(t.resolution.p90_s) + " · " + plural(t.resolution.count, "closed conversation"));
    kpi("csat", share(s.csat), "mean " + (s.mean === null ? "-" : s.mean) + " · " + s.rated + " rated");
    kpi("thumbs", share(f.up_share), f.up + " up · " + f.down + " down");
    kpi("unanswered", r.unanswered.total, plural(r.unanswered.clusters.length, "group"));

    barTable($("handoffs-reason"), r.handoffs.by_reason, "No hand-offs.");
    barTable($("handoffs-rule"), r.handoffs.by_rule, "No hand-offs.");
    clusters(r.unanswered);
    articles(r.top_articles);
    thumbedDown(r.thumbed_down);
    charts(r);
  }

  function barTable(table, items, empty) {
    const body = table.tBodies[0];
    const most = Math.max(1, ...items.map((i) => i.count));
    if (!items.length) { body.replaceChildren(el("tr", {}, el("td", { class: "muted", text: empty }))); return; }
    body.replaceChildren(...items.map((i) => {
      const bar = el("span", { class: "bar" });
      bar.style.width = (100 * i.count / most).toFixed(1) + "%";
      return el("tr", { "data-name": i.name }, el("td", { class: "name", text: i.name }),
                el("td", { class: "barcell" }, bar), el("td", { class: "count", text: String(i.count) }));
    }));
  }

  function clusters(unanswered) {
    const open = unanswered.open_proposals || 0;
    $("proposal-count").textContent = " (" + plural(open, "open proposal") + ")";
    const list = $("unanswered");
    if (!unanswered.clusters.length) {
      list.replaceChildren(el("li", { class: "muted", text: "Every question got an answer." }));
      return;
    }
    list.replaceChildren(...unanswered.clusters.map((c) => el("li", { class: "cluster" },
      el("span", { class: "count", text: "×" + c.count }),
      el("span", { class: "question", text: c.question }),
      c.examples.length > 1 ? el("span", { class: "examples muted", text: "also: " + c.examples.slice(1).join(" · ") }) : null,
      el("span", { class: "convs muted", text: plural(c.conversations.length, "conversation") + ": " + c.conversations.join(", ") }),
      c.proposal ? el("a", { class: "proposal", href: "/kb#proposals", "data-id": c.proposal.id,
                             text: "FAQ proposal: " + c.proposal.title + " (" + plural(c.proposal.count, "conversation") + ")" }) : null)));
  }

  function articles(items) {
    const body = $("top-articles").tBodies[0];
    if (!items.length) { body.replaceChildren(el("tr", {}, el("td", { class: "muted", colspan: 4, text: "No answers cited an article." }))); return; }
    body.replaceChildren(...items.map((a) => el("tr", { "data-id": a.id },
      el("td", {}, el("span", { text: a.title }), el("small", { text: " " + a.id })),
      el("td", { class: "num", text: String(a.citations) }), el("td", { class: "num", text: String(a.up) }),
      el("td", { class: "num", text: String(a.down) }))));
  }

  function thumbedDown(items) {
    const list = $("thumbed-down");
    if (!items.length) { list.replaceChildren(el("li", { class: "muted", text: "No answer was thumbed down." })); return; }
    list.replaceChildren(...items.map((d) => el("li", { class: "down" },
      el("div", { class: "q" }, el("strong", { text: d.question || "(no question)" }),
         el("small", { text: " " + d.at.slice(0, 16).replace("T", " ") + " · " + d.conversation + " #" + d.turn })),
      el("div", { class: "a", text: d.answer }),
      d.sources.length ? el("div", { class: "src muted", text: "cited: " + d.sources.map((s) => s.title).join(", ") }) : null)));
  }

  // -- charts (uPlot) ----------------------------------------------------------------------------
  function charts(r) {
    for (const chart of state.charts) chart.destroy();
    state.charts = [];
    const rows = r.series;
    $("no-data").hidden = rows.some((s) => s.conversations || s.turns || s.handoffs);
    const xs = rows.map((s) => Date.parse(s.bucket + "T00:00:00Z") / 1000);
    const step = (r.range.bucket === "week" ? 7 : 1) * DAY;
    const col = (key, scale) => rows.map((s) => (s[key] === null ? null : s[key] * (scale || 1)));
    const bars = (align) => window.uPlot.paths.bars({ size: [0.4, 60], align });
    // x ticks on the buckets themselves (at most ~12), counts in whole numbers
    const every = Math.max(1, Math.ceil(xs.length / 12));
    const xAxis = { splits: () => xs.filter((_, i) => i % every === 0),
                    values: (u, splits) => splits.map((v) => isoDay(new Date(v * 1000)).slice(5)) };
    const COUNTS = [1, 2, 5, 10, 20, 50, 100, 200, 500, 1000, 2000, 5000, 10000, 20000, 50000, 100000];
    const countAxis = (extra) => Object.assign({ incrs: COUNTS }, extra || {});
    const base = (node, series, axes) => ({
      width: Math.max(280, node.clientWidth), height: 220,
      tzDate: (ts) => window.uPlot.tzDate(new Date(ts * 1000), "Etc/UTC"),
      scales: { x: { time: true, range: (u, min, max) => [min - step / 2, max + step / 2] },
                pct: { range: [0, 100] }, turns: { range: (u, min, max) => [0, Math.max(1, max) * 1.1] } },
      series: [{ value: (u, v) => (v === null ? "" : isoDay(new Date(v * 1000))) }, ...series],
      axes: axes || [xAxis, countAxis()],
      legend: { live: false },  // series names only (live values read "--" until hovered; the cards hold the figures)
    });
    const draw = (id, series, data, axes) => {
      const node = $(id);
      node.replaceChildren();
      state.charts.push(new window.uPlot(base(node, series, axes), [xs, ...data], node));
    };
    draw("chart-volume", [
      { label: "Conversations", stroke: "#2f6fdf", fill: "rgba(47,111,223,0.55)", paths: bars(-1) },
      { label: "Contained", stroke: "#1f8a4c", fill: "rgba(31,138,76,0.55)", paths: bars(1) },
      { label: "Turns", stroke: "#667085", width: 2, points: { show: true }, scale: "turns" },
    ], [col("conversations"), col("contained"), col("turns")],
    [xAxis, countAxis(), countAxis({ scale: "turns", side: 1, grid: { show: false } })]);
    draw("chart-containment", [
      { label: "Containment %", stroke: "#1f8a4c", width: 2, scale: "pct", points: { show: true },
        value: (u, v) => (v === null ? "-" : v.toFixed(1) + "%") },
      { label: "Hand-offs", stroke: "#b7791f", fill: "rgba(183,121,31,0.5)", paths: bars(0) },
    ], [col("containment", 100), col("handoffs")], [xAxis, { scale: "pct", label: "%" }, countAxis({ side: 1, grid: { show: false } })]);
    draw("chart-feedback", [
      { label: "Thumbs up", stroke: "#1f8a4c", fill: "rgba(31,138,76,0.55)", paths: bars(-1) },
      { label: "Thumbs down", stroke: "#c23b32", fill: "rgba(194,59,50,0.55)", paths: bars(1) },
      { label: "Unanswered", stroke: "#667085", width: 2, points: { show: true } },
    ], [col("up"), col("down"), col("unanswered")]);
  }

  function resize() {
    for (const chart of state.charts) {
      const node = chart.root.parentNode;
      if (node) chart.setSize({ width: Math.max(280, node.clientWidth), height: 220 });
    }
  }

  // -- start -------------------------------------------------------------------------------------
  async function signOut() {
    try {
      await fetch("/signout", { method: "POST", headers: { "X-CSRF-Token": state.me ? state.me.csrf : "" },
                                credentials: "same-origin" });
    } finally {
      location.assign("/signin");
    }
  }

  async function start() {
    try {
      state.me = await api("GET", "/api/auth/me");
    } catch (error) {
      setStatus(error.message, "error");
      return;
    }
    window.BotkitStaff.setCsrf(state.me.csrf);
    $("who").textContent = state.me.name + " (" + state.me.role + ")";
    $("console-link").hidden = !state.me.can.console;
    $("kb-link").hidden = !state.me.can.kb;
    $("signout").addEventListener("click", signOut);
    $("range-form").addEventListener("submit", (event) => { event.preventDefault(); load(rangeFromForm(), true); });
    for (const button of document.querySelectorAll(".presets button")) {
      button.addEventListener("click", () => {
        const bucket = $("bucket").value;
        if (button.dataset.days === "all") {
          showRange({ since: "", until: "", bucket });
        } else {
          const until = todayUTC();
          showRange({ since: isoDay(new Date(until.getTime() - (Number(button.dataset.days) - 1) * DAY * 1000)),
                      until: isoDay(until), bucket });
        }
        load(rangeFromForm(), true);
      });
    }
    let timer = 0;
    window.addEventListener("resize", () => { clearTimeout(timer); timer = setTimeout(resize, 150); });
    const range = readRange();
    showRange(range);
    await load(range, false);
  }

  start();
})();
