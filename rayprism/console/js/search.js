// Search playground: one or two settings of POST /v1/collections/{name}/search on the same query, hits side by
// side with the differences marked, the service's own errors inline, and the request as curl and Python.
import { api, apiKey, enc, serviceUrl, ApiError } from "./api.js";
import { copyButton, field, h, highlighted, number, show } from "./dom.js";

function settingsForm(side, rerankers, initial) {
  const id = (name) => `${name}-${side}`;
  const control = (tag, name, props, ...children) => h(tag, { id: id(name), name, ...props }, ...children);
  const mode = control("select", "mode", {}, ["", "hybrid", "dense", "sparse", "multivector"].map(
    (value) => h("option", { value, selected: value === (initial.mode || "") }, value || "collection default")));
  const fusion = control("select", "fusion", {}, h("option", { value: "weighted" }, "weighted (min-max)"),
    h("option", { value: "rrf", selected: initial.fusion === "rrf" }, "reciprocal rank (RRF)"));
  const dense = control("input", "dense", { type: "number", step: "0.1", min: "0", value: "0.5" });
  const sparse = control("input", "sparse", { type: "number", step: "0.1", min: "0", value: "0.5" });
  const rrfK = control("input", "rrf_k", { type: "number", min: "1", value: "60" });
  const filter = control("input", "filter", { type: "text", placeholder: 'e.g. section == "admin"',
    "aria-describedby": id("filter-error") });
  const filterError = h("span", { id: id("filter-error"), class: "error", role: "alert" });
  const rerank = control("select", "rerank", {}, h("option", { value: "" }, "none"),
    rerankers.map((name) => h("option", { value: name }, name)));
  const k = control("input", "k", { type: "number", min: "1", max: "1000", value: initial.k || "10" });
  // A chunked collection's hit shows its best pieces: its best one alone is often the one quoting the query
  const passages = control("input", "passages", { type: "number", min: "0", max: "20", value: "3" });
  const fieldset = h("fieldset", { class: "panel" }, h("legend", {}, side === "a" ? "Setting A" : "Setting B"),
    h("div", { class: "settings" },
      field("Mode", mode), field("Fusion", fusion), field("Dense weight", dense), field("Sparse weight", sparse),
      field("RRF k", rrfK), field("k (hits)", k), field("Passages per document", passages), field("Rerank with", rerank),
      h("label", { class: "wide" }, "Filter (Milvus expression)", filter, filterError)));
  const sync = () => {
    const weighted = fusion.value === "weighted";
    dense.disabled = sparse.disabled = !weighted;
    rrfK.disabled = weighted;
  };
  fusion.addEventListener("change", sync);
  sync();
  return {
    fieldset, filter, filterError,
    body(query) {
      const body = { query, k: Number(k.value) || 10, passages: Number(passages.value) };
      if (mode.value) body.mode = mode.value;
      if (!mode.value || mode.value === "hybrid") {
        body.fusion = fusion.value === "rrf" ? { type: "rrf", k: Number(rrfK.value) || 60 }
          : { type: "weighted", weights: { dense: Number(dense.value), sparse: Number(sparse.value) } };
      }
      if (filter.value.trim()) body.filter = filter.value.trim();
      if (rerank.value) body.rerank = { model: rerank.value };
      return body;
    },
  };
}

function pythonLiteral(value, indent = "") {
  if (value === null) return "None";
  if (value === true) return "True";
  if (value === false) return "False";
  if (typeof value === "string") return JSON.stringify(value);
  if (Array.isArray(value)) return `[${value.map((item) => pythonLiteral(item, indent)).join(", ")}]`;
  if (typeof value === "object") {
    return `{${Object.entries(value).map(([key, item]) => `${JSON.stringify(key)}: ${pythonLiteral(item, indent)}`).join(", ")}}`;
  }
  return String(value);
}

