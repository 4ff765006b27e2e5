// Map: a 2-D picture of a collection (GET /v1/collections/{name}/map: a sample's vectors projected by PCA on the
// service), coloured by a field; hovering a point shows its document; a query is placed with its hits.
import { api, enc } from "./api.js";
import { field, h, number, s, show } from "./dom.js";

const WIDTH = 800;
const HEIGHT = 500;
const PAD = 20;
const PALETTE = ["#3a5bd9", "#e8590c", "#2b8a3e", "#c2255c", "#7048e8", "#0b7285", "#a87900", "#5c940d", "#d6336c", "#495057"];
const OTHER = "#adb5bd";

function colours(points) {
  const counts = new Map();
  for (const point of points) counts.set(String(point.value), (counts.get(String(point.value)) || 0) + 1);
  const top = [...counts.entries()].sort((a, b) => b[1] - a[1]).slice(0, PALETTE.length);
  const chosen = new Map(top.map(([value], index) => [value, PALETTE[index]]));
  return { of: (value) => chosen.get(String(value)) || OTHER, legend: top, others: counts.size > top.length };
}

export async function render(main, context, args, params) {
  const collections = (await api("/v1/collections")).data;
  const name = params.get("collection") || collections[0]?.name || "";
  const current = collections.find((c) => c.name === name);
  const collection = h("select", { id: "map-collection", name: "collection" },
    collections.map((c) => h("option", { value: c.name, selected: c.name === name }, c.name)));
  const colorBy = h("select", { id: "map-color", name: "color_by" }, h("option", { value: "" }, "none"),
    Object.keys(current?.fields || {}).map((f) => h("option", { value: f, selected: f === params.get("color_by") }, f)));
  const sample = h("input", { id: "map-sample", type: "number", min: "1", max: "10000", value: params.get("sample") || "2000" });
  const query = h("input", { id: "map-query", type: "search", value: params.get("q") || "", placeholder: "place a query" });
  collection.addEventListener("change", () => context.go("map", [], { collection: collection.value }));
  const form = h("form", { class: "panel settings" }, field("Collection", collection), field("Colour by", colorBy),
    field("Sample", sample), h("label", { class: "wide" }, "Query", query), h("button", { type: "submit", id: "draw-map" }, "Draw"));
  form.addEventListener("submit", (event) => {
    event.preventDefault();
    context.go("map", [], { collection: collection.value, color_by: colorBy.value, sample: sample.value, q: query.value.trim() });
  });
  const picture = h("div", { "aria-live": "polite" });
  show(main, h("h1", {}, "Map"), form, picture);
  if (!name) return show(picture, h("p", { class: "muted" }, "No collections this key may read."));
  show(picture, h("p", { class: "muted" }, "Projecting…"));
  const search = new URLSearchParams({ sample: sample.value || "2000" });
  if (colorBy.value) search.set("color_by", colorBy.value);
  if (query.value.trim()) search.set("query", query.value.trim());
  const map = await api(`/v1/collections/${enc(name)}/map?${search}`);
  draw(picture, map, current);
}

function draw(picture, map, collection) {
  const placed = [...map.points, ...(map.query ? [map.query, ...map.query.hits] : [])];
  if (!map.points.length) return show(picture, h("p", { class: "muted" }, "This collection has no documents yet."));
  const xs = placed.map((p) => p.x);
  const ys = placed.map((p) => p.y);
  const [x0, x1, y0, y1] = [Math.min(...xs), Math.max(...xs), Math.min(...ys), Math.max(...ys)];
  const sx = (x) => PAD + ((x - x0) / (x1 - x0 || 1)) * (WIDTH - 2 * PAD);
  const sy = (y) => HEIGHT - PAD - ((y - y0) / (y1 - y0 || 1)) * (HEIGHT - 2 * PAD);
  const palette = colours(map.color_by ? map.points : []);
  const detail = h("div", { class: "panel", id: "map-detail", "aria-live": "polite" },
    h("p", { class: "muted" }, "Hover a point to see its document."));
  const showPoint = (point) => show(detail, h("h2", {}, String(point.id)),
    map.color_by ? h("p", {}, h("span", { class: "pill" }, `${map.color_by}: ${point.value}`)) : null,
    h("p", {}, point.text || ""),
    h("a", { href: `#/collections/${enc(map.collection)}` }, `Browse ${map.collection}`));
  const byId = new Map(map.points.map((point) => [String(point.id), point]));
  const radius = map.points.length > 3000 ? 2 : 3.5;
  const dots = map.points.map((point) => s("circle", {
    class: "point", cx: sx(point.x).toFixed(1), cy: sy(point.y).toFixed(1), r: radius,
    fill: map.color_by ? palette.of(point.value) : PALETTE[0], "data-id": String(point.id),
    onmouseenter: () => showPoint(point) }, s("title", {}, `${point.id}${map.color_by ? ` (${point.value})` : ""}`)));
  const overlay = [];
  if (map.query) {
    for (const hit of map.query.hits) {
      overlay.push(s("circle", { class: "hit", cx: sx(hit.x).toFixed(1), cy: sy(hit.y).toFixed(1), r: 7, "data-hit": String(hit.id) },
        s("title", {}, `#${hit.rank} ${hit.id} (${number(hit.score, 4)})`)),
      s("text", { x: (sx(hit.x) + 8).toFixed(1), y: (sy(hit.y) - 6).toFixed(1), "font-size": "11", fill: "#d4380d" }, String(hit.rank)));
    }
    const qx = sx(map.query.x);
    const qy = sy(map.query.y);
    overlay.push(s("path", { d: `M${qx - 8},${qy} L${qx},${qy - 8} L${qx + 8},${qy} L${qx},${qy + 8} Z`, fill: "#000", id: "map-query-point" },
      s("title", {}, `query: ${map.query.text}`)));
  }
  const svg = s("svg", { class: "map", viewBox: `0 0 ${WIDTH} ${HEIGHT}`, role: "img",
    "aria-label": `${map.points.length} of ${map.count} documents of ${map.collection} projected on their first two principal components` },
  dots, overlay);
  const hits = map.query ? h("section", { class: "panel" }, h("h2", {}, `Hits of “${map.query.text}”`),
    h("ol", { id: "map-hits" }, map.query.hits.map((hit) => h("li", {}, h("button", { type: "button", class: "secondary",
      onclick: () => showPoint(byId.get(String(hit.id)) || { id: hit.id, text: "(outside the sample)", value: "" }) },
    `${hit.id} · ${number(hit.score, 3)}`))))) : null;
  const legend = map.color_by ? h("ul", { class: "legend", "aria-label": `Colours by ${map.color_by}` },
    palette.legend.map(([value, count]) => h("li", {}, h("span", { class: "swatch", style: `background:${palette.of(value)}` }),
      `${value} (${count})`)), palette.others ? h("li", {}, h("span", { class: "swatch", style: `background:${OTHER}` }), "other") : null) : null;
  show(picture, h("p", { class: "muted" },
    `${number(map.points.length)} of ${number(map.count)} documents · PCA explains ${(100 * map.explained_variance[0]).toFixed(1)}% (x) and ` +
    `${(100 * map.explained_variance[1]).toFixed(1)}% (y) of the sample's variance${collection?.chunking ? " · a chunked document is the mean of its pieces" : ""}`),
  h("div", { class: "map-wrap" }, svg, h("div", {}, legend, detail, hits)));
}
