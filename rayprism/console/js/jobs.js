// Jobs: an alias's re-embedding jobs (phase, progress, gate, swap), followed while one runs; an admin key starts
// one and rolls the last one back. (The service has no batch-jobs API yet: `rayprism embed` jobs run outside it.)
import { api, enc } from "./api.js";
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

export async function render(main, context, args, params) {
  if (!may(context.me, "admin")) {
    show(main, h("h1", {}, "Jobs"), h("p", { class: "muted" },
      "Re-embedding jobs are read and run with an admin key; this key has scopes: ", context.me.scopes.join(", ")));
    return null;
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
    h("p", { class: "muted" }, "Batch embedding jobs (rayprism embed, rayprism submit) run as Ray jobs: follow them in Ray's dashboard."));
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
  return () => { stopped = true; clearTimeout(timer); };
}
