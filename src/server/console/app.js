// keybridge console: a single page over /api (docs/console.md). No framework, no external assets;
// every value from the server goes into the DOM as text (textContent), never as markup.
"use strict";

const state = { csrf: null, identity: null, admin: false, groups: [] };

// ---- helpers ----------------------------------------------------------------------------------

function el(tag, attrs, ...kids) {
  const e = document.createElement(tag);
  for (const [k, v] of Object.entries(attrs || {})) {
    if (k === "text") e.textContent = v;
    else if (k === "on") for (const [ev, fn] of Object.entries(v)) e.addEventListener(ev, fn);
    else if (v === true) e.setAttribute(k, "");
    else if (v !== false && v !== null && v !== undefined) e.setAttribute(k, v);
  }
  for (const k of kids) if (k !== null && k !== undefined) e.append(k);
  return e;
}

function flash(msg, error) {
  const f = document.getElementById("flash");
  f.replaceChildren(el("div", { class: "msg" + (error ? " error" : ""), text: msg }));
}

function when(t) {
  if (t === null || t === undefined || t === 0) return "never";
  return new Date(t * 1000).toISOString().replace(".000Z", "Z");
}

async function api(method, path, body) {
  const opt = { method, headers: {}, credentials: "same-origin", cache: "no-store" };
  if (method !== "GET") opt.headers["X-CSRF-Token"] = state.csrf || "";
  if (body !== undefined) {
    opt.headers["Content-Type"] = "application/json";
    opt.body = JSON.stringify(body);
  }
  const r = await fetch(path, opt);
  let data = null;
  try { data = await r.json(); } catch (e) { data = null; }
  if (r.status === 401) { showLogin("Your session ended: run `keybridge console login` again."); }
  if (!r.ok) {
    const m = data && data.message ? data.message : "HTTP " + r.status;
    const err = new Error(m);
    err.status = r.status;
    throw err;
  }
  return data;
}

const admin = (p) => "/api/v1/admin" + p;
const enc = encodeURIComponent;

function table(cols, rows, render) {
  const t = el("table", {}, el("thead", {}, el("tr", {}, ...cols.map((c) => el("th", { text: c })))));
  const tb = el("tbody");
  for (const r of rows) tb.append(el("tr", {}, ...render(r).map((c) =>
    c instanceof Node ? el("td", {}, c) : el("td", { text: String(c) }))));
  if (rows.length === 0) tb.append(el("tr", {}, el("td", { colspan: cols.length, class: "muted", text: "none" })));
  t.append(tb);
  return t;
}

