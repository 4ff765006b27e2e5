// Collections: the list (count, model, tiers, chunking, aliases), one collection's schema and config, and a
// document browser (GET /v1/collections/{name}/documents, a page at a time; a document opened whole).
import { api, enc } from "./api.js";
import { may } from "./access.js";
import { h, number, show } from "./dom.js";

const PAGE = 20;
/** Per collection, the cursor (``after``) of each page position seen in this tab: how Previous goes back. Pages are
 * asked by cursor (the last id of the page before), which costs the same anywhere in a collection. */
const cursors = new Map();

export function tiers(collection) {
  const shown = [collection.multivector ? "multivector" : "dense"];
  if (collection.bm25) shown.push("bm25");
  for (const [tier, setting] of Object.entries(collection.compression || {})) {
    if (setting) shown.push(typeof setting === "object" && setting.dimensions ? `${tier} ${setting.dimensions}` : tier);
  }
  return shown;
}

function chunking(collection) {
  const c = collection.chunking;
  return c ? `${c.max_tokens} tokens, ${c.overlap_tokens} overlap${c.markdown ? ", markdown" : ""}` : "—";
}

async function aliasesByCollection() {
  const found = {};
  for (const alias of (await api("/v1/aliases")).data) (found[alias.collection] ||= []).push(alias.name);
  return found;
}

export async function render(main, context, args, params) {
  if (args[0]) return detail(main, context, args[0], params);
  const [list, aliases] = await Promise.all([api("/v1/collections"), aliasesByCollection()]);
  const rows = list.data.map((c) => h("tr", {},
    h("td", {}, h("a", { href: `#/collections/${enc(c.name)}` }, c.name)),
    h("td", { class: "num" }, number(c.count)),
    h("td", {}, c.model),
    h("td", {}, tiers(c).flatMap((tier) => [h("span", { class: "pill" }, tier), " "])),
    h("td", {}, chunking(c)),
    h("td", {}, (aliases[c.name] || []).join(", ") || "—"),
    h("td", {}, h("a", { href: `#/search?collection=${enc(c.name)}` }, "search"), " · ",
      h("a", { href: `#/map?collection=${enc(c.name)}` }, "map"))));
  show(main, h("h1", {}, "Collections"),
    list.data.length ? h("table", { "aria-label": "Collections" },
      h("thead", {}, h("tr", {}, ["Name", "Documents", "Model", "Tiers", "Chunking", "Aliases", ""].map(
        (title, i) => h("th", { scope: "col", class: i === 1 ? "num" : null }, title)))),
      h("tbody", {}, rows))
      : h("p", { class: "muted" }, "No collections this key may read."));
}

async function detail(main, context, name, params) {
  const collection = await api(`/v1/collections/${enc(name)}`);
  const after = params.get("after");
  const from = after === null ? 0 : Math.max(0, Number(params.get("from")) || 0);
  const facts = [
    ["Name", collection.name === name ? name : `${name} → ${collection.name}`],
    ["Documents", number(collection.count)], ["Model", collection.model], ["Modality", collection.modality],
    ["Dimensions", collection.dimensions ?? "—"], ["Tiers", tiers(collection).join(", ")],
    ["Chunking", chunking(collection)], ["Text field", collection.text_field], ["Id type", collection.id_type],
  ];
  const browser = h("section", { "aria-labelledby": "docs-title" });
  const opened = h("section", { "aria-live": "polite" });
  show(main,
    h("p", {}, h("a", { href: "#/collections" }, "← Collections")),
    h("h1", {}, `Collection ${name}`),
    h("div", { class: "columns" },
      h("div", { class: "panel" }, h("h2", {}, "Summary"),
        h("dl", { class: "facts" }, facts.map(([key, value]) => [h("dt", {}, key), h("dd", {}, value)]))),
      h("div", { class: "panel" }, h("h2", {}, "Schema"),
        h("table", { "aria-label": "Fields" },
          h("thead", {}, h("tr", {}, h("th", { scope: "col" }, "Field"), h("th", { scope: "col" }, "Type"))),
          h("tbody", {}, h("tr", {}, h("td", {}, collection.text_field), h("td", {}, "text")),
            Object.entries(collection.fields).map(([field, type]) => h("tr", {}, h("td", {}, field), h("td", {}, type))))),
        h("details", {}, h("summary", {}, "Index and full config"),
          h("pre", {}, JSON.stringify({ index: collection.index, compression: collection.compression,
            multivector: collection.multivector, chunking: collection.chunking, mirror: collection.mirror }, null, 2))))),
    browser, opened);
  await documents(browser, opened, context, name, collection, after, from);
}

