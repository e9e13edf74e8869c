// The console page: plain DOM, no inline handlers (the CSP forbids them), text only through
// textContent (names come from users). Every change sends the session's CSRF token.
"use strict";

const $ = (id) => document.getElementById(id);
const SVG = "http://www.w3.org/2000/svg";
let csrf = "";
let me = null;
let accountId = null;

async function call(method, path, body) {
  const headers = { Accept: "application/json" };
  if (method !== "GET") headers["X-CSRF-Token"] = csrf;
  if (body !== undefined) headers["Content-Type"] = "application/json";
  const response = await fetch("/console/api" + path, {
    method, headers, credentials: "same-origin",
    body: body === undefined ? undefined : JSON.stringify(body),
  });
  const type = response.headers.get("content-type") || "";
  const data = type.includes("json") ? await response.json() : null;
  if (!response.ok) throw new Error((data && data.message) || `HTTP ${response.status}`);
  return data;
}

function say(text) { $("message").textContent = text || ""; $("error").textContent = ""; }
function fail(error) { $("error").textContent = error.message || String(error); $("message").textContent = ""; }
function guarded(fn) {
  return async (event) => {
    if (event) event.preventDefault();
    try { await fn(event); } catch (error) { fail(error); }
  };
}
function value(id) { const v = $(id).value.trim(); return v === "" ? null : v; }
function number(id) { const v = value(id); return v === null ? null : Number(v); }
function when(iso) { return iso ? iso.replace("T", " ").slice(0, 16) : "—"; }
function usd(amount) { return amount === null || amount === undefined ? "none" : "$" + Number(amount).toFixed(Number(amount) < 1 ? 6 : 2); }

function fill(tbody, rows) {
  tbody.replaceChildren();
  for (const cells of rows) {
    const tr = document.createElement("tr");
    for (const cell of cells.cells || cells) {
      const td = document.createElement("td");
      if (cell instanceof Node) td.append(cell); else td.textContent = cell === null || cell === undefined ? "" : String(cell);
      tr.append(td);
    }
    for (const [name, v] of Object.entries(cells.data || {})) tr.dataset[name] = v;
    tbody.append(tr);
  }
}

function button(label, className, onClick) {
  const b = document.createElement("button");
  b.type = "button"; b.textContent = label; b.className = className;
  b.addEventListener("click", guarded(onClick));
  return b;
}

function svg(tag, attributes, text) {
  const node = document.createElementNS(SVG, tag);
  for (const [k, v] of Object.entries(attributes)) node.setAttribute(k, v);
  if (text !== undefined) node.textContent = text;
  return node;
}

function show(view) {
  for (const id of ["signed-out", "reset-view", "invite-view", "app"]) $(id).hidden = id !== view;
  $("who").hidden = view !== "app" && !(me && me.signed_in);
}

async function loadSession() {
  me = await call("GET", "/session");
  csrf = me.csrf_token;
  if (!me.signed_in) { show("signed-out"); return; }
  $("user-email").textContent = me.email;
  const select = $("account-select");
  select.replaceChildren(...me.accounts.map((a) => new Option(`${a.name} (${a.role})`, a.id)));
  if (!me.accounts.some((a) => a.id === accountId)) accountId = me.accounts.length ? me.accounts[0].id : null;
  if (accountId !== null) select.value = accountId;
  $("operator-tab").hidden = !me.operator;
  const invitation = sessionStorage.getItem("invitation");
  if (invitation) { show("invite-view"); $("who").hidden = false; return; }
  show("app");
  await openTab(currentTab);
}

let currentTab = "overview";
async function openTab(name) {
  currentTab = name;
  for (const b of document.querySelectorAll("#tabs button")) b.classList.toggle("active", b.dataset.tab === name);
  for (const s of document.querySelectorAll(".tab")) s.hidden = s.id !== "tab-" + name;
  if (name === "operator") return loadOperator();
  if (accountId === null) { say("You belong to no account yet."); return; }
  return { overview: loadOverview, keys: loadKeys, usage: loadUsage, members: loadMembers }[name]();
}

function drawBudget(spend, budget) {
  const bar = $("budget-bar");
  bar.replaceChildren(svg("rect", { x: 0, y: 4, width: 600, height: 20, class: "track" }));
  if (budget === null) { bar.append(svg("text", { x: 6, y: 18 }, "no budget set")); return; }
  const share = budget > 0 ? spend / budget : 1;
  bar.append(svg("rect", { x: 0, y: 4, height: 20, width: Math.min(1, share) * 600, class: share >= 1 ? "over" : share >= 0.8 ? "warn" : "spend" }));
  bar.append(svg("line", { x1: 480, x2: 480, y1: 0, y2: 28, class: "axis" }));
  bar.append(svg("text", { x: 484, y: 12 }, "80%"));
  bar.dataset.share = share.toFixed(4);
}

