// The keybridge console in real Chromium (Debian's /usr/bin/chromium, driven by playwright-core;
// no browser is downloaded). Run by tests/integration/test_console.py, which starts keybridged,
// makes the login URLs with `keybridge console login` and checks the server side afterwards.
// Input: KB_CONSOLE_TEST (JSON): {base, admin_url, admin_url2, owner_url, shots, profile}.
// Output: one JSON line {"results": {check: true|false|detail}} on stdout.
"use strict";
const fs = require("fs");
const path = require("path");
const { chromium } = require("playwright-core");

const cfg = JSON.parse(process.env.KB_CONSOLE_TEST);
const results = {};
const check = (name, ok, detail) => {
  results[name] = ok ? true : (detail === undefined ? false : String(detail));
  if (!ok) console.error("FAIL:", name, detail === undefined ? "" : detail);
};

async function shot(page, name) {
  await page.screenshot({ path: path.join(cfg.shots, `console-${name}.png`), fullPage: true });
}

// Wait for a flash message matching re (an earlier message may still be showing); its text.
async function flashMatch(page, re) {
  try {
    await page.waitForFunction((src) => {
      const m = document.querySelector("#flash .msg");
      return m && new RegExp(src).test(m.textContent);
    }, re.source, { timeout: 10000 });
    return true;
  } catch (e) {
    return false;
  }
}

// fetch() from inside the page (same origin, the session cookie rides along by itself).
function inPage(page, method, url, body, csrf) {
  return page.evaluate(async ([m, u, b, c]) => {
    const h = {};
    if (b !== null) h["Content-Type"] = "application/json";
    if (c !== null) h["X-CSRF-Token"] = c;
    const r = await fetch(u, { method: m, headers: h, body: b === null ? undefined : JSON.stringify(b) });
    return { status: r.status, body: await r.text() };
  }, [method, url, body, csrf]);
}

