// edge-reason demo page. The engine runs in a Web Worker (createEngine); this thread
// only draws: the model card, the switcher's route, the candidates streaming side by
// side, the vote as it forms, and the request's stats. Token text is buffered and
// drawn once per animation frame, so a slow phone stays responsive while the worker
// decodes eight candidates.
import init, { version, detectBackend } from '/pkg/edge_reason.js';
import { createEngine } from '/pkg/index.js';

const MODEL = { url: '/models/SmolLM2-135M-Instruct.Q4_1.gguf' };
MODEL.manifestUrl = `${MODEL.url}.manifest.json`;
MODEL.id = MODEL.url.split('/').pop();
// The reasoning adapter and switcher trained for the default model (train/).
const HEADS = { adapter: '/reasoning/adapter/', switcher: '/reasoning/switcher/' };

// ?max_tokens=N caps a direct answer and ?answer_tokens=N a reasoned one (the browser
// tests keep them short); ?nosw=1 skips the service worker.
const params = new URLSearchParams(location.search);
const MAX_TOKENS = Number(params.get('max_tokens')) || 256;
const ANSWER_TOKENS = Number(params.get('answer_tokens')) || 32;
// ?backend=webgpu | cpu overrides the engine's choice (auto passes over a software GPU).
const BACKEND = params.get('backend') || 'auto';

const $ = (id) => document.querySelector(`[data-testid="${id}"]`);
const el = (tag, props = {}, ...children) => {
  const node = Object.assign(document.createElement(tag), props);
  node.append(...children);
  return node;
};
const mb = (n) => `${(n / 1e6).toFixed(1)} MB`;

function fail(where, err) {
  const box = $('error');
  box.hidden = false;
  box.textContent += `${where}${err?.code ? ` [${err.code}]` : ''}: ${err?.message ?? err}\n`;
  console.error(where, err);
}

// ---------------------------------------------------------------- engine and backend

async function showEngine() {
  try {
    await init();
  } catch (err) {
    for (const id of ['version', 'backend']) {
      $(id).textContent = 'unavailable';
      $(id).dataset.state = 'error';
    }
    fail('loading the engine failed', err);
    return;
  }
  $('version').textContent = version();
  $('version').dataset.state = 'ready';
  try {
    showBackend(await detectBackend());
  } catch (err) {
    $('backend').textContent = 'unknown';
    $('backend').dataset.state = 'error';
    fail('detecting the backend failed', err);
  }
}

/** The backend badge: what the engine would use (or, once loaded, uses) and why. */
function showBackend(choice) {
  const badge = $('backend');
  badge.textContent = choice.backend === 'webgpu' ? 'WebGPU' : 'CPU fallback';
  badge.dataset.backend = choice.backend;
  badge.dataset.adapter = choice.adapter ?? '';
  badge.title = choice.reason;
  badge.dataset.state = 'ready';
  $('backend-reason').textContent = choice.reason;
}

// Caches the page and the wasm for offline use (the weights live in OPFS, not here).
async function registerServiceWorker() {
  if (!('serviceWorker' in navigator) || params.has('nosw')) return;
  try {
    await navigator.serviceWorker.register('sw.js');
    await navigator.serviceWorker.ready;
    $('offline').hidden = false;
    $('offline').dataset.state = 'ready';
  } catch (err) {
    console.warn('no service worker: the page will need the network', err);
  }
}

// ---------------------------------------------------------------- the model card

const PHASES = { download: 'Downloading', verify: 'Verifying', upload: 'Loading onto the device', ready: 'Ready' };

function progressLine(p, resumedFrom) {
  let line = `${PHASES[p.phase] ?? p.phase}: ${mb(p.loadedBytes)} of ${mb(p.totalBytes)}`;
  if (p.fromCache && p.phase !== 'ready') line += ' (from storage)';
  if (p.phase === 'download' && !p.fromCache) {
    if (resumedFrom > 0) line += `, resuming from ${Math.floor(resumedFrom * 100)}%`;
    if (p.bytesPerSec > 0) line += `, ${mb(p.bytesPerSec)}/s, ${Math.ceil(p.etaSec ?? 0)} s left`;
  }
  return line;
}

