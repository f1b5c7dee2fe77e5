// The self-service page. No framework and nothing fetched from elsewhere: it runs offline.
"use strict";

const state = { user: null, csrf: null, catalog: null, consent: null, queue: Promise.resolve() };
const $ = (id) => document.getElementById(id);

function el(tag, attrs, ...children) {
  const node = document.createElement(tag);
  for (const [k, v] of Object.entries(attrs || {})) {
    if (k === "class") node.className = v;
    else if (k.startsWith("data-")) node.setAttribute(k, v);
    else if (v !== undefined && v !== null) node[k] = v;
  }
  for (const child of children) node.append(child);
  return node;
}

// Changes run one at a time: each spends the session's CSRF token and receives the next one.
function api(method, path, body) {
  const run = async () => {
    const headers = { "Accept": "application/json" };
    if (body !== undefined) headers["Content-Type"] = "application/json";
    if (method !== "GET") headers["X-CSRF-Token"] = state.csrf || "";
    const response = await fetch(path, { method, headers, credentials: "same-origin",
      body: body === undefined ? undefined : JSON.stringify(body) });
    const next = response.headers.get("X-CSRF-Token");
    if (next) state.csrf = next;
    const data = await response.json().catch(() => ({}));
    if (!response.ok) {
      if (method !== "GET" && response.status !== 401) await refreshSession();
      throw new Error(data.message || `request failed (${response.status})`);
    }
    return data;
  };
  const result = state.queue.then(run, run);
  state.queue = result.catch(() => undefined);
  return result;
}

async function refreshSession() {
  const response = await fetch("/v1/session", { credentials: "same-origin" });
  if (!response.ok) return false;
  const session = await response.json();
  state.user = session.user_id;
  state.csrf = session.csrf_token;
  return true;
}

function say(text, bad) {
  const status = $("status");
  status.textContent = text;
  status.className = bad ? "bad" : "good";
}

async function signIn(token) {
  const response = await fetch("/v1/session", { method: "POST", credentials: "same-origin",
    headers: { "Content-Type": "application/json" }, body: JSON.stringify({ token }) });
  const data = await response.json().catch(() => ({}));
  if (!response.ok) throw new Error(data.message || "sign-in failed");
  state.user = data.user_id;
  state.csrf = data.csrf_token;
}

const userPath = () => `/v1/users/${encodeURIComponent(state.user)}`;

function grantOf(category, purpose) {
  const grants = (state.consent && state.consent.grants) || [];
  return grants.find((g) => g.category === category && g.purpose === purpose);
}

function renderPurposes() {
  const box = $("purposes");
  box.replaceChildren();
  const cats = Object.fromEntries(state.catalog.categories.map((c) => [c.name, c]));
  for (const p of state.catalog.purposes) {
    const card = el("article", { class: "purpose" },
      el("h3", {}, p.title),
      el("dl", {},
        el("dt", {}, "What is collected"), el("dd", {}, p.description.collected),
        el("dt", {}, "How it is used"), el("dd", {}, p.description.use),
        el("dt", {}, "Who sees it"), el("dd", {}, p.description.who_sees),
        el("dt", {}, "How long it is kept"), el("dd", {}, `${p.retention_days} days`),
        el("dt", {}, "Terms"), el("dd", {}, `version ${p.terms_version}`)));
    for (const use of p.categories) {
      const grant = grantOf(use.category, p.name);
      const expired = grant && grant.expires_at && new Date(grant.expires_at) <= new Date();
      const stale = grant && grant.terms_version < p.terms_version;
      const on = Boolean(grant) && !expired && !stale;
      const pair = `${use.category}/${p.name}`;
      const toggle = el("input", { type: "checkbox", checked: on, id: `switch-${pair}`, "data-pair": pair });
      toggle.setAttribute("role", "switch");
      const expiry = el("input", { type: "date", id: `expiry-${pair}`, "data-expiry": pair,
        title: "Optional: stop on this date" });
      const pays = `${use.rate_per_unit} ${state.catalog.currency} per use on the data-sharing tier`;
      let note = on ? (grant.expires_at ? `On until ${grant.expires_at.slice(0, 10)}` : "On") : "Off";
      if (stale) note = `Off: the terms changed to version ${p.terms_version}; turn on again to accept them`;
      if (expired) note = "Off: your chosen end date has passed";
      toggle.addEventListener("change", () => choose(p, use.category, toggle, expiry));
      card.append(el("div", { class: "use" },
        el("label", { htmlFor: `switch-${pair}`, class: "switch" }, toggle,
          el("span", {}, cats[use.category].title)),
        el("span", { class: "pays" }, `Pays ${pays}. Keeps only: ${use.keeps.join(", ")}.`),
        el("label", { class: "expiry" }, "End on (optional) ", expiry),
        el("span", { class: on ? "state on" : "state off", "data-state": pair }, note)));
    }
    box.append(card);
  }
}

