// The playground page: mlgate's core (pkg/mlgate.js, built by `make playground` from src/playground.rs)
// decides the request shown; this script only gathers the inputs and draws the answer.
import init, { evaluate, case_claims, fixture_names } from "./pkg/mlgate.js";

const $ = (id) => document.getElementById(id);
const state = { mode: "claims", cases: [], caseIndex: null, timer: null };

function el(tag, attrs = {}, ...children) {
  const node = document.createElement(tag);
  for (const [key, value] of Object.entries(attrs)) {
    if (key === "class") node.className = value;
    else if (key.startsWith("data-")) node.setAttribute(key, value);
    else node[key] = value;
  }
  for (const child of children.flat()) {
    if (child === null || child === undefined || child === false) continue;
    node.append(child instanceof Node ? child : String(child));
  }
  return node;
}

const now = () => Math.floor(Date.now() / 1000);

// --- inputs ------------------------------------------------------------------------------------

function parseHeaders(text) {
  const headers = [];
  for (const line of text.split("\n")) {
    if (!line.trim()) continue;
    const colon = line.indexOf(":", line.startsWith(":") ? 1 : 0);
    if (colon < 0) throw new Error(`header line ${JSON.stringify(line)} is not "name: value"`);
    headers.push([line.slice(0, colon).trim(), line.slice(colon + 1).trim()]);
  }
  return headers;
}

function gatherInput() {
  const request = {
    method: $("method").value,
    path: $("path").value,
    host: $("host").value,
    headers: parseHeaders($("headers").value),
  };
  const body = $("body").value;
  if (body !== "") request.body = body;
  const input = { request };
  if (state.mode === "claims") {
    let claims;
    try { claims = JSON.parse($("claims").value || "{}"); } catch (e) { throw new Error(`claims: not JSON (${e.message})`); }
    if (claims === null || typeof claims !== "object" || Array.isArray(claims)) throw new Error("claims: give a JSON object");
    input.claims = claims;
  } else if (state.mode === "token") {
    const token = $("token").value.trim();
    if (token) input.token = token;
    const keys = $("keys").value.trim();
    if (keys) {
      try { input.keys = JSON.parse(keys); } catch (e) { throw new Error(`key set: not JSON (${e.message})`); }
    }
  }
  return input;
}

// --- deciding ----------------------------------------------------------------------------------

function decideSoon() {
  clearTimeout(state.timer);
  state.timer = setTimeout(decide, 200);
}

function decide() {
  clearTimeout(state.timer);
  document.body.dataset.decisions = String(Number(document.body.dataset.decisions || 0) + 1);
  let input;
  try {
    input = gatherInput();
  } catch (e) {
    showInvalid("input", e.message);
    return;
  }
  const started = performance.now();
  const result = JSON.parse(evaluate($("policy").value, JSON.stringify(input), now()));
  state.took = performance.now() - started;
  if (!result.ok) {
    showRefusal(result.error);
    return;
  }
  $("policy-error").hidden = true;
  showDecision(result);
}

function showInvalid(what, message) {
  const box = $("decision");
  box.className = "decision invalid";
  box.dataset.status = "";
  box.dataset.reason = "";
  $("decision-status").textContent = what === "policy" ? "policy refused" : "cannot send";
  $("decision-reason").textContent = "";
  $("decision-detail").textContent = message;
  $("trace").replaceChildren();
  $("raw").textContent = "";
  $("notes").replaceChildren();
  showExpected(null);
}

function showRefusal(error) {
  const policyField = !error.field.startsWith("(input") && !error.field.startsWith("(claims") && !error.field.startsWith("token.");
  if (!policyField) {
    $("policy-error").hidden = true;
    showInvalid("input", `${error.field}: ${error.message}`);
    return;
  }
  const box = $("policy-error");
  box.hidden = false;
  $("error-field").textContent = error.field;
  $("error-message").textContent = error.message;
  const at = locate($("policy").value, error.field);
  $("error-field").dataset.start = at ? at.start : "";
  $("error-field").dataset.end = at ? at.end : "";
  $("error-where").textContent = at ? `line ${lineOf($("policy").value, at.start)}` : "";
  showInvalid("policy", `${error.field}: ${error.message}`);
}

function showExpected(decision) {
  const node = $("expected");
  const item = state.caseIndex === null ? null : state.cases[state.caseIndex];
  if (!item || !decision) { node.hidden = true; return; }
  const expect = item.expect;
  const agrees = decision.status === expect.status && (!expect.reason || expect.reason === decision.reason);
  node.hidden = false;
  node.className = agrees ? "agrees" : "differs";
  node.dataset.agrees = agrees ? "1" : "0";
  node.textContent = `the case file expects ${expect.status}${expect.reason ? " " + expect.reason : ""}` +
    (agrees ? "" : " — this differs");
}