async function showStorage(e) {
  try {
    const { usage, quota } = await navigator.storage.estimate();
    const stored = (await e.listModels()).filter((m) => m.complete);
    const models = stored.map((m) => `${m.id} (${mb(m.size)})`).join(', ') || 'no model';
    $('storage').textContent = `Storage: ${models}; ${mb(usage)} used of ${mb(quota)} available to this page.`;
  } catch (err) {
    $('storage').textContent = `Storage: unknown (${err.message ?? err})`;
  }
}

let enginePromise = null;
// A start that failed (a worker that could not load) is forgotten, so the next action
// tries again instead of failing forever.
const engine = () =>
  (enginePromise ??= createEngine().catch((err) => {
    enginePromise = null;
    throw err;
  }));

async function loadModel() {
  $('load').disabled = true;
  const bar = $('progress');
  try {
    const e = await engine();
    const partial = (await e.listModels()).find((m) => m.id === MODEL.id && !m.complete && m.size);
    const resumedFrom = partial ? partial.storedBytes / partial.size : 0;
    const r = await e.load({
      ...MODEL,
      backend: BACKEND,
      onProgress: (p) => {
        bar.hidden = false;
        bar.value = p.totalBytes ? p.loadedBytes / p.totalBytes : 0;
        $('status').textContent = progressLine(p, resumedFrom);
      },
    });
    bar.value = 1;
    bar.dataset.state = 'done';
    showBackend(r.backend);
    $('status').textContent =
      `Ready on ${r.backend.backend === 'webgpu' ? 'WebGPU' : 'the CPU'} in ${(r.loadMs / 1000).toFixed(1)} s` +
      (r.fromCache ? ' (from storage)' : ` (downloaded ${mb(r.fetchedBytes)})`);
    $('chat').hidden = false;
    $('forget').hidden = false;
    $('load').hidden = true;
    await Promise.all([loadHeads(e), showStorage(e)]);
    // Last: everything on the card is current once the state says ready.
    $('status').dataset.state = 'ready';
  } catch (err) {
    $('status').textContent = '';
    fail('loading the model failed', err);
  } finally {
    $('load').disabled = false;
  }
}

async function loadHeads(e) {
  const box = $('heads');
  box.hidden = false;
  try {
    const a = await e.loadAdapter({ url: HEADS.adapter });
    await e.loadSwitcher({ url: HEADS.switcher });
    box.textContent = `Reasoning adapter (rank ${a.rank}, ${mb(a.bytes)} in memory) and switcher loaded.`;
    box.dataset.state = 'ready';
  } catch (err) {
    box.textContent = `Reasoning adapter not loaded [${err.code ?? 'ERROR'}]: ${err.message ?? err}. Chat still works.`;
    box.dataset.state = 'error';
  }
}

async function forget() {
  const e = await engine();
  await e.unload();
  await e.deleteModel(MODEL.id);
  $('chat').hidden = true;
  $('result').hidden = true;
  $('forget').hidden = true;
  $('heads').hidden = true;
  $('load').hidden = false;
  $('progress').hidden = true;
  $('status').textContent = 'Deleted from storage.';
  await showStorage(e);
  $('status').dataset.state = 'deleted';
}

// ---------------------------------------------------------------- one request

/** The panels of one request: candidates, the vote, the stats. */
class RequestView {
  constructor(n) {
    this.n = n;
    this.panels = [];
    this.pending = new Map(); // candidate -> {think, answer} text not drawn yet
    this.done = [];
    $('result').hidden = false;
    $('result').dataset.state = 'running';
    $('route').textContent = 'Reading the prompt…';
    $('route').dataset.state = 'prefill';
    $('candidates').replaceChildren();
    $('vote').hidden = true;
    $('vote').querySelector('.bars').replaceChildren();
    $('vote').querySelector('.verdict').textContent = '';
    // Nothing of the previous request stays while this one runs.
    $('stats').hidden = true;
    $('stats').replaceChildren();
    delete $('stats').dataset.state;
  }

