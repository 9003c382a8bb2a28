// The exportd web page: sign in with a token, start an export, follow it live, download it.
//
// Rules this file keeps:
// - Text from the server is inserted with textContent (or as an option's text), never as HTML,
//   so a catalog title or an error message cannot become markup or script.
// - The token lives in sessionStorage (this tab only) and travels only in the Authorization
//   header of same-origin requests.
// - Progress comes from GET /v1/exports/{id}/events (server-sent events). EventSource cannot
//   send an Authorization header, and a token in the URL would end up in logs and history, so
//   the page reads the stream with fetch(): the same text/event-stream any client reads, parsed
//   here, reconnecting with Last-Event-ID after a dropped connection.
"use strict";

(() => {
  const TOKEN_KEY = "exportd.token";
  const EXPORTS = "/v1/exports";
  const TERMINAL = new Set(["Succeeded", "Failed", "Cancelled"]);
  const RECENT_LIMIT = 20;
  const SEED_TYPE = "userExport"; // the seed's export type: offered first
  const OPTIONAL_SECTIONS = ["outbox-section"]; // shown by their own loaders when they apply

  const state = {
    types: new Map(),
    fileNameEdited: false,
    follow: null, // AbortController of the stream being followed
    followedId: null,
    lastPhase: null,
  };

  const byId = (id) => document.getElementById(id);

  function element(tag, text, attributes = {}) {
    const node = document.createElement(tag);
    if (text !== undefined && text !== null) node.textContent = String(text);
    for (const [name, value] of Object.entries(attributes)) node.setAttribute(name, value);
    return node;
  }

  // -- talking to the API ------------------------------------------------------------------

  class ApiError extends Error {
    constructor(status, problem, headers) {
      super((problem && problem.detail) || `HTTP ${status}`);
      this.status = status;
      this.problem = problem || {};
      this.headers = headers || new Headers();
    }
  }

  function token() {
    return sessionStorage.getItem(TOKEN_KEY);
  }

  function authHeaders(extra = {}) {
    return { Authorization: `Bearer ${token()}`, ...extra };
  }

  async function api(method, path, body) {
    const headers = authHeaders({ Accept: "application/json, application/problem+json" });
    const init = { method, headers, cache: "no-store" };
    if (body !== undefined) {
      headers["Content-Type"] = "application/json";
      init.body = JSON.stringify(body);
    }
    let response;
    try {
      response = await fetch(path, init);
    } catch (error) {
      throw new ApiError(0, { detail: String(error) });
    }
    const payload = await readJson(response);
    if (!response.ok) throw new ApiError(response.status, payload, response.headers);
    return payload;
  }

  async function readJson(response) {
    const text = await response.text();
    if (!text) return null;
    try {
      return JSON.parse(text);
    } catch {
      return { detail: text.slice(0, 200) };
    }
  }

  function retryAfterSeconds(headers) {
    const value = headers.get("Retry-After");
    if (!value) return null;
    if (/^\d+$/.test(value.trim())) return Number(value.trim());
    const when = Date.parse(value);
    return Number.isNaN(when) ? null : Math.max(0, Math.ceil((when - Date.now()) / 1000));
  }

  // What an error means for the person in front of the page, in words.
  function describeError(error) {
    if (!(error instanceof ApiError)) return `Something went wrong: ${error}`;
    const detail = error.problem.detail ? ` (${error.problem.detail})` : "";
    const wait = retryAfterSeconds(error.headers);
    const waitText = wait === null ? "Try again later." : `Try again in ${plural(wait, "second")}.`;
    switch (error.status) {
      case 0:
        return "The server cannot be reached. Check the connection and try again.";
      case 401:
        return `Your token was not accepted${detail}. Sign in again with a valid token.`;
      case 402:
        return `Not enough credits to start an export${detail}. ${nextCredit(error)}`;
      case 403:
        return `This is not allowed${detail}.`;
      case 404:
        return `Not found${detail}.`;
      case 409:
        return `That cannot be done now${detail}.`;
      case 413:
        return "The request is too large.";
      case 422:
        return `Some values were not accepted${detail}. See the marked fields.`;
      case 429:
        return `Too many requests. ${waitText}`;
      case 503:
        return `The service is busy${detail}. ${waitText}`;
      default:
        return `The server answered ${error.status} ${error.problem.title || ""}${detail}.`;
    }
  }

  function nextCredit(error) {
    const at = error.problem.nextCreditAt;
    return at ? `Your next credit arrives ${formatTime(at)}.` : "Credits are added daily.";
  }

  function plural(count, word) {
    return `${count} ${word}${count === 1 ? "" : "s"}`;
  }

  // -- messages and field errors ---------------------------------------------------------

  function showMessage(id, text, kind = "error") {
    const box = byId(id);
    box.textContent = text || "";
    box.hidden = !text;
    box.dataset.kind = kind;
  }

  function setFieldError(control, errorId, message) {
    const box = byId(errorId);
    box.textContent = message;
    box.hidden = false;
    if (control) control.setAttribute("aria-invalid", "true");
  }

  function clearFieldErrors(form) {
    for (const box of form.querySelectorAll(".field-error")) {
      box.textContent = "";
      box.hidden = true;
    }
    for (const control of form.querySelectorAll("[aria-invalid]")) {
      control.removeAttribute("aria-invalid");
    }
  }

  // -- signing in ---------------------------------------------------------------------------

  function subjectOf(jwt) {
    try {
      const part = jwt.split(".")[1].replace(/-/g, "+").replace(/_/g, "/");
      const claims = JSON.parse(atob(part.padEnd(part.length + ((4 - (part.length % 4)) % 4), "=")));
      return typeof claims.sub === "string" ? claims.sub : "?";
    } catch {
      return "?";
    }
  }

  async function onSignIn(event) {
    event.preventDefault();
    const form = byId("sign-in-form");
    clearFieldErrors(form);
    const input = byId("token");
    const value = input.value.trim().replace(/^Bearer\s+/i, "");
    if (!value) {
      setFieldError(input, "token-error", "Paste a token first.");
      input.focus();
      return;
    }
    sessionStorage.setItem(TOKEN_KEY, value);
    input.value = "";
    await enter();
  }

  // Load what a signed-in user sees; a refused token sends them back to the sign-in form.
  async function enter() {
    try {
      await loadTypes();
    } catch (error) {
      signOut();
      setFieldError(byId("token"), "token-error", describeError(error));
      byId("token").focus();
      return;
    }
    byId("session-user").textContent = subjectOf(token());
    byId("session").hidden = false;
    byId("sign-in-section").hidden = true;
    byId("export-section").hidden = false;
    byId("recent-section").hidden = false;
    byId("export-type").focus(); // signed in: the form takes the focus
    const items = await refreshRecent();
    loadOutbox();
    // Back on the page while an export is still going: follow it again.
    if (!state.follow && items.length && !TERMINAL.has(items[0].phase)) followExport(items[0]);
  }

  function signOut() {
    sessionStorage.removeItem(TOKEN_KEY);
    stopFollowing();
    byId("session").hidden = true;
    byId("sign-in-section").hidden = false;
    for (const id of ["export-section", "progress-section", "recent-section", ...OPTIONAL_SECTIONS]) {
      byId(id).hidden = true;
    }
    byId("recent-body").replaceChildren();
  }

  // When a token expires mid-session: say so where the user will look, then offer sign-in.
  function handleUnauthorized(error) {
    if (!(error instanceof ApiError) || error.status !== 401) return false;
    const message = describeError(error);
    signOut();
    setFieldError(byId("token"), "token-error", message);
    return true;
  }

  // -- export types and the variables form ---------------------------------------------------

  async function loadTypes() {
    const payload = await api("GET", "/v1/export-types");
    const items = seedFirst(payload.items);
    state.types = new Map(items.map((item) => [item.name, item]));
    const select = byId("export-type");
    select.replaceChildren(
      ...items.map((item) => element("option", item.title || item.name, { value: item.name })),
    );
    onTypeChange();
  }

  function seedFirst(items) {
    const seed = items.filter((item) => item.name === SEED_TYPE);
    return [...seed, ...items.filter((item) => item.name !== SEED_TYPE)];
  }

  function currentType() {
    return state.types.get(byId("export-type").value);
  }

  function onTypeChange() {
    const type = currentType();
    byId("export-type-description").textContent = type ? type.description || "" : "";
    const box = byId("variable-fields");
    box.replaceChildren();
    if (!type) return;
    const entries = Object.entries(type.variables || {});
    if (entries.length === 0) box.append(element("p", "This export type has no variables.", { class: "hint" }));
    for (const [name, schema] of entries) box.append(variableField(name, schema));
    if (!state.fileNameEdited) byId("file-name").value = type.name;
    clearFieldErrors(byId("export-form"));
    showMessage("form-message", "");
  }

  function variableField(name, schema) {
    const id = `var-${name}`;
    const wrapper = element("div", null, { class: "field" });
    const label = element("label", name, { for: id });
    if (schema.required) label.append(element("span", " (required)", { class: "required" }));
    const control = schema.enum ? enumSelect(schema) : inputFor(schema);
    control.id = id;
    control.name = name;
    control.dataset.variable = name;
    control.setAttribute("aria-describedby", `${id}-hint ${id}-error`);
    if (schema.required) {
      control.required = true;
      control.setAttribute("aria-required", "true");
    }
    const hint = element("p", hintFor(schema), { class: "hint", id: `${id}-hint` });
    const error = element("p", null, { class: "field-error", id: `${id}-error` });
    error.hidden = true;
    wrapper.append(label, hint, control, error);
    return wrapper;
  }

  function enumSelect(schema) {
    const select = element("select");
    if (!schema.required) select.append(element("option", "(not set)", { value: "" }));
    schema.enum.forEach((value, index) => {
      select.append(element("option", value, { value: String(index) }));
    });
    if (schema.default !== undefined && schema.default !== null) {
      const index = schema.enum.indexOf(schema.default);
      if (index >= 0) select.value = String(index);
    }
    return select;
  }

  function inputFor(schema) {
    if (schema.type === "boolean") {
      const select = element("select");
      if (!schema.required) select.append(element("option", "(not set)", { value: "" }));
      select.append(element("option", "yes", { value: "true" }), element("option", "no", { value: "false" }));
      if (typeof schema.default === "boolean") select.value = String(schema.default);
      return select;
    }
    const input = element("input");
    const kinds = { integer: "number", number: "number", date: "date", datetime: "datetime-local" };
    input.type = kinds[schema.type] || "text";
    if (schema.type === "integer") {
      input.step = "1";
      input.inputMode = "numeric";
    }
    if (schema.type === "number") input.step = "any";
    if (schema.type === "datetime") input.step = "1";
    if (schema.min !== undefined && input.type === "number") input.min = String(schema.min);
    if (schema.max !== undefined && input.type === "number") input.max = String(schema.max);
    if (schema.type === "string" && schema.maxLength) input.maxLength = schema.maxLength;
    if (schema.default !== undefined && schema.default !== null) input.value = String(schema.default);
    if (Array.isArray(schema.examples) && schema.examples.length) {
      input.placeholder = `e.g. ${schema.examples[0]}`;
    }
    input.autocomplete = "off";
    return input;
  }

  function hintFor(schema) {
    const parts = [];
    if (schema.description) parts.push(schema.description);
    const kind = { integer: "a whole number", number: "a number", string: "text", boolean: "yes or no",
      date: "a date", datetime: "a date and time" }[schema.type] || schema.type;
    let rule = kind;
    if (schema.min !== undefined && schema.max !== undefined) rule += ` from ${schema.min} to ${schema.max}`;
    else if (schema.min !== undefined) rule += ` of at least ${schema.min}`;
    else if (schema.max !== undefined) rule += ` of at most ${schema.max}`;
    if (schema.pattern) rule += `, matching ${schema.pattern}`;
    parts.push(schema.enum ? "one of the listed values" : rule);
    if (Array.isArray(schema.examples) && schema.examples.length && !schema.enum) {
      parts.push(`for example ${schema.examples.map(String).join(" or ")}`);
    }
    if (!schema.required) parts.push("optional");
    return parts.join(" · ");
  }

  // -- client-side validation: the catalog's rules, checked before anything is sent ---------

  // {value} when valid (value undefined: leave the variable out), {error} otherwise.
  function readVariable(control, schema) {
    if (control.validity && control.validity.badInput) return { error: "Enter a valid value." };
    const raw = control.value;
    if (raw === "" || (schema.type !== "string" && raw.trim() === "")) {
      return schema.required ? { error: "This field is required." } : { value: undefined };
    }
    if (schema.enum) {
      const value = schema.enum[Number(raw)];
      return value === undefined ? { error: "Choose one of the listed values." } : { value };
    }
    switch (schema.type) {
      case "integer":
        if (!/^-?\d+$/.test(raw.trim()) || !Number.isSafeInteger(Number(raw))) {
          return { error: "Enter a whole number." };
        }
        return checkRange(Number(raw), schema);
      case "number":
        if (!Number.isFinite(Number(raw))) return { error: "Enter a number." };
        return checkRange(Number(raw), schema);
      case "boolean":
        return { value: raw === "true" };
      case "date":
        return /^\d{4}-\d{2}-\d{2}$/.test(raw) ? { value: raw } : { error: "Enter a date (YYYY-MM-DD)." };
      case "datetime":
        return /^\d{4}-\d{2}-\d{2}T\d{2}:\d{2}(:\d{2}(\.\d+)?)?$/.test(raw)
          ? { value: raw }
          : { error: "Enter a date and time." };
      default:
        return checkText(raw, schema);
    }
  }

  function checkRange(value, schema) {
    if (schema.min !== undefined && value < schema.min) return { error: `Must be at least ${schema.min}.` };
    if (schema.max !== undefined && value > schema.max) return { error: `Must be at most ${schema.max}.` };
    return { value };
  }

  function checkText(value, schema) {
    if (schema.maxLength && value.length > schema.maxLength) {
      return { error: `Must be at most ${plural(schema.maxLength, "character")}.` };
    }
    const pattern = compilePattern(schema.pattern);
    if (pattern && !pattern.test(value)) return { error: `Must match the pattern ${schema.pattern}.` };
    return { value };
  }

  // The catalog's patterns are the server's regular expressions; one this browser cannot
  // compile is left to the server, which checks every value again anyway.
  function compilePattern(source) {
    if (!source) return null;
    try {
      return new RegExp(source, "u");
    } catch {
      return null;
    }
  }

  function checkFileBase(value) {
    if (!value.trim()) return "Enter a file name.";
    if (/[/\\\u0000-\u001f\u007f]/.test(value)) return "No slashes or control characters, please.";
    if (value.startsWith(".")) return "The name must not start with a dot.";
    if (value !== value.trim()) return "No spaces at the start or end, please.";
    return null;
  }

  function selectedFormat() {
    return document.querySelector('input[name="format"]:checked').value;
  }

  // The request body, or the field errors that keep it from being sent.
  function readExportForm() {
    const type = currentType();
    const errors = [];
    if (!type) return { errors: [{ field: "type", message: "Choose an export type." }] };
    const variables = {};
    for (const [name, schema] of Object.entries(type.variables || {})) {
      const result = readVariable(byId(`var-${name}`), schema);
      if (result.error) errors.push({ field: `variables.${name}`, message: result.error });
      else if (result.value !== undefined) variables[name] = result.value;
    }
    const base = byId("file-name").value;
    const fileProblem = checkFileBase(base);
    if (fileProblem) errors.push({ field: "fileName", message: fileProblem });
    const format = selectedFormat();
    const body = { type: type.name, format, fileName: `${base}.${format}`, returnType: "url", variables };
    const delivery = readDelivery();
    if (delivery.error) errors.push({ field: "email", message: delivery.error });
    else Object.assign(body, delivery.fields);
    return { body, errors };
  }

  // A field name as the API reports it -> the control and its error box on this form.
  function fieldTarget(field) {
    if (field.startsWith("variables.")) {
      const id = `var-${field.slice("variables.".length)}`;
      return byId(id) ? [byId(id), `${id}-error`] : null;
    }
    const known = { fileName: ["file-name", "file-name-error"], type: ["export-type", "export-type-error"],
      format: [null, "format-error"], email: ["email", "email-error"], returnType: [null, "email-error"] };
    const target = known[field];
    return target ? [target[0] && byId(target[0]), target[1]] : null;
  }

  function showFieldErrors(errors) {
    const unplaced = [];
    let first = null;
    for (const { field, message } of errors) {
      const target = fieldTarget(field);
      if (!target) {
        unplaced.push(`${field}: ${message}`);
        continue;
      }
      setFieldError(target[0], target[1], message);
      first = first || target[0];
    }
    if (first) first.focus();
    return unplaced;
  }

  async function onExport(event) {
    event.preventDefault();
    const form = byId("export-form");
    clearFieldErrors(form);
    showMessage("form-message", "");
    const { body, errors } = readExportForm();
    if (errors.length) {
      showFieldErrors(errors);
      showMessage("form-message", "Please correct the marked fields; nothing was sent.");
      return;
    }
    const button = byId("export-button");
    button.disabled = true;
    try {
      const created = await api("POST", EXPORTS, body);
      showMessage("form-message", `Export ${created.id} accepted.`, "info");
      loadCredits();
      followExport(created);
      await refreshRecent();
    } catch (error) {
      if (handleUnauthorized(error)) return;
      const fieldErrors = (error.problem && error.problem.errors) || [];
      const unplaced = showFieldErrors(fieldErrors);
      const lines = [describeError(error), ...unplaced];
      showMessage("form-message", lines.join(" "));
    } finally {
      button.disabled = false;
    }
  }

  // -- following one export: the event stream ---------------------------------------------

  // Incremental text/event-stream parser (the WHATWG rules: fields, comments, blank-line dispatch).
  class EventStreamParser {
    constructor(onMessage) {
      this.onMessage = onMessage;
      this.buffer = "";
      this.reset();
    }

    reset() {
      this.event = "";
      this.data = [];
      this.id = undefined;
      this.retry = undefined;
    }

    push(text) {
      this.buffer += text;
      const lines = this.buffer.split(/\r\n|\r|\n/);
      this.buffer = lines.pop();
      for (const line of lines) this.line(line);
    }

    line(line) {
      if (line === "") return this.dispatch();
      if (line.startsWith(":")) return undefined;
      const colon = line.indexOf(":");
      const field = colon < 0 ? line : line.slice(0, colon);
      let value = colon < 0 ? "" : line.slice(colon + 1);
      if (value.startsWith(" ")) value = value.slice(1);
      if (field === "event") this.event = value;
      else if (field === "data") this.data.push(value);
      else if (field === "id" && !value.includes("\u0000")) this.id = value;
      else if (field === "retry" && /^\d+$/.test(value)) this.retry = Number(value);
      return undefined;
    }

    dispatch() {
      const message = { event: this.event || "message", data: this.data.join("\n"), id: this.id, retry: this.retry };
      const hasData = this.data.length > 0;
      this.reset();
      this.onMessage(message, hasData);
    }
  }

  function stopFollowing() {
    if (state.follow) state.follow.abort();
    state.follow = null;
  }

  function followExport(resource) {
    stopFollowing();
    const controller = new AbortController();
    state.follow = controller;
    state.followedId = resource.id;
    state.lastPhase = null;
    byId("progress-section").hidden = false;
    byId("progress-file").textContent = resource.fileName;
    const link = byId("download-link");
    link.hidden = true;
    link.removeAttribute("href");
    byId("progress-cancel").disabled = false;
    showProgress(resource);
    streamEvents(resource.id, controller.signal).catch((error) => {
      if (!controller.signal.aborted) byId("progress-text").textContent = describeError(error);
    });
  }

  async function streamEvents(exportId, signal) {
    const stream = { lastEventId: null, retryMs: 2000, finished: false };
    while (!stream.finished && !signal.aborted) {
      try {
        await readStream(exportId, signal, stream);
      } catch (error) {
        if (signal.aborted) return;
        if (error instanceof ApiError) throw error; // refused (401, 404): reconnecting cannot help
        byId("progress-text").textContent = "Connection lost; reconnecting…";
      }
      if (!stream.finished) await sleep(stream.retryMs, signal);
    }
  }

  async function readStream(exportId, signal, stream) {
    const headers = authHeaders({ Accept: "text/event-stream" });
    if (stream.lastEventId) headers["Last-Event-ID"] = stream.lastEventId;
    const response = await fetch(`${EXPORTS}/${encodeURIComponent(exportId)}/events`, {
      headers, signal, cache: "no-store",
    });
    if (!response.ok) {
      const error = new ApiError(response.status, await readJson(response), response.headers);
      if (handleUnauthorized(error)) return;
      throw error;
    }
    const parser = new EventStreamParser((message, hasData) => {
      if (message.id !== undefined) stream.lastEventId = message.id;
      if (message.retry !== undefined) stream.retryMs = message.retry;
      if (!hasData || message.event !== "status") return;
      const resource = JSON.parse(message.data);
      showProgress(resource);
      if (TERMINAL.has(resource.phase)) stream.finished = true;
    });
    const reader = response.body.pipeThrough(new TextDecoderStream()).getReader();
    for (;;) {
      const { value, done } = await reader.read();
      if (done) break;
      parser.push(value);
    }
  }

  function sleep(ms, signal) {
    return new Promise((resolve) => {
      const timer = setTimeout(resolve, ms);
      signal.addEventListener("abort", () => { clearTimeout(timer); resolve(); }, { once: true });
    });
  }

  function showProgress(resource) {
    const bar = byId("progress");
    const text = byId("progress-text");
    const percent = byId("progress-percent");
    const section = byId("progress-section");
    section.dataset.phase = resource.phase;
    if (typeof resource.percent === "number") {
      bar.value = resource.percent;
      percent.textContent = `${resource.percent}%`;
    } else if (resource.phase === "Running") {
      bar.removeAttribute("value"); // indeterminate: the total is not known until the end
      percent.textContent = "";
    } else {
      bar.value = 0; // Failed or Cancelled: nothing more is coming
      percent.textContent = "";
    }
    text.textContent = progressText(resource);
    byId("progress-cancel").hidden = TERMINAL.has(resource.phase);
    if (resource.phase === "Succeeded" && resource.url) showDownload(byId("download-link"), resource);
    if (resource.phase !== state.lastPhase) {
      state.lastPhase = resource.phase;
      refreshRecent();
    }
  }

  function progressText(resource) {
    const rows = resource.rows === undefined || resource.rows === null ? 0 : resource.rows;
    switch (resource.phase) {
      case "Pending":
        return "Accepted; starting soon.";
      case "Queued":
        return resource.queuePosition ? `Queued: number ${resource.queuePosition} in line.` : "Queued.";
      case "Running":
        return `Running: ${formatCount(rows)} ${rows === 1 ? "row" : "rows"} written so far.`;
      case "Succeeded":
        return `Done: ${formatCount(rows)} rows, ${formatBytes(resource.bytes)}. ${deliveryText(resource)}`;
      case "Failed": {
        const error = resource.error || {};
        return `Failed: ${error.message || "the export did not finish"}${error.reason ? ` (${error.reason})` : ""}.`;
      }
      case "Cancelled":
        return "Cancelled; no file was made.";
      default:
        return resource.phase;
    }
  }

  // Only http(s) links become hrefs: a link from the server is data, not a place to run code.
  function safeHref(url) {
    try {
      const parsed = new URL(url, window.location.href);
      return parsed.protocol === "http:" || parsed.protocol === "https:" ? parsed.href : null;
    } catch {
      return null;
    }
  }

  function showDownload(link, resource) {
    const href = safeHref(resource.url);
    if (!href) return;
    link.href = href;
    link.textContent = `Download ${resource.fileName}`;
    link.hidden = false;
  }

  // -- recent exports -----------------------------------------------------------------------

  function formatCount(value) {
    return typeof value === "number" ? value.toLocaleString("en") : "";
  }

  function formatBytes(value) {
    if (typeof value !== "number") return "";
    const units = ["B", "KB", "MB", "GB", "TB"];
    let size = value;
    let unit = 0;
    while (size >= 1024 && unit < units.length - 1) {
      size /= 1024;
      unit += 1;
    }
    return `${unit === 0 ? size : size.toFixed(1)} ${units[unit]}`;
  }

  function formatTime(iso) {
    if (!iso) return "";
    const when = new Date(iso);
    return Number.isNaN(when.getTime()) ? iso : when.toLocaleString();
  }

  // Redraws the table; returns the exports shown (none when the list could not be read).
  async function refreshRecent() {
    if (!token()) return [];
    try {
      const page = await api("GET", `${EXPORTS}?limit=${RECENT_LIMIT}`);
      byId("recent-body").replaceChildren(...page.items.map(recentRow));
      loadCredits();
      if (page.items.some((item) => item.returnType === "email")) loadOutbox();
      showMessage("recent-message", page.items.length ? "" : "No exports yet.", "info");
      return page.items;
    } catch (error) {
      if (!handleUnauthorized(error)) showMessage("recent-message", describeError(error));
      return [];
    }
  }

  function recentRow(item) {
    const row = element("tr", null, { "data-export-id": item.id });
    const cells = [
      [item.fileName],
      [item.type],
      [item.error ? `${item.phase}: ${item.error.message}` : item.phase],
      [formatCount(item.rows), "number"],
      [formatBytes(item.bytes), "number"],
      [formatTime(item.requestedAt)],
      [formatTime(item.completedAt)],
    ];
    for (const [text, cls] of cells) row.append(element("td", text, cls ? { class: cls } : {}));
    row.append(actionsCell(item));
    return row;
  }

  function actionsCell(item) {
    const cell = element("td");
    const box = element("div", null, { class: "actions" });
    cell.append(box);
    if (!TERMINAL.has(item.phase)) {
      const cancel = element("button", "Cancel", { type: "button", class: "secondary" });
      cancel.setAttribute("aria-label", `Cancel ${item.fileName}`);
      cancel.addEventListener("click", () => cancelExport(item, cancel));
      box.append(cancel);
    }
    if (item.phase === "Succeeded" && item.url) {
      const link = element("a");
      showDownload(link, item);
      link.textContent = "Download";
      link.setAttribute("aria-label", `Download ${item.fileName}`);
      box.append(link);
    }
    return cell;
  }

  async function cancelExport(item, button) {
    button.disabled = true;
    try {
      await api("DELETE", `${EXPORTS}/${encodeURIComponent(item.id)}`);
      showMessage("recent-message", `Cancelled ${item.fileName}.`, "info");
    } catch (error) {
      if (handleUnauthorized(error)) return;
      showMessage("recent-message", describeError(error));
    }
    await refreshRecent();
  }

  // -- delivery: a link on this page, or e-mail -------------------------------------------

  function selectedDelivery() {
    return document.querySelector('input[name="delivery"]:checked').value;
  }

  function onDeliveryChange() {
    const email = selectedDelivery() === "email";
    byId("email-field").hidden = !email;
    byId("email").required = email;
    if (email) byId("email").focus();
  }

  // {fields} to add to the request body, or {error} for the e-mail field.
  function readDelivery() {
    if (selectedDelivery() !== "email") return { fields: { returnType: "url" } };
    const address = byId("email").value.trim();
    if (!address) return { error: "Enter the e-mail address the file goes to." };
    if (!/^[^@\s]+@[^@\s]+\.[^@\s]+$/.test(address)) return { error: "Enter a valid e-mail address." };
    return { fields: { returnType: "email", email: address } };
  }

  function deliveryText(resource) {
    if (resource.returnType !== "email") return "The file is ready.";
    const delivered = (resource.conditions || []).find((c) => c.type === "Delivered");
    if (delivered && delivered.reason === "KeptInOutbox") {
      return "E-mail kept in the development outbox below (not sent).";
    }
    return "The file has been e-mailed.";
  }

  // -- cancelling the export being followed ----------------------------------------------

  async function cancelFollowed() {
    const button = byId("progress-cancel");
    if (!state.followedId) return;
    button.disabled = true;
    try {
      await api("DELETE", `${EXPORTS}/${encodeURIComponent(state.followedId)}`);
    } catch (error) {
      if (handleUnauthorized(error)) return;
      byId("progress-text").textContent = describeError(error);
      button.disabled = false;
    }
  }

  // -- credits: the balance and when the next one arrives ----------------------------------

  async function loadCredits() {
    const box = byId("credits");
    try {
      const credits = await api("GET", "/v1/credits");
      box.textContent = creditsText(credits);
    } catch (error) {
      if (!handleUnauthorized(error)) box.textContent = "";
    }
  }

  function creditsText(credits) {
    if (!credits.enabled) return "Exports cost no credits on this server.";
    const cost = plural(credits.costPerExport, "credit");
    const next = credits.nextCreditAt
      ? `Next credit ${formatTime(credits.nextCreditAt)}.`
      : `Full (at most ${credits.cap}); no credit is added until you use one.`;
    return `Credits: ${credits.balance} (an export costs ${cost}). ${next}`;
  }

  // -- the development outbox (embedded mode without an SMTP server) ----------------------

  async function loadOutbox() {
    try {
      const outbox = await api("GET", "/v1/outbox");
      byId("outbox-section").hidden = !outbox.enabled;
      byId("outbox-note").textContent = outbox.note;
      const list = byId("outbox-list");
      list.replaceChildren(...outbox.items.map(outboxItem));
      if (!outbox.items.length) list.append(element("li", "No messages yet."));
    } catch (error) {
      handleUnauthorized(error);
    }
  }

  function outboxItem(message) {
    const item = element("li", `To ${message.to}: "${message.subject}", ${formatTime(message.keptAt)} (${message.method}, ${formatBytes(message.bytes)}) `);
    const open = element("button", "Save message", { type: "button", class: "secondary" });
    open.setAttribute("aria-label", `Save the message to ${message.to} about ${message.subject}`);
    open.addEventListener("click", () => saveMessage(message));
    item.append(open);
    return item;
  }

  // The message needs the bearer header, so it is fetched and handed over as a file.
  async function saveMessage(message) {
    const response = await fetch(message.messageUrl, { headers: authHeaders(), cache: "no-store" });
    if (!response.ok) return;
    const url = URL.createObjectURL(await response.blob());
    const link = element("a", null, { href: url, download: `${message.exportId}.eml` });
    document.body.append(link);
    link.click();
    link.remove();
    setTimeout(() => URL.revokeObjectURL(url), 1000);
  }

  // -- wiring -------------------------------------------------------------------------------

  function onFormatChange() {
    byId("file-extension").textContent = `.${selectedFormat()}`;
  }

  function start() {
    byId("sign-in-form").addEventListener("submit", onSignIn);
    byId("sign-out").addEventListener("click", signOut);
    byId("export-form").addEventListener("submit", onExport);
    byId("export-type").addEventListener("change", onTypeChange);
    byId("file-name").addEventListener("input", () => { state.fileNameEdited = true; });
    for (const radio of document.querySelectorAll('input[name="format"]')) {
      radio.addEventListener("change", onFormatChange);
    }
    for (const radio of document.querySelectorAll('input[name="delivery"]')) {
      radio.addEventListener("change", onDeliveryChange);
    }
    byId("progress-cancel").addEventListener("click", cancelFollowed);
    byId("refresh").addEventListener("click", refreshRecent);
    if (token()) enter();
  }

  start();
})();