async function loadOverview() {
  const a = await call("GET", `/accounts/${accountId}`);
  $("account-name").textContent = a.name;
  $("account-status").textContent = a.status;
  $("account-status").className = "badge " + a.status;
  $("account-tier").textContent = a.tier;
  $("account-role").textContent = a.role;
  $("account-why").textContent = a.why;
  $("account-why").className = "why " + a.status;
  $("limit-rpm").textContent = a.limits.rpm.toLocaleString("en");
  $("limit-tpm").textContent = a.limits.tpm.toLocaleString("en");
  $("spend-month").textContent = a.month;
  $("spend").textContent = usd(a.spend_usd);
  $("budget").textContent = a.budget_usd === null ? "no budget" : usd(a.budget_usd) + " budget";
  $("budget-input").value = a.budget_usd === null ? "" : Number(a.budget_usd);
  drawBudget(Number(a.spend_usd), a.budget_usd === null ? null : Number(a.budget_usd));
}

function budgetEditor(k) {
  const box = document.createElement("span");
  const input = document.createElement("input");
  input.className = "key-budget"; input.size = 8; input.inputMode = "decimal"; input.placeholder = "none";
  input.value = k.budget_usd === null ? "" : Number(k.budget_usd);
  input.setAttribute("aria-label", `monthly budget of ${k.name} in dollars`);
  box.append(input, button("Set", "set-budget", async () => {
    const saved = await call("PUT", `/accounts/${accountId}/keys/${k.id}/budget`, { budget_usd: input.value.trim() || null });
    say(`Budget of ${k.name}: ${usd(saved.budget_usd)}.`); await loadKeys();
  }));
  return box;
}

async function loadKeys() {
  const { data } = await call("GET", `/accounts/${accountId}/keys`);
  fill($("keys-table").tBodies[0], data.map((k) => ({
    data: { keyId: k.id, status: k.status },
    cells: [k.name, k.prefix + "…", k.status, when(k.created_at), when(k.expires_at), when(k.last_used_at),
            k.rpm || "tier", k.tpm || "tier", k.status === "revoked" ? usd(k.budget_usd) : budgetEditor(k),
            k.spend_usd === null ? "" : usd(k.spend_usd),
            k.status === "revoked" ? "" : button("Revoke", "revoke", async () => {
              await call("POST", `/accounts/${accountId}/keys/${k.id}/revoke`);
              say(`Key ${k.name} revoked.`); await loadKeys();
            })],
  })));
}

function drawUsage(rows) {
  const chart = $("usage-chart");
  const width = 900, height = 260, left = 60, bottom = 40, top = 10;
  chart.replaceChildren();
  const max = Math.max(1, ...rows.map((r) => r.total_tokens));
  const step = (width - left) / Math.max(rows.length, 1);
  const scale = (height - bottom - top) / max;
  for (const fraction of [0, 0.5, 1]) {
    const y = height - bottom - fraction * max * scale;
    chart.append(svg("line", { x1: left, x2: width, y1: y, y2: y, class: "axis" }));
    chart.append(svg("text", { x: 2, y: y + 3 }, Math.round(fraction * max).toLocaleString("en")));
  }
  const every = Math.ceil(rows.length / 16);  // at most 16 labels: they must stay legible
  const label = (group) => /^\d{4}-\d\d-\d\dT/.test(group) ? group.slice(5, 16).replace("T", " ") : String(group).slice(0, 18);
  rows.forEach((r, i) => {
    const w = Math.max(1, Math.min(60, step * 0.8)), x = left + i * step + (step - w) / 2;
    // output tokens are stacked as answer, then thinking: thinking is a part of output, not more
    const inputHeight = r.prompt_tokens * scale, thinkingHeight = r.thinking_tokens * scale;
    const answerHeight = (r.completion_tokens - r.thinking_tokens) * scale;
    const group = svg("g", { "data-group": r.group, "data-tokens": r.total_tokens, "data-thinking": r.thinking_tokens });
    group.append(svg("title", {}, `${r.group}: ${r.prompt_tokens} input, ${r.completion_tokens} output (${r.thinking_tokens} thinking), $${r.cost_usd}`));
    group.append(svg("rect", { x, width: w, y: height - bottom - inputHeight, height: inputHeight, class: "input" }));
    group.append(svg("rect", { x, width: w, y: height - bottom - inputHeight - answerHeight, height: answerHeight, class: "output" }));
    group.append(svg("rect", { x, width: w, y: height - bottom - inputHeight - answerHeight - thinkingHeight, height: thinkingHeight, class: "thinking" }));
    if (i % every === 0) group.append(svg("text", { x, y: height - bottom + 14 }, label(r.group)));
    chart.append(group);
  });
  if (!rows.length) chart.append(svg("text", { x: left + 10, y: 120 }, "no usage in this range"));
}