  /** A long prompt's progress, part by part, until the route is known. */
  prefill({ tokens, total }) {
    $('route').textContent = `Reading the prompt… ${tokens} of ${total} tokens`;
  }

  route({ mode, pReason }, asked) {
    const p = pReason == null ? '' : ` (switcher: p(reason) = ${pReason.toFixed(2)})`;
    const why = asked === 'auto' ? '' : `, as asked`;
    const r = $('route');
    r.textContent = mode === 'reason' ? `Reasoning with ${this.n} candidate${this.n > 1 ? 's' : ''}${why}${p}` : `Answering directly${why}${p}`;
    r.dataset.mode = mode;
    r.dataset.state = 'routed';
    const count = mode === 'reason' ? this.n : 1;
    $('candidates').dataset.count = count;
    for (let i = 0; i < count; i++) this.panels.push(this.panel(i, mode));
    $('candidates').append(...this.panels.map((p) => p.root));
  }

  panel(i, mode) {
    const think = el('pre', { className: 'think-text' });
    const details = el('details', { className: 'think', hidden: mode !== 'reason' }, el('summary', { textContent: 'Thinking' }), think);
    details.open = true;
    const answerText = el('pre', { className: 'answer-text' });
    const answer = el('p', { className: 'answer' });
    const meta = el('span', { className: 'meta', textContent: 'running' });
    const title = mode === 'reason' ? `Candidate ${i + 1}` : 'Answer';
    const root = el('article', { className: 'cand' }, el('header', {}, el('h3', { textContent: title }), meta), details, answerText, answer);
    root.dataset.testid = `candidate-${i}`;
    root.dataset.state = 'running';
    root.setAttribute('aria-label', title);
    return { root, details, think, answerText, answer, meta };
  }

  token({ candidate, text, phase }) {
    const buf = this.pending.get(candidate) ?? { think: '', answer: '' };
    buf[phase === 'think' ? 'think' : 'answer'] += text;
    this.pending.set(candidate, buf);
    this.frame ??= requestAnimationFrame(() => this.flush());
  }

  flush() {
    this.frame = null;
    for (const [i, buf] of this.pending) {
      const p = this.panels[i];
      if (!p) continue;
      if (buf.think) p.think.append(buf.think);
      if (buf.answer) p.answerText.append(buf.answer);
    }
    this.pending.clear();
  }

  candidateDone(e) {
    this.flush();
    const p = this.panels[e.candidate];
    if (!p) return;
    const stopped = e.reason === 'consensus';
    p.root.dataset.state = stopped ? 'stopped' : 'done';
    const confidence = Number.isFinite(e.logprob) ? ` · confidence ${Math.round(100 * Math.exp(e.logprob))}%` : '';
    p.meta.textContent = `${e.tokens} tokens${confidence}${stopped ? ' · stopped early' : ''}`;
    p.answer.replaceChildren(
      e.answer == null ? el('span', { className: 'muted', textContent: stopped ? 'stopped: the vote was decided' : 'no answer found' }) : el('mark', { textContent: e.answer }),
    );
    p.details.open = false;
    // The forced or written `</think>` opens the answer text; the panel shows it as a
    // separate section already.
    p.answerText.textContent = p.answerText.textContent.replace(/^\s*<\/think>\s*/, '');
    if (e.answer != null) this.done.push(e.answer);
    this.drawBars(this.provisionalTally(), null);
  }

  provisionalTally() {
    const counts = new Map();
    for (const a of this.done) counts.set(a, (counts.get(a) ?? 0) + 1);
    return [...counts].map(([key, votes]) => ({ key, votes })).sort((a, b) => b.votes - a.votes);
  }

