/*
 * botkit web chat widget. One tag on any page of an allowed origin:
 *
 *   <script src="https://bot.example.com/channels/webchat/widget.js" data-botkit-title="Help" defer></script>
 *
 * Optional attributes: data-botkit-server (base URL of the botkit server; default: where this
 * script came from), data-botkit-open="true" (open the panel on load).
 *
 * Protocol: docs/webchat-protocol.md. Safety rule for this file: every piece of text from the
 * customer, an agent or the knowledge base is inserted with textContent / createTextNode.
 * Nothing here assigns innerHTML, and link hrefs are set only for http(s) URLs.
 */
(function () {
  "use strict";

  if (window.BotkitChat) { return; } // the tag was included twice

  var script = document.currentScript;
  var data = (script && script.dataset) || {};
  var serverBase;
  try {
    serverBase = new URL(data.botkitServer || (script && script.src) || location.href, location.href);
  } catch (e) {
    serverBase = new URL(location.href);
  }
  var ORIGIN = serverBase.origin;
  var WS_URL = (serverBase.protocol === "https:" ? "wss://" : "ws://") + serverBase.host + "/channels/webchat/ws";
  var CSS_URL = ORIGIN + "/channels/webchat/widget.css";
  var STORAGE_KEY = "botkit.webchat.session:" + ORIGIN;
  var PRECHAT_KEY = "botkit.webchat.prechat-skipped:" + ORIGIN; // the session whose form was skipped
  var PING_MS = 25000;
  var BACKOFF_MIN_MS = 1000;
  var BACKOFF_MAX_MS = 30000;
  var HISTORY_PAGE = 50; // turns per "history" request (the welcome carries the last 50)
  var HISTORY_TIMEOUT_MS = 15000; // no answer by then: say so and offer to try again

  // -- small helpers ---------------------------------------------------------------------------
  function el(tag, className, text) {
    var node = document.createElement(tag);
    if (className) { node.className = className; }
    if (text !== undefined && text !== null) { node.textContent = String(text); }
    return node;
  }

  function attrs(node, map) {
    Object.keys(map).forEach(function (k) { node.setAttribute(k, map[k]); });
    return node;
  }

  function icon(pathD) { // static, trusted markup only (built node by node)
    var ns = "http://www.w3.org/2000/svg";
    var svg = document.createElementNS(ns, "svg");
    svg.setAttribute("viewBox", "0 0 24 24");
    svg.setAttribute("aria-hidden", "true");
    svg.setAttribute("focusable", "false");
    var path = document.createElementNS(ns, "path");
    path.setAttribute("d", pathD);
    svg.appendChild(path);
    return svg;
  }

  function safeHref(url) {
    if (typeof url !== "string" || !url) { return null; }
    try {
      var u = new URL(url, ORIGIN);
      return (u.protocol === "http:" || u.protocol === "https:") ? u.href : null;
    } catch (e) {
      return null;
    }
  }

  var store = {
    get: function () { try { return window.localStorage.getItem(STORAGE_KEY); } catch (e) { return store.mem; } },
    set: function (v) { store.mem = v; try { window.localStorage.setItem(STORAGE_KEY, v); } catch (e) { /* private mode */ } },
    mem: null
  };

  function newId() {
    return "m" + Date.now().toString(36) + Math.random().toString(36).slice(2, 8);
  }

  var ICON_CHAT = "M4 4h16a2 2 0 0 1 2 2v10a2 2 0 0 1-2 2H9l-5 4v-4a2 2 0 0 1-2-2V6a2 2 0 0 1 2-2z";
  var ICON_CLOSE = "M6 6l12 12M18 6L6 18";
  var ICON_SEND = "M3 11l18-8-8 18-2-8-8-2z";
  var ICON_UP = "M7 22H4a1 1 0 0 1-1-1v-9a1 1 0 0 1 1-1h3m0 11V11m0 11h10.3a2 2 0 0 0 2-1.7l1.4-8A2 2 0 0 0 18.7 10H14V5a3 3 0 0 0-3-3l-4 9";
  var ICON_DOWN = "M17 2h3a1 1 0 0 1 1 1v9a1 1 0 0 1-1 1h-3m0-11v11m0-11H6.7a2 2 0 0 0-2 1.7l-1.4 8A2 2 0 0 0 5.3 14H10v5a3 3 0 0 0 3 3l4-9";

  // -- the DOM ----------------------------------------------------------------------------------
  var title = data.botkitTitle || "Chat";
  var root = el("div", "bkw");
  root.setAttribute("data-open", "false");

  var launcher = attrs(el("button", "bkw-launcher"), {
    type: "button", "aria-controls": "bkw-panel", "aria-expanded": "false", "aria-label": "Open chat: " + title
  });
  launcher.appendChild(icon(ICON_CHAT));
  var badge = attrs(el("span", "bkw-badge"), { "aria-hidden": "true" });
  badge.hidden = true;
  launcher.appendChild(badge);

  var panel = attrs(el("section", "bkw-panel"), { id: "bkw-panel", role: "dialog", "aria-labelledby": "bkw-title" });
  panel.hidden = true;

  var header = el("header", "bkw-header");
  var heading = el("div", "bkw-heading");
  var titleEl = attrs(el("h2", "bkw-title", title), { id: "bkw-title" });
  var statusEl = attrs(el("p", "bkw-status", "Connecting…"), { role: "status" });
  heading.appendChild(titleEl);
  heading.appendChild(statusEl);
  var closeBtn = attrs(el("button", "bkw-icon-btn bkw-close"), { type: "button", "aria-label": "Close chat" });
  closeBtn.appendChild(icon(ICON_CLOSE));
  header.appendChild(heading);
  header.appendChild(closeBtn);

  var log = attrs(el("div", "bkw-log"), {
    role: "log", "aria-live": "polite", "aria-relevant": "additions", "aria-label": "Conversation", tabindex: "0"
  });

  // "Show earlier messages": the first child of the log while older turns are on the server.
  var earlier = el("div", "bkw-earlier");
  var earlierNote = attrs(el("p", "bkw-earlier-note"), { role: "alert" });
  var earlierBtn = attrs(el("button", "bkw-earlier-btn", "Show earlier messages"), { type: "button" });
  earlierNote.hidden = true;
  earlier.appendChild(earlierNote);
  earlier.appendChild(earlierBtn);
  earlier.hidden = true;
  var announcer = attrs(el("p", "bkw-sr"), { role: "status" }); // "50 earlier messages shown."

  var typing = attrs(el("div", "bkw-typing"), { "aria-hidden": "true" });
  typing.appendChild(el("span", "bkw-dot"));
  typing.appendChild(el("span", "bkw-dot"));
  typing.appendChild(el("span", "bkw-dot"));
  typing.hidden = true;

  var form = el("form", "bkw-form");
  form.setAttribute("novalidate", "");
  var label = attrs(el("label", "bkw-sr", "Your message"), { "for": "bkw-input" });
  var input = attrs(el("textarea", "bkw-input"), {
    id: "bkw-input", rows: "1", placeholder: "Type your question…", autocomplete: "off", "aria-describedby": "bkw-hint"
  });
  var hint = attrs(el("span", "bkw-sr", "Press Enter to send, Shift+Enter for a new line."), { id: "bkw-hint" });
  var sendBtn = attrs(el("button", "bkw-send"), { type: "submit", "aria-label": "Send message" });
  sendBtn.appendChild(icon(ICON_SEND));
  form.appendChild(label);
  form.appendChild(hint);
  form.appendChild(input);
  form.appendChild(sendBtn);

  // The customer's place in the hand-off queue: one line, updated as the queue moves.
  var queueEl = attrs(el("p", "bkw-queue"), { role: "status" });
  queueEl.hidden = true;

  // The optional pre-chat form (channels.webchat.prechat): name and e-mail, both optional, skippable.
  var prechat = attrs(el("form", "bkw-prechat"), { "aria-label": "Before we start" });
  prechat.setAttribute("novalidate", "");
  prechat.appendChild(el("p", "bkw-prechat-intro", "Tell us who you are (optional), so our team can help you faster."));
  var nameLabel = attrs(el("label", "bkw-prechat-label", "Name"), { "for": "bkw-prechat-name" });
  var nameInput = attrs(el("input", "bkw-prechat-input"), { id: "bkw-prechat-name", name: "name", maxlength: "100",
    autocomplete: "name" });
  var emailLabel = attrs(el("label", "bkw-prechat-label", "E-mail"), { "for": "bkw-prechat-email" });
  var emailInput = attrs(el("input", "bkw-prechat-input"), { id: "bkw-prechat-email", name: "email", type: "email",
    maxlength: "254", autocomplete: "email" });
  var prechatError = attrs(el("p", "bkw-prechat-error"), { role: "alert" });
  var prechatRow = el("div", "bkw-prechat-row");
  var prechatGo = attrs(el("button", "bkw-prechat-go", "Start chat"), { type: "submit" });
  var prechatSkip = attrs(el("button", "bkw-link-btn bkw-prechat-skip", "Skip"), { type: "button" });
  prechatRow.appendChild(prechatGo);
  prechatRow.appendChild(prechatSkip);
  [nameLabel, nameInput, emailLabel, emailInput, prechatError, prechatRow].forEach(function (n) {
    prechat.appendChild(n);
  });
  prechat.hidden = true;

  panel.appendChild(header);
  panel.appendChild(prechat);
  panel.appendChild(log);
  panel.appendChild(announcer);
  panel.appendChild(typing);
  panel.appendChild(queueEl);
  panel.appendChild(form);
  root.appendChild(panel);
  root.appendChild(launcher);

  // -- state --------------------------------------------------------------------------------------
  var ws = null;
  var ready = false; // welcome received on the current socket
  var attempt = 0;
  var reconnectTimer = null;
  var pingTimer = null;
  var maxChars = 2000;
  var greeting = "";
  var unread = 0;
  var isOpen = false;
  var outbox = []; // {id, text, bubble}: typed but not acknowledged by the server yet
  var streaming = {}; // client id -> bot bubble being streamed
  var seenTurns = {}; // turn number -> true (rendered once only)
  var ratingShown = false;
  // Older turns: before = the welcome's (or last page's) cursor, null when the start is shown;
  // asked = a request for this cursor went out (its answer is taken even after a timeout);
  // loading = one is in flight (never two); paused = the last one failed (no automatic retry).
  var older = { before: null, asked: false, loading: false, paused: false, timer: null, id: null };

  // -- rendering ----------------------------------------------------------------------------------
  function nearBottom() { return log.scrollHeight - log.scrollTop - log.clientHeight < 80; }

  function append(node) {
    var stick = nearBottom();
    log.appendChild(node);
    if (stick) { log.scrollTop = log.scrollHeight; }
    return node;
  }

  function bump() {
    if (isOpen) { return; }
    unread += 1;
    badge.textContent = unread > 9 ? "9+" : String(unread);
    badge.hidden = false;
    launcher.setAttribute("aria-label", "Open chat: " + title + " (" + unread + " new)");
  }

  function stamp(node, at) {
    if (!at) { return; }
    var d = new Date(at);
    if (!isNaN(d.getTime())) { node.setAttribute("title", d.toLocaleString()); }
  }

  function bubble(role, text, opts) {
    opts = opts || {};
    var row = el("div", "bkw-msg bkw-" + role);
    if (opts.name) { row.appendChild(el("span", "bkw-author", opts.name)); }
    var body = el("div", "bkw-bubble");
    body.appendChild(document.createTextNode(text || ""));
    row.appendChild(body);
    row.bkBody = body;
    stamp(row, opts.at);
    if (opts.turn) { row.setAttribute("data-turn", String(opts.turn)); }
    return row;
  }

  function notice(text, kind) {
    var n = el("p", "bkw-notice" + (kind ? " bkw-" + kind : ""), text);
    return append(n);
  }

  function setText(row, text) {
    row.bkBody.textContent = text; // replaces the streamed text with the authoritative reply
  }

  function addSources(row, sources) {
    if (!sources || !sources.length) { return; }
    var wrap = el("div", "bkw-sources");
    wrap.appendChild(el("span", "bkw-sources-label", sources.length > 1 ? "Sources" : "Source"));
    var list = el("ul", "bkw-source-list");
    sources.forEach(function (s) {
      var item = el("li");
      var href = safeHref(s.url);
      var node;
      if (href) {
        node = attrs(el("a", "bkw-source", s.title || s.id), { href: href, target: "_blank", rel: "noopener noreferrer" });
      } else {
        node = el("span", "bkw-source", s.title || s.id);
      }
      item.appendChild(node);
      list.appendChild(item);
    });
    wrap.appendChild(list);
    row.appendChild(wrap);
  }

  function addOptions(row, options) {
    if (!options || !options.length) { return; }
    var wrap = attrs(el("div", "bkw-options"), { role: "group", "aria-label": "Choose a topic" });
    options.forEach(function (o) {
      var b = attrs(el("button", "bkw-chip", o.title), { type: "button" });
      b.addEventListener("click", function () { submit(o.title); });
      wrap.appendChild(b);
    });
    row.appendChild(wrap);
  }

  function addFeedback(row, turn, value) {
    if (!turn) { return; }
    var wrap = attrs(el("div", "bkw-feedback"), { role: "group", "aria-label": "Was this helpful?" });
    var up = attrs(el("button", "bkw-icon-btn bkw-thumb"), { type: "button", "aria-label": "Helpful", "aria-pressed": "false" });
    var down = attrs(el("button", "bkw-icon-btn bkw-thumb"), { type: "button", "aria-label": "Not helpful", "aria-pressed": "false" });
    up.appendChild(icon(ICON_UP));
    down.appendChild(icon(ICON_DOWN));
    function show(v) {
      up.setAttribute("aria-pressed", v === 1 ? "true" : "false");
      down.setAttribute("aria-pressed", v === -1 ? "true" : "false");
    }
    show(value || 0);
    // An id on every frame: an error is matched to what it answers by it.
    function vote(v) { show(v); send({ type: "feedback", id: newId(), turn: turn, value: v }); }
    up.addEventListener("click", function () { vote(1); });
    down.addEventListener("click", function () { vote(-1); });
    wrap.appendChild(up);
    wrap.appendChild(down);
    row.appendChild(wrap);
  }

  function fillBot(row, f) {
    setText(row, f.text);
    if (f.turn) { row.setAttribute("data-turn", String(f.turn)); }
    if (f.action) { row.setAttribute("data-action", f.action); }
    // A decline ("couldn't find an answer"): styled apart and labelled, so it never reads as an answer.
    if (f.action === "no_answer" && !row.classList.contains("bkw-no-answer")) {
      row.classList.add("bkw-no-answer");
      row.appendChild(el("span", "bkw-no-answer-label", "No answer found in our help centre"));
    }
    addSources(row, f.sources);
    addOptions(row, f.options);
    addFeedback(row, f.turn, f.feedback);
    return row;
  }

  function botMessage(f, row) {
    row = fillBot(row || bubble("bot", "", { turn: f.turn, at: f.at }), f);
    if (!row.parentNode) { append(row); }
    return row;
  }

  function showRating() {
    if (ratingShown) { return; }
    ratingShown = true;
    var wrap = attrs(el("div", "bkw-rating"), { role: "group", "aria-label": "Rate this conversation" });
    wrap.appendChild(el("span", "bkw-rating-label", "How was this conversation?"));
    var stars = el("div", "bkw-stars");
    for (var i = 1; i <= 5; i += 1) {
      (function (score) {
        var b = attrs(el("button", "bkw-star", "★"), { type: "button", "aria-label": score + " out of 5" });
        b.addEventListener("click", function () {
          send({ type: "rate", id: newId(), score: score });
          wrap.textContent = "";
          wrap.appendChild(el("span", "bkw-rating-label", "Thanks for your feedback!"));
        });
        stars.appendChild(b);
      })(i);
    }
    wrap.appendChild(stars);
    append(wrap);
  }

  // One stored turn (welcome history or an older page) as a node; null when it is shown already.
  function historyNode(item) {
    if (!item || (item.turn && seenTurns[item.turn])) { return null; }
    var node = null;
    if (item.role === "customer") {
      node = bubble("customer", item.text, { at: item.at, turn: item.turn });
    } else if (item.role === "agent") {
      node = bubble("agent", item.text, { name: item.name || "Agent", at: item.at, turn: item.turn });
    } else if (item.role === "bot" && item.action === "returned") {
      node = el("p", "bkw-notice bkw-event", item.text);
      stamp(node, item.at);
      if (item.turn) { node.setAttribute("data-turn", String(item.turn)); }
    } else if (item.role === "bot") {
      node = fillBot(bubble("bot", "", { turn: item.turn, at: item.at }), item);
    }
    if (node && item.turn) { seenTurns[item.turn] = true; }
    return node;
  }

  function renderHistoryItem(item) {
    var node = historyNode(item);
    if (node) { append(node); }
  }

  function greetingRow() { return bubble("bot", greeting); }

  // -- older turns ("Show earlier messages", or scrolling to the top) ------------------------
  function announce(text) {
    announcer.textContent = "";
    if (text) { setTimeout(function () { announcer.textContent = text; }, 50); } // a change, even if the same words
  }

  function showEarlier(state, note) { // state: "idle" / "loading" / "failed"
    earlierBtn.textContent = state === "loading" ? "Loading earlier messages…"
      : state === "failed" ? "Try again" : "Show earlier messages";
    earlierBtn.setAttribute("aria-disabled", state === "loading" ? "true" : "false");
    earlier.setAttribute("aria-busy", state === "loading" ? "true" : "false");
    earlierNote.textContent = note || "";
    earlierNote.hidden = !note;
  }

  function setBefore(before) {
    older.before = (typeof before === "number" && before > 1) ? before : null;
    older.asked = false;
    if (older.before === null && earlier.contains(document.activeElement)) {
      log.focus({ preventScroll: true }); // the control goes away: focus stays in the conversation
    }
    earlier.hidden = older.before === null;
  }

  function resetOlder(before) {
    clearTimeout(older.timer);
    older.loading = false;
    older.paused = false;
    showEarlier("idle");
    setBefore(before);
  }

  function loadEarlier(byUser) {
    if (older.before === null || older.loading || (older.paused && !byUser)) { return; }
    older.id = newId();
    if (!send({ type: "history", id: older.id, before: older.before, limit: HISTORY_PAGE })) {
      if (byUser) { showEarlier("failed", "You're offline. Earlier messages can be loaded once the chat reconnects."); }
      return;
    }
    older.asked = true;
    older.loading = true;
    older.paused = false;
    showEarlier("loading");
    clearTimeout(older.timer);
    older.timer = setTimeout(function () { earlierFailed("They did not arrive in time."); }, HISTORY_TIMEOUT_MS);
  }

  function earlierFailed(reason) {
    if (!older.loading) { return; }
    clearTimeout(older.timer);
    older.loading = false;
    older.paused = true; // no automatic retry: the customer chooses to try again
    showEarlier("failed", "Earlier messages could not be loaded. " + (reason || ""));
  }

  // An answer to the request for older.before: every turn older than it, and an older cursor.
  function answersCursor(f) {
    if (!older.asked || older.before === null || !Array.isArray(f.history)) { return false; }
    if (f.for_before !== undefined && f.for_before !== older.before) { return false; } // another request's page
    if (f.before !== null && f.before !== undefined && !(typeof f.before === "number" && f.before < older.before)) {
      return false; // a late duplicate of an earlier page
    }
    return f.history.every(function (item) { return !item || !item.turn || item.turn < older.before; });
  }

  function firstVisible() { // the message the customer is looking at (top of the view)
    var top = log.getBoundingClientRect().top;
    for (var n = earlier.nextElementSibling; n; n = n.nextElementSibling) {
      if (n.getBoundingClientRect().bottom > top) { return n; }
    }
    return null;
  }

  function earlierInView() {
    if (earlier.hidden || panel.hidden) { return false; }
    var box = log.getBoundingClientRect();
    var r = earlier.getBoundingClientRect();
    return r.bottom > box.top && r.top < box.bottom;
  }

  function onHistory(f) {
    if (!answersCursor(f)) { return; }
    clearTimeout(older.timer);
    older.loading = false;
    older.paused = false;
    var frag = document.createDocumentFragment();
    var count = 0;
    f.history.forEach(function (item) {
      var node = historyNode(item);
      if (node) { frag.appendChild(node); count += 1; }
    });
    var atStart = f.before === null || f.before === undefined;
    if (atStart && greeting) { frag.insertBefore(greetingRow(), frag.firstChild); }
    var anchor = firstVisible();
    var offset = anchor ? anchor.getBoundingClientRect().top : 0;
    log.setAttribute("aria-live", "off"); // older turns are not news: the announcer sums them up
    log.insertBefore(frag, earlier.nextSibling);
    showEarlier("idle");
    setBefore(atStart ? null : f.before);
    if (anchor) { log.scrollTop += anchor.getBoundingClientRect().top - offset; } // it stays where it was
    setTimeout(function () { log.setAttribute("aria-live", "polite"); }, 100);
    announce((count === 1 ? "1 earlier message shown." : count + " earlier messages shown.") +
             (atStart ? " This is the start of the conversation." : ""));
    if (earlierInView()) { loadEarlier(false); } // still at the top (a page of internal notes only, say)
  }

  function setStatus(text) { statusEl.textContent = text; }

  function statusFor(state, agent) {
    if (state === "handed_off") { return agent ? "Chatting with " + agent : "Waiting for a member of our team"; }
    return "Online";
  }

  // -- the socket ---------------------------------------------------------------------------------
  function send(frame) {
    if (ws && ready && ws.readyState === 1) {
      ws.send(JSON.stringify(frame));
      return true;
    }
    return false;
  }

  function connect() {
    if (ws) { return; }
    clearTimeout(reconnectTimer);
    setStatus(attempt ? "Reconnecting…" : "Connecting…");
    var sock;
    try {
      sock = new WebSocket(WS_URL);
    } catch (e) {
      scheduleReconnect();
      return;
    }
    ws = sock;
    ready = false;
    sock.onopen = function () {
      sock.send(JSON.stringify({ type: "hello", session: store.get() }));
    };
    sock.onmessage = function (ev) {
      var f;
      try { f = JSON.parse(ev.data); } catch (e) { return; }
      if (f && typeof f.type === "string") { onFrame(f); }
    };
    sock.onclose = function () {
      if (ws !== sock) { return; }
      ws = null;
      ready = false;
      earlierFailed("The connection was lost.");
      clearInterval(pingTimer);
      typing.hidden = true;
      scheduleReconnect();
    };
    sock.onerror = function () { /* onclose follows */ };
  }

  function scheduleReconnect() {
    var delay = Math.min(BACKOFF_MAX_MS, BACKOFF_MIN_MS * Math.pow(2, attempt));
    delay = Math.round(delay * (0.5 + Math.random() / 2)); // jitter: a restarted server is not hit all at once
    attempt += 1;
    setStatus("Offline. Reconnecting in " + Math.ceil(delay / 1000) + " s…");
    reconnectTimer = setTimeout(connect, delay);
  }

  function onFrame(f) {
    switch (f.type) {
      case "welcome": onWelcome(f); break;
      case "history": onHistory(f); break;
      case "ack": onAck(f); break;
      case "typing":
        typing.hidden = !f.on;
        if (f.on && nearBottom()) { log.scrollTop = log.scrollHeight; }
        break;
      case "delta": onDelta(f); break;
      case "reply": onReply(f); break;
      case "customer":
        if (f.turn && seenTurns[f.turn]) { break; }
        if (f.turn) { seenTurns[f.turn] = true; }
        append(bubble("customer", f.text, { turn: f.turn }));
        break;
      case "agent":
        append(bubble("agent", f.text, { name: f.name || "Agent" }));
        bump();
        break;
      case "bot":
        botMessage({ text: f.text, sources: f.sources });
        bump();
        break;
      case "event": onEvent(f); break;
      case "error": onError(f); break;
      default: break; // pong, and anything newer than this widget
    }
  }

  function onWelcome(f) {
    ready = true;
    attempt = 0;
    store.set(f.session);
    if (f.max_message_chars) { maxChars = f.max_message_chars; input.setAttribute("maxlength", String(maxChars)); }
    if (!data.botkitTitle && f.title) { title = f.title; titleEl.textContent = f.title; }
    greeting = f.greeting || "";
    // Re-render from the server's history: it is the truth after a reconnect.
    log.textContent = "";
    log.appendChild(earlier);
    seenTurns = {};
    streaming = {};
    ratingShown = false;
    resetOlder(f.before);
    if (greeting && older.before === null) { append(greetingRow()); } // the start of the conversation
    (f.history || []).forEach(renderHistoryItem);
    setStatus(statusFor(f.status, f.agent));
    if (f.status !== "handed_off" || f.agent) { showQueue(""); }
    var skipped = false;
    try { skipped = window.localStorage.getItem(PRECHAT_KEY) === f.session; } catch (e) { /* private mode */ }
    prechat.hidden = !(f.prechat && !skipped);
    // Messages typed while offline (or never acknowledged) go now, in order.
    var pending = outbox;
    outbox = [];
    pending.forEach(function (m) {
      if (m.bubble) { m.bubble.classList.remove("bkw-failed"); append(m.bubble); }
      transmit(m);
    });
    clearInterval(pingTimer);
    pingTimer = setInterval(function () { send({ type: "ping" }); }, PING_MS);
    log.scrollTop = log.scrollHeight;
  }

  function transmit(m) {
    outbox.push(m);
    m.bubble.classList.add("bkw-sending");
    send({ type: "message", id: m.id, text: m.text });
  }

  function onAck(f) {
    if (f["for"] === "profile") { prechat.hidden = true; input.focus(); return; }
    if (f["for"] !== "message") { return; }
    for (var i = 0; i < outbox.length; i += 1) {
      if (outbox[i].id === f.id) {
        outbox[i].bubble.classList.remove("bkw-sending");
        outbox.splice(i, 1);
        return;
      }
    }
  }

  function onDelta(f) {
    var row = streaming[f.id];
    if (!row) {
      row = streaming[f.id] = append(bubble("bot", ""));
      row.classList.add("bkw-streaming");
    }
    row.bkBody.appendChild(document.createTextNode(f.text));
    if (nearBottom()) { log.scrollTop = log.scrollHeight; }
  }

  function onReply(f) {
    var row = streaming[f.id];
    delete streaming[f.id];
    typing.hidden = true;
    if (f.turn && seenTurns[f.turn]) { if (row) { row.remove(); } return; }
    if (f.turn) { seenTurns[f.turn] = true; }
    if (!f.text) { if (row) { row.remove(); } return; } // a human has the conversation: the bot stays silent
    if (row) { row.classList.remove("bkw-streaming"); }
    botMessage(f, row);
    if (f.action === "escalate") { setStatus("Waiting for a member of our team"); }
    bump();
  }

  function showQueue(text) {
    queueEl.textContent = text || "";
    queueEl.hidden = !text;
  }

  function onEvent(f) {
    if (f.event === "queue") { // the place in the queue moved: update the one line, no new message
      showQueue(f.text);
      return;
    }
    if (f.event === "agent_joined" || f.event === "agent_left" || f.event === "closed") { showQueue(""); }
    if (f.event === "agent_joined") {
      notice(f.text || ((f.name || "An agent") + " joined the conversation."), "event");
      setStatus(f.name ? "Chatting with " + f.name : "Chatting with our team");
    } else if (f.event === "agent_left") {
      notice(f.text || "You're back with the virtual assistant.", "event");
      setStatus("Online");
      showRating();
    } else if (f.event === "closed") {
      notice(f.text || "This conversation has been closed.", "event");
      setStatus("Conversation closed");
      showRating();
    } else if (f.text) {
      notice(f.text, "event");
    }
    bump();
  }

  function onError(f) {
    var text = f.message || "Something went wrong.";
    if (older.loading && f.id !== null && f.id !== undefined && f.id === older.id) { // the history request's
      earlierFailed(text);
      return;
    }
    if (f.id !== null && f.id !== undefined) {
      for (var i = 0; i < outbox.length; i += 1) {
        if (outbox[i].id === f.id) {
          var m = outbox.splice(i, 1)[0];
          m.bubble.classList.remove("bkw-sending");
          m.bubble.classList.add("bkw-failed");
          var note = el("span", "bkw-failed-note", text + " ");
          var retry = attrs(el("button", "bkw-link-btn", "Send again"), { type: "button" });
          retry.addEventListener("click", function () {
            note.remove();
            m.bubble.classList.remove("bkw-failed");
            m.id = newId();
            transmit(m);
          });
          note.appendChild(retry);
          m.bubble.appendChild(note);
          return;
        }
      }
    }
    if (f.id === "profile") { prechatError.textContent = text; return; }
    notice(text, "error");
  }

  prechat.addEventListener("submit", function (ev) {
    ev.preventDefault();
    prechatError.textContent = "";
    var name = nameInput.value.trim();
    var email = emailInput.value.trim();
    if (!name && !email) { prechatError.textContent = "Fill in a name or an e-mail, or skip."; return; }
    if (!send({ type: "profile", id: "profile", name: name, email: email })) {
      prechatError.textContent = "Not connected yet; try again in a moment.";
    }
  });
  [nameInput, emailInput].forEach(function (n) {
    n.addEventListener("input", function () { prechatError.textContent = ""; });
  });
  prechatSkip.addEventListener("click", function () {
    prechat.hidden = true;
    try { window.localStorage.setItem(PRECHAT_KEY, store.get() || ""); } catch (e) { /* private mode */ }
    input.focus();
  });

  // -- input --------------------------------------------------------------------------------------
  function submit(text) {
    text = (text || "").trim();
    if (!text) { return; }
    if (text.length > maxChars) {
      notice("That message is too long (" + text.length + " characters; the limit is " + maxChars + ").", "error");
      return;
    }
    var m = { id: newId(), text: text, bubble: append(bubble("customer", text)) };
    log.scrollTop = log.scrollHeight;
    transmit(m); // queued until the socket is ready when offline
    connect();
  }

  function grow() {
    input.style.height = "auto";
    input.style.height = Math.min(input.scrollHeight, 140) + "px";
  }

  form.addEventListener("submit", function (ev) {
    ev.preventDefault();
    var text = input.value;
    if (!text.trim()) { return; }
    input.value = "";
    grow();
    submit(text);
  });
  input.addEventListener("keydown", function (ev) {
    if (ev.key === "Enter" && !ev.shiftKey && !ev.isComposing) {
      ev.preventDefault();
      if (typeof form.requestSubmit === "function") { form.requestSubmit(); } else { form.dispatchEvent(new Event("submit", { cancelable: true })); }
    }
  });
  input.addEventListener("input", grow);

  function open() {
    isOpen = true;
    panel.hidden = false;
    root.setAttribute("data-open", "true");
    launcher.setAttribute("aria-expanded", "true");
    launcher.setAttribute("aria-label", "Close chat: " + title);
    unread = 0;
    badge.hidden = true;
    connect();
    log.scrollTop = log.scrollHeight;
    input.focus();
  }

  function close() {
    isOpen = false;
    panel.hidden = true;
    root.setAttribute("data-open", "false");
    launcher.setAttribute("aria-expanded", "false");
    launcher.setAttribute("aria-label", "Open chat: " + title);
    launcher.focus();
  }

  earlierBtn.addEventListener("click", function () {
    if (earlierBtn.getAttribute("aria-disabled") !== "true") { loadEarlier(true); }
  });
  if (typeof window.IntersectionObserver === "function") { // the customer scrolled up to the control
    new window.IntersectionObserver(function (entries) {
      if (entries.some(function (e) { return e.isIntersecting; })) { loadEarlier(false); }
    }, { root: log }).observe(earlier);
  } else {
    log.addEventListener("scroll", function () { if (earlierInView()) { loadEarlier(false); } });
  }

  launcher.addEventListener("click", function () { if (isOpen) { close(); } else { open(); } });
  closeBtn.addEventListener("click", close);
  panel.addEventListener("keydown", function (ev) { if (ev.key === "Escape") { close(); } });

  function mount() {
    var link = attrs(document.createElement("link"), { rel: "stylesheet", href: CSS_URL });
    document.head.appendChild(link);
    document.body.appendChild(root);
    if (store.get()) { connect(); } // an ongoing conversation: be reachable for the agent's replies
    if (data.botkitOpen === "true") { open(); }
  }

  // ask(text): open the chat and send text as the customer's message (the demo page's topic cards use it)
  window.BotkitChat = { open: open, close: close, ask: function (text) { open(); submit(String(text || "")); } };
  if (document.readyState === "loading") {
    document.addEventListener("DOMContentLoaded", mount);
  } else {
    mount();
  }
})();
