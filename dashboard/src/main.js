// The operator's dashboard: talks to the function's own actions with the operator token.
// Views by URL fragment: #jobs, #job=<id>, #devices, #create; #token=... is taken once and kept
// in sessionStorage (a fragment never reaches the server or its logs).
import uPlot from "uplot";
import "uplot/dist/uPlot.min.css";
import "./app.css";

const TOKEN_KEY = "fl-operator-token";
const REFRESH_MS = 2000;
const base = location.href.split("#")[0].replace(/\/dashboard\/?(index\.html)?$/, "");
const $ = (sel, root = document) => root.querySelector(sel);
let timer = null;
let routes = 0; // which route() is current: a view drawn for an earlier one (still awaiting) must not draw
let charts = [];

// ---------------------------------------------------------------- the function
class FunctionError extends Error {
  constructor(status, message) {
    super(message);
    this.status = status;
  }
}

async function call(action, body = {}) {
  const headers = { "Content-Type": "application/json" };
  const token = sessionStorage.getItem(TOKEN_KEY);
  if (token) headers.Authorization = `Bearer ${token}`;
  let resp;
  try {
    resp = await fetch(`${base}/${action}`, { method: "POST", headers, body: JSON.stringify(body) });
  } catch (err) {
    throw new FunctionError(0, `cannot reach the function at ${base} (${err.message})`);
  }
  let payload;
  try {
    payload = await resp.json();
  } catch {
    throw new FunctionError(resp.status, `the function answered ${resp.status} without JSON`);
  }
  if (!resp.ok) throw new FunctionError(resp.status, payload.error || `error ${resp.status}`);
  return payload;
}

// ---------------------------------------------------------------- small helpers
function el(tag, attrs = {}, ...children) {
  const node = document.createElement(tag);
  for (const [k, v] of Object.entries(attrs)) {
    if (k === "class") node.className = v;
    else if (k.startsWith("on")) node.addEventListener(k.slice(2), v);
    else if (v !== undefined && v !== null && v !== false) node.setAttribute(k, v === true ? "" : v);
  }
  for (const child of children.flat()) {
    if (child !== null && child !== undefined) node.append(child instanceof Node ? child : String(child));
  }
  return node;
}

const pct = (v) => (v === null || v === undefined ? "–" : `${(100 * v).toFixed(2)} %`);
const params = (n) => (n < 1e5 ? n.toLocaleString("en") : `${(n / 1e6).toFixed(2)} M`);
// a long value (a layer list, a data block) cut for the table; the whole of it in the tooltip
const clip = (text, most = 70) => (text.length <= most ? text : el("span", { title: text }, `${text.slice(0, most)}…`));
const num = (v, digits = 3) => (v === null || v === undefined ? "–" : Number(v).toFixed(digits));
function ago(ts) {
  if (!ts) return "–";
  const s = Math.max(0, Math.round(Date.now() / 1000 - ts));
  return s < 120 ? `${s} s ago` : s < 7200 ? `${Math.round(s / 60)} min ago` : `${Math.round(s / 3600)} h ago`;
}
const badge = (state) => el("span", { class: `state state-${state}` }, state);

// replaceChildren() would show a null child as the text "null": leave such children out
const show = (view, ...children) => view.replaceChildren(...children.filter((c) => c !== null && c !== undefined));

function showError(err) {
  const banner = $("#banner");
  banner.textContent = err instanceof FunctionError && err.status === 401
    ? "This needs the operator token: type it above."
    : `Error: ${err.message}`;
  banner.hidden = false;
}

function clearError() {
  $("#banner").hidden = true;
}

function table(columns, rows, onClick, id) {
  const head = el("tr", {}, columns.map(([, title]) => el("th", {}, title)));
  const body = rows.map((row) => el("tr", onClick ? { class: "link", onclick: () => onClick(row) } : {},
    columns.map(([key]) => el("td", {}, typeof key === "function" ? key(row) : row[key] ?? "–"))));
  return el("table", { id }, el("thead", {}, head), el("tbody", {}, body));
}