  drawBars(tally, winner) {
    const vote = $('vote');
    if (this.panels.length < 2) return; // one answer: nothing to vote on
    vote.hidden = false;
    const most = Math.max(...tally.map((t) => t.votes), 1);
    vote.querySelector('.bars').replaceChildren(
      ...tally.map((t) => {
        const bar = el('span', { className: 'bar' });
        bar.style.inlineSize = `${(100 * t.votes) / most}%`;
        const item = el('li', {}, el('span', { className: 'key', textContent: t.key }), el('span', { className: 'track' }, bar), el('span', { className: 'count', textContent: `${t.votes}` }));
        item.setAttribute('aria-label', `${t.key}: ${t.votes} vote${t.votes === 1 ? '' : 's'}`);
        if (winner != null && t.key === winner) item.className = 'winner';
        return item;
      }),
    );
  }

  vote(e) {
    this.drawBars(e.tally, e.answer);
    const v = $('vote');
    v.dataset.state = 'done';
    v.dataset.answer = e.answer ?? '';
    v.querySelector('.verdict').textContent =
      e.answer == null ? 'No candidate gave an answer.' : `Answer: ${e.answer}` + (e.stoppedEarly ? ` (${e.stoppedEarly} stopped early: the vote was decided)` : '');
  }

  stats(s) {
    this.flush();
    const rows = [
      ['Time to first token', `${Math.round(s.ttftMs)} ms`],
      ['Prompt', `${s.promptTokens} tokens at ${s.prefillTokS.toFixed(0)} tokens/s`],
      ['Decode', `${s.tokens} tokens at ${s.decodeTokS.toFixed(1)} tokens/s`],
      ['KV memory', mb(s.kvBytes)],
      ['Tokens saved by early stop', `${s.tokensSaved}`],
    ];
    const box = $('stats');
    box.replaceChildren(...rows.flatMap(([k, v]) => [el('dt', { textContent: k }), el('dd', { textContent: v })]));
    box.hidden = false;
    box.dataset.state = 'done';
  }
}

let running = null;

async function run(event) {
  event.preventDefault();
  if (running) return;
  const mode = $('mode').value;
  const n = Math.min(8, Math.max(1, Math.round(Number($('n').value) || 1)));
  const think = Math.min(1024, Math.max(1, Math.round(Number($('budget').value) || 256)));
  $('n').value = n;
  $('budget').value = think;
  const view = new RequestView(n);
  const controller = new AbortController();
  running = controller;
  $('run').disabled = true;
  $('stop').disabled = false;
  const options = {
    mode,
    n,
    budget: { think, answer: ANSWER_TOKENS },
    max_tokens: MAX_TOKENS,
    // One candidate thinks greedily; several sample, each with its own seed.
    temperature: n > 1 ? 0.7 : 0,
    top_p: 0.95,
    seed: Math.floor(Math.random() * 2 ** 31),
  };
  const on = {
    prefill: (e) => view.prefill(e),
    route: (e) => view.route(e, mode),
    token: (e) => view.token(e),
    candidate_done: (e) => view.candidateDone(e),
    vote: (e) => view.vote(e),
    done: (e) => view.stats(e.stats),
  };
  let outcome = 'done';
  try {
    const e = await engine();
    await e.reason({ prompt: $('prompt').value, options }, { onEvent: (ev) => on[ev.type]?.(ev), signal: controller.signal });
  } catch (err) {
    view.flush();
    if (err.code === 'ABORTED') {
      $('route').textContent += ' · stopped';
      outcome = 'stopped';
    } else {
      outcome = 'failed';
      fail('the request failed', err);
    }
  } finally {
    running = null;
    $('run').disabled = false;
    $('stop').disabled = true;
    // Last: a finished request leaves the form ready for the next one.
    $('result').dataset.state = outcome;
  }
}

$('load').addEventListener('click', loadModel);
$('chat').addEventListener('submit', run);
$('stop').addEventListener('click', () => running?.abort());
$('forget').addEventListener('click', () => forget().catch((err) => fail('deleting failed', err)));

showEngine();
registerServiceWorker();
