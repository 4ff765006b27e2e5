// Jobs: an alias's re-embedding jobs (phase, progress, gate, swap), followed while one runs; an admin key starts
// one and rolls the last one back. Below them, the Batch API's batches (a key with the embed scope): status,
// lines done, the output and error files, a cancel button while one runs.
import { api, enc, serviceUrl, apiKey } from "./api.js";
import { may } from "./access.js";
import { field, h, number, show } from "./dom.js";

const POLL_MS = 1500;

function progress(job) {
  const total = job.documents_total;
  const share = total ? Math.min(1, job.documents_done / total) : job.state === "done" ? 1 : 0;
  return h("div", {},
    h("div", { class: "progress", role: "progressbar", "aria-label": `Progress of ${job.id}`, "aria-valuemin": "0",
      "aria-valuemax": "100", "aria-valuenow": String(Math.round(share * 100)) }, h("span", { style: `width:${share * 100}%` })),
    h("span", { class: "muted" }, `${number(job.documents_done)} / ${total == null ? "?" : number(total)} documents` +
      (job.changes_pending ? ` · ${number(job.changes_pending)} writes to replay` : "")));
}

function gate(job) {
  if (!job.gate) return job.direction === "rollback" ? "— (a rollback has none)" : "not yet";
  const g = job.gate;
  return h("span", { class: g.passed ? "ok" : "error" },
    `${g.metric}: new ${number(g.new, 3)}${g.old != null ? ` vs old ${number(g.old, 3)}` : ""}, threshold ${number(g.threshold, 3)} → ${g.passed ? "passed" : "failed"}`);
}

function jobRow(job) {
  const stateClass = { done: "ok", failed: "error", interrupted: "warn" }[job.state] || "";
  return h("tr", { "data-job": job.id },
    h("td", {}, job.id, h("div", { class: "muted" }, job.direction)),
    h("td", {}, `${job.source} (${job.source_model}) → ${job.target} (${job.model})`),
    h("td", { class: "state" }, h("span", { class: stateClass }, job.state), h("div", { class: "muted phase" }, job.phase)),
    h("td", {}, progress(job)),
    h("td", {}, gate(job)),
    h("td", { class: "swap" }, job.phase === "swapped" ? h("span", { class: "ok" }, `${job.alias} → ${job.target}`)
      : job.error ? h("span", { class: "error" }, job.error) : "—"));
}

const ACTIVE_BATCH = new Set(["validating", "in_progress", "finalizing", "cancelling"]);

async function download(fileId, name) {
  const headers = apiKey.get() ? { Authorization: `Bearer ${apiKey.get()}` } : {};
  const response = await fetch(`${serviceUrl}/v1/files/${enc(fileId)}/content`, { headers });
  const link = h("a", { href: URL.createObjectURL(await response.blob()), download: name });
  link.click();
  URL.revokeObjectURL(link.href);
}

function batchRow(batch, cancel) {
  const counts = batch.request_counts || { total: 0, completed: 0, failed: 0 };
  const stateClass = { completed: "ok", failed: "error", cancelled: "warn", expired: "warn" }[batch.status] || "";
  const file = (id, label) => id ? h("button", { type: "button", class: "link", "data-file": id,
    onclick: () => download(id, `${batch.id}-${label}.jsonl`) }, label) : null;
  return h("tr", { "data-batch": batch.id },
    h("td", {}, batch.id, h("div", { class: "muted" }, new Date(batch.created_at * 1000).toLocaleString())),
    h("td", { class: "state" }, h("span", { class: stateClass }, batch.status)),
    h("td", { class: "counts" }, `${number(counts.completed)} / ${number(counts.total)} lines` +
      (counts.failed ? ` · ${number(counts.failed)} failed` : "")),
    h("td", {}, file(batch.output_file_id, "output"), " ", file(batch.error_file_id, "errors")),
    h("td", {}, ACTIVE_BATCH.has(batch.status) && batch.status !== "cancelling"
      ? h("button", { type: "button", class: "danger", onclick: () => cancel(batch.id) }, "Cancel") : "—"));
}