async function choose(purpose, category, toggle, expiry) {
  const path = `${userPath()}/grants/${encodeURIComponent(category)}/${encodeURIComponent(purpose.name)}`;
  toggle.disabled = true;
  try {
    let receipt;
    if (toggle.checked) {
      const body = { terms_version: purpose.terms_version };
      if (expiry.value) body.expires_at = new Date(`${expiry.value}T23:59:59`).toISOString();
      receipt = await api("PUT", path, body);
      say(`Turned on. The AI system may use ${category} data from now on. Receipt ${receipt.consentReceiptID}.`);
    } else {
      receipt = await api("DELETE", path);
      say(`Turned off. None of your new ${category} data is used for this from now on. Receipt ${receipt.consentReceiptID}.`);
    }
  } catch (error) {
    toggle.checked = !toggle.checked;
    say(`Not saved: ${error.message}`, true);
  }
  await load();
}

function renderTier() {
  const tier = (state.consent && state.consent.tier) || "free";
  for (const radio of document.querySelectorAll("input[name=tier]")) radio.checked = radio.value === tier;
  if (state.consent && state.consent.plan) $("plan").value = state.consent.plan;
}

function money(text) { return Number(text || 0); }

function renderEarnings(statement) {
  const body = $("earnings").querySelector("tbody");
  body.replaceChildren();
  const totals = [];
  for (const period of statement.periods) {
    let value = 0;
    for (const u of period.uses) {
      value += money(u.value);
      body.append(el("tr", {}, el("td", {}, period.period), el("td", {}, u.purpose_title), el("td", {}, u.category),
        el("td", {}, String(u.records)), el("td", {}, u.average_quality.toFixed(2)),
        el("td", {}, `${u.value} ${statement.currency}`)));
    }
    totals.push({ period: period.period, value, cash: period.cash, credits: period.credits, open: period.status !== "closed" });
  }
  if (!statement.periods.length) {
    body.append(el("tr", {}, el("td", { colSpan: 6 }, "Nothing of yours has been valued yet: uses for training appear here once the metering has counted them.")));
  }
  $("payouts").textContent = totals.map((t) => t.open
    ? `${t.period} is still open: it is paid when the month closes.`
    : `${t.period}: paid ${t.cash} ${statement.currency}` + (t.credits ? ` and ${t.credits} credits` : "")).join(" ");
  drawChart(totals, statement.currency);
}

function drawChart(totals, currency) {
  const box = $("chart");
  box.replaceChildren();
  if (!totals.length) return;
  const ns = "http://www.w3.org/2000/svg";
  const width = 560, height = 160, max = Math.max(...totals.map((t) => t.value), 1e-9);
  const bar = Math.min(80, (width - 20) / totals.length - 10);
  const svg = document.createElementNS(ns, "svg");
  svg.setAttribute("viewBox", `0 0 ${width} ${height + 30}`);
  svg.setAttribute("class", "chart");
  totals.forEach((t, i) => {
    const h = Math.round((t.value / max) * (height - 20));
    const x = 10 + i * (bar + 10);
    const rect = document.createElementNS(ns, "rect");
    for (const [k, v] of Object.entries({ x, y: height - h, width: bar, height: h })) rect.setAttribute(k, v);
    const label = document.createElementNS(ns, "text");
    label.setAttribute("x", x); label.setAttribute("y", height + 16); label.textContent = t.period;
    const amount = document.createElementNS(ns, "text");
    amount.setAttribute("x", x); amount.setAttribute("y", height - h - 4);
    amount.textContent = `${t.value.toFixed(4)} ${currency}`;
    svg.append(rect, label, amount);
  });
  box.append(svg);
}