function usageQuery() {
  const params = new URLSearchParams({ group_by: $("usage-group").value });
  if ($("usage-start").value) params.set("start", $("usage-start").value);
  if ($("usage-end").value) params.set("end", $("usage-end").value);
  return params.toString();
}

async function loadUsage() {
  const query = usageQuery();
  $("usage-csv").href = `/console/api/accounts/${accountId}/usage.csv?${query}`;
  const report = await call("GET", `/accounts/${accountId}/usage?${query}`);
  if (!$("usage-start").value) { $("usage-start").value = report.start; $("usage-end").value = report.end; }
  drawUsage(report.data);
  const row = (r) => [r.group, r.requests, r.prompt_tokens, r.completion_tokens, r.thinking_tokens, r.total_tokens, "$" + r.cost_usd];
  fill($("usage-table").tBodies[0], report.data.map(row));
  fill($("usage-table").tFoot, [row({ group: "total", ...report.totals })]);
  await loadInvoice();
}

async function loadInvoice() {
  const month = $("invoice-month").value || new Date().toISOString().slice(0, 7);
  $("invoice-month").value = month;
  const invoice = await call("GET", `/accounts/${accountId}/invoice?month=${month}`);
  fill($("invoice-table").tBodies[0], invoice.lines.map((l) => [
    l.model, l.prompt_tokens, l.completion_tokens, "$" + l.list_usd, "$" + l.discount_usd, "$" + l.amount_usd]));
  $("invoice-total").textContent = "$" + invoice.total_usd;
  $("invoice-tiers").textContent = Object.entries(invoice.tokens_by_tier)
    .map(([tier, tokens]) => `${tokens.toLocaleString("en")} tokens ${tier}`).join("; ");
}

function roleEditor(m) {
  const select = document.createElement("select");
  select.className = "role";
  select.append(...["owner", "admin", "member"].map((r) => new Option(r, r, false, r === m.role)));
  select.addEventListener("change", guarded(async () => {
    await call("PUT", `/accounts/${accountId}/members/${m.user_id}`, { role: select.value });
    say(`${m.email} is now ${select.value}.`); await loadMembers();
  }));
  return select;
}

async function loadMembers() {
  const { data } = await call("GET", `/accounts/${accountId}/members`);
  const mine = (me.accounts.find((a) => a.id === accountId) || {}).role;
  const manage = mine === "owner" || mine === "admin";
  fill($("members-table").tBodies[0], data.map((m) => m.user_id === undefined
    ? [m.email, m.role + " (invited)", when(m.invited), ""]
    : [m.email, manage && m.email !== me.email ? roleEditor(m) : m.role, when(m.since),
       !manage || m.email === me.email ? "" : button("Remove", "remove", async () => {
         await call("DELETE", `/accounts/${accountId}/members/${m.user_id}`); await loadMembers();
       })]));
  $("invite-form").hidden = !manage;
}

async function loadOperator() {
  const { data, tiers } = await call("GET", "/operator/accounts");
  fill($("ops-table").tBodies[0], data.map((a) => {
    const actions = document.createElement("span");
    for (const [label, status] of [["Activate", "active"], ["Suspend", "suspended"]]) {
      if (a.status !== status) actions.append(button(label, label.toLowerCase(), async () => {
        await call("POST", `/operator/accounts/${a.id}/status`, { status });
        say(`${a.name} is ${status}.`); await loadOperator();
      }));
    }
    const tier = document.createElement("select");
    tier.className = "tier";
    tier.append(...tiers.map((t) => new Option(t, t, false, t === a.tier)));
    tier.addEventListener("change", guarded(async () => {
      await call("POST", `/operator/accounts/${a.id}/tier`, { tier: tier.value });
      say(`${a.name} is in tier ${tier.value}.`); await loadOperator();
    }));
    actions.append(tier);
    return { data: { account: a.name }, cells: [a.id, a.name, a.tier, a.status, usd(a.spend_micros / 1e6),
      a.budget_micros === null ? "none" : usd(a.budget_micros / 1e6), actions] };
  }));
  const audit = await call("GET", "/operator/audit");
  fill($("audit-table").tBodies[0], audit.data.map((e) => [when(e.at), e.actor, e.action, e.account || "",
    JSON.stringify(e.detail)]));
}