/** The Batch API's batches, newest first, followed while one is active. */
function batchesSection() {
  const section = h("section", { "aria-live": "polite", "aria-label": "Batches" });
  let timer = null;
  let stopped = false;
  async function cancel(id) {
    await api(`/v1/batches/${enc(id)}/cancel`, { method: "POST" });
    refresh();
  }
  async function refresh() {
    clearTimeout(timer);
    const batches = (await api("/v1/batches?limit=50")).data;
    show(section, h("h2", {}, "Batches"), batches.length ? h("table", { "aria-label": "Batches" },
      h("thead", {}, h("tr", {}, ["Batch", "Status", "Lines", "Files", ""].map((t) => h("th", { scope: "col" }, t)))),
      h("tbody", {}, batches.map((batch) => batchRow(batch, cancel))))
      : h("p", { class: "muted" }, "No batches yet: POST /v1/files, then POST /v1/batches (the OpenAI client's files.create "
        + "and batches.create)."));
    if (!stopped && batches.some((batch) => ACTIVE_BATCH.has(batch.status))) timer = setTimeout(refresh, POLL_MS);
  }
  return { section, refresh, stop: () => { stopped = true; clearTimeout(timer); } };
}

export async function render(main, context, args, params) {
  const batches = may(context.me, "embed") ? batchesSection() : null;
  if (!may(context.me, "admin")) {
    show(main, h("h1", {}, "Jobs"), h("p", { class: "muted" },
      "Re-embedding jobs are read and run with an admin key; this key has scopes: ", context.me.scopes.join(", ")),
    batches?.section);
    if (batches) await batches.refresh();
    return batches?.stop ?? null;
  }
  const [aliases, models] = await Promise.all([api("/v1/aliases"), api("/v1/models")]);
  const chosen = params.get("alias") || aliases.data[0]?.name || "";
  const alias = h("select", { id: "alias", name: "alias" }, aliases.data.map((a) =>
    h("option", { value: a.name, selected: a.name === chosen }, `${a.name} → ${a.collection}`)));
  alias.addEventListener("change", () => context.go("jobs", [], { alias: alias.value }));
  const table = h("section", { "aria-live": "polite", "aria-label": "Jobs of the alias" });
  const status = h("p", { role: "status" });
  const model = h("select", { id: "reembed-model" }, models.data.filter((m) => m.kind === "embedder")
    .map((m) => h("option", { value: m.id }, m.id)));
  const minScore = h("input", { id: "reembed-min-score", type: "number", min: "0", max: "1", step: "0.05", placeholder: "default" });
  const start = h("form", { class: "panel row", "aria-label": "Start a re-embedding" },
    field("New model", model), field("Gate: minimum score", minScore),
    h("button", { type: "submit", id: "start-reembed" }, "Re-embed"),
    h("button", { type: "button", class: "danger", id: "rollback", onclick: () => act("rollback", undefined) }, "Roll back"));
  start.addEventListener("submit", (event) => {
    event.preventDefault();
    const body = { model: model.value };
    if (minScore.value !== "") body.evaluation = { min_score: Number(minScore.value) };
    act("reembed", body);
  });
  async function act(what, body) {
    if (what === "rollback" && !window.confirm(`Point ${alias.value} back at the collection its last re-embedding moved it from?`)) return;
    try {
      const job = await api(`/v1/collections/${enc(alias.value)}/${what}`, { method: "POST", body });
      status.className = "";
      status.textContent = `Started ${job.id}.`;
      refresh();
    } catch (error) { status.className = "error"; status.textContent = error.message; }
  }
  show(main, h("h1", {}, "Jobs"),
    aliases.data.length ? [h("div", { class: "row" }, field("Alias", alias)), start, status, table]
      : h("p", { class: "muted" }, "Re-embedding moves an alias: this service has no aliases yet (POST /v1/aliases)."),
    batches.section,
    h("p", { class: "muted" }, "Batch jobs started with rayprism embed or rayprism submit run as Ray jobs: follow them in Ray's dashboard."));
  let timer = null;
  let stopped = false;
  async function refresh() {
    clearTimeout(timer);
    if (!alias.value) return;
    const jobs = (await api(`/v1/collections/${enc(alias.value)}/reembed`)).data;
    show(table, jobs.length ? h("table", { "aria-label": "Re-embedding jobs" },
      h("thead", {}, h("tr", {}, ["Job", "From → to", "State", "Progress", "Gate", "Swap"].map((t) => h("th", { scope: "col" }, t)))),
      h("tbody", {}, [...jobs].reverse().map(jobRow))) : h("p", { class: "muted" }, "No jobs for this alias yet."));
    if (!stopped && jobs.some((job) => job.state === "running")) timer = setTimeout(refresh, POLL_MS);
  }
  if (alias.value) await refresh();
  await batches.refresh();
  return () => { stopped = true; clearTimeout(timer); batches.stop(); };
}
