// What the key may do, from GET /v1/keys/me: the console shows only the buttons the key may use.
// Scopes (docs/api.md, "API keys and scopes"): embed, admin, read:GLOB, write:GLOB (fnmatch globs).

function globRegExp(glob) {
  let pattern = "";
  for (let i = 0; i < glob.length; i++) {
    const c = glob[i];
    if (c === "*") pattern += ".*";
    else if (c === "?") pattern += ".";
    else if (c === "[" && glob.indexOf("]", i + 2) > i) {
      const end = glob.indexOf("]", i + 2);
      let set = glob.slice(i + 1, end);
      if (set.startsWith("!")) set = "^" + set.slice(1);
      pattern += `[${set.replace(/\\/g, "\\\\")}]`;
      i = end;
    } else pattern += c.replace(/[.*+?^${}()|[\]\\]/g, "\\$&");
  }
  return new RegExp(`^${pattern}$`, "s");
}

/** Whether the key described by ``me`` may do ``action`` (embed, admin, read, write) on collection ``name``. */
export function may(me, action, name = null) {
  const scopes = me?.scopes || [];
  if (scopes.includes("admin")) return true;
  if (action === "embed" || action === "admin") return scopes.includes(action);
  const globs = scopes.filter((scope) => scope.startsWith(action + ":")).map((scope) => scope.slice(action.length + 1));
  return name === null ? globs.length > 0 : globs.some((glob) => globRegExp(glob).test(name));
}