async function main() {
  // Each session gets its own fresh profile (--user-data-dir, which playwright passes for a
  // persistent context): nothing is shared between the admin's and the owner's browser.
  const open = (n) => chromium.launchPersistentContext(path.join(cfg.profile, n), {
    executablePath: "/usr/bin/chromium",
    args: ["--headless", "--no-sandbox", "--disable-gpu", "--disable-quic", "--no-first-run",
      "--disable-background-networking", "--disable-component-update", "--disable-sync"],
    ignoreHTTPSErrors: true, viewport: { width: 1200, height: 800 },
  });
  let ctx = null, octx = null;
  try {
    // ---- admin: login, security headers, cookie attributes
    ctx = await open("admin");
    const page = await ctx.newPage();
    const cspViolations = [];
    page.on("console", (m) => { if (/Content Security Policy/i.test(m.text())) cspViolations.push(m.text()); });
    const loginResp = page.waitForResponse((r) => r.url().endsWith("/api/login"));
    const first = await page.goto(cfg.admin_url);
    const h = first.headers();
    check("csp", /default-src 'self'/.test(h["content-security-policy"] || "") &&
      /frame-ancestors 'none'/.test(h["content-security-policy"]) && !/unsafe-inline/.test(h["content-security-policy"]),
    h["content-security-policy"]);
    check("frame_options", h["x-frame-options"] === "DENY" && h["x-content-type-options"] === "nosniff", JSON.stringify(h));
    const lr = await loginResp;
    const setCookie = (await lr.headerValue("set-cookie")) || "";
    check("login_status", lr.status() === 200, lr.status());
    check("cookie_flags", /HttpOnly/.test(setCookie) && /Secure/.test(setCookie) &&
      /SameSite=Strict/.test(setCookie) && /Path=\/api\//.test(setCookie) && /Max-Age=\d+/.test(setCookie), setCookie);
    check("api_no_store", (await lr.headerValue("cache-control")) === "no-store");
    await page.waitForSelector("#who:has-text('(admin)')", { timeout: 10000 });
    check("token_gone_from_url", !page.url().includes("login="), page.url());
    const cookies = await ctx.cookies();
    const sess = cookies.find((c) => c.name === "kb_console");
    check("cookie_httponly_in_jar", sess && sess.httpOnly && sess.secure && sess.sameSite === "Strict", JSON.stringify(cookies));
    check("cookie_not_in_js", (await page.evaluate(() => document.cookie)) === "");
    await page.waitForSelector("table", { timeout: 10000 });
    check("secrets_listed", (await page.textContent("main")).includes("b-secret"));
    await shot(page, "secrets");

    // ---- create with an uploaded file, expiring in 10 days
    await page.click("a[data-page=create]");
    await page.waitForSelector("#create-form");
    await page.fill("#create-name", "web-tls");
    await page.fill("#create-description", "made in Chromium");
    await page.selectOption("#create-owner", "team-a");
    await page.setInputFiles("#create-file", { name: "web.txt", mimeType: "text/plain", buffer: Buffer.from(cfg.content) });
    const exp = new Date(Date.now() + 10 * 86400 * 1000).toISOString().slice(0, 16);
    await page.fill("#create-expires", exp);
    await shot(page, "create");
    await page.click("#create-submit");
    await page.waitForSelector("#reveal", { timeout: 10000 });
    check("created", (await page.textContent("main")).includes("made in Chromium"));

    // ---- cloud-sync opt-in
    await page.check("#cloud-sync");
    check("opt_in", await flashMatch(page, /cloud sync on/), await page.textContent("#flash"));

    // ---- grant to app-readers
    await page.selectOption("#grant-group", "app-readers");
    await page.click("#grant-add");
    check("grant", await flashMatch(page, /granted web-tls to app-readers/), await page.textContent("#flash"));
    await page.waitForSelector("td:has-text('app-readers')", { timeout: 10000 });

    // ---- content is not on the page until revealed
    check("not_revealed_before", !(await page.content()).includes(cfg.content));
    await page.click("#reveal");
    await page.waitForSelector("#revealed", { timeout: 10000 });
    check("reveal", (await page.textContent("#revealed")) === cfg.content);
    await shot(page, "secret");

    // ---- generate a new version on the server (content never through the browser)
    await page.selectOption("#put-mode", "password");
    await page.fill("#put-expires", exp);
    await page.click("#put-submit");
    check("generate_version", await flashMatch(page, /wrote web-tls version 2/), await page.textContent("#flash"));
    await page.waitForSelector("td:has-text('latest version') + td:has-text('2')", { timeout: 10000 });

    // ---- the other pages
    await page.click("a[data-page=expiring]");
    await page.waitForSelector("h1:text-is('Expiring in the next 90 days')", { timeout: 10000 });
    await page.waitForSelector("#timeline .tick", { timeout: 10000 });
    const expText = await page.textContent("main");
    check("expiry_view", expText.includes("web-tls") && /10 days/.test(expText), expText.slice(0, 400));
    await shot(page, "expiring");
    await page.click("a[data-page=groups]");
    await page.waitForSelector("h1:text-is('Groups')", { timeout: 10000 });
    await page.waitForSelector("td:has-text('" + cfg.owner_a + "')", { timeout: 10000 }).catch(() => null);
    check("groups_members", (await page.textContent("main")).includes(cfg.owner_a));
    await shot(page, "groups");
    await page.click("a[data-page=clients]");
    await page.waitForSelector("h1:text-is('Clients')", { timeout: 10000 });
    await page.waitForSelector("td:has-text('last seen'), th:has-text('last seen')", { timeout: 10000 });
    check("clients", (await page.textContent("main")).includes(cfg.owner_a));
    await shot(page, "clients");
    await page.click("a[data-page=sync]");
    await page.waitForSelector("h1:text-is('Sync status per application')", { timeout: 10000 });
    await page.waitForSelector("th:has-text('last listing')", { timeout: 10000 });
    check("sync_status", (await page.textContent("main")).includes("reader-app"));
    await shot(page, "sync");
    await page.click("a[data-page=audit]");
    await page.waitForSelector("h1:text-is('Audit log')", { timeout: 10000 });
    await page.waitForSelector("td:has-text('secret.admin_read')", { timeout: 10000 });
    await page.click("#audit-verify");
    await page.waitForSelector("#verify-result.ok", { timeout: 10000 });
    check("audit_verify", /chain verified/.test(await page.textContent("#verify-result")));
    await shot(page, "audit");

    // ---- CSRF: a change without the header, or with a wrong one, is refused and changes nothing
    const noTok = await inPage(page, "PATCH", "/api/v1/admin/secrets/web-tls", { cloud_sync: false }, null);
    check("csrf_missing_403", noTok.status === 403 && /csrf/.test(noTok.body), JSON.stringify(noTok));
    const badTok = await inPage(page, "PATCH", "/api/v1/admin/secrets/web-tls", { cloud_sync: false }, "A".repeat(43));
    check("csrf_wrong_403", badTok.status === 403, JSON.stringify(badTok));
    const stillOn = await inPage(page, "GET", "/api/v1/admin/secrets/web-tls", null, null);
    check("csrf_changed_nothing", stillOn.status === 200 && JSON.parse(stillOn.body).cloud_sync === true, stillOn.body);
    check("no_csp_violations", cspViolations.length === 0, cspViolations.join(" | "));

    // ---- logout: the old cookie is refused afterwards, the used login URL too
    const oldCookie = sess.value;
    await page.click("#logout");
    await page.waitForSelector("h1:has-text('Log in')", { timeout: 10000 });
    const after = await inPage(page, "GET", "/api/session", null, null);
    check("logout_session_gone", after.status === 401, JSON.stringify(after));
    await ctx.addCookies([{ name: "kb_console", value: oldCookie, url: cfg.base + "/api/" }]);
    const replay = await inPage(page, "GET", "/api/v1/admin/secrets", null, null);
    check("logout_cookie_refused", replay.status === 401, JSON.stringify(replay));
    await page.goto("about:blank"); // a new document, not a same-page hash change
    await page.goto(cfg.admin_url);
    await page.waitForSelector("h1:has-text('Log in')", { timeout: 10000 });
    check("login_url_single_use", /refused/.test(await page.textContent("main")), await page.textContent("main"));
    await ctx.close();
    ctx = null;

    // ---- an owner sees only its group's secrets
    octx = await open("owner");
    const op = await octx.newPage();
    await op.goto(cfg.owner_url);
    await op.waitForSelector("#who:has-text('(owner)')", { timeout: 10000 });
    await op.waitForSelector("td a", { timeout: 10000 });
    const otext = await op.textContent("main");
    check("owner_sees_own", otext.includes("web-tls") && otext.includes("a-secret"), otext);
    check("owner_not_others", !otext.includes("b-secret"), otext);
    await shot(op, "owner");
    const probe = await inPage(op, "GET", "/api/v1/admin/secrets/b-secret", null, null);
    check("owner_other_404", probe.status === 404, JSON.stringify(probe));
    const csrf = JSON.parse((await inPage(op, "GET", "/api/session", null, null)).body).csrf;
    const steal = await inPage(op, "GET", "/api/v1/admin/secrets/b-secret/content", null, null);
    check("owner_other_content_404", steal.status === 404, JSON.stringify(steal));
    const patch = await inPage(op, "PATCH", "/api/v1/admin/secrets/b-secret", { cloud_sync: true }, csrf);
    check("owner_other_patch_404", patch.status === 404, JSON.stringify(patch));
    const clientsP = await inPage(op, "GET", "/api/v1/admin/clients", null, null);
    check("owner_no_clients", clientsP.status === 403, JSON.stringify(clientsP));
  } finally {
    if (ctx) await ctx.close();
    if (octx) await octx.close();
  }
}

main().then(() => {
  console.log(JSON.stringify({ results }));
}, (e) => {
  console.error(e && e.stack ? e.stack : e);
  console.log(JSON.stringify({ results, error: String(e && e.message ? e.message : e) }));
  process.exitCode = 1;
});
