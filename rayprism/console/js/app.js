// The console's shell: the key prompt, the navigation, and one page at a time (#/page/arg?query).
import { api, apiKey, ApiError } from "./api.js";
import { h, show } from "./dom.js";
import * as collections from "./collections.js";
import * as search from "./search.js";
import * as models from "./models.js";
import * as jobs from "./jobs.js";
import * as map from "./map.js";

const PAGES = { collections, search, models, jobs, map };
const main = document.getElementById("main");
const nav = document.getElementById("nav");
const who = document.getElementById("who");
let leave = null; // the shown page's clean-up (stops its polling)

function route() {
  const [path, query = ""] = window.location.hash.replace(/^#\/?/, "").split("?");
  const [page = "collections", ...rest] = path.split("/").map(decodeURIComponent);
  return { page: PAGES[page] ? page : "collections", args: rest.filter(Boolean), params: new URLSearchParams(query) };
}

/** Go to ``#/page/args?params`` (a link the user can keep). */
export function go(page, args = [], params = {}) {
  const query = new URLSearchParams(Object.entries(params).filter(([, value]) => value !== "" && value != null));
  const hash = `#/${[page, ...args].map(encodeURIComponent).join("/")}${query.size ? "?" + query : ""}`;
  if (window.location.hash === hash) render(); else window.location.hash = hash;
}

let context = null;
let generation = 0; // a render that a later one overtook (a fast second click) leaves the page alone

async function render() {
  if (leave) { leave(); leave = null; }
  const mine = ++generation;
  const { page, args, params } = route();
  for (const link of nav.querySelectorAll("a")) {
    link.toggleAttribute("aria-current", link.getAttribute("href") === `#/${page}`);
    if (link.hasAttribute("aria-current")) link.setAttribute("aria-current", "page");
  }
  show(main, h("p", { class: "muted" }, "Loading…"));
  const view = h("div");
  try {
    const cleanup = (await PAGES[page].render(view, context, args, params)) || null;
    if (mine !== generation) {
      if (cleanup) cleanup();
      return;
    }
    leave = cleanup;
    show(main, view);
  } catch (error) {
    if (mine !== generation) return;
    if (error instanceof ApiError && error.status === 401) return start();
    show(main, h("h1", {}, "Something went wrong"), h("p", { class: "error", role: "alert" }, error.message));
  }
  document.title = `${page[0].toUpperCase()}${page.slice(1)} · rayprism console`;
}

function keyPrompt(message) {
  generation++;
  context = null;
  nav.hidden = true;
  show(who);
  const input = h("input", { type: "password", id: "api-key", name: "api-key", autocomplete: "off", required: true,
    "aria-describedby": "key-help" });
  const form = h("form", { class: "panel keybox", "aria-labelledby": "key-title" },
    h("h1", { id: "key-title" }, "API key"),
    h("p", { id: "key-help", class: "muted" },
      "This service needs an API key. It is kept in this browser tab only (sessionStorage) and sent as ",
      h("code", {}, "Authorization: Bearer"), "."),
    h("label", { for: "api-key" }, "Key", input),
    message ? h("p", { class: "error", role: "alert" }, message) : null,
    h("p", {}, h("button", { type: "submit" }, "Use this key")));
  form.addEventListener("submit", (event) => {
    event.preventDefault();
    apiKey.set(input.value.trim());
    start();
  });
  show(main, form);
  input.focus();
}

async function start() {
  if (leave) { leave(); leave = null; }
  generation++;
  let me;
  try {
    me = await api("/v1/keys/me");
  } catch (error) {
    if (error instanceof ApiError && error.status === 401) {
      const tried = apiKey.get();
      apiKey.forget();
      return keyPrompt(tried ? "That key was refused: " + error.message : null);
    }
    show(main, h("h1", {}, "The service did not answer"), h("p", { class: "error", role: "alert" }, error.message));
    return;
  }
  context = { me, go };
  nav.hidden = false;
  const forget = h("button", { type: "button", class: "secondary", onclick: () => { apiKey.forget(); start(); } },
    "Forget key");
  show(who, me.keys_required ? [h("span", {}, `key: ${me.name} (${me.scopes.join(", ")})`), forget]
    : h("span", { class: "muted" }, "no API keys on this service"));
  render();
}

window.addEventListener("hashchange", () => context && render());
start();