function showDecision(result) {
  const d = result.decision;
  const box = $("decision");
  box.className = "decision " + (d.forwarded ? "allow" : "deny");
  box.dataset.status = d.status;
  box.dataset.reason = d.reason || "";
  box.dataset.rule = d.rule || "";
  $("decision-status").textContent = d.forwarded ? `${d.status} forwarded` : `${d.status}`;
  $("decision-reason").textContent = d.forwarded ? (d.dry_run && d.reason ? `dry run: would be ${d.reason}` : "") : d.reason || "";
  const detail = [];
  if (d.route) detail.push(`route ${d.route}`);
  if (d.rule) detail.push(`decided by ${d.rule}`);
  if (d.model) detail.push(`model ${d.model}`);
  detail.push(`${state.took.toFixed(1)} ms in the browser (policy compiled, claims signed, request decided)`);
  const parts = [el("div", {}, detail.join(" · "))];
  if (d.forwarded) {
    const removed = [`client-sent ${d.headers_removed.prefix}* headers`];
    if (d.headers_removed.authorization) removed.push("authorization");
    parts.push(el("h3", {}, "upstream gets"));
    parts.push(table(["header", "value"], d.headers_added.map(([n, v]) => [n, v]), "forwarded-headers"));
    parts.push(el("div", { class: "hint" }, `removed first: ${removed.join(", ")}`));
  } else {
    parts.push(el("h3", {}, "the client gets"));
    parts.push(table(["header", "value"], d.headers.map(([n, v]) => [n, v])));
    parts.push(el("pre", {}, d.body));
  }
  $("decision-detail").replaceChildren(...parts);
  $("notes").replaceChildren(...result.notes.map((n) => el("li", {}, n)));
  $("raw").textContent = JSON.stringify(result.trace, null, 2);
  $("trace").replaceChildren(...renderTrace(result.trace));
  showExpected(d);
}

// --- the trace ---------------------------------------------------------------------------------

const show = (v) => (v === undefined ? "" : typeof v === "string" ? v : JSON.stringify(v));

function table(head, rows, id) {
  const t = el("table", id ? { id } : {});
  t.append(el("tr", {}, head.map((h) => el("th", {}, h))));
  for (const row of rows) {
    const cls = row.fail ? "fail" : "";
    t.append(el("tr", { class: cls }, row.map((cell) => el("td", {}, show(cell)))));
  }
  return t;
}

// The rules first (the answer to "why?"), then the caller, then the pipeline in its order.
function renderTrace(trace) {
  return [...renderRules(trace), ...renderIdentity(trace), ...renderPipeline(trace)];
}

function renderPipeline(trace) {
  const out = [];
  const r = trace.request || {};
  out.push(el("h3", {}, "request"), el("div", { class: "route" }, `${r.method} ${r.path}  (host ${r.host})`));
  out.push(el("h3", {}, "routes"));
  for (const route of trace.routes || []) {
    const matched = route.match === "matched";
    out.push(el("div", { class: "route" + (matched ? " matched" : "") },
      matched ? `✓ ${route.route}` : `✗ ${route.route}: its ${route.match} does not match`));
  }
  if (trace.unmatched) out.push(el("div", { class: "hint" }, `no route matched: unmatched requests are ${trace.unmatched === "allow" ? "let through" : "refused"}`));
  if (trace.anonymous) out.push(el("div", { class: "hint" }, "the route is anonymous: no token is looked for"));

  if (trace.token) {
    out.push(el("h3", {}, "token"));
    const t = trace.token;
    let text;
    if (t.found) {
      const where = t.header ? `header ${t.header}${t.scheme ? ` (${t.scheme})` : ""}` : t.query ? `query parameter ${t.query}` : `cookie ${t.cookie}`;
      text = `from ${where}; sha256 ${t.sha256}${trace.cache ? `; cache ${trace.cache}` : ""}`;
      if (t.unreadable) text += `; unreadable: ${t.unreadable}`;
    } else {
      text = t.refused ? `refused: ${t.refused}` : "none found";
    }
    out.push(el("div", { class: "route" }, text));
  }
  if (trace.issuer || trace.provider) {
    const provider = trace.provider ? `provider ${trace.provider}` : `no provider (${trace.provider_refused})`;
    out.push(el("div", { class: "route" }, trace.issuer ? `issuer ${trace.issuer} → ${provider}` : `${provider} (identity from the cache)`));
  }
  if (trace.checks) {
    out.push(el("h3", {}, "checks"));
    const rows = trace.checks.map((c) => {
      const { check, result, value, accepted, ...rest } = c;
      const row = [check, value, accepted === undefined ? Object.entries(rest).map(([k, v]) => `${k} ${show(v)}`).join(", ") : accepted, result];
      row.fail = result !== "ok";
      return row;
    });
    out.push(table(["check", "value", "accepted / compared with", "result"], rows, "checks"));
  }
  return out;
}

