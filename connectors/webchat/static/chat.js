/*
 * The demo help-centre page (/chat): the search box lists the knowledge-base entries that the
 * bot's own search finds (GET /help/search), each a link to its page, with "Ask the assistant"
 * to put the same question to the chat; topic cards and popular questions (data-ask) open the
 * chat with their question. Text from the server is inserted with textContent only.
 */
(function () {
  "use strict";
  var form = document.querySelector("form.search");
  var input = document.getElementById("q");
  var results = document.getElementById("search-results");

  function el(tag, cls, text) {
    var node = document.createElement(tag);
    if (cls) { node.className = cls; }
    if (text !== undefined) { node.textContent = text; }
    return node;
  }

  function ask(question) {
    if (window.BotkitChat && typeof window.BotkitChat.ask === "function") { window.BotkitChat.ask(question); }
  }

  function askButton(question) {
    var b = el("button", "ask-button", "Ask the assistant: \u201c" + question + "\u201d");
    b.type = "button";
    b.addEventListener("click", function () { ask(question); });
    return b;
  }

  function show(question, articles, error) {
    results.replaceChildren();
    results.hidden = false;
    if (error) {
      results.appendChild(el("p", "search-note", error));
    } else if (!articles.length) {
      results.appendChild(el("p", "search-note", "No article matches \u201c" + question + "\u201d."));
    } else {
      results.appendChild(el("p", "search-note", articles.length + (articles.length === 1 ? " article" : " articles")
        + " for \u201c" + question + "\u201d"));
      var list = el("ul", "search-list");
      articles.forEach(function (a) {
        var li = el("li");
        var link = el("a", "search-hit", a.title || a.id);
        if (typeof a.url === "string" && a.url.charAt(0) === "/") { link.href = a.url; } // our own pages only
        li.appendChild(link);
        if (a.passage) { li.appendChild(el("span", "search-passage", a.passage)); }
        list.appendChild(li);
      });
      results.appendChild(list);
    }
    results.appendChild(askButton(question));
  }

  function search(question) {
    question = (question || "").trim();
    if (!question) { results.hidden = true; return; }
    show(question, [], "Searching\u2026");
    fetch("/help/search?q=" + encodeURIComponent(question), { headers: { Accept: "application/json" } })
      .then(function (r) {
        return r.json().then(function (body) { return { ok: r.ok, body: body }; });
      })
      .then(function (r) {
        if (r.ok) { show(question, r.body.articles || [], null); } else { show(question, [], r.body.error || "The search failed."); }
      })
      .catch(function () { show(question, [], "The search is unavailable right now; ask the assistant instead."); });
  }

  if (form && input && results) {
    form.addEventListener("submit", function (ev) {
      ev.preventDefault();
      search(input.value);
      if (window.history && window.history.replaceState) {
        window.history.replaceState(null, "", "/chat?q=" + encodeURIComponent(input.value.trim()));
      }
    });
    var initial = new URLSearchParams(window.location.search).get("q");
    if (initial) { input.value = initial; search(initial); } // the form without JavaScript: /chat?q=...
  }

  Array.prototype.forEach.call(document.querySelectorAll("[data-ask]"), function (node) {
    node.addEventListener("click", function (ev) {
      ev.preventDefault();
      ask(node.getAttribute("data-ask"));
    });
  });
})();