export function curlOf(collection, body) {
  const key = apiKey.get() ? ` \\\n  -H "Authorization: Bearer $RAYPRISM_API_KEY"` : "";
  const json = JSON.stringify(body).replace(/'/g, "'\\''");
  return `curl -s ${serviceUrl}/v1/collections/${enc(collection)}/search${key} \\\n  -H "Content-Type: application/json" \\\n  -d '${json}'`;
}

export function pythonOf(collection, body) {
  const { query, ...options } = body;
  const key = apiKey.get() ? `, api_key=os.environ["RAYPRISM_API_KEY"]` : "";
  const args = [JSON.stringify(collection), pythonLiteral(query),
    ...Object.entries(options).map(([name, value]) => `${name}=${pythonLiteral(value)}`)];
  return `${key ? "import os\n" : ""}import rayprism\n\nwith rayprism.Client(${JSON.stringify(serviceUrl)}${key}) as client:\n` +
    `    hits = client.search(${args.join(", ")})["results"]`;
}

function hitItem(hit, rank, query, textField, other) {
  const fields = hit.fields || {};
  const text = fields[textField];
  const otherRank = other ? other.get(String(hit.id)) : undefined;
  let diff = null;
  if (other && otherRank === undefined) diff = h("span", { class: "diff new" }, "only here");
  else if (other && otherRank !== rank) {
    diff = h("span", { class: `diff ${otherRank > rank ? "up" : "down"}` },
      `${otherRank > rank ? "▲" : "▼"} ${Math.abs(otherRank - rank)} (#${otherRank} there)`);
  }
  const scores = [`score ${number(hit.score, 4)}`];
  if (hit.retrieval_score !== undefined) scores.push(`retrieval ${number(hit.retrieval_score, 4)}`);
  return h("li", { "data-id": String(hit.id), class: other && otherRank === undefined ? "only" : null },
    h("div", { class: "hit-head" }, h("span", { class: "rank" }, `#${rank}`), h("strong", {}, String(hit.id)), diff,
      h("span", { class: "score" }, scores.join(" · "))),
    hit.passages?.length ? hit.passages.map((passage) => h("div", { class: "passage" },
      h("span", { class: "muted" }, `piece ${passage.index} · ${number(passage.score, 4)}: `), highlighted(passage.text, query)))
      : text !== undefined ? h("div", { class: "passage" }, highlighted(String(text).slice(0, 600), query)) : null,
    h("div", { class: "fields" }, Object.entries(fields).filter(([name]) => name !== textField)
      .flatMap(([name, value]) => [h("span", { class: "pill" }, `${name}: ${value}`), " "])));
}

export async function render(main, context, args, params) {
  const [collections, models] = await Promise.all([api("/v1/collections"), api("/v1/models")]);
  const rerankers = models.data.filter((model) => model.kind === "reranker").map((model) => model.id);
  const chosen = params.get("collection") || collections.data[0]?.name || "";
  const collection = h("select", { id: "collection", name: "collection" },
    collections.data.map((c) => h("option", { value: c.name, selected: c.name === chosen }, c.name)));
  const query = h("input", { id: "query", name: "query", type: "search", required: true, value: params.get("q") || "",
    placeholder: "how do I run the tests", size: "50" });
  const compare = h("input", { id: "compare", type: "checkbox" });
  const a = settingsForm("a", rerankers, {});
  const b = settingsForm("b", rerankers, { mode: "dense" });
  b.fieldset.hidden = true;
  compare.addEventListener("change", () => { b.fieldset.hidden = !compare.checked; });
  const results = h("section", { id: "results", "aria-live": "polite", "aria-label": "Search results" });
  const code = h("section", { "aria-label": "The request as code" });
  const form = h("form", { class: "panel", role: "search" },
    h("div", { class: "row" }, field("Collection", collection), h("label", { class: "wide", style: "flex:1" }, "Query", query),
      h("label", { class: "inline" }, compare, "Compare two settings"),
      h("button", { type: "submit", id: "run-search" }, "Search")),
    h("div", { class: "columns" }, a.fieldset, b.fieldset));
  const submit = () => run(collection.value, query.value.trim(), compare.checked ? [a, b] : [a], results, code, collections);
  form.addEventListener("submit", (event) => {
    event.preventDefault();
    submit();
  });
  show(main, h("h1", {}, "Search playground"), form, results, code);
  if (query.value) submit();
}

async function run(name, query, sides, results, code, collections) {
  if (!query) return;
  const textField = collections.data.find((c) => c.name === name)?.text_field || "text";
  const bodies = sides.map((side) => side.body(query));
  show(results, h("p", { class: "muted" }, "Searching…"));
  const answers = await Promise.all(bodies.map((body, index) => {
    sides[index].filterError.textContent = "";
    sides[index].filter.removeAttribute("aria-invalid");
    return api(`/v1/collections/${enc(name)}/search`, { method: "POST", body }).catch((error) => error);
  }));
  const ranks = answers.map((answer) => answer instanceof ApiError ? null
    : new Map(answer.results.map((hit, index) => [String(hit.id), index + 1])));
  const columns = answers.map((answer, index) => {
    const title = h("h2", {}, sides.length > 1 ? `Setting ${"AB"[index]}` : "Hits");
    if (answer instanceof ApiError || answer instanceof Error) {
      if (answer.param === "filter") {
        sides[index].filterError.textContent = answer.message;
        sides[index].filter.setAttribute("aria-invalid", "true");
      }
      return h("div", {}, title, h("p", { class: "error", role: "alert" }, answer.message));
    }
    const other = sides.length > 1 ? ranks[1 - index] : null;
    return h("div", {}, title, h("p", { class: "muted" }, `${answer.results.length} hits · mode ${answer.mode}`),
      h("ol", { class: "hits", "aria-label": `Hits${sides.length > 1 ? " of setting " + "AB"[index] : ""}` },
        answer.results.map((hit, rank) => hitItem(hit, rank + 1, query, textField, other))));
  });
  show(results, h("div", { class: sides.length > 1 ? "columns" : "columns single" }, columns));
  show(code, h("h2", {}, "The request as code"), bodies.map((body, index) => {
    const curl = curlOf(name, body);
    const python = pythonOf(name, body);
    return h("div", { class: "panel" }, sides.length > 1 ? h("h3", {}, `Setting ${"AB"[index]}`) : null,
      h("div", { class: "columns" },
        h("div", {}, h("div", { class: "row" }, h("strong", {}, "curl"), copyButton("Copy curl", () => curl)), h("pre", { class: "curl" }, curl)),
        h("div", {}, h("div", { class: "row" }, h("strong", {}, "Python (SDK)"), copyButton("Copy Python", () => python)),
          h("pre", { class: "python" }, python))));
  }));
}