function renderIdentity(trace) {
  const out = [];
  if (trace.identity) {
    const id = trace.identity;
    out.push(el("h3", {}, "identity"));
    const groups = (id.groups || []).map((g) => (g.name ? `${g.name} (${g.id})` : g.id || g)).join(", ");
    const kv = el("div", { class: "kv" });
    for (const [k, v] of [["principal", id.principal], ["tenant", id.tenant], ["app", id.app], ["caller", id.caller],
      ["groups", groups || "-"], ["roles", (id.roles || []).join(", ") || "-"], ["scopes", (id.scopes || []).join(", ") || "-"]]) {
      if (v === undefined) continue;
      kv.append(el("div", {}, k), el("div", {}, show(v)));
    }
    out.push(kv);
  }
  if (trace.model) {
    out.push(el("h3", {}, "model"));
    const m = trace.model;
    const from = m.header ? `header ${m.header}` : m.field ? `body field ${m.field}` : m.path ? "path" : "";
    out.push(el("div", { class: "route" }, `${show(m.value)} ${from ? `(from ${from})` : ""}`));
  }
  return out;
}

function renderRules(trace) {
  const out = [];
  if (trace.rules) {
    out.push(el("h3", {}, "rules"));
    for (const rule of trace.rules) {
      const cls = "rule" + (rule.matched ? " matched" : "") + (rule.decided ? " deciding" : "");
      const conditions = (rule.conditions || []).map((c) => {
        const { ok, ...what } = c;
        const text = Object.entries(what).map(([k, v]) => `${k}: ${Array.isArray(v) ? v.join(", ") : show(v)}`).join("; ");
        return el("span", { class: "cond " + (ok ? "ok" : "no") }, `${ok ? "✓" : "✗"} ${text || "(always)"}`);
      });
      out.push(el("div", { class: cls, "data-rule": rule.rule }, el("div", { class: "name" }, rule.rule, rule.matched ? " matches" : " does not match"), conditions));
    }
  }
  return out;
}

// --- pointing at a field -----------------------------------------------------------------------

// Where the field an error names (`routes[2].allow[0].groups`) is written in the policy's text: the
// key's span in its object (an array element's value span), or the deepest part of the path found.
function locate(text, path) {
  if (!path || path.startsWith("(")) return null;
  const want = [];
  for (const part of path.match(/[^.[\]]+|\[\d+\]/g) || []) {
    want.push(part.startsWith("[") ? Number(part.slice(1, -1)) : part);
  }
  let i = 0, best = null;
  const ws = () => { while (i < text.length && " \t\r\n".includes(text[i])) i++; };
  const string = () => {
    const start = i++;
    while (i < text.length && text[i] !== '"') i += text[i] === "\\" ? 2 : 1;
    i++;
    return [start, i];
  };
  const value = (depth, active) => {
    ws();
    const c = text[i];
    if (c === "{") {
      i++; ws();
      if (text[i] === "}") { i++; return; }
      while (i < text.length) {
        ws();
        if (text[i] !== '"') return;
        const [ks, ke] = string();
        let key;
        try { key = JSON.parse(text.slice(ks, ke)); } catch { return; }
        ws(); if (text[i] !== ":") return; i++;
        const hit = active && want[depth] === key;
        if (hit) best = { start: ks, end: ke, depth: depth + 1 };
        value(depth + 1, hit);
        ws();
        if (text[i] === ",") { i++; continue; }
        i++; return;
      }
    } else if (c === "[") {
      i++; ws();
      if (text[i] === "]") { i++; return; }
      for (let n = 0; i < text.length; n++) {
        ws();
        const start = i;
        const hit = active && want[depth] === n;
        value(depth + 1, hit);
        if (hit) best = best && best.depth > depth + 1 ? best : { start, end: i, depth: depth + 1 };
        ws();
        if (text[i] === ",") { i++; continue; }
        i++; return;
      }
    } else if (c === '"') {
      string();
    } else {
      while (i < text.length && !",}] \t\r\n".includes(text[i])) i++;
    }
  };
  try { value(0, true); } catch { /* a broken document: the deepest part found */ }
  return best;
}