// Data arrives after awaits: draw only if the user is still on the page that asked for it (a
// late answer must not replace the page navigated to meanwhile).
function stillOn(name) {
  return location.hash.replace(/^#/, "").split("/", 1)[0] === name ||
    (name === "secrets" && location.hash === "");
}

function page(title, ...kids) {
  document.getElementById("main").replaceChildren(el("h1", { text: title }), ...kids);
}

function b64(bytes) {
  let s = "";
  for (let i = 0; i < bytes.length; i += 0x8000) s += String.fromCharCode(...bytes.subarray(i, i + 0x8000));
  return btoa(s);
}

function b64decode(s) {
  const bin = atob(s);
  const out = new Uint8Array(bin.length);
  for (let i = 0; i < bin.length; i++) out[i] = bin.charCodeAt(i);
  return out;
}

// ---- session ----------------------------------------------------------------------------------

function showLogin(msg) {
  state.csrf = null;
  document.getElementById("nav").hidden = true;
  document.getElementById("logout").hidden = true;
  document.getElementById("who").textContent = "";
  page("Log in",
    el("p", { text: msg || "Run `keybridge console login` with your admin or owner identity and open the URL it prints." }));
}

function startSession(s) {
  state.csrf = s.csrf;
  state.identity = s.identity;
  state.admin = s.admin;
  document.body.classList.toggle("owner", !s.admin);
  document.getElementById("who").textContent = s.identity + (s.admin ? " (admin)" : " (owner)");
  document.getElementById("nav").hidden = false;
  document.getElementById("logout").hidden = false;
}

async function boot() {
  document.getElementById("logout").addEventListener("click", logout);
  window.addEventListener("hashchange", route);
  const m = /^#login=([A-Za-z0-9_-]{43})$/.exec(location.hash);
  if (m) {
    // Take the token out of the address bar and history before using it.
    history.replaceState(null, "", "/#secrets");
    try {
      const r = await fetch("/api/login", { method: "POST", headers: { "Content-Type": "application/json" },
        body: JSON.stringify({ token: m[1] }), credentials: "same-origin" });
      const d = await r.json();
      if (!r.ok) { showLogin("Login refused: " + d.message); return; }
      startSession(d);
      route();
    } catch (e) { showLogin("Login failed: " + e.message); }
    return;
  }
  try {
    const r = await fetch("/api/session", { credentials: "same-origin", cache: "no-store" });
    if (!r.ok) { showLogin(); return; }
    startSession(await r.json());
    route();
  } catch (e) { showLogin(); }
}

async function logout() {
  try { await api("POST", "/api/logout"); } catch (e) { /* the session is gone either way */ }
  showLogin("Logged out.");
}

function route() {
  if (!state.csrf) return;
  const [name, arg] = location.hash.replace(/^#/, "").split("/", 2);
  for (const a of document.querySelectorAll("#nav a"))
    a.classList.toggle("active", a.dataset.page === name);
  document.getElementById("flash").replaceChildren();
  const pages = { secrets, secret: (n) => secretPage(decodeURIComponent(n || "")), create, expiring,
    groups, clients, sync, audit };
  (pages[name] || secrets)(arg);
}

// ---- secrets ----------------------------------------------------------------------------------

async function secrets() {
  const search = el("input", { id: "search", type: "search", placeholder: "search names", "aria-label": "search" });
  const holder = el("div");
  page("Secrets", el("div", { class: "row" }, search), holder);
  let all = [];
  try { all = (await api("GET", admin("/secrets"))).secrets; } catch (e) { flash(e.message, true); return; }
  if (!stillOn("secrets")) return;
  const draw = () => {
    const q = search.value.trim().toLowerCase();
    const rows = all.filter((s) => s.name.toLowerCase().includes(q) ||
      (s.description || "").toLowerCase().includes(q));
    holder.replaceChildren(table(["name", "version", "owner group", "cloud sync", "expires", "updated"],
      rows, (s) => [el("a", { href: "#secret/" + enc(s.name), text: s.name }), s.version,
        s.owner_group || "", s.cloud_sync ? "yes" : "no", when(s.expires_at), when(s.updated_at)]));
  };
  search.addEventListener("input", draw);
  draw();
}

async function secretPage(name) {
  let s, versions, status;
  try {
    [s, versions, status] = await Promise.all([api("GET", admin("/secrets/" + enc(name))),
      api("GET", admin("/secrets/" + enc(name) + "/versions")),
      api("GET", admin("/secrets/" + enc(name) + "/status"))]);
  } catch (e) { page("Secret " + name); flash(e.message, true); return; }
  if (!stillOn("secret")) return;

  const meta = table(["field", "value"], [
    ["name", s.name], ["description", s.description], ["owner group", s.owner_group || ""],
    ["latest version", s.version], ["checksum", s.checksum], ["content length", s.content_length],
    ["expires", when(s.expires_at)], ["metadata", JSON.stringify(s.metadata)],
    ["created", when(s.created_at) + " by " + s.created_by], ["updated", when(s.updated_at) + " by " + s.updated_by],
  ], (r) => r);

  const sync = el("input", { type: "checkbox", id: "cloud-sync" });
  sync.checked = !!s.cloud_sync;
  sync.addEventListener("change", async () => {
    try {
      await api("PATCH", admin("/secrets/" + enc(name)), { cloud_sync: sync.checked });
      flash("cloud sync " + (sync.checked ? "on" : "off") + " for " + name);
    } catch (e) { sync.checked = !sync.checked; flash(e.message, true); }
  });

  const reveal = el("div", { id: "reveal-out" });
  const revealBtn = el("button", { id: "reveal", type: "button", class: "danger", text: "Reveal content (audited)" });
  revealBtn.addEventListener("click", async () => {
    try {
      const r = await api("GET", admin("/secrets/" + enc(name) + "/content"));
      const bytes = b64decode(r.content);
      let text;
      try { text = new TextDecoder("utf-8", { fatal: true }).decode(bytes); } catch (e) { text = "base64: " + r.content; }
      const hide = el("button", { type: "button", text: "Hide" });
      const pre = el("pre", { class: "reveal", id: "revealed", text });
      hide.addEventListener("click", () => reveal.replaceChildren());
      reveal.replaceChildren(el("p", { class: "muted", text: "version " + r.version + " (this reveal is in the audit log)" }), pre, hide);
    } catch (e) { flash(e.message, true); }
  });

  const grantGroup = el("select", { id: "grant-group" });
  for (const g of await groupNames()) grantGroup.append(el("option", { value: g, text: g }));
  if (!stillOn("secret")) return;
  const grantBtn = el("button", { id: "grant-add", type: "button", text: "Grant" });
  grantBtn.addEventListener("click", async () => {
    try {
      await api("POST", admin("/grants"), { group: grantGroup.value, secret: name });
      flash("granted " + name + " to " + grantGroup.value);
      secretPage(name);
    } catch (e) { flash(e.message, true); }
  });
  const grants = table(["group", ""], s.groups || [], (g) => {
    const gname = typeof g === "string" ? g : g.name;
    const rm = el("button", { type: "button", text: "Revoke" });
    rm.addEventListener("click", async () => {
      try { await api("DELETE", admin("/grants"), { group: gname, secret: name }); secretPage(name); }
      catch (e) { flash(e.message, true); }
    });
    return [gname, rm];
  });

  page("Secret " + name, meta,
    el("h2", { text: "Cloud sync" }),
    el("label", {}, sync, " sync this secret to the cloud (opt-in)"),
    el("h2", { text: "Content" }), revealBtn, reveal,
    el("h2", { text: "New version" }), versionForm(name),
    el("h2", { text: "Grants" }), grants, el("div", { class: "row" }, grantGroup, grantBtn),
    el("h2", { text: "Versions" }),
    table(["version", "checksum", "length", "expires", "created"], versions.versions, (v) =>
      [v.version, el("span", { class: "mono", text: v.checksum.slice(0, 16) + "…" }), v.content_length,
        when(v.expires_at), when(v.created_at) + " by " + v.created_by]),
    el("h2", { text: "Who fetched which version" }),
    table(["client", "version", "current", "fetched"], status.clients, (c) =>
      [el("span", { class: "mono", text: c.client }), c.version, c.current ? "yes" : "no", when(c.fetched_at)]));
}

async function groupNames() {
  try { return (await api("GET", admin("/groups"))).groups.map((g) => g.name); } catch (e) { return []; }
}

// Content from a file, or generated by the server (never through this browser).
function contentFields(prefix) {
  const mode = el("select", { id: prefix + "-mode" },
    el("option", { value: "file", text: "upload a file" }),
    ...["random", "password", "ec", "rsa", "ed25519"].map((t) => el("option", { value: t, text: "generate: " + t })));
  const file = el("input", { type: "file", id: prefix + "-file" });
  const fileRow = el("label", {}, el("span", { text: "file" }), file);
  mode.addEventListener("change", () => { fileRow.hidden = mode.value !== "file"; });
  const expires = el("input", { type: "datetime-local", id: prefix + "-expires" });
  return { mode, file, expires, nodes: [el("label", {}, el("span", { text: "content" }), mode), fileRow,
    el("label", {}, el("span", { text: "expires (UTC, optional)" }), expires)] };
}

function expiresAt(input) {
  if (!input.value) return undefined;
  const t = Date.parse(input.value + "Z");
  return Number.isNaN(t) ? undefined : Math.floor(t / 1000);
}

async function writeContent(name, f, extra, create) {
  const exp = expiresAt(f.expires);
  if (f.mode.value === "file") {
    if (!f.file.files.length) throw new Error("choose a file");
    const bytes = new Uint8Array(await f.file.files[0].arrayBuffer());
    const body = Object.assign({ content: b64(bytes) }, extra);
    if (exp !== undefined) body.expires_at = exp;
    return create ? api("POST", admin("/secrets"), Object.assign({ name }, body))
      : api("PUT", admin("/secrets/" + enc(name)), body);
  }
  const body = Object.assign({ type: f.mode.value }, create ? extra : {});
  if (exp !== undefined) body.expires_at = exp;
  return api("POST", admin("/secrets/" + enc(name) + "/generate"), body);
}

function versionForm(name) {
  const f = contentFields("put");
  const btn = el("button", { type: "submit", class: "primary", id: "put-submit", text: "Write new version" });
  const form = el("form", { class: "card", id: "put-form" }, ...f.nodes, btn);
  form.addEventListener("submit", async (ev) => {
    ev.preventDefault();
    try { const r = await writeContent(name, f, {}, false); flash("wrote " + name + " version " + r.version); secretPage(name); }
    catch (e) { flash(e.message, true); }
  });
  return form;
}

async function create() {
  const name = el("input", { id: "create-name", required: true, placeholder: "name" });
  const desc = el("input", { id: "create-description", placeholder: "description" });
  const owner = el("select", { id: "create-owner" });
  if (state.admin) owner.append(el("option", { value: "", text: "(none)" }));
  for (const g of await groupNames()) owner.append(el("option", { value: g, text: g }));
  if (!stillOn("create")) return;
  const f = contentFields("create");
  const btn = el("button", { type: "submit", class: "primary", id: "create-submit", text: "Create" });
  const form = el("form", { class: "card", id: "create-form" },
    el("label", {}, el("span", { text: "name" }), name),
    el("label", {}, el("span", { text: "description" }), desc),
    el("label", {}, el("span", { text: "owner group" }), owner), ...f.nodes, btn);
  form.addEventListener("submit", async (ev) => {
    ev.preventDefault();
    const extra = { description: desc.value };
    if (owner.value) extra.owner_group = owner.value;
    try {
      await writeContent(name.value, f, extra, true);
      location.hash = "#secret/" + enc(name.value);
      flash("created " + name.value);
    } catch (e) { flash(e.message, true); }
  });
  page("Create a secret", form);
}

// ---- expiry timeline --------------------------------------------------------------------------

async function expiring() {
  const days = 90;
  let r;
  try { r = await api("GET", admin("/expiring?within=" + days * 86400)); } catch (e) { page("Expiring"); flash(e.message, true); return; }
  if (!stillOn("expiring")) return;
  const line = el("div", { class: "timeline", id: "timeline" });
  const span = r.to - r.from;
  for (const s of r.secrets) {
    const left = Math.max(0, Math.min(100, ((s.expires_at - r.from) / span) * 100));
    const d = (s.expires_at - r.from) / 86400;
    const tick = el("div", { class: "tick" + (d > 30 ? " far" : d > 7 ? " later" : ""), title: s.name + " " + when(s.expires_at) });
    tick.style.left = left + "%"; // CSSOM, not a style attribute: allowed by the CSP
    line.append(tick);
  }
  for (const m of [0, 30, 60, 90]) {
    const lab = el("span", { class: "scale", text: m === 0 ? "now" : "+" + m + "d" });
    lab.style.left = Math.min(96, (m / days) * 100) + "%";
    line.append(lab);
  }
  page("Expiring in the next 90 days", line,
    table(["name", "version", "expires", "in", "owner group"], r.secrets, (s) =>
      [el("a", { href: "#secret/" + enc(s.name), text: s.name }), s.version, when(s.expires_at),
        Math.ceil((s.expires_at - r.from) / 86400) + " days", s.owner_group || ""]));
}

// ---- groups, clients, sync, audit ---------------------------------------------------------------

async function groups() {
  let gs;
  try { gs = (await api("GET", admin("/groups"))).groups; } catch (e) { page("Groups"); flash(e.message, true); return; }
  if (!stillOn("groups")) return;
  const holder = el("div");
  const rows = await Promise.all(gs.map(async (g) => {
    try { return Object.assign({}, g, await api("GET", admin("/groups/" + enc(g.name)))); } catch (e) { return g; }
  }));
  if (!stillOn("groups")) return;
  holder.append(table(["name", "description", "members", "created"], rows, (g) =>
    [g.name, g.description, (g.clients || []).map((c) => c.spiffe_id || c).join(", "), when(g.created_at)]));
  page("Groups", holder);
}

async function clients() {
  let cs;
  try { cs = (await api("GET", admin("/clients"))).clients; } catch (e) { page("Clients"); flash(e.message, true); return; }
  if (!stillOn("clients")) return;
  page("Clients", table(["SPIFFE ID", "app", "enabled", "admin", "cloud", "last seen"], cs, (c) =>
    [el("span", { class: "mono", text: c.spiffe_id }), c.app_name, c.enabled ? "yes" : "no",
      c.admin ? "yes" : "no", c.cloud ? "yes" : "no", when(c.last_seen)]));
}

async function sync() {
  let cs;
  try { cs = (await api("GET", admin("/clients"))).clients; } catch (e) { page("Sync status"); flash(e.message, true); return; }
  if (!stillOn("sync")) return;
  const now = Date.now() / 1000;
  const apps = cs.filter((c) => !c.admin);
  page("Sync status per application",
    el("p", { class: "muted", text: "Last full listing by each client (its syncer's poll)." }),
    table(["application", "SPIFFE ID", "cloud", "last listing", "ago"], apps, (c) =>
      [c.app_name || "(none)", el("span", { class: "mono", text: c.spiffe_id }), c.cloud ? "yes" : "no",
        when(c.last_list_at), c.last_list_at ? Math.round((now - c.last_list_at) / 60) + " min" : "never"]));
}

async function audit() {
  const obj = el("input", { id: "audit-object", placeholder: "object (secret name)" });
  const verify = el("button", { type: "button", id: "audit-verify", text: "Verify chain" });
  const result = el("span", { id: "verify-result" });
  const holder = el("div");
  const load = async () => {
    const q = obj.value ? "?object=" + enc(obj.value) + "&limit=200" : "?limit=200";
    try {
      const ev = (await api("GET", admin("/audit" + q))).events;
      if (!stillOn("audit")) return;
      holder.replaceChildren(table(["seq", "time", "identity", "action", "object", "version", "result"], ev, (e) =>
        [e.seq, when(e.time), el("span", { class: "mono", text: e.identity }), e.action, e.object, e.version, e.result]));
    } catch (e) { flash(e.message, true); }
  };
  verify.addEventListener("click", async () => {
    try {
      const r = await api("POST", admin("/audit/verify"));
      result.className = r.ok ? "ok" : "bad";
      result.textContent = r.ok ? "chain verified: " + r.rows + " rows" : "FAILED at row " + r.first_bad_seq + ": " + r.reason;
    } catch (e) { flash(e.message, true); }
  });
  obj.addEventListener("change", load);
  page("Audit log", el("div", { class: "row" }, obj, verify, result), holder);
  await load();
}

document.addEventListener("DOMContentLoaded", boot);
