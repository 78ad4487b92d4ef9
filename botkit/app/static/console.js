// Agent console. Live updates come over one websocket (no polling); every piece of text that
// comes from a conversation is put into the page with textContent / text nodes, never as HTML.
"use strict";

(() => {
  const $ = (id) => document.getElementById(id);
  const state = {
    me: null,
    csrf: "",
    waiting: [],
    mine: [],
    clockOffsetMs: 0, // server time minus browser time
    current: null, // {conversation, handoff, mine, turns}
    unread: new Set(),
    agents: [],
    canned: [],
    searchPage: 1,
    ws: null,
    backoffMs: 1000,
  };

  const { el, api } = window.BotkitStaff; // staff.js: text-only DOM and the JSON API

  function setStatus(message, kind) {
    const status = $("status");
    status.textContent = message || "";
    status.className = "status" + (kind ? " " + kind : "");
  }

  function duration(seconds) {
    const s = Math.max(0, Math.floor(seconds));
    if (s < 60) return s + " s";
    const m = Math.floor(s / 60);
    if (m < 60) return m + " min";
    const h = Math.floor(m / 60);
    return h + " h " + String(m % 60).padStart(2, "0") + " min";
  }

  function clock(iso) {
    const d = new Date(iso);
    return isNaN(d) ? "" : d.toLocaleTimeString([], { hour: "2-digit", minute: "2-digit" });
  }

  const conversationPath = (id, action) =>
    "/api/console/conversations/" + encodeURIComponent(id) + (action ? "/" + action : "");

  // -- queue -----------------------------------------------------------------------------------
  function applyQueue(message) {
    state.waiting = message.waiting || [];
    state.mine = message.mine || [];
    if (message.now) state.clockOffsetMs = Date.parse(message.now) - Date.now();
    const others = message.assigned_to_others || 0;
    $("others").textContent = others ? others + " other conversation(s) are with colleagues." : "";
    renderQueue();
  }

  function queueItem(h) {
    const id = h.conversation;
    const current = state.current && state.current.conversation.id === id;
    const waited = el("span", { class: "waited", "data-created": h.created_at });
    const button = el(
      "button",
      {
        type: "button",
        class: "queue-item" + (current ? " active" : "") + (state.unread.has(id) ? " unread" : ""),
        onclick: () => openConversation(id),
      },
      el("div", { class: "row" }, el("span", { class: "who", text: h.customer_name || h.customer || id }), waited),
      el("div", { class: "reason", text: (h.reason || "").replace(/_/g, " ") + " · " + h.channel }),
      h.summary ? el("div", { class: "q-summary", text: h.summary }) : null,
    );
    return el("li", null, button);
  }

  function renderQueue() {
    $("waiting").replaceChildren(...state.waiting.map(queueItem));
    $("mine").replaceChildren(...state.mine.map(queueItem));
    $("waiting-count").textContent = String(state.waiting.length);
    $("mine-count").textContent = String(state.mine.length);
    $("waiting-empty").hidden = state.waiting.length > 0;
    $("mine-empty").hidden = state.mine.length > 0;
    document.title = (state.waiting.length ? "(" + state.waiting.length + ") " : "") + "Agent console";
    tick();
  }

  // Waiting times count up locally between updates (a display timer, not polling).
  function tick() {
    const now = Date.now() + state.clockOffsetMs;
    for (const node of document.querySelectorAll(".waited[data-created]")) {
      const seconds = (now - Date.parse(node.getAttribute("data-created"))) / 1000;
      node.textContent = duration(seconds);
      node.classList.toggle("long", seconds > 300);
    }
  }

  // -- conversation ----------------------------------------------------------------------------
  function turnLabel(t) {
    if (t.kind === "customer") return "Customer";
    if (t.kind === "bot") return "Bot";
    if (t.kind === "agent") return t.author || "Agent";
    if (t.kind === "note") return "Internal note · " + (t.author || "");
    return "System";
  }

  function turnNode(t) {
    const declined = t.kind === "bot" && t.action === "no_answer"; // the bot said it couldn't find an answer
    const node = el(
      "li",
      { class: "turn turn-" + t.kind + (declined ? " turn-no-answer" : ""), "data-seq": t.seq,
        "data-action": t.action || null },
      el("div", { class: "turn-head" }, el("span", { class: "who", text: turnLabel(t) }),
        t.responder ? el("span", { class: "responder", title: t.author || null, text: t.responder }) : null,
        declined ? el("span", { class: "no-answer", text: "no answer" }) : null,
        t.kind === "bot" && typeof t.confidence === "number"
          ? el("span", { class: "confidence", title: "confidence (a probability)", text: Math.round(t.confidence * 100) + "%" })
          : null,
        el("time", { text: clock(t.at) })),
      el("div", { class: "turn-text", text: t.text }),
    );
    if (t.kind === "agent") { // an agent's answer can become a knowledge-base entry (reviewed in the KB editor)
      node.append(el("button", { type: "button", class: "secondary save-kb", "data-seq": t.seq,
        text: "Save this answer to the KB", onclick: () => proposeTurn(t.seq) }));
    }
    if (t.fallback) {
      // The configured responder's own text was replaced (e.g. an ungrounded generated reply).
      node.append(el("div", { class: "fallback", "data-fallback": t.fallback,
        text: "Fallback: " + t.fallback.replace(/_/g, " ") + (t.fallback_detail ? " — " + t.fallback_detail : "") }));
    }
    if (t.sources && t.sources.length) {
      node.append(el("ul", { class: "sources" }, ...t.sources.map((s) =>
        el("li", { text: s.title + " (" + s.id + ", " + Number(s.score).toFixed(2) + ")" }))));
    }
    if (t.escalation) {
      node.append(el("div", { class: "escalation", text: "Handed over: " + t.escalation.reason.replace(/_/g, " ") +
        (t.escalation.detail ? " — " + t.escalation.detail : "") }));
    }
    if (t.candidate) {
      node.append(el("details", { class: "candidate" }, el("summary", { text: "What the bot would have said" }),
        el("p", { text: t.candidate })));
    }
    return node;
  }

  function renderControls() {
    const c = state.current;
    if (!c) return;
    const h = c.handoff;
    const status = c.conversation.status;
    $("conv-title").textContent = (c.profile && c.profile.name) || c.conversation.customer || c.conversation.id;
    const bits = [c.conversation.channel, "conversation " + c.conversation.id];
    if (h && h.status === "waiting") bits.push("waiting for an agent (" + h.reason.replace(/_/g, " ") + ")");
    else if (h && h.status === "assigned") bits.push(c.mine ? "you have it" : "with " + h.agent);
    else bits.push(status === "closed" ? "closed" : "with the bot");
    $("conv-meta").textContent = bits.join(" · ");
    $("conv-summary").textContent = h && h.summary ? h.summary : "";
    $("take").hidden = !(h && h.status === "waiting");
    $("return").disabled = !c.mine;
    $("close").disabled = !c.mine;
    $("return").hidden = $("close").hidden = !(c.mine || (h && h.status === "waiting"));
    $("text").disabled = $("send").disabled = $("note").disabled = !c.mine;
    $("composer").classList.toggle("disabled", !c.mine);
    $("text").placeholder = c.mine ? "Write to the customer… (Ctrl+Enter sends)" : "Take the conversation to reply.";
  }

  // -- customer panel, labels, reassign -----------------------------------------------------
  function renderCustomer() {
    const c = state.current;
    const p = c.profile || {};
    const rows = [["Name", p.name || "not given"], ["E-mail", p.email || "not given"],
      ["Channel", p.channel || c.conversation.channel], ["User id", p.user_id || c.conversation.customer]];
    if (p.username) rows.push(["Username", "@" + p.username]);
    if (p.language) rows.push(["Language", p.language]);
    $("profile").replaceChildren(...rows.flatMap(([k, v]) => [el("dt", { text: k }), el("dd", { text: v })]));
    renderLabels();
    const agents = state.agents.filter((a) => a.name !== state.me.name);
    $("reassign-form").hidden = !c.mine || agents.length === 0;
    $("reassign-agent").replaceChildren(...agents.map((a) => el("option", { value: a.name, text: a.name })));
  }

  function renderLabels() {
    const c = state.current;
    $("labels").replaceChildren(...(c.labels || []).map((label) => el("li", { class: "label-chip", "data-label": label },
      el("span", { text: label }),
      el("button", { type: "button", title: "Remove label", "aria-label": "Remove label " + label, text: "×",
        onclick: () => changeLabels([], [label]) }))));
  }

  async function changeLabels(add, remove) {
    const result = await act("labels", { add, remove });
    if (result) {
      state.current.labels = result.labels;
      renderLabels();
      setStatus(add.length ? "Label added." : "Label removed.", "ok");
    }
  }

  async function reassignTo(agent) {
    if (!agent) return;
    const result = await act("reassign", { agent });
    if (result) { // no longer ours (nor ours to read): show it as bob's, read-only
      const c = state.current;
      c.handoff = result.handoff;
      c.mine = false;
      renderControls();
      renderCustomer();
      setStatus("Given to " + agent + ".", "ok");
    }
  }

  async function proposeTurn(seq) {
    const result = await act("turns/" + seq + "/propose");
    if (result) {
      setStatus("Proposed for the knowledge base: “" + result.proposal.title + "” (review it in the KB editor).", "ok");
    }
  }

  // -- canned replies ----------------------------------------------------------------------
  async function loadCanned() {
    try {
      const data = await api("GET", "/api/console/canned");
      state.canned = data.canned;
    } catch (error) {
      setStatus(error.message, "error");
      return;
    }
    $("canned-select").replaceChildren(el("option", { value: "", text: "Canned reply… (or type /)" }),
      ...state.canned.map((r) => el("option", { value: String(r.id), text: "/" + r.shortcut })));
    $("canned-list").replaceChildren(...state.canned.map((r) => el("li", { "data-id": r.id },
      el("code", { text: "/" + r.shortcut }), el("span", { class: "muted", text: r.text }),
      el("button", { type: "button", class: "secondary", text: "Delete", onclick: () => deleteCanned(r) }))));
  }

  async function insertCanned(id) {
    const c = state.current;
    if (!c || !id) return;
    try {
      const data = await api("POST", conversationPath(c.conversation.id, "canned/" + id));
      const box = $("text");
      box.value = box.value.replace(/(^|\s)\/[\w.-]*$/, "$1") + data.text; // replaces a typed "/shortcut"
      box.focus();
      setStatus(data.missing.length ? "Not known for this customer: " + data.missing.join(", ") + "." : "", "ok");
    } catch (error) {
      setStatus(error.message, "error");
    }
  }

  async function saveCanned() {
    try {
      await api("POST", "/api/console/canned", { shortcut: $("canned-shortcut").value, text: $("canned-text").value });
      $("canned-shortcut").value = $("canned-text").value = "";
      setStatus("Canned reply saved.", "ok");
      await loadCanned();
    } catch (error) {
      setStatus(error.message, "error");
    }
  }

  async function deleteCanned(r) {
    if (!window.confirm("Delete the canned reply /" + r.shortcut + "?")) return;
    try {
      await api("DELETE", "/api/console/canned/" + r.id);
      await loadCanned();
    } catch (error) {
      setStatus(error.message, "error");
    }
  }

  // "/thanks" typed at the end of the reply box, then Tab or Enter: that canned reply.
  function slashShortcut(event) {
    if (event.key !== "Tab" && event.key !== "Enter") return false;
    const m = $("text").value.match(/(?:^|\s)\/([\w.-]+)$/);
    if (!m) return false;
    const hit = state.canned.find((r) => r.shortcut.toLowerCase() === m[1].toLowerCase());
    if (!hit) return false;
    event.preventDefault();
    insertCanned(hit.id);
    return true;
  }

  // -- search ------------------------------------------------------------------------------
  async function runSearch(page) {
    const q = $("search-q").value.trim();
    const label = $("search-label").value.trim();
    const params = new URLSearchParams({ q, label, page: String(page) });
    try {
      const data = await api("GET", "/api/console/search?" + params);
      state.searchPage = page;
      const items = data.results.map((r) => el("li", null, el("button", {
        type: "button", class: "queue-item search-hit", onclick: () => openConversation(r.id) },
        el("div", { class: "row" }, el("span", { class: "who", text: (r.profile && r.profile.name) || r.customer }),
          el("span", { class: "waited", text: r.status.replace(/_/g, " ") })),
        r.labels.length ? el("div", { class: "chips", text: r.labels.join(" · ") }) : null,
        el("div", { class: "snippet", text: r.snippet }))));
      if (page === 1) $("search-results").replaceChildren(...items);
      else $("search-results").append(...items);
      $("search-more").hidden = !data.more;
      const shown = $("search-results").children.length;
      $("search-note").textContent = (shown ? shown + " found" : "Nothing found") +
        (data.hidden ? " (" + data.hidden + " more with colleagues, not shown)" : "") + ".";
    } catch (error) {
      setStatus(error.message, "error");
    }
  }

  function renderConversation() {
    const c = state.current;
    $("empty").hidden = !!c;
    $("pane").hidden = !c;
    if (!c) return;
    renderControls();
    renderCustomer();
    $("turns").replaceChildren(...c.turns.map(turnNode));
    scrollDown();
    renderQueue();
  }

  function scrollDown() {
    const list = $("turns");
    list.scrollTop = list.scrollHeight;
  }

  function addTurn(turn) {
    const c = state.current;
    if (!c || c.turns.some((t) => t.seq === turn.seq)) return;
    c.turns.push(turn);
    c.turns.sort((a, b) => a.seq - b.seq);
    const list = $("turns");
    const after = [...list.children].find((n) => Number(n.getAttribute("data-seq")) > turn.seq);
    list.insertBefore(turnNode(turn), after || null);
    scrollDown();
  }

  async function openConversation(id) {
    setStatus("");
    try {
      const data = await api("GET", conversationPath(id));
      const previous = state.current && state.current.conversation.id;
      if (previous && previous !== id) send({ type: "unwatch", conversation: previous });
      state.current = data;
      state.unread.delete(id);
      send({ type: "watch", conversation: id });
      renderConversation();
    } catch (error) {
      setStatus(error.message, "error");
    }
  }

  async function reloadCurrent() {
    if (state.current) await openConversation(state.current.conversation.id);
  }

  async function act(action, body, confirmText) {
    const c = state.current;
    if (!c || (confirmText && !window.confirm(confirmText))) return null;
    try {
      const result = await api("POST", conversationPath(c.conversation.id, action), body);
      return result;
    } catch (error) {
      setStatus(error.message, "error");
      if (error.status === 409 || error.status === 403) await reloadCurrent();
      return null;
    }
  }

  async function take() {
    if (await act("take")) {
      setStatus("You have the conversation; the customer has been told you joined.", "ok");
      await reloadCurrent();
      $("text").focus();
    }
  }

  async function write(internal) {
    const text = $("text").value;
    if (!text.trim()) return;
    const result = await act(internal ? "notes" : "messages", { text });
    if (result) {
      $("text").value = "";
      addTurn(result.turn);
      setStatus(internal ? "Note added (the customer does not see it)." : "", "ok");
    }
  }

  async function release(action) {
    const confirmText = action === "close" ? "Close this conversation?" : null;
    if (await act(action, undefined, confirmText)) {
      setStatus(action === "close" ? "Conversation closed." : "Returned to the bot.", "ok");
      await reloadCurrent();
    }
  }

  // -- live updates ----------------------------------------------------------------------------
  function send(message) {
    if (state.ws && state.ws.readyState === WebSocket.OPEN) state.ws.send(JSON.stringify(message));
  }

  function onMessage(message) {
    if (message.type === "queue") {
      applyQueue(message);
      const c = state.current;
      if (c && message.conversation === c.conversation.id && message.handoff) {
        c.handoff = ["waiting", "assigned"].includes(message.handoff.status) ? message.handoff : null;
        c.mine = !!(c.handoff && c.handoff.status === "assigned" && c.handoff.agent === state.me.name);
        if (message.event === "assigned" && !c.mine) setStatus(message.handoff.agent + " took this conversation.");
        if (message.event === "closed") c.conversation.status = "closed";
        if (message.event === "returned") c.conversation.status = "bot";
        renderControls();
        renderCustomer();
      }
    } else if (message.type === "turn") {
      const c = state.current;
      if (c && message.conversation === c.conversation.id) {
        c.conversation.status = message.status;
        addTurn(message.turn);
      } else if (message.turn.kind === "customer") {
        state.unread.add(message.conversation);
        renderQueue();
      }
    } else if (message.type === "error") {
      setStatus(message.error, "error");
    }
  }

  function connect() {
    const pill = $("connection");
    const scheme = location.protocol === "https:" ? "wss://" : "ws://";
    const ws = new WebSocket(scheme + location.host + "/api/console/ws");
    state.ws = ws;
    ws.addEventListener("open", () => {
      state.backoffMs = 1000;
      pill.textContent = "live";
      pill.className = "pill live";
      reloadCurrent(); // catch up on anything missed while disconnected (also re-watches it)
    });
    ws.addEventListener("message", (event) => {
      try { onMessage(JSON.parse(event.data)); } catch (error) { console.error(error); }
    });
    ws.addEventListener("close", (event) => {
      if (event.code === 4401 || event.code === 4403) { // signed out / revoked, or no longer an agent
        location.assign("/signin?next=" + encodeURIComponent(location.pathname));
        return;
      }
      pill.textContent = "reconnecting…";
      pill.className = "pill down";
      setTimeout(connect, state.backoffMs);
      state.backoffMs = Math.min(state.backoffMs * 2, 30000);
    });
  }

  async function signOut() {
    try {
      await fetch("/signout", { method: "POST", headers: { "X-CSRF-Token": state.csrf }, credentials: "same-origin" });
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
    state.csrf = state.me.csrf;
    window.BotkitStaff.setCsrf(state.csrf);
    $("who").textContent = state.me.name + " (" + state.me.role + ")";
    $("kb-link").hidden = !state.me.can.kb;
    $("analytics-link").hidden = !state.me.can.analytics;
    $("take").addEventListener("click", take);
    $("return").addEventListener("click", () => release("return"));
    $("close").addEventListener("click", () => release("close"));
    $("note").addEventListener("click", () => write(true));
    $("signout").addEventListener("click", signOut);
    $("composer").addEventListener("submit", (event) => {
      event.preventDefault();
      write(false);
    });
    $("text").addEventListener("keydown", (event) => {
      if (slashShortcut(event)) return;
      if (event.key === "Enter" && (event.ctrlKey || event.metaKey)) {
        event.preventDefault();
        write(false);
      }
    });
    $("canned-select").addEventListener("change", (event) => {
      insertCanned(event.target.value);
      event.target.value = "";
    });
    $("canned-form").addEventListener("submit", (event) => { event.preventDefault(); saveCanned(); });
    $("label-form").addEventListener("submit", (event) => {
      event.preventDefault();
      const label = $("label-input").value.trim();
      if (label) changeLabels([label], []).then(() => { $("label-input").value = ""; });
    });
    $("reassign-form").addEventListener("submit", (event) => {
      event.preventDefault();
      reassignTo($("reassign-agent").value);
    });
    $("search").addEventListener("submit", (event) => { event.preventDefault(); runSearch(1); });
    $("search-more").addEventListener("click", () => runSearch(state.searchPage + 1));
    loadCanned();
    api("GET", "/api/console/agents").then((data) => { state.agents = data.agents; if (state.current) renderCustomer(); },
      (error) => setStatus(error.message, "error"));
    try {
      applyQueue(await api("GET", "/api/console/queue"));
    } catch (error) {
      setStatus(error.message, "error");
    }
    setInterval(tick, 1000);
    connect();
  }

  document.addEventListener("DOMContentLoaded", start);
})();