async function documents(browser, opened, context, name, collection, after, from) {
  const query = new URLSearchParams({ limit: PAGE });
  if (after !== null) query.set("after", after);
  const page = await api(`/v1/collections/${enc(name)}/documents?${query}`);
  const seen = cursors.get(name) || new Map([[0, null]]);
  cursors.set(name, seen);
  if (from > 0) seen.set(from, after);
  if (page.has_more) seen.set(from + page.data.length, page.last_id);
  const canWrite = may(context.me, "write", name);
  const rows = page.data.map((document) => h("tr", {},
    h("td", {}, h("button", { type: "button", class: "secondary", onclick: () => open(opened, context, name, collection, document) },
      String(document.id))),
    h("td", {}, String(document[collection.text_field] ?? "").slice(0, 160)),
    h("td", { class: "fields" }, Object.keys(collection.fields).map((field) =>
      document[field] !== undefined ? h("div", {}, `${field}: ${document[field]}`) : null))));
  const to = (position) => context.go("collections", [name], position ? { after: seen.get(position), from: position } : {});
  const back = Math.max(0, from - PAGE);
  const label = page.data.length ? `${number(from + 1)}–${number(from + page.data.length)} of ${number(page.total)}`
    : page.total ? `None after ${after} (of ${number(page.total)})` : "No documents";
  show(browser, h("h2", { id: "docs-title" }, "Documents"),
    h("div", { class: "row" },
      h("button", { type: "button", class: "secondary", id: "docs-first", disabled: after === null, onclick: () => to(0) }, "⇤ First"),
      h("button", { type: "button", class: "secondary", id: "docs-previous", disabled: after === null || !seen.has(back),
        onclick: () => to(back) }, "← Previous"),
      h("span", { "aria-live": "polite", id: "docs-range" }, label),
      h("button", { type: "button", class: "secondary", id: "docs-next", disabled: !page.has_more,
        onclick: () => to(from + page.data.length) }, "Next →"),
      canWrite ? h("span", { class: "muted" }, "(open a document to delete it)") : null),
    h("table", { "aria-label": "Documents" },
      h("thead", {}, h("tr", {}, h("th", { scope: "col" }, "Id"), h("th", { scope: "col" }, "Text"), h("th", { scope: "col" }, "Fields"))),
      h("tbody", {}, rows)));
}

async function open(opened, context, name, collection, row) {
  const document = await api(`/v1/collections/${enc(name)}/documents/${enc(row.id)}` + (collection.chunking ? "?pieces=true" : ""));
  const pieces = document.pieces || [];
  delete document.pieces;
  const text = String(document[collection.text_field] ?? "");
  const status = h("p", { role: "status" });
  const remove = may(context.me, "write", name) ? h("button", { type: "button", class: "danger", onclick: async () => {
    if (!window.confirm(`Delete document ${document.id} from ${name}?`)) return;
    try {
      await api(`/v1/collections/${enc(name)}/documents`, { method: "DELETE", body: { ids: [document.id] } });
      status.textContent = "Deleted.";
    } catch (error) { status.textContent = error.message; status.className = "error"; }
  } }, "Delete document") : null;
  const fields = Object.entries(document).filter(([key]) => !["object", "id", collection.text_field].includes(key));
  show(opened, h("div", { class: "panel" },
    h("div", { class: "row" }, h("h2", { tabindex: "-1", id: "opened-title" }, `Document ${document.id}`), remove),
    h("dl", { class: "facts" }, fields.map(([key, value]) => [h("dt", {}, key), h("dd", {}, String(value))])),
    h("div", { class: "doc-text", tabindex: "0", "aria-label": "Document text" }, text),
    collection.chunking ? h("section", { "aria-label": "Pieces" },
      h("h3", {}, `${pieces.length} pieces of at most ${collection.chunking.max_tokens} tokens (${collection.chunking.overlap_tokens} overlap), as stored and embedded`),
      h("ol", { class: "pieces", start: "0" }, pieces.map((piece) => h("li", { "data-piece": piece.index },
        h("span", { class: "muted" }, `from character ${number(piece.start)}: `), piece.text)))) : null,
    status));
  opened.querySelector("#opened-title").focus();
}