// ---------------------------------------------------------------- token
function takeTokenFromFragment() {
  const params = new URLSearchParams(location.hash.slice(1));
  if (params.has("token")) {
    sessionStorage.setItem(TOKEN_KEY, params.get("token"));
    params.delete("token");
    const rest = params.toString().replace(/=$/, "").replace(/=&/g, "&");
    history.replaceState(null, "", `${location.pathname}${location.search}${rest ? `#${rest}` : "#jobs"}`);
  }
}

function renderWho() {
  const who = $("#who");
  who.replaceChildren();
  if (sessionStorage.getItem(TOKEN_KEY)) {
    const name = el("span", { id: "who-name" }, "operator token set");
    who.append(name, " ", el("button", { class: "small", onclick: () => {
      sessionStorage.removeItem(TOKEN_KEY);
      renderWho();
    } }, "forget"));
    // any operator token logs in (root, or a named one with its role): say whose it is
    call("whoami").then((me) => { name.textContent = `${me.name} (${me.role})`; }).catch(() => {});
    return;
  }
  const input = el("input", { type: "password", placeholder: "operator token", id: "token-input",
    autocomplete: "off" });
  const save = () => {
    if (input.value) sessionStorage.setItem(TOKEN_KEY, input.value.trim());
    renderWho();
    route();
  };
  input.addEventListener("keydown", (e) => e.key === "Enter" && save());
  who.append(input, el("button", { class: "small", id: "token-save", onclick: save }, "use"));
}

// ---------------------------------------------------------------- views
function resetCharts() {
  charts.forEach((c) => c.destroy());
  charts = [];
}

async function jobsView(view, live) {
  const data = await call("list_jobs", { limit: 50 });
  if (!live()) return false;
  resetCharts();
  show(view, 
    el("h2", {}, "Jobs"),
    data.jobs.length === 0 ? el("p", { class: "muted" }, "No jobs yet: create one under New job.") :
      table([
        [(j) => el("a", { href: `#job=${j.job_id}` }, j.name || j.job_id), "job"],
        [(j) => badge(j.state), "state"],
        [(j) => `${j.mode === "async" ? "version " : ""}${j.round} / ${j.rounds}`, "round"],
        [(j) => pct(j.eval_accuracy), "federated accuracy"],
        [(j) => `${j.clients} / ${j.num_clients}`, "clients"],
        ["dataset", "data"],
        ["strategy", "strategy"],
        [(j) => (j.tags || []).join(", ") || "–", "tags"],
        [(j) => ago(j.created_at), "created"],
      ], data.jobs, (j) => { location.hash = `job=${j.job_id}`; }),
  );
  return true; // refresh by itself
}

function chart(title, rounds, series, opts = {}) {
  // data-points: how many rounds the chart shows (for tests and screen readers alike)
  const holder = el("div", { class: "chart", "data-points": rounds.length, "aria-label": title });
  const width = Math.min(560, Math.max(300, (document.body.clientWidth - 80) / 2));
  const plot = new uPlot({
    title, width, height: 220,
    scales: { x: { time: false } },
    legend: { live: false },
    axes: [{ label: opts.x || "round", incrs: [1, 2, 5, 10, 20, 50, 100, 200, 500, 1000] }, { label: opts.unit || "" }],
    series: [{ label: opts.x || "round" }, ...series.map((s, i) => ({
      label: s.label, stroke: ["#2563eb", "#dc2626", "#16a34a", "#9333ea"][i], width: 2,
      points: { size: 6 }, spanGaps: true, ...(opts.bars ? { paths: uPlot.paths.bars({ size: [0.6] }) } : {}),
      ...(s.dash ? { dash: s.dash } : {}),
    }))],
  }, [rounds, ...series.map((s) => s.values)], holder);
  charts.push(plot);
  return holder;
}

// The job settings as the function defines them (the job_settings action): the forms are built from them.
let settingsTable = null;
async function jobSettings() {
  settingsTable ??= (await call("job_settings")).settings;
  return settingsTable;
}
const isNumber = (s) => s.type === "int" || s.type === "float";
// a placeholder: the choices, the default where it speaks for itself, else what the setting means
const hint = (s) => (s.choices.length ? s.choices.join(", ") : s.default ? `default ${s.default}` : s.doc);

function changeForm(job, settings) {
  // what a running job may change and the dashboard shows, for this job's round mode
  const shown = settings.filter((s) => s.updatable && s.form && (!s.modes.length || s.modes.includes(job.config.mode)));
  const fields = shown.map((s) => s.name);
  const inputs = Object.fromEntries(shown.map((s) => [s.name, el("input", { name: s.name, id: `set-${s.name}`,
    placeholder: String(job.config[s.name]), title: s.doc, size: 8 })]));
  const apply = async (e) => {
    e.preventDefault();
    const set = {};
    for (const s of shown) {
      const v = inputs[s.name].value.trim();
      if (v !== "") set[s.name] = isNumber(s) ? Number(v) : v;
    }
    try {
      const reply = await call("update_job", { job_id: job.job_id, set });
      clearError();
      $("#change-result").textContent = `applies from round ${reply.from_round}: ${JSON.stringify(reply.set)}`;
      Object.values(inputs).forEach((i) => { i.value = ""; });
    } catch (err) {
      showError(err);
    }
  };
  return el("form", { class: "inline keep", id: "change-form", onsubmit: apply },
    fields.map((f) => el("label", {}, f, inputs[f])), el("button", { type: "submit", id: "change-apply" }, "Change"),
    el("span", { id: "change-result", class: "muted" }));
}

function predictBox(job) {
  const canvas = el("canvas", { width: 280, height: 280, id: "draw", class: "draw" });
  const ctx = canvas.getContext("2d");
  const reset = () => {
    ctx.fillStyle = "#000";
    ctx.fillRect(0, 0, 280, 280);
    $("#answer", box).textContent = "Draw a digit, then ask.";
  };
  let drawing = false;
  const at = (e) => {
    const r = canvas.getBoundingClientRect();
    return [(e.clientX - r.left) * (280 / r.width), (e.clientY - r.top) * (280 / r.height)];
  };
  canvas.addEventListener("pointerdown", (e) => {
    drawing = true;
    ctx.beginPath();
    ctx.moveTo(...at(e));
  });
  canvas.addEventListener("pointermove", (e) => {
    if (!drawing) return;
    ctx.lineWidth = 22;
    ctx.lineCap = "round";
    ctx.strokeStyle = "#fff";
    ctx.lineTo(...at(e));
    ctx.stroke();
  });
  ["pointerup", "pointerleave"].forEach((t) => canvas.addEventListener(t, () => { drawing = false; }));
  const ask = async (mode) => {
    try {
      const reply = await call("predict", { job_id: job.job_id, inputs: [toMnist(canvas)], mode });
      clearError();
      const probs = reply.probabilities[0];
      const best = reply.classes[0];
      $("#answer", box).textContent =
        `${mode} model of round ${reply.model_round}${mode === "ensemble" ? ` (${reply.models} clients)` : ""}: ` +
        `${best} (${(100 * probs[best]).toFixed(1)} %)`;
      const holder = $("#probs", box);
      box.plot?.destroy(); // its own chart: the box outlives the job view's redraws
      holder.replaceChildren();
      box.plot = new uPlot({
        width: 280, height: 160, legend: { show: false }, scales: { x: { time: false }, y: { range: [0, 1] } },
        axes: [{ incrs: [1], space: 16, label: "digit" }, {}],
        series: [{}, { stroke: "#2563eb", fill: "#93c5fd", points: { show: false },
          paths: uPlot.paths.bars({ size: [0.7] }) }],
      }, [probs.map((_, i) => i), probs], holder);
    } catch (err) {
      showError(err);
    }
  };
  const box = el("div", { class: "predict keep", id: "predict-box" },
    canvas,
    el("div", {},
      el("button", { id: "predict-global", onclick: () => ask("global") }, "What digit is this?"),
      el("button", { id: "predict-ensemble", onclick: () => ask("ensemble") }, "Ask the clients' models"),
      el("button", { class: "secondary", onclick: reset }, "Clear"),
      el("p", { id: "answer" }), el("div", { id: "probs" })));
  reset();
  return box;
}

// The drawing as MNIST's preprocessing made its images: the digit's bounding box scaled
// to fit 20x20, centred in 28x28, white on black, values 0..255.
function toMnist(canvas) {
  const src = canvas.getContext("2d").getImageData(0, 0, canvas.width, canvas.height).data;
  let [x0, y0, x1, y1] = [canvas.width, canvas.height, -1, -1];
  for (let y = 0; y < canvas.height; y++) {
    for (let x = 0; x < canvas.width; x++) {
      if (src[(y * canvas.width + x) * 4] > 32) {
        x0 = Math.min(x0, x); y0 = Math.min(y0, y); x1 = Math.max(x1, x); y1 = Math.max(y1, y);
      }
    }
  }
  const small = document.createElement("canvas");
  small.width = 28;
  small.height = 28;
  const sctx = small.getContext("2d");
  sctx.fillStyle = "#000";
  sctx.fillRect(0, 0, 28, 28);
  if (x1 >= 0) {
    const side = Math.max(x1 - x0, y1 - y0) + 1;
    const scale = 20 / side;
    const w = (x1 - x0 + 1) * scale;
    const h = (y1 - y0 + 1) * scale;
    sctx.imageSmoothingQuality = "high";
    sctx.drawImage(canvas, x0, y0, x1 - x0 + 1, y1 - y0 + 1, (28 - w) / 2, (28 - h) / 2, w, h);
  }
  const px = sctx.getImageData(0, 0, 28, 28).data;
  return Array.from({ length: 28 }, (_, y) => Array.from({ length: 28 }, (_, x) => px[(y * 28 + x) * 4]));
}

// A tabular job's row form: a field per feature (numbers, or the categories the encoding knows),
// and the answers of the global model and of the ensemble of the devices' models side by side.
function rowBox(job) {
  const enc = job.encoding;
  const fields = Object.fromEntries(enc.features.map((f) => [f.name, f.kind === "numeric"
    ? el("input", { type: "number", step: "any", name: f.name, id: `row-${f.name}`, placeholder: `mean ${num(f.mean, 2)}` })
    : el("select", { name: f.name, id: `row-${f.name}` }, el("option", { value: "" }, "(missing)"),
      f.categories.map((c) => el("option", { value: c }, c)))]));
  const row = () => {
    const out = {};
    for (const f of enc.features) {
      const v = fields[f.name].value.trim();
      if (v !== "") out[f.name] = f.kind === "numeric" ? Number(v) : v;
    }
    return out;
  };
  const say = (reply) => reply.probabilities
    ? `${reply.predictions[0]} (${(100 * Math.max(...reply.probabilities[0])).toFixed(1)} %)`
    : num(reply.predictions[0], enc.target.transform === "log1p" ? 0 : 4);
  const ask = async (e) => {
    e.preventDefault();
    try {
      const body = { job_id: job.job_id, rows: [row()] };
      const [glob, ens] = await Promise.all([call("predict", { ...body, mode: "global" }),
        call("predict", { ...body, mode: "ensemble" })]);
      clearError();
      $("#row-answer", box).textContent = `${enc.target.name}: global model of round ${glob.model_round} ` +
        `${say(glob)} · ensemble of ${ens.models} devices' models ${say(ens)}`;
    } catch (err) {
      showError(err);
    }
  };
  const box = el("form", { class: "grid keep", id: "row-form", onsubmit: ask },
    enc.features.map((f) => el("label", {}, f.name, fields[f.name])),
    el("button", { type: "submit", id: "row-predict" }, `Predict ${enc.target.name}`),
    el("p", { id: "row-answer", class: "wide" }, "Type what you know of a row; the rest counts as missing."));
  return box;
}

// The figures of a tabular job's rounds: the received model's on the devices' held-out rows, and the
// models the devices trained on their own rows alone, side by side.
function tabularCharts(job, jchart, metric) {
  const regression = job.encoding.target.task === "regression";
  const pair = (key, label) => [{ label: `federated: ${label}`, values: metric(`eval_${key}`) },
    { label: `own data only: ${label}`, values: metric(`local_${key}`) }];
  return regression ? [
    jchart("Error (trained scale)", [...pair("rmse", "RMSE"), { label: "federated: MAE", values: metric("eval_mae") }]),
    jchart(`Error (${job.encoding.target.name})`, pair("rmse_units", "RMSE")),
    jchart("R²", pair("r2", "R²")),
  ] : [
    jchart("Accuracy", pair("accuracy", "accuracy")),
    jchart("Macro-F1", pair("macro_f1", "macro-F1")),
  ];
}

function perDevice(job) {
  const last = job.history[job.history.length - 1];
  if (!last?.per_client) return null;
  const key = job.encoding.target.task === "regression" ? "rmse" : "accuracy";
  return table([["client", "client"], [(r) => num(r[`eval_${key}`], 4), `${key}: federated`],
    [(r) => num(r[`local_${key}`], 4), "own data only"]],
  Object.entries(last.per_client).map(([client, m]) => ({ client, ...m })), null, "per-device");
}

// Why a waiting job has not started: the clients it still needs, and which criterion keeps devices out.
// What a job's privacy settings give: epsilon spent (and of what budget), and where secure aggregation stands
function privacyText(st) {
  const parts = [];
  const dp = st.config.dp, spent = st.privacy;
  if (dp && spent) {
    const eps = !spent.rounds ? "no round closed yet" :
      spent.epsilon === null ? "unbounded (no noise)" : `ε = ${spent.epsilon.toPrecision(3)}`;
    parts.push(`Differential privacy: ${eps}${spent.target_epsilon ? ` of a budget of ${spent.target_epsilon}` : ""} ` +
      `at δ = ${spent.delta.toPrecision(2)} after ${spent.rounds} round${spent.rounds === 1 ? "" : "s"}; ` +
      `noise ${dp.noise_multiplier} × clip norm ${(spent.clip_norm ?? dp.clip_norm).toPrecision(3)}` +
      (dp.target_quantile ? " (adaptive)" : ""));
  }
  const sa = st.config.secure_aggregation;
  if (sa) {
    parts.push(`Secure aggregation: the function sees only the sum (up to ${sa.degree} neighbours each, threshold ${sa.threshold})` +
      (st.secure && st.state === "running" ? `; round ${st.round}, attempt ${st.secure.attempt}, stage ${st.secure.stage}` : ""));
  }
  return parts.join(" · ");
}

function waitText(w) {
  let text = `Waiting: ${w.joined} of the ${w.clients} clients it starts with have joined.`;
  if (w.clauses) {
    text += ` Of ${w.devices} registered devices, ${w.meet_all} meet all its criteria; each clause: ` +
      w.clauses.map((c) => `${JSON.stringify(c.clause)} ${c.meet}`).join(", ") + ".";
  }
  return text;
}

const LOG_LINES = 40;

// the devices' last lines (warnings, errors, one a round), newest last: flctl logs shows the same
function logPanel(lines) {
  if (!lines.length) return el("p", { class: "muted", id: "job-log" }, "Nothing yet.");
  return el("pre", { id: "job-log", class: "log" }, lines.map((x) =>
    el("span", { class: `log-${x.level}` }, `${new Date(x.at * 1000).toLocaleTimeString()} ${x.level.toUpperCase()} ` +
      `${x.device_id || x.client_id}${x.round != null ? ` round ${x.round}` : ""}: ${x.text}\n`)));
}

async function jobView(view, live, jobId) {
  const st = await call("status", { job_id: jobId });
  const settings = await jobSettings();
  const said = (await call("logs", { job_id: jobId, limit: LOG_LINES })).lines;
  if (!live()) return false;
  const unfinished = ["created", "waiting", "running"].includes(st.state);
  // re-draw only when something shown changed, keeping what the user is typing or drawing
  const sig = JSON.stringify([st.job_id, st.state, st.round, st.history.length, st.subscribed, st.submitted,
    st.changes.length, st.model_round, said.length ? said[said.length - 1].at : 0]);
  if (view.dataset.sig === sig) return unfinished;
  const kept = [...view.querySelectorAll(".keep")];
  resetCharts();
  view.dataset.sig = sig;
  const h = st.history;
  const rounds = h.map((e) => e.round);
  const metric = (key) => h.map((e) => e.metrics[key] ?? null);
  const reported = h.map((e) => e.reported?.test_accuracy ?? null);
  const stop = async () => {
    const why = prompt(`Stop job ${st.name || st.job_id}? Say why (it is recorded with the job):`,
      "stopped from the dashboard");
    if (why === null) return; // cancelled
    try {
      await call("stop_job", { job_id: st.job_id, reason: why.trim() || "stopped from the dashboard" });
      clearError();
      route();
    } catch (err) {
      showError(err);
    }
  };
  const start = async () => {
    try {
      await call("start_job", { job_id: st.job_id });
      route();
    } catch (err) {
      showError(err);
    }
  };
  const fired = h.flatMap((e) => (e.rules || []).map((r) => ({ round: e.round, ...r })));
  const isAsync = st.mode === "async";
  const unit = isAsync ? "version" : "round";
  const jchart = (title, series, opts = {}) => chart(title, rounds, series, { x: unit, ...opts });
  const timing = () => isAsync ? [
    jchart("Staleness", [{ label: "mean", values: h.map((e) => e.staleness_mean) },
      { label: "max", values: h.map((e) => e.staleness_max) }], { unit: "versions" }),
    jchart("Throughput", [{ label: "updates per second", values: h.map((e) => e.seconds ? e.clients / e.seconds : null) }]),
  ] : [jchart("Clients per round", [
    // picked first and dashed, updates drawn over it: both stay visible where every picked client delivered
    { label: "picked", values: h.map((e) => e.picked), dash: [6, 6] },
    { label: "updates", values: h.map((e) => e.clients) }])];
  show(view, 
    el("h2", {}, st.name || st.job_id, " ", badge(st.state)),
    el("p", { class: "muted", id: "job-summary" },
      `${st.job_id} · ${unit} ${st.round} of ${st.rounds} · ${st.subscribed} of ${st.config.num_clients} clients · ` +
      (isAsync ? `async: ${st.buffer.size} updates per version, ${st.buffer.training} training now, ` +
        `${st.submitted} in the buffer · ` : "") +
      `${st.config.dataset}, ${st.model.name} (${params(st.model.parameters)} parameters), ` +
      `${st.config.strategy}, ${st.config.data ? `${st.config.data.task} of ${st.config.data.target}` : st.config.partition}` +
      (st.stopped_because ? ` · ended: ${st.stopped_because}` : "") +
      (st.best ? ` · best federated accuracy ${pct(st.best.eval_accuracy)} (the model of round ` +
        `${st.best.round - 1}, evaluated on the devices in round ${st.best.round})` : "")),
    st.waiting_for ? el("p", { id: "job-wait", class: "note" }, waitText(st.waiting_for)) : null,
    privacyText(st) ? el("p", { id: "job-privacy", class: "note" }, privacyText(st)) : null,
    el("div", { class: "actions" },
      st.state === "created" ? el("button", { id: "start-job", onclick: start }, "Start") : null,
      unfinished ? el("button", { class: "danger", id: "stop-job", onclick: stop }, "Stop job") : null),
    unfinished ? changeForm(st, settings) : null,
    h.length === 0 ? el("p", { class: "muted", id: "no-rounds" }, `No ${unit} has closed yet.`) :
      st.encoding ? el("div", { class: "charts" }, ...tabularCharts(st, jchart, metric),
        jchart("Round duration", [{ label: "seconds", values: h.map((e) => e.seconds) }], { unit: "s" })) :
      el("div", { class: "charts" },
        jchart("Accuracy", [
          { label: "federated, of the model received", values: metric("eval_accuracy") },
          ...(reported.some((v) => v !== null) ? [{ label: "test set (reported)", values: reported }] : []),
        ]),
        jchart("Loss", [{ label: "training", values: metric("train_loss") },
          { label: "federated, of the model received", values: metric("eval_loss") }]),
        jchart(isAsync ? "Version duration" : "Round duration",
          [{ label: "seconds", values: h.map((e) => e.seconds) }], { unit: "s" }),
        ...timing()),
    el("h3", {}, "What the devices said"),
    logPanel(said),
    el("div", { class: "columns" },
      st.encoding ? el("section", {},
        el("h3", {}, `Predict ${st.encoding.target.name} for a row`),
        st.model_round === null ? el("p", { class: "muted" }, "No model yet.") : rowBox(st),
        el("h3", {}, "Each device, last round"), perDevice(st) ?? el("p", { class: "muted" }, "No round yet.")) :
      el("section", {},
        el("h3", {}, "Draw a digit"),
        st.model_round === null ? el("p", { class: "muted" }, "No model yet.") : predictBox(st)),
      el("section", {},
        el("h3", {}, "Criteria"),
        st.criteria ? el("pre", { id: "job-criteria" }, JSON.stringify(st.criteria, null, 1)) :
          el("p", { class: "muted" }, "None: any device with the data."),
        el("h3", {}, "Rules"),
        st.rules.length ? table([[(r) => JSON.stringify(r.when), "when"], [(r) => JSON.stringify(r.then), "then"]],
          st.rules, null, "rules-table") : el("p", { class: "muted" }, "None."),
        el("h3", {}, "Rules that fired"),
        fired.length ? table([["round", "round"], ["rule", "rule"], [(r) => JSON.stringify(r.then), "then"],
          [(r) => r.error || "", "note"]], fired) : el("p", { class: "muted" }, "None."),
        el("h3", {}, "Settings changes"),
        st.changes.length ? table([["round", "from round"], ["by", "by"], [(c) => JSON.stringify(c.set), "set"]],
          st.changes, null, "changes-table") : el("p", { class: "muted" }, "None."),
        el("h3", {}, "Config"),
        table([["k", "setting"], ["v", "value"]],
          Object.entries(st.config).map(([k, v]) => ({ k, v: clip(typeof v === "object" ? JSON.stringify(v) : String(v)) }))))),
  );
  for (const old of kept) view.querySelector(`#${old.id}`)?.replaceWith(old);
  return unfinished;
}

async function devicesView(view, live, deviceId) {
  const data = await call("devices", {});
  const said = deviceId ? (await call("logs", { device_id: deviceId, limit: LOG_LINES })).lines : null;
  if (!live()) return false;
  resetCharts();
  show(view, 
    el("h2", {}, "Devices"),
    data.devices.length === 0 ? el("p", { class: "muted" }, "No device has registered yet.") :
      table([
        ["device_id", "device"], [(d) => d.name || "–", "name"],
        [(d) => d.info.platform || "–", "platform"], [(d) => d.info.cpus ?? "–", "cpus"],
        [(d) => d.info.memory_mb ?? "–", "memory MB"], [(d) => Object.keys(d.info.datasets || {}).join(", "), "data"],
        // the operator's labels (criteria: labels.<key>) over the device's own (info.labels)
        [(d) => Object.entries({ ...(d.info.labels || {}), ...(d.labels || {}) }).map(([k, v]) => `${k}=${v}`)
          .join(", ") || "–", "labels"],
        [(d) => d.stats.jobs_joined, "jobs"], [(d) => d.stats.rounds_trained, "rounds"],
        [(d) => d.stats.deadlines_missed, "missed"], [(d) => d.stats.failures_reported, "failed"],
        [(d) => num(d.stats.mean_train_seconds, 1), "train s"], [(d) => num(d.stats.contribution, 2), "contribution"],
        [(d) => ago(d.stats.last_seen), "last seen"],
      ], data.devices, (d) => { location.hash = `devices&device=${d.device_id}`; }, "devices-table"),
    deviceId ? el("h3", {}, `What ${deviceId} said`) : el("p", { class: "muted" }, "Click a device for its log."),
    deviceId ? logPanel(said) : null,
  );
  return true;
}

async function auditView(view, live) {
  const data = await call("audit", { limit: 200 });
  if (!live()) return false;
  resetCharts();
  const on = (e) => e.job_id ? el("a", { href: `#job=${e.job_id}` }, e.job_id) : e.device_id || "–";
  show(view,
    el("h2", {}, "Audit trail"),
    el("p", { class: "muted" }, "Every operator action that changed something, newest first: who, what, when, and " +
      "on which job or device."),
    data.entries.length === 0 ? el("p", { class: "muted" }, "Nothing recorded yet.") :
      table([
        [(e) => new Date(e.at * 1000).toLocaleString(), "when"], [(e) => `${e.who} (${e.role})`, "who"],
        ["action", "action"], [on, "on"],
        [(e) => Object.keys(e.detail || {}).length ? JSON.stringify(e.detail) : "", "detail"],
      ], data.entries, null, "audit-table"),
  );
  return true;
}

const PRESETS = {
  "MNIST, quick (3 rounds)": { dataset: "mnist", num_clients: 4, clients_per_round: 4, rounds: 3, local_epochs: 1,
    lr: 0.05, max_train_examples: 600 },
  // no lr: each data set's measured best applies (flcore/domain/config.py DATASET_DEFAULTS)
  "MNIST, default (20 clients)": { dataset: "mnist", num_clients: 20, clients_per_round: 10, rounds: 10,
    local_epochs: 10 },
  "MNIST, non-iid (shards:2, SCAFFOLD)": { dataset: "mnist", num_clients: 20, clients_per_round: 10, rounds: 10,
    local_epochs: 10, partition: "shards:2", strategy: "scaffold" },
  "MNIST, async (uneven devices)": { dataset: "mnist", num_clients: 20, clients_per_round: 10, rounds: 20,
    local_epochs: 10, mode: "async", buffer_size: 5 },
  "Fashion-MNIST": { dataset: "fashionmnist", num_clients: 20, clients_per_round: 10, rounds: 10,
    local_epochs: 10 },
};
async function createView(view, live) {
  const settings = await jobSettings();
  if (!live()) return false;
  // the job's own fields around the settings the function marks for this form
  const FORM_FIELDS = [["name", "text", "a name for people"],
    ...settings.filter((s) => s.form).map((s) => [s.name, isNumber(s) ? "number" : "text", hint(s), s.doc]),
    ["priority", "number", "higher: offered to devices first"], ["tags", "text", "comma-separated"]];
  const inputs = Object.fromEntries(FORM_FIELDS.map(([f, type, placeholder, doc]) => [f, el("input", { name: f,
    id: `create-${f}`, type, step: type === "number" ? "any" : undefined, placeholder, title: doc })]));
  const criteria = el("textarea", { id: "create-criteria", rows: 3,
    placeholder: '{"info.labels.kind": "a"} (optional)' });
  const rules = el("textarea", { id: "create-rules", rows: 3,
    placeholder: '[{"when": {"metrics.eval_accuracy": {"$gte": 0.97}}, "then": {"stop": "97 %"}}] (optional)' });
  const data = el("textarea", { id: "create-data", rows: 3,
    placeholder: '{"name": "house_prices", "task": "regression", "target": "SalePrice", "transform": "log1p"} ' +
      "(optional: a data set the devices declare, instead of dataset)" });
  const start = el("input", { type: "checkbox", id: "create-start", checked: true });
  const preset = el("select", { id: "create-preset" }, Object.keys(PRESETS).map((p) => el("option", {}, p)));
  const fill = () => {
    Object.values(inputs).forEach((i) => { i.value = ""; });
    for (const [k, v] of Object.entries(PRESETS[preset.value])) inputs[k].value = v;
  };
  preset.addEventListener("change", fill);
  const submit = async (e) => {
    e.preventDefault();
    const body = { start: start.checked };
    try {
      for (const [f, type] of FORM_FIELDS) {
        const v = inputs[f].value.trim();
        if (v === "") continue;
        body[f] = f === "tags" ? v.split(",").map((t) => t.trim()).filter(Boolean) : type === "number" ? Number(v)
          : f === "model" && v.startsWith("[") ? JSON.parse(v) : v;
      }
      if (criteria.value.trim()) body.criteria = JSON.parse(criteria.value);
      if (rules.value.trim()) body.rules = JSON.parse(rules.value);
      if (data.value.trim()) {
        body.data = JSON.parse(data.value);
        delete body.dataset; // the data block names the data set
      }
    } catch (err) {
      showError(new Error(`criteria, rules, the data block and a layer list must be JSON: ${err.message}`));
      return;
    }
    try {
      const made = await call("create_job", body);
      clearError();
      location.hash = `job=${made.job_id}`;
    } catch (err) {
      showError(err);
    }
  };
  resetCharts();
  show(view, 
    el("h2", {}, "New job"),
    el("form", { id: "create-form", class: "grid", onsubmit: submit },
      el("label", {}, "preset", preset),
      FORM_FIELDS.map(([f]) => el("label", {}, f.replaceAll("_", " "), inputs[f])),
      el("label", { class: "wide" }, "criteria (devices)", criteria),
      el("label", { class: "wide" }, "rules", rules),
      el("label", { class: "wide" }, "data (your own data set)", data),
      el("label", {}, "start now", start),
      el("button", { type: "submit", id: "create-submit" }, "Create job")),
  );
  fill();
  return false;
}

// ---------------------------------------------------------------- routing
async function route() {
  clearTimeout(timer);
  const mine = ++routes;
  const live = () => mine === routes;
  takeTokenFromFragment();
  const params = new URLSearchParams(location.hash.slice(1));
  const view = $("#view");
  const name = params.has("job") ? "job" : ["devices", "create", "audit"].find((v) => params.has(v)) || "jobs";
  document.querySelectorAll("nav a").forEach((a) => a.classList.toggle("active", a.id === `nav-${name}`));
  const render = async (first) => {
    if (name === "create" && !first) return;
    if (first) delete view.dataset.sig;
    let again = false;
    try {
      again = name === "job" ? await jobView(view, live, params.get("job"))
        : name === "devices" ? await devicesView(view, live, params.get("device"))
          : name === "audit" ? await auditView(view, live)
          : name === "create" ? await createView(view, live) : await jobsView(view, live);
      if (live()) clearError();
    } catch (err) {
      if (!live()) return;
      showError(err);
      if (first) show(view, el("p", { class: "muted" }, "Nothing to show."));
      again = true;
    }
    if (again && live()) timer = setTimeout(() => render(false), REFRESH_MS);
  };
  await render(true);
}

window.addEventListener("hashchange", route);
window.addEventListener("DOMContentLoaded", () => {
  takeTokenFromFragment();
  renderWho();
  route();
});
