// Knowledge editor. Article text is data: it goes into form fields (.value) and into the page
// with textContent / text nodes only, never as HTML, so a <script> in an article stays text.
"use strict";

(() => {
  const $ = (id) => document.getElementById(id);
  const FIELDS = { id: "f-id", title: "f-title", tags: "f-tags", questions: "f-questions", body: "f-body" };
  const state = { me: null, csrf: "", current: null, deletedId: null, searchTimer: null };

  const { el, api } = window.BotkitStaff; // staff.js: text-only DOM and the JSON API

  function setStatus(id, message, kind) {
    const node = $(id);
    node.textContent = message || "";
    node.className = "status" + (kind ? " " + kind : "");
  }


  const articlePath = (id, action) => "/api/kb/articles/" + encodeURIComponent(id) + (action ? "/" + action : "");

  // -- list and search -------------------------------------------------------------------------
  function articleItem(a) {
    const active = state.current && state.current.id === a.id;
    return el("li", null, el(
      "button",
      { type: "button", class: "article-item" + (active ? " active" : ""), onclick: () => openArticle(a.id) },
      el("span", { class: "title", text: a.title }),
      el("span", { class: "meta", text: a.id + " · " + a.kind + " · rev " + a.rev +
        (a.score !== undefined ? " · score " + Number(a.score).toFixed(2) : "") },
        a.from_file ? el("span", { class: "from-file", text: " · from file" }) : null,
        a.edited_since_import ? el("span", { class: "edited", text: " · edited since import" }) : null),
      el("div", null, ...a.tags.map((t) => el("span", { class: "tag", text: t }))),
      a.passage ? el("span", { class: "passage", text: a.passage }) : null,
    ));
  }

  function renderTags(tags) {
    const select = $("tag");
    const chosen = select.value;
    const options = [el("option", { value: "", text: "All tags" })];
    for (const t of tags) options.push(el("option", { value: t, text: t }));
    select.replaceChildren(...options);
    select.value = tags.includes(chosen) ? chosen : "";
  }

  async function loadList() {
    const params = new URLSearchParams();
    const q = $("q").value.trim();
    if (q) params.set("q", q);
    if ($("tag").value) params.set("tag", $("tag").value);
    try {
      const data = await api("GET", "/api/kb/articles?" + params.toString());
      renderTags(data.tags || []);
      $("articles").replaceChildren(...data.articles.map(articleItem));
      $("list-info").textContent = data.articles.length + (q ? " found" : " articles");
      $("kb-version").textContent = "KB version " + data.kb_version;
    } catch (error) {
      $("list-info").textContent = error.message;
    }
  }

  // -- the form --------------------------------------------------------------------------------
  function clearErrors() {
    for (const id of Object.values(FIELDS)) $(id).classList.remove("invalid");
    for (const node of document.querySelectorAll(".field-error")) node.remove();
    $("reload").hidden = true;
  }

  function showFieldError(field, reason) {
    const input = $(FIELDS[field] || "");
    if (!input) return false;
    input.classList.add("invalid");
    input.parentElement.append(el("span", { class: "field-error", text: " " + reason }));
    input.focus();
    return true;
  }

  function fill(article) {
    state.current = article;
    state.deletedId = null;
    clearErrors();
    $("f-id").value = article ? article.id : "";
    $("f-id").disabled = !!article;
    $("f-title").value = article ? article.title : "";
    $("f-tags").value = article ? article.tags.join(", ") : "";
    $("f-questions").value = article ? article.questions.join("\n") : "";
    $("f-body").value = article ? article.body : "";
    $("form-title").textContent = article ? article.title : "New article";
    $("rev").textContent = article ? "revision " + article.rev + " · " + article.updated_by + " · " + article.updated_at : "";
    $("delete").disabled = !article;
    showManaged(article);
    for (const node of document.querySelectorAll(".article-item")) node.classList.remove("active");
  }

  // An entry from `botkit kb import` belongs to its file: say so, and what the next import does with an edit.
  function showManaged(article) {
    const node = $("managed");
    const m = article && article.managed;
    node.hidden = !m;
    if (!m) {
      node.replaceChildren();
      return;
    }
    node.className = "managed" + (m.state === "in_step" ? "" : " warn");
    node.dataset.state = m.state;
    const parts = [el("strong", { text: "Managed by files: " }), el("code", { text: m.file + (m.line ? ":" + m.line : "") }),
      " (imported as revision " + m.import_rev + "). "];
    if (m.state === "edited") {
      parts.push(el("strong", { text: "Edited here since the last import. " }),
        "The next botkit kb import keeps this edit while the file is unchanged; if the file changed, it reports a " +
        "conflict and imports nothing for this entry. Copy the edit into the file to make it permanent.");
    } else if (m.state === "kept_over_file") {
      parts.push("This version was kept over the file's (kb import --ours); if the file changes again, the next " +
        "import reports a conflict.");
    } else {
      parts.push("An edit saved here is kept by the next import while the file is unchanged; if the file changes too, " +
        "the import reports a conflict. To change it for good, change the file.");
    }
    node.replaceChildren(...parts);
  }

  async function openArticle(id) {
    setStatus("form-status", "");
    try {
      const data = await api("GET", articlePath(id));
      fill(data.article);
      await loadHistory(id);
      loadList();
    } catch (error) {
      setStatus("form-status", error.message, "error");
    }
  }

  function newArticle() {
    fill(null);
    $("history-box").hidden = true;
    setStatus("form-status", "");
    $("f-title").focus();
  }

  function formData() {
    return {
      title: $("f-title").value,
      body: $("f-body").value,
      tags: $("f-tags").value.split(",").map((t) => t.trim()).filter(Boolean),
      questions: $("f-questions").value.split("\n").map((q) => q.trim()).filter(Boolean),
    };
  }

  async function save(event) {
    event.preventDefault();
    clearErrors();
    const payload = formData();
    let result;
    try {
      if (state.current) {
        result = await api("PUT", articlePath(state.current.id), { ...payload, rev: state.current.rev });
      } else {
        const id = $("f-id").value.trim() || state.deletedId;
        result = await api("POST", "/api/kb/articles", id ? { ...payload, id } : payload);
      }
    } catch (error) {
      setStatus("form-status", error.message, "error");
      if (error.data && error.data.field) showFieldError(error.data.field, error.data.reason || "");
      if (error.status === 409 && error.data && error.data.current) $("reload").hidden = false;
      return;
    }
    fill(result.article);
    setStatus("form-status", result.changed ? "Saved: live for the next customer question." : "No changes to save.", "ok");
    await loadHistory(result.article.id);
    loadList();
  }

  async function remove() {
    const a = state.current;
    const fromFile = a && a.managed ? " It comes from " + a.managed.file + ": the next import keeps it deleted while " +
      "that file is unchanged, and reports a conflict if the file changes." : "";
    if (!a || !window.confirm("Delete “" + a.title + "”? Its history is kept, so it can be restored." + fromFile)) return;
    try {
      await api("DELETE", articlePath(a.id) + "?rev=" + a.rev);
    } catch (error) {
      setStatus("form-status", error.message, "error");
      if (error.status === 409) $("reload").hidden = false;
      return;
    }
    fill(null);
    state.deletedId = a.id;
    $("f-id").value = a.id;
    setStatus("form-status", "Deleted. To restore it, roll back to a revision below.", "ok");
    await loadHistory(a.id);
    loadList();
  }

  // -- history, diff, rollback -----------------------------------------------------------------
  async function loadHistory(id) {
    let data;
    try {
      data = await api("GET", articlePath(id, "history"));
    } catch (error) {
      $("history-box").hidden = true;
      return;
    }
    $("history-box").hidden = false;
    $("diff-box").hidden = true;
    const latest = data.revisions[data.revisions.length - 1];
    const items = data.revisions.slice().reverse().map((r) => {
      const actions = el("span", { class: "actions" });
      if (r.rev !== latest.rev) {
        actions.append(el("button", { type: "button", class: "secondary", text: "Diff to latest",
          onclick: () => showDiff(id, r.rev) }));
      }
      if (r.action !== "delete" && r.rev !== data.current_rev) {
        actions.append(el("button", { type: "button", class: "secondary", text: "Roll back to this",
          onclick: () => rollback(id, r.rev, data.current_rev) }));
      }
      return el("li", null,
        el("span", { text: "rev " + r.rev + " · " + r.action + " by " + r.author + " · " + r.at + " · " + r.title }),
        actions);
    });
    $("history").replaceChildren(...items);
  }

  async function showDiff(id, fromRev) {
    try {
      const data = await api("GET", articlePath(id, "diff") + "?from=" + fromRev);
      const lines = (data.diff || "(no differences)").split("\n").map((line) => {
        let kind = "";
        if (line.startsWith("+++") || line.startsWith("---")) kind = "file";
        else if (line.startsWith("+")) kind = "add";
        else if (line.startsWith("-")) kind = "del";
        else if (line.startsWith("@@")) kind = "hunk";
        return el("span", { class: kind, text: line });
      });
      $("diff-title").textContent = "Changes from revision " + fromRev + " to the latest";
      $("diff").replaceChildren(...lines);
      $("diff-box").hidden = false;
    } catch (error) {
      setStatus("form-status", error.message, "error");
    }
  }

  async function rollback(id, toRev, currentRev) {
    if (!window.confirm("Restore revision " + toRev + " as a new revision?")) return;
    try {
      const body = currentRev === null || currentRev === undefined ? { to: toRev } : { to: toRev, rev: currentRev };
      const result = await api("POST", articlePath(id, "rollback"), body);
      fill(result.article);
      setStatus("form-status", "Restored revision " + toRev + ": live for the next customer question.", "ok");
      await loadHistory(id);
      loadList();
    } catch (error) {
      setStatus("form-status", error.message, "error");
    }
  }

  // -- import ----------------------------------------------------------------------------------
  async function importFiles(event) {
    event.preventDefault();
    const files = $("files").files;
    $("import-problems").replaceChildren();
    if (!files.length) {
      setStatus("import-status", "Choose one or more files first.", "error");
      return;
    }
    const form = new FormData();
    for (const file of files) form.append("files", file, file.name);
    setStatus("import-status", "Importing…");
    try {
      const r = await api("POST", "/api/kb/import", form);
      setStatus("import-status", "Imported: " + r.created.length + " created, " + r.updated.length + " updated, " +
        r.unchanged.length + " unchanged (KB version " + r.kb_version + ").", "ok");
      $("files").value = "";
      loadList();
    } catch (error) {
      setStatus("import-status", error.message, "error");
      const problems = (error.data && error.data.problems) || [];
      $("import-problems").replaceChildren(...problems.map((p) => el("li", null,
        el("span", { class: "where", text: p.file + (p.line ? ":" + p.line : "") }), ": " + p.message)));
    }
  }

  // -- proposed FAQ entries (questions agents answered that the KB did not) ---------------------
  const proposalPath = (id, action) => "/api/kb/proposals/" + encodeURIComponent(id) + "/" + action;

  function proposalItem(p) {
    const questions = el("textarea", { rows: Math.min(6, p.questions.length + 1), "aria-label": "Questions" });
    questions.value = p.questions.join("\n");
    const answer = el("textarea", { rows: 5, "aria-label": "Answer" });
    answer.value = p.answer;
    const id = el("input", { autocomplete: "off", placeholder: "id (made from the first question when empty)",
                             "aria-label": "Id" });
    const sources = p.sources.slice(0, 10).join(", ") + (p.sources.length > 10 ? ", …" : "");
    const accept = async () => {
      try {
        const body = { questions: questions.value.split("\n").filter((q) => q.trim()), body: answer.value };
        if (id.value.trim()) body.id = id.value.trim();
        const data = await api("POST", proposalPath(p.id, "accept"), body);
        setStatus("proposal-status", "Accepted: FAQ entry " + data.article.id + " is live.", "ok");
        await loadProposals();
        await loadList();
      } catch (error) {
        setStatus("proposal-status", error.message, "error");
      }
    };
    const reject = async () => {
      try {
        await api("POST", proposalPath(p.id, "reject"), {});
        setStatus("proposal-status", "Rejected.", "ok");
        await loadProposals();
      } catch (error) {
        setStatus("proposal-status", error.message, "error");
      }
    };
    return el("li", { class: "proposal" },
      el("p", null, el("strong", { text: p.title }), " ",
         el("span", { class: "muted", text: "asked in " + p.count + " conversation" + (p.count === 1 ? "" : "s") })),
      el("label", null, "Questions ", el("small", { text: "one per line" }), questions),
      el("label", null, "Answer", answer),
      el("label", null, "Id", id),
      el("p", { class: "muted", text: "Conversations: " + sources }),
      el("div", { class: "form-actions" },
         el("button", { type: "button", onclick: accept, text: "Accept" }),
         el("button", { type: "button", class: "secondary", onclick: reject, text: "Reject" })));
  }

  async function loadProposals() {
    try {
      const data = await api("GET", "/api/kb/proposals");
      $("proposal-count").textContent = String(data.proposals.length);
      $("proposals").replaceChildren(...data.proposals.map(proposalItem));
    } catch (error) {
      setStatus("proposal-status", error.message, "error");
    }
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
      setStatus("form-status", error.message, "error");
      return;
    }
    state.csrf = state.me.csrf;
    window.BotkitStaff.setCsrf(state.csrf);
    $("who").textContent = state.me.name + " (" + state.me.role + ")";
    $("console-link").hidden = !state.me.can.console;
    $("analytics-link").hidden = !state.me.can.analytics;
    if (location.hash === "#proposals") $("proposals-box").open = true; // linked from /analytics
    $("article-form").addEventListener("submit", save);
    $("delete").addEventListener("click", remove);
    $("reload").addEventListener("click", () => state.current && openArticle(state.current.id));
    $("new").addEventListener("click", newArticle);
    $("import-form").addEventListener("submit", importFiles);
    $("signout").addEventListener("click", signOut);
    $("search-form").addEventListener("submit", (event) => { event.preventDefault(); loadList(); });
    $("tag").addEventListener("change", loadList);
    $("q").addEventListener("input", () => {
      clearTimeout(state.searchTimer); // debounce typing; searching embeds the query
      state.searchTimer = setTimeout(loadList, 300);
    });
    newArticle();
    await loadList();
    await loadProposals();
  }

  document.addEventListener("DOMContentLoaded", start);
})();
