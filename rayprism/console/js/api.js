// Calls to the service that serves this page: relative URLs (../v1/…), the API key from sessionStorage.

const KEY_STORAGE = "rayprism.apiKey";

export const apiKey = {
  get: () => sessionStorage.getItem(KEY_STORAGE),
  set: (key) => sessionStorage.setItem(KEY_STORAGE, key),
  forget: () => sessionStorage.removeItem(KEY_STORAGE),
};

/** The service's address as the browser reached it (for the curl and Python snippets). */
export const serviceUrl = new URL("..", window.location.href).href.replace(/\/$/, "");

export class ApiError extends Error {
  constructor(status, error) {
    super(error?.message || `HTTP ${status}`);
    this.status = status;
    this.param = error?.param ?? null;
    this.code = error?.code ?? null;
  }
}

/** ``api("/v1/models")`` → the parsed JSON (or text); a non-2xx answer throws an ApiError with the service's message. */
export async function api(path, { method = "GET", body, signal } = {}) {
  const headers = {};
  const key = apiKey.get();
  if (key) headers.Authorization = `Bearer ${key}`;
  if (body !== undefined) headers["Content-Type"] = "application/json";
  const response = await fetch(serviceUrl + path, {
    method, headers, signal, body: body === undefined ? undefined : JSON.stringify(body),
  });
  const text = await response.text();
  const isJson = (response.headers.get("content-type") || "").includes("json");
  const answer = isJson && text ? JSON.parse(text) : text;
  if (!response.ok) throw new ApiError(response.status, isJson ? answer.error : { message: text || response.statusText });
  return answer;
}

export const enc = encodeURIComponent;