function lineOf(text, offset) {
  return text.slice(0, offset).split("\n").length;
}

function pointAtField() {
  const button = $("error-field");
  if (button.dataset.start === "") return;
  const editor = $("policy");
  const start = Number(button.dataset.start), end = Number(button.dataset.end);
  editor.focus();
  editor.setSelectionRange(start, end);
  const line = lineOf(editor.value, start);
  const lineHeight = parseFloat(getComputedStyle(editor).lineHeight) || 17;
  editor.scrollTop = Math.max(0, (line - 5) * lineHeight);
}

// --- examples ----------------------------------------------------------------------------------

async function loadPolicy(entry) {
  const policy = await (await fetch(entry.policy)).text();
  $("policy").value = policy;
  state.cases = entry.cases ? (await (await fetch(entry.cases)).json()).cases : [];
  state.caseIndex = null;
  const list = $("cases");
  list.replaceChildren(...state.cases.map((c, n) => el("li", { "data-case": n, title: c.name, onclick: () => chooseCase(n) },
    el("span", { class: `badge s${String(c.expect.status)[0]}` }, `${c.expect.status}${c.expect.reason ? " " + c.expect.reason : ""}`),
    el("span", {}, c.name))));
  const firstWithToken = state.cases.findIndex((c) => c.token);
  if (state.cases.length) chooseCase(Math.max(firstWithToken, 0));
  else decide();
  document.body.dataset.policy = entry.name;
}

function setMode(mode) {
  state.mode = mode;
  for (const tab of document.querySelectorAll(".tab")) tab.classList.toggle("active", tab.dataset.mode === mode);
  $("claims-panel").hidden = mode !== "claims";
  $("token-panel").hidden = mode !== "token";
}

function chooseCase(n) {
  const c = state.cases[n];
  state.caseIndex = n;
  for (const li of $("cases").children) li.classList.toggle("active", Number(li.dataset.case) === n);
  const r = c.request;
  $("method").value = r.method || "GET";
  $("path").value = r.path;
  $("host").value = r.host || "ml.contoso.example";
  const lines = [];
  for (const [name, values] of Object.entries(r.headers || {})) {
    for (const v of Array.isArray(values) ? values : [values]) lines.push(`${name}: ${v}`);
  }
  $("headers").value = lines.join("\n");
  $("body").value = r.body === undefined ? "" : typeof r.body === "string" ? r.body : JSON.stringify(r.body);
  if (c.token) {
    const built = JSON.parse(case_claims(c.token.fixture ?? null, JSON.stringify(c.token.claims || {}), now()));
    setMode("claims");
    $("claims").value = built.ok ? JSON.stringify(built.claims, null, 2) : `// ${built.error.message}`;
  } else {
    setMode("none");
  }
  decide();
}

function choosePersona(name) {
  const built = JSON.parse(case_claims(name, "{}", now()));
  if (!built.ok) return;
  state.caseIndex = null;
  for (const li of $("cases").children) li.classList.remove("active");
  setMode("claims");
  $("claims").value = JSON.stringify(built.claims, null, 2);
  decide();
}

async function main() {
  await init();
  const catalog = await (await fetch("catalog.json")).json();
  const select = $("policy-select");
  for (const entry of catalog) select.append(el("option", { value: entry.name }, entry.name));
  select.onchange = () => loadPolicy(catalog.find((e) => e.name === select.value));
  $("personas").replaceChildren(...fixture_names().map((name) => el("button", { type: "button", "data-persona": name, onclick: () => choosePersona(name) }, name)));
  for (const tab of document.querySelectorAll(".tab")) tab.onclick = () => { setMode(tab.dataset.mode); decide(); };
  for (const id of ["policy", "claims", "token", "keys", "path", "host", "headers", "body"]) $(id).addEventListener("input", () => {
    if (id !== "policy") { state.caseIndex = null; for (const li of $("cases").children) li.classList.remove("active"); }
    decideSoon();
  });
  $("method").onchange = () => { state.caseIndex = null; decide(); };
  $("error-field").onclick = pointAtField;
  const first = catalog.find((e) => e.name === "entra-azureml") || catalog[0];
  select.value = first.name;
  await loadPolicy(first);
  document.body.dataset.ready = "1";
}

main().catch((e) => {
  document.body.dataset.ready = "error";
  showInvalid("input", `the playground could not start: ${e.message}`);
});
