// Models: what each serves (kind, modality, prompts, limits), live queue depth, batch size and latency parsed
// from /metrics every few seconds, and a try-it box (embed text or a file; rerank documents).
import { api, ApiError } from "./api.js";
import { may } from "./access.js";
import { parseMetrics, sparkline, total } from "./charts.js";
import { field, h, number, show } from "./dom.js";

const POLL_MS = 3000;
const KEPT = 40;

function rates(previous, current, model) {
  const delta = (name) => total(current, name, { model }) - total(previous, name, { model });
  const batches = delta("rayprism_batch_size_count");
  const requests = delta("rayprism_request_latency_seconds_count");
  return {
    queue: total(current, "rayprism_queue_depth", { model }),
    batch: batches > 0 ? delta("rayprism_batch_size_sum") / batches : NaN,
    latency: requests > 0 ? (1000 * delta("rayprism_request_latency_seconds_sum")) / requests : NaN,
  };
}

export async function render(main, context) {
  const models = (await api("/v1/models")).data;
  const cards = new Map();
  const history = Object.fromEntries(models.map((model) => [model.id, { queue: [], batch: [], latency: [] }]));
  for (const model of models) {
    const facts = [["Kind", model.kind], ["State", model.state], ["Backend", model.backend],
      ["Modalities", (model.modalities || [model.modality]).join(", ")], ["Dimensions", model.dimensions ?? "—"],
      ["Max input tokens", model.max_input_tokens ?? "—"], ["Prompts", (model.prompts || []).join(", ") || "—"]];
    const charts = h("div", { "aria-label": `Live metrics of ${model.id}` });
    cards.set(model.id, charts);
    cards.set(model.id + ":card", h("article", { class: "panel", "aria-labelledby": `model-${model.id}` },
      h("h2", { id: `model-${model.id}` }, model.id),
      h("dl", { class: "facts" }, facts.map(([key, value]) => [h("dt", {}, key), h("dd", {}, String(value))])),
      charts));
  }
  const tryIt = may(context.me, "embed") ? tryBox(models) : h("p", { class: "muted" }, "This key may not embed (scope embed).");
  const status = h("p", { class: "muted", role: "status" });
  show(main, h("h1", {}, "Models"), status,
    h("div", { class: "cards" }, models.map((model) => cards.get(model.id + ":card"))),
    h("h2", {}, "Try it"), tryIt);

  let previous = null;
  let stopped = false;
  async function poll() {
    try {
      const current = parseMetrics(await api("/metrics"));
      if (previous) {
        for (const model of models) {
          const now = rates(previous, current, model.id);
          const kept = history[model.id];
          for (const key of Object.keys(kept)) kept[key] = [...kept[key], now[key]].slice(-KEPT);
          show(cards.get(model.id), sparkline("Queue depth (inputs)", kept.queue),
            sparkline("Mean batch size", kept.batch), sparkline("Mean request latency", kept.latency, " ms"));
        }
      }
      previous = current;
      status.textContent = `Metrics from /metrics, every ${POLL_MS / 1000} s (this replica's, where several answer).`;
    } catch (error) {
      status.textContent = `Metrics unavailable: ${error.message}`;
    }
    if (!stopped) timer = setTimeout(poll, POLL_MS);
  }
  let timer = setTimeout(poll, 0);
  return () => { stopped = true; clearTimeout(timer); };
}

function readFile(file) {
  return new Promise((resolve, reject) => {
    const reader = new FileReader();
    reader.onload = () => resolve(reader.result);
    reader.onerror = () => reject(reader.error);
    reader.readAsDataURL(file);
  });
}

function tryBox(models) {
  const model = h("select", { id: "try-model" }, models.map((m) => h("option", { value: m.id }, `${m.id} (${m.kind})`)));
  const text = h("textarea", { id: "try-text", rows: "3", cols: "60" }, "how do I run the tests");
  const documents = h("textarea", { id: "try-documents", rows: "3", cols: "60" }, "make test runs the suite\nmake run serves the API");
  const file = h("input", { id: "try-file", type: "file", accept: "image/*,audio/*" });
  const out = h("div", { id: "try-output", "aria-live": "polite" });
  const documentsLabel = field("Documents to rerank (one per line)", documents);
  const fileLabel = field("Or an image or audio file (media models)", file);
  const sync = () => {
    const chosen = models.find((m) => m.id === model.value);
    documentsLabel.hidden = chosen?.kind !== "reranker";
    fileLabel.hidden = chosen?.kind === "reranker" || !(chosen?.modalities || []).some((m) => m !== "text");
  };
  model.addEventListener("change", sync);
  sync();
  const form = h("form", { class: "panel" }, h("div", { class: "settings" }, field("Model", model)),
    field("Text (the query, for a reranker)", text), documentsLabel, fileLabel,
    h("p", {}, h("button", { type: "submit" }, "Run")), out);
  form.addEventListener("submit", async (event) => {
    event.preventDefault();
    const chosen = models.find((m) => m.id === model.value);
    show(out, h("p", { class: "muted" }, "Running…"));
    try {
      if (chosen.kind === "reranker") {
        const answer = await api("/v1/rerank", { method: "POST", body: { model: chosen.id, query: text.value,
          documents: documents.value.split("\n").filter(Boolean), return_documents: true } });
        show(out, h("ol", {}, answer.results.map((result) =>
          h("li", {}, `${number(result.relevance_score, 4)} — ${result.document?.text ?? result.index}`))));
        return;
      }
      const media = file.files[0];
      const modality = media ? media.type.split("/")[0] : "text";
      const body = { model: chosen.id, input: media ? await readFile(media) : text.value };
      if (media) body.modality = modality;
      const answer = await api("/v1/embeddings", { method: "POST", body });
      const vector = answer.data[0].embedding;
      show(out, h("p", {}, `${vector.length} dimensions, ${answer.usage.total_tokens} tokens: `),
        h("pre", {}, `[${vector.slice(0, 12).map((x) => Number(x).toFixed(4)).join(", ")}, …]`));
    } catch (error) {
      show(out, h("p", { class: "error", role: "alert" }, error instanceof ApiError ? error.message : String(error)));
    }
  });
  return form;
}
