"""The page's script: plain JavaScript, no library, nothing fetched but this server's /api.

Data comes from one of two places behind the same `api` object: the live server's /api, or a
JSON blob embedded in the page (`--static`), so both modes run the same rendering code. The
page's state (filters, open episode) lives in the URL fragment (`#step=3&episode=12`), which
makes every view a link and lets a headless browser open an episode by URL. Model text is only
ever inserted with textContent, never as HTML.
"""
from __future__ import annotations

SCRIPT = r"""
"use strict";
const EMBEDDED = document.getElementById("view-data");
const STATIC = EMBEDDED ? JSON.parse(EMBEDDED.textContent) : null;
const FILTER_KEYS = ["task", "step", "min_reward", "max_reward", "finish_reason"];

function el(tag, attrs, ...children) {
  const node = document.createElement(tag);
  for (const [k, v] of Object.entries(attrs || {})) {
    if (v === null || v === undefined || v === false) continue;
    if (k === "text") node.textContent = v;
    else if (k === "onclick") node.addEventListener("click", v);
    else node.setAttribute(k, v === true ? "" : String(v));
  }
  for (const c of children) if (c !== null && c !== undefined) node.append(c);
  return node;
}

async function getJSON(path) {
  const resp = await fetch(path);
  const body = await resp.json().catch(() => ({}));
  if (!resp.ok) throw new Error(body.error || `${path}: HTTP ${resp.status}`);
  return body;
}

function blobHref(text, type) {
  return URL.createObjectURL(new Blob([text], {type}));
}

function matches(ep, f) {
  if (f.task && !ep.task.toLowerCase().includes(f.task.toLowerCase())) return false;
  if (f.step !== "" && f.step !== undefined && ep.step !== Number(f.step)) return false;
  if (f.min_reward !== "" && f.min_reward !== undefined && ep.reward < Number(f.min_reward)) return false;
  if (f.max_reward !== "" && f.max_reward !== undefined && ep.reward > Number(f.max_reward)) return false;
  if (f.finish_reason && ep.finish_reason !== f.finish_reason) return false;
  return true;
}

const api = {
  run: () => STATIC ? Promise.resolve(STATIC.run) : getJSON("api/run"),
  episodes(f) {
    if (STATIC) return Promise.resolve(STATIC.episodes.filter(e => matches(e, f)));
    const q = new URLSearchParams();
    for (const k of FILTER_KEYS) if (f[k] !== undefined && f[k] !== "") q.set(k, f[k]);
    return getJSON("api/episodes?" + q).then(body => body.episodes);
  },
  episode(id) {
    if (!STATIC) return getJSON(`api/episode/${id}`);
    const d = STATIC.details[String(id)];
    return d ? Promise.resolve(d) : Promise.reject(new Error(`no episode ${id} in this page`));
  },
  gradeHref: (id, d) => STATIC ? blobHref(JSON.stringify(d.grade, null, 2), "application/json")
                               : `api/episode/${id}/grade`,
  patchHref: (id, d) => STATIC ? blobHref(d.patch, "text/plain") : `api/episode/${id}/patch`,
};

function readHash() {
  const q = new URLSearchParams(location.hash.replace(/^#/, ""));
  const state = {};
  for (const k of [...FILTER_KEYS, "episode"]) state[k] = q.get(k) || "";
  return state;
}

function writeHash(state) {
  const q = new URLSearchParams();
  for (const [k, v] of Object.entries(state)) if (v !== "" && v !== undefined) q.set(k, v);
  const hash = "#" + q.toString();
  if (hash !== location.hash) location.hash = hash;
}

function fmt(x, digits = 3) {
  return (x === null || x === undefined) ? "–" : Number(x).toFixed(digits);
}

function setStatus(text, isError) {
  const s = document.getElementById("status");
  s.textContent = text;
  s.className = isError ? "error" : "";
}

// ------------------------------------------------------------------ header and filters
function renderRun(run) {
  document.getElementById("run-root").textContent = run.root;
  const info = document.getElementById("run-info");
  info.replaceChildren(`${run.episodes} episodes in ${run.files.length} file(s)`,
                       run.tokenizer ? ` · tokenizer ${run.tokenizer}` : " · no tokenizer");
  const warn = document.getElementById("skipped");
  warn.replaceChildren();
  if (run.skipped_total) {
    warn.append(`${run.skipped_total} malformed line(s) skipped: `,
                Object.entries(run.skipped).map(([f, n]) => `${f} (${n})`).join(", "));
    warn.hidden = false;
  }
  const step = document.getElementById("f-step");
  step.replaceChildren(el("option", {value: "", text: "any"}),
                       ...run.facets.steps.map(s => el("option", {value: s, text: s})));
  const finish = document.getElementById("f-finish_reason");
  finish.replaceChildren(el("option", {value: "", text: "any"}),
                         ...run.facets.finish_reasons.map(r => el("option", {value: r, text: r || "(none)"})));
  document.getElementById("task-list").replaceChildren(...run.facets.tasks.map(t => el("option", {value: t})));
}

function formFilters() {
  const f = {};
  for (const k of FILTER_KEYS) f[k] = document.getElementById("f-" + k).value.trim();
  return f;
}

function fillForm(state) {
  for (const k of FILTER_KEYS) document.getElementById("f-" + k).value = state[k];
}

// ------------------------------------------------------------------ the list
let listKey = null;

async function renderList(state) {
  const f = {};
  for (const k of FILTER_KEYS) f[k] = state[k];
  const key = JSON.stringify(f);
  if (key === listKey) return markSelected(state.episode);
  const episodes = await api.episodes(f);
  listKey = key;
  const body = document.getElementById("episode-rows");
  body.replaceChildren(...episodes.map(ep => el("tr", {
      class: "episode" + (ep.error ? " failed" : "") + (ep.resolved ? " resolved" : ""),
      "data-id": ep.id,
      onclick: () => writeHash({...readHash(), episode: ep.id}),
    },
    el("td", {text: ep.id}), el("td", {text: ep.step === null ? "–" : ep.step}),
    el("td", {class: "task", text: ep.task, title: `${ep.source}:${ep.line}`}),
    el("td", {class: "num", text: fmt(ep.reward, 2)}), el("td", {text: ep.finish_reason}),
    el("td", {class: "num", text: ep.num_turns}),
    el("td", {class: "num", text: `${ep.sampled_tokens}/${ep.total_tokens}`}))));
  document.getElementById("list-count").textContent = `${episodes.length} shown`;
  markSelected(state.episode);
}

function markSelected(id) {
  for (const row of document.querySelectorAll("tr.episode"))
    row.classList.toggle("selected", row.dataset.id === String(id));
}

// ------------------------------------------------------------------ one episode
function section(title, ...children) {
  return el("section", {}, el("h3", {text: title}), ...children);
}

function keyValues(obj) {
  const dl = el("dl", {class: "kv"});
  for (const [k, v] of Object.entries(obj)) {
    dl.append(el("dt", {text: k}), el("dd", {text: typeof v === "object" ? JSON.stringify(v) : String(v)}));
  }
  return dl;
}

function turnTimings(t) {
  // The turn's seconds: its engine call, the env step that ran its action, and the whole turn.
  // Absent in files written before they were kept.
  if (!t) return null;
  return el("span", {class: "timings",
    text: ` · ${fmt(t.total_s, 2)} s (generation ${fmt(t.generation_s, 2)} s, env ${fmt(t.env_s, 2)} s)`});
}

function renderTurn(turn) {
  const figures = turn.sampled_tokens === undefined ? "" :
    ` · ${turn.sampled_tokens} tokens · mean logprob ${fmt(turn.mean_logprob)} · min ${fmt(turn.min_logprob)}`;
  const head = el("h4", {}, `Turn ${turn.n} `, el("span", {class: "kind " + turn.action_kind, text: turn.action_kind}),
                  figures, turnTimings(turn.timings));
  if (turn.token_start !== undefined)
    head.append(" ", el("a", {href: "#", class: "to-tokens", text: "tokens ↓", onclick: (e) => {
      e.preventDefault();
      const t = document.getElementById("tok-" + turn.token_start);
      if (t) { t.scrollIntoView({block: "center"}); t.classList.add("flash"); setTimeout(() => t.classList.remove("flash"), 1500); }
    }}));
  return el("article", {class: "turn", "data-turn": turn.n}, head,
    turn.thought ? el("div", {class: "thought"}, el("div", {class: "label", text: "thought"}), el("pre", {text: turn.thought})) : null,
    el("div", {class: "action"}, el("div", {class: "label", text: "action"}), el("pre", {text: turn.action || "(no action)"})),
    ...turn.observations.map(o => el("div", {class: "observation"},
      el("div", {class: "label", text: `observation (${o.role})`}), el("pre", {text: o.content}))));
}

function lpColour(lp) {
  const p = Math.exp(Math.min(0, lp));
  return `hsl(${Math.round(120 * p)}, 75%, 78%)`;
}

function renderTokens(tokens, note) {
  const strip = el("div", {id: "tokens", class: "strip by-mask"});
  const kinds = {"-1": "prompt", "0": "env", "1": "sampled"};
  const frag = document.createDocumentFragment();
  for (let i = 0; i < tokens.ids.length; i++) {
    const m = tokens.mask[i], lp = tokens.logprob[i];
    const text = tokens.text ? tokens.text[i] : `⟨${tokens.ids[i]}⟩`;
    const span = el("span", {id: "tok-" + i, class: "tok " + kinds[String(m)], "data-lp": m === 1 ? lp : null,
                             title: `#${i} id ${tokens.ids[i]} · ${kinds[String(m)]}` + (m === 1 ? ` · logprob ${fmt(lp)}` : "")});
    span.textContent = text;
    if (m === 1) span.style.setProperty("--lpc", lpColour(lp));
    frag.append(span);
  }
  strip.append(frag);
  const modes = el("div", {class: "modes"}, "colour by: ");
  for (const [mode, label] of [["by-mask", "loss mask"], ["by-lp", "logprob"]]) {
    modes.append(el("button", {type: "button", "data-mode": mode, class: mode === "by-mask" ? "on" : null, text: label,
      onclick: (e) => {
        strip.className = "strip " + mode;
        for (const b of modes.querySelectorAll("button")) b.classList.toggle("on", b === e.target);
      }}), " ");
  }
  const legend = el("div", {class: "legend"},
    el("span", {class: "tok prompt", text: "prompt"}), " ", el("span", {class: "tok env", text: "template / observation (mask 0)"}),
    " ", el("span", {class: "tok sampled", text: "sampled (mask 1)"}), " · logprob: ",
    el("span", {class: "swatch", style: `background:${lpColour(-5)}`, text: "≤ −5"}), " ",
    el("span", {class: "swatch", style: `background:${lpColour(-0.7)}`, text: "−0.7"}), " ",
    el("span", {class: "swatch", style: `background:${lpColour(0)}`, text: "0"}));
  return section(`Tokens (${tokens.prompt_len} prompt + ${tokens.ids.length - tokens.prompt_len} response)`,
                 modes, legend, note ? el("p", {class: "note", text: note}) : null, strip);
}

function renderGrade(id, d) {
  const g = d.grade || {};
  const parts = [el("p", {}, el("a", {class: "grade-link", href: api.gradeHref(id, d), target: "_blank", text: "raw grade report (JSON)"}))];
  if (!Object.keys(g).length) return section("Grade", el("p", {class: "note", text: "no grade report"}), ...parts);
  const status = g.tests_status || {};
  const lists = el("div", {class: "tests"});
  for (const [group, outcome] of Object.entries(status)) {
    if (!outcome || typeof outcome !== "object") continue;
    for (const [verdict, tests] of Object.entries(outcome)) {
      if (!Array.isArray(tests) || !tests.length) continue;
      lists.append(el("div", {class: "tests-group " + verdict}, el("b", {text: `${group} ${verdict} (${tests.length})`}),
                      el("ul", {}, ...tests.map(t => el("li", {text: t})))));
    }
  }
  const scalars = {};
  for (const [k, v] of Object.entries(g)) if (typeof v !== "object" || v === null) scalars[k] = v;
  return section("Grade", keyValues(scalars), lists, ...parts);
}

function renderPatch(id, d) {
  const link = el("p", {}, el("a", {class: "patch-link", href: api.patchHref(id, d), target: "_blank", text: "raw patch"}));
  if (!d.patch) return section("Patch", el("p", {class: "note", text: "empty patch"}), link);
  const pre = el("pre", {class: "diff"});
  for (const line of d.patch.split("\n")) {
    const cls = line.startsWith("+++") || line.startsWith("---") ? "file" : line.startsWith("+") ? "add"
              : line.startsWith("-") ? "del" : line.startsWith("@@") ? "hunk" : "";
    pre.append(el("span", {class: cls, text: line + "\n"}));
  }
  return section("Patch", link, pre);
}

async function renderEpisode(id) {
  const pane = document.getElementById("episode");
  if (id === "") { pane.replaceChildren(el("p", {class: "note", text: "Pick an episode from the list."})); return; }
  pane.replaceChildren(el("p", {class: "note", text: `loading episode ${id}…`}));
  const d = await api.episode(id);
  const s = d.summary;
  const head = el("header", {},
    el("h2", {}, `Episode ${s.id}: `, el("span", {class: "task", text: s.task})),
    keyValues({source: `${s.source}:${s.line}`, step: s.step ?? "–", reward: s.reward, resolved: s.resolved,
               finish_reason: s.finish_reason, turns: s.num_turns, ...d.meta}));
  const parts = [head];
  if (d.error) parts.push(section("Error", el("pre", {class: "error", text: d.error})));
  if (Object.keys(d.timings).length) {
    const t = {};
    for (const [k, v] of Object.entries(d.timings)) t[k] = fmt(v, 2);
    parts.push(section("Timings (s)", keyValues(t)));
  }
  if (d.prompt.length) parts.push(el("details", {class: "prompt"}, el("summary", {text: `Prompt (${d.prompt.length} messages)`}),
    ...d.prompt.map(m => el("div", {class: "message " + m.role}, el("div", {class: "label", text: m.role}), el("pre", {text: m.content})))));
  parts.push(section(`Turns (${d.turns.length})`, d.turns_note ? el("p", {class: "note", text: d.turns_note}) : null,
                     ...(d.turns.length ? d.turns.map(renderTurn) : [el("p", {class: "note", text: "no turns recorded"})])));
  if (d.tokens) parts.push(renderTokens(d.tokens, d.tokens_note));
  parts.push(renderGrade(s.id, d), renderPatch(s.id, d));
  pane.replaceChildren(...parts);
  pane.dataset.episode = s.id;
}

// ------------------------------------------------------------------ wiring
async function apply() {
  const state = readHash();
  fillForm(state);
  try {
    await renderList(state);
    await renderEpisode(state.episode);
    setStatus("");
  } catch (err) {
    setStatus(String(err.message || err), true);
  }
  document.body.dataset.ready = "1";
}

async function main() {
  try {
    renderRun(await api.run());
  } catch (err) {
    setStatus(String(err.message || err), true);
    return;
  }
  document.getElementById("filters").addEventListener("submit", (e) => {
    e.preventDefault();
    writeHash({...formFilters(), episode: readHash().episode});
  });
  document.getElementById("filters").addEventListener("change", () => writeHash({...formFilters(), episode: readHash().episode}));
  document.getElementById("f-reset").addEventListener("click", () => writeHash({}));
  window.addEventListener("hashchange", apply);
  await apply();
}

main();
"""
