// Shared by the agent console and the KB editor: building DOM from data (text only, never
// HTML) and calling the JSON API with the session's CSRF token.
"use strict";

window.BotkitStaff = (() => {
  let csrf = "";

  function el(tag, props, ...children) {
    const node = document.createElement(tag);
    for (const [key, value] of Object.entries(props || {})) {
      if (key === "class") node.className = value;
      else if (key === "text") node.textContent = value;
      else if (key.startsWith("on")) node.addEventListener(key.slice(2), value);
      else if (value !== undefined && value !== null && value !== false) node.setAttribute(key, String(value));
    }
    for (const child of children) {
      if (child !== null && child !== undefined && child !== false) node.append(child); // strings become text nodes
    }
    return node;
  }

  async function api(method, path, body) {
    const options = { method, headers: { Accept: "application/json" }, credentials: "same-origin" };
    if (method !== "GET") options.headers["X-CSRF-Token"] = csrf;
    if (body instanceof FormData) {
      options.body = body; // the browser sets the multipart boundary
    } else if (body !== undefined) {
      options.headers["Content-Type"] = "application/json";
      options.body = JSON.stringify(body);
    }
    const response = await fetch(path, options);
    if (response.status === 401) {
      location.assign("/signin?next=" + encodeURIComponent(location.pathname));
      throw new Error("Your session has ended; please sign in again.");
    }
    let data = null;
    try { data = await response.json(); } catch (_) { data = null; }
    if (!response.ok) {
      const error = new Error((data && data.error) || response.statusText);
      error.status = response.status;
      error.data = data || {};
      throw error;
    }
    return data;
  }

  return { el, api, setCsrf: (token) => { csrf = token || ""; } };
})();
