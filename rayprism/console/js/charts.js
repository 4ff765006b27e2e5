// Small hand-written SVG charts, and the Prometheus text format parsed into numbers.
import { h, number, s } from "./dom.js";

/** Prometheus exposition text → [{name, labels, value}]. */
export function parseMetrics(text) {
  const samples = [];
  for (const line of text.split("\n")) {
    if (!line || line.startsWith("#")) continue;
    const match = line.match(/^([a-zA-Z_:][\w:]*)(?:\{(.*)\})?\s+(\S+)/);
    if (!match) continue;
    const labels = {};
    for (const [, key, value] of (match[2] || "").matchAll(/(\w+)="((?:[^"\\]|\\.)*)"/g)) labels[key] = value;
    samples.push({ name: match[1], labels, value: Number(match[3]) });
  }
  return samples;
}

/** The sum of ``name``'s samples whose labels include ``labels``. */
export function total(samples, name, labels = {}) {
  return samples.filter((sample) => sample.name === name
    && Object.entries(labels).every(([key, value]) => sample.labels[key] === value))
    .reduce((sum, sample) => sum + sample.value, 0);
}

const WIDTH = 240;
const HEIGHT = 60;

/** A sparkline of ``values`` (the newest last) with a title and the latest value. */
export function sparkline(title, values, unit = "") {
  const finite = values.filter((value) => Number.isFinite(value));
  const top = Math.max(1e-9, ...finite);
  const step = WIDTH / Math.max(1, values.length - 1);
  const points = values.map((value, index) => Number.isFinite(value)
    ? `${(index * step).toFixed(1)},${(HEIGHT - 4 - (value / top) * (HEIGHT - 8)).toFixed(1)}` : null).filter(Boolean);
  const latest = finite.length ? finite[finite.length - 1] : null;
  const label = `${title}: ${latest === null ? "no data yet" : number(latest, 2) + unit} (max ${number(top, 2)}${unit})`;
  return h("figure", { style: "margin:0" },
    h("div", { class: "chart-label" }, h("span", {}, title), h("span", {}, latest === null ? "—" : number(latest, 2) + unit)),
    s("svg", { class: "chart", viewBox: `0 0 ${WIDTH} ${HEIGHT}`, preserveAspectRatio: "none", role: "img", "aria-label": label },
      s("polyline", { points: points.join(" "), fill: "none", stroke: "#3a5bd9", "stroke-width": "1.5",
        "vector-effect": "non-scaling-stroke" })));
}