function wire() {
  $("login-form").addEventListener("submit", guarded(async () => {
    await call("POST", "/login", { email: $("login-email").value, password: $("login-password").value });
    $("login-password").value = "";
    say(""); await loadSession();
  }));
  $("signup-form").addEventListener("submit", guarded(async () => {
    const result = await call("POST", "/signup", { email: $("signup-email").value,
      password: $("signup-password").value, account: $("signup-account").value });
    $("signup-password").value = "";
    say(result.message);
  }));
  $("forgot-form").addEventListener("submit", guarded(async () => {
    say((await call("POST", "/password/forgot", { email: $("forgot-email").value })).message);
  }));
  $("resend").addEventListener("click", guarded(async () => {
    say((await call("POST", "/verify/resend", { email: $("forgot-email").value })).message);
  }));
  $("reset-form").addEventListener("submit", guarded(async () => {
    const result = await call("POST", "/password/reset", { token: linkToken(), password: $("reset-password").value });
    history.replaceState(null, "", "/console");
    await loadSession(); say(result.message);
  }));
  $("invite-accept").addEventListener("click", guarded(async () => {
    if (!me.signed_in) { show("signed-out"); say("Sign in (or sign up) with the invited address first."); return; }
    const result = await call("POST", "/invitations/accept", { token: sessionStorage.getItem("invitation") });
    sessionStorage.removeItem("invitation");
    accountId = result.account_id; await loadSession(); say("You joined the account.");
  }));
  $("logout").addEventListener("click", guarded(async () => { await call("POST", "/logout"); accountId = null; await loadSession(); say("Signed out."); }));
  $("logout-all").addEventListener("click", guarded(async () => {
    const result = await call("POST", "/logout-everywhere"); accountId = null; await loadSession(); say(result.message);
  }));
  $("account-select").addEventListener("change", guarded(async () => { accountId = Number($("account-select").value); await openTab(currentTab); }));
  for (const b of document.querySelectorAll("#tabs button")) b.addEventListener("click", guarded(() => { say(""); return openTab(b.dataset.tab); }));
  $("budget-form").addEventListener("submit", guarded(async () => {
    await call("PUT", `/accounts/${accountId}/budget`, { budget_usd: value("budget-input") });
    say("Budget saved."); await loadOverview();
  }));
  $("key-form").addEventListener("submit", guarded(async () => {
    const made = await call("POST", `/accounts/${accountId}/keys`, { name: $("key-name").value,
      expires_in_days: number("key-expires"), rpm: number("key-rpm"), tpm: number("key-tpm"), budget_usd: value("key-budget") });
    $("new-secret").textContent = made.secret; $("new-secret-box").hidden = false;
    $("key-form").reset(); await loadKeys();
  }));
  $("usage-form").addEventListener("submit", guarded(loadUsage));
  $("invoice-month").addEventListener("change", guarded(loadInvoice));
  $("invite-form").addEventListener("submit", guarded(async () => {
    say((await call("POST", `/accounts/${accountId}/invitations`, { email: $("invite-email").value, role: $("invite-role").value })).message);
    $("invite-form").reset(); await loadMembers();
  }));
}

// mail links carry their token after '#': never sent to the server, so never in its access log
function linkToken() { return new URLSearchParams(location.hash.slice(1)).get("token"); }

async function start() {
  wire();
  const path = location.pathname, token = linkToken();
  try {
    await loadSession();
    if (path === "/console/verify" && token) {
      const result = await call("POST", "/verify", { token });
      history.replaceState(null, "", "/console");
      say(result.message);
    } else if (path === "/console/reset" && token) {
      show("reset-view");
    } else if (path === "/console/invite" && token) {
      sessionStorage.setItem("invitation", token);
      history.replaceState(null, "", "/console");
      show("invite-view");
    }
  } catch (error) { fail(error); }
  document.body.dataset.ready = "1";
}

document.addEventListener("DOMContentLoaded", start);