const WORDS = { given: "Turned on", withdrawn: "Turned off", erased: "Account erased", tier_changed: "Plan changed" };

function renderReceipts(list) {
  const titles = Object.fromEntries(state.catalog.purposes.map((p) => [p.name, p.title.toLowerCase()]));
  const body = $("receipts").querySelector("tbody");
  body.replaceChildren();
  for (const r of [...list].reverse()) {
    const rec = r.record;
    const purpose = rec.purpose && titles[rec.purpose] ? titles[rec.purpose] : rec.purpose;
    const what = rec.purpose ? `${WORDS[rec.event] || rec.event}: ${rec.category || "all data"} for ${purpose}`
      : rec.event === "tier_changed" ? `${WORDS[rec.event]}: ${rec.tier}${rec.plan ? ` (${rec.plan})` : ""}`
        : `${WORDS[rec.event] || rec.event}: everything`;
    body.append(el("tr", {}, el("td", {}, new Date(rec.at).toLocaleString()), el("td", {}, what),
      el("td", {}, rec.terms_version ? `v${rec.terms_version}` : ""), el("td", {}, el("code", {}, r.consentReceiptID))));
  }
}

async function load() {
  const [catalog, consent, receipts, statement] = await Promise.all([
    state.catalog ? Promise.resolve(state.catalog) : api("GET", "/v1/catalog"),
    api("GET", `${userPath()}/consent`), api("GET", `${userPath()}/receipts`),
    api("GET", `${userPath()}/statement`)]);
  state.catalog = catalog;
  state.consent = consent.erased ? null : consent;
  $("who-text").textContent = `Signed in as ${state.user}`;
  renderTier();
  renderPurposes();
  renderEarnings(statement);
  renderReceipts(receipts.receipts);
  $("download").href = `${userPath()}/export`;
  document.body.dataset.loaded = String(Date.now());
}

function showSignedIn(yes) {
  $("sign-in-section").hidden = yes;
  $("signed-in").hidden = !yes;
  $("who").hidden = !yes;
}

async function start() {
  $("gpc").hidden = !navigator.globalPrivacyControl;
  $("sign-in").addEventListener("submit", async (event) => {
    event.preventDefault();
    try {
      await signIn($("token").value.trim());
      $("token").value = "";
      showSignedIn(true);
      await load();
      say("Signed in. Nothing is on unless you turned it on.");
    } catch (error) {
      alert(`Sign-in failed: ${error.message}`);
    }
  });
  $("sign-out").addEventListener("click", async () => {
    await api("DELETE", "/v1/session").catch(() => undefined);
    state.user = null;
    showSignedIn(false);
  });
  $("tier-form").addEventListener("submit", async (event) => {
    event.preventDefault();
    const tier = document.querySelector("input[name=tier]:checked");
    if (!tier) return;
    const body = tier.value === "free" ? { tier: "free" } : { tier: "data_sharing", plan: $("plan").value };
    try {
      const receipt = await api("PUT", `${userPath()}/tier`, body);
      say(`Plan saved. Receipt ${receipt.consentReceiptID}.`);
    } catch (error) { say(`Not saved: ${error.message}`, true); }
    await load();
  });
  $("erase").addEventListener("click", async () => {
    if (!confirm("Erase your account's consent record and ask every training set to delete your data?")) return;
    try {
      const receipt = await api("POST", `${userPath()}/erase`);
      say(`Erased. Every training set was asked to delete your data. Receipt ${receipt.consentReceiptID}.`);
    } catch (error) { say(`Not erased: ${error.message}`, true); }
    await load();
  });
  $("withdraw-all").addEventListener("click", async () => {
    try {
      const receipt = await api("DELETE", `${userPath()}/grants`);
      say(`Everything is off. None of your new data is used for training from now on. Receipt ${receipt.consentReceiptID}.`);
    } catch (error) { say(`Not withdrawn: ${error.message}`, true); }
    await load();
  });
  const fragment = new URLSearchParams(location.hash.slice(1)).get("token");
  if (fragment) history.replaceState(null, "", location.pathname);  // keep the token out of history
  try {
    if (fragment) await signIn(fragment);
    else if (!(await refreshSession())) { showSignedIn(false); return; }
    showSignedIn(true);
    await load();
  } catch (error) {
    showSignedIn(false);
  }
}

document.addEventListener("DOMContentLoaded", start);
