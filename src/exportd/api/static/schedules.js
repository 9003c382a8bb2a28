// The schedules section of the exportd page: create, pause, resume, run now and delete the
// signed-in user's schedules (/v1/schedules) and see their last runs.
//
// Kept apart from app.js: it follows the page's sign-in by watching the session bar (shown
// while a token is held, hidden after sign-out) and reads the same token from sessionStorage.
// Server text is inserted with textContent only (the Content-Security-Policy forbids inline
// script, and no server string ever becomes markup).
(() => {
  "use strict";

  const TOKEN_KEY = "exportd.token";
  const byId = (id) => document.getElementById(id);

  function element(tag, text, attributes = {}) {
    const node = document.createElement(tag);
    if (text !== undefined && text !== null) node.textContent = String(text);
    for (const [name, value] of Object.entries(attributes)) node.setAttribute(name, value);
    return node;
  }

  async function call(method, path, body) {
    const headers = {
      Authorization: `Bearer ${sessionStorage.getItem(TOKEN_KEY) || ""}`,
      Accept: "application/json, application/problem+json",
    };
    const init = { method, headers, cache: "no-store" };
    if (body !== undefined) {
      headers["Content-Type"] = "application/json";
      init.body = JSON.stringify(body);
    }
    const response = await fetch(path, init);
    const text = await response.text();
    const payload = text ? JSON.parse(text) : null;
    if (!response.ok) {
      const error = new Error((payload && payload.detail) || `HTTP ${response.status}`);
      error.problem = payload || {};
      throw error;
    }
    return payload;
  }

  function say(text, kind = "error") {
    const box = byId("schedule-message");
    box.textContent = text;
    box.dataset.kind = kind;
    box.hidden = !text;
  }

  function when(value) {
    return value ? new Date(value).toLocaleString() : "–";
  }

  function describeRun(run) {
    const what = run.phase ? `${run.outcome}, ${run.phase}` : run.outcome;
    const why = run.reason ? ` (${run.reason})` : "";
    return `${when(run.slot)}: ${what}${why}`;
  }

  function actionButton(label, onClick) {
    const button = element("button", label, { type: "button", class: "secondary" });
    button.addEventListener("click", async () => {
      button.disabled = true;
      try {
        await onClick();
        await load();
      } catch (error) {
        say(`${label} failed: ${error.message}`);
      } finally {
        button.disabled = false;
      }
    });
    return button;
  }

  function row(schedule) {
    const tr = element("tr");
    tr.append(element("td", schedule.title || schedule.template.fileName));
    tr.append(element("td", `${schedule.schedule} (${schedule.timeZone})`));
    tr.append(element("td", schedule.suspend ? "paused" : when(schedule.nextScheduleTime)));
    const runs = element("td");
    const list = element("ul", undefined, { class: "runs" });
    for (const run of (schedule.runs || []).slice(0, 5)) list.append(element("li", describeRun(run)));
    if (!list.children.length) list.append(element("li", "no runs yet"));
    runs.append(list);
    tr.append(runs);
    const actions = element("td");
    const base = `/v1/schedules/${encodeURIComponent(schedule.id)}`;
    actions.append(
      schedule.suspend
        ? actionButton("Resume", () => call("POST", `${base}/resume`))
        : actionButton("Pause", () => call("POST", `${base}/pause`)),
      actionButton("Run now", () => call("POST", `${base}/run`)),
      actionButton("Delete", () => call("DELETE", base)),
    );
    tr.append(actions);
    return tr;
  }

  async function load() {
    const body = byId("schedule-body");
    try {
      const listed = await call("GET", "/v1/schedules");
      body.replaceChildren(...listed.items.map(row));
      if (!listed.items.length) {
        const empty = element("td", "No schedules yet.", { colspan: "5" });
        body.replaceChildren(element("tr"));
        body.firstChild.append(empty);
      }
    } catch (error) {
      say(`Loading schedules failed: ${error.message}`);
    }
  }

  async function loadTypes() {
    const select = byId("schedule-type");
    const types = await call("GET", "/v1/export-types");
    select.replaceChildren(
      ...types.items.map((t) => element("option", t.title || t.name, { value: t.name })),
    );
  }

  function readForm() {
    const variablesText = byId("schedule-variables").value.trim();
    let variables = {};
    if (variablesText) {
      try {
        variables = JSON.parse(variablesText);
      } catch {
        throw new Error("Values must be a JSON object, e.g. {\"a\": \"muscle1\"}.");
      }
    }
    return {
      title: byId("schedule-title").value.trim() || undefined,
      schedule: byId("schedule-cron").value.trim(),
      timeZone: byId("schedule-zone").value.trim() || "UTC",
      concurrencyPolicy: byId("schedule-policy").value,
      template: {
        type: byId("schedule-type").value,
        fileName: byId("schedule-file").value.trim(),
        variables,
      },
    };
  }

  async function onCreate(event) {
    event.preventDefault();
    say("");
    try {
      await call("POST", "/v1/schedules", readForm());
      say("Schedule created.", "info");
      event.target.reset();
      byId("schedule-zone").value = localZone();
      await load();
    } catch (error) {
      const fields = (error.problem.errors || []).map((e) => `${e.field}: ${e.message}`);
      say([error.message, ...fields].join(" — "));
    }
  }

  function localZone() {
    return Intl.DateTimeFormat().resolvedOptions().timeZone || "UTC";
  }

  function follow() {
    const section = byId("schedules-section");
    const signedIn = !byId("session").hidden && Boolean(sessionStorage.getItem(TOKEN_KEY));
    if (signedIn === !section.hidden) return;
    section.hidden = !signedIn;
    if (signedIn) {
      loadTypes().catch((error) => say(`Loading export types failed: ${error.message}`));
      load();
    }
  }

  document.addEventListener("DOMContentLoaded", () => {
    byId("schedule-zone").value = localZone();
    byId("schedule-form").addEventListener("submit", onCreate);
    byId("schedule-refresh").addEventListener("click", load);
    new MutationObserver(follow).observe(byId("session"), { attributes: true });
    follow();
  });
})();
