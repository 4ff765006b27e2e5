// A few DOM helpers: the console builds its pages with h(), no framework and no build step.

/** h("button", {class: "x", onclick: fn}, "text", child, [more]) → an element. Null/false children are skipped. */
export function h(tag, props = {}, ...children) {
  const element = document.createElement(tag);
  for (const [name, value] of Object.entries(props || {})) {
    if (value === null || value === undefined || value === false) continue;
    if (name.startsWith("on")) element.addEventListener(name.slice(2), value);
    else if (name === "class") element.className = value;
    else if (name === "value") element.value = value;
    else if (name === "checked") element.checked = Boolean(value);
    else element.setAttribute(name, value === true ? "" : value);
  }
  append(element, children);
  return element;
}

function append(element, children) {
  for (const child of children.flat(Infinity)) {
    if (child === null || child === undefined || child === false) continue;
    element.append(child instanceof Node ? child : document.createTextNode(String(child)));
  }
}

/** Replace what ``element`` holds with ``children``. */
export function show(element, ...children) {
  element.replaceChildren();
  append(element, children);
  return element;
}

const SVG = "http://www.w3.org/2000/svg";
/** An SVG element (charts, the map): attributes only. */
export function s(tag, attributes = {}, ...children) {
  const element = document.createElementNS(SVG, tag);
  for (const [name, value] of Object.entries(attributes)) {
    if (value === null || value === undefined) continue;
    if (name.startsWith("on")) element.addEventListener(name.slice(2), value);
    else element.setAttribute(name, value);
  }
  for (const child of children.flat(Infinity)) {
    if (child) element.append(child instanceof Node ? child : document.createTextNode(String(child)));
  }
  return element;
}

export function number(value, digits = 3) {
  if (value === null || value === undefined || Number.isNaN(value)) return "—";
  return Number.isInteger(value) ? value.toLocaleString("en") : Number(value).toFixed(digits);
}

/** Text with each word of ``query`` (3 letters or more) marked. */
export function highlighted(text, query) {
  const words = [...new Set((query || "").toLowerCase().match(/[\p{L}\p{N}]{3,}/gu) || [])];
  if (!words.length) return [text];
  const pattern = new RegExp(`(${words.map((word) => word.replace(/[.*+?^${}()|[\]\\]/g, "\\$&")).join("|")})`, "giu");
  return String(text).split(pattern).map((part, index) => (index % 2 ? h("mark", {}, part) : part));
}

/** A button that copies ``text()`` to the clipboard and says so. */
export function copyButton(label, text) {
  const button = h("button", { type: "button", class: "secondary" }, label);
  button.addEventListener("click", async () => {
    try {
      await navigator.clipboard.writeText(text());
      button.textContent = "Copied";
    } catch {
      button.textContent = "Select and copy (clipboard unavailable)";
    }
    setTimeout(() => (button.textContent = label), 1500);
  });
  return button;
}

/** A labelled form control: <label>text <control></label>. */
export function field(text, control, props = {}) {
  return h("label", props, text, control);
}
