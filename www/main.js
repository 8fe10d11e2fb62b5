// edge-reason demo page: shows the engine's version and backend, then loads the model
// into browser storage and onto the GPU through the engine's worker (createEngine), and
// generates with the text streamed in. The main thread never runs the model.
import init, { version, detectBackend } from '/pkg/edge_reason.js';
import { createEngine } from '/pkg/index.js';

const MODEL = { url: '/models/SmolLM2-135M-Instruct.Q4_1.gguf' };
MODEL.manifestUrl = `${MODEL.url}.manifest.json`;

const $ = (id) => document.querySelector(`[data-testid="${id}"]`);

function fail(where, err) {
  const box = $('error');
  box.hidden = false;
  box.textContent += `${where}: ${err?.message ?? err}\n`;
  console.error(where, err);
}

async function main() {
  try {
    await init();
  } catch (err) {
    $('version').textContent = 'unavailable';
    $('version').dataset.state = 'error';
    $('backend').textContent = 'unavailable';
    $('backend').dataset.state = 'error';
    fail('loading the engine failed', err);
    return;
  }
  $('version').textContent = version();
  $('version').dataset.state = 'ready';

  try {
    const choice = await detectBackend();
    $('backend').textContent = choice.backend;
    $('backend').dataset.adapter = choice.adapter ?? '';
    $('backend-reason').textContent = choice.reason;
    $('backend').dataset.state = 'ready';
    console.info(`edge-reason ${version()}: backend ${choice.backend} (${choice.reason})`);
  } catch (err) {
    $('backend').textContent = 'unknown';
    $('backend').dataset.state = 'error';
    fail('detecting the backend failed', err);
  }
}

// ?max_tokens=N shortens answers (the browser tests use it).
const MAX_TOKENS = Number(new URLSearchParams(location.search).get('max_tokens')) || 128;
const mb = (n) => `${(n / 1e6).toFixed(1)} MB`;
const PHASES = { download: 'Downloading', verify: 'Verifying', upload: 'Loading onto the device', ready: 'Ready' };

function showProgress(p) {
  const bar = $('progress');
  bar.hidden = p.phase === 'ready';
  bar.value = p.totalBytes ? p.loadedBytes / p.totalBytes : 0;
  let line = `${PHASES[p.phase] ?? p.phase}: ${mb(p.loadedBytes)} of ${mb(p.totalBytes)}`;
  if (p.fromCache && p.phase !== 'ready') line += ' (from storage)';
  if (p.phase === 'download' && p.bytesPerSec > 0 && !p.fromCache) {
    line += `, ${mb(p.bytesPerSec)}/s, ${Math.ceil(p.etaSec ?? 0)} s left`;
  }
  $('status').textContent = line;
}

let enginePromise = null;
const engine = () => (enginePromise ??= createEngine());

async function loadModel() {
  $('load').disabled = true;
  try {
    const e = await engine();
    const r = await e.load({ ...MODEL, onProgress: showProgress });
    $('status').textContent =
      `Ready on ${r.backend.backend} in ${(r.loadMs / 1000).toFixed(1)} s` +
      (r.fromCache ? ' (from storage)' : ` (downloaded ${mb(r.fetchedBytes)})`);
    $('status').dataset.state = 'ready';
    $('chat').hidden = false;
    $('forget').hidden = false;
    await loadHeads(e);
  } catch (err) {
    $('status').textContent = '';
    fail(`loading the model failed [${err.code ?? 'ERROR'}]`, err);
  } finally {
    $('load').disabled = false;
  }
}

// The reasoning adapter and switcher trained for the default model (train/, shipped
// with the page). Without them the model still answers; the reason is shown.
const HEADS = { adapter: '/reasoning/adapter/', switcher: '/reasoning/switcher/' };

async function loadHeads(e) {
  const box = $('heads');
  box.hidden = false;
  try {
    const a = await e.loadAdapter({ url: HEADS.adapter });
    await e.loadSwitcher({ url: HEADS.switcher });
    box.textContent = `Reasoning adapter (rank ${a.rank}, ${mb(a.bytes)}) and switcher loaded.`;
    box.dataset.state = 'ready';
  } catch (err) {
    box.textContent = `Reasoning adapter not loaded [${err.code ?? 'ERROR'}]: ${err.message ?? err}`;
    box.dataset.state = 'error';
  }
}

async function generate(event) {
  event.preventDefault();
  const out = $('output');
  out.textContent = '';
  $('send').disabled = true;
  try {
    const e = await engine();
    const g = await e.generate($('prompt').value, { chat: true, max_tokens: MAX_TOKENS, onText: (t) => (out.textContent += t) });
    out.dataset.state = 'done';
    $('status').textContent = `${g.ids.length} tokens, ${g.decode_tok_s.toFixed(1)} tokens/s`;
  } catch (err) {
    fail(`generation failed [${err.code ?? 'ERROR'}]`, err);
  } finally {
    $('send').disabled = false;
  }
}

async function forget() {
  const e = await engine();
  const id = MODEL.url.split('/').pop();
  await e.deleteModel(id);
  $('chat').hidden = true;
  $('forget').hidden = true;
  $('status').textContent = 'Deleted from storage.';
}

$('load').addEventListener('click', loadModel);
$('chat').addEventListener('submit', generate);
$('forget').addEventListener('click', () => forget().catch((err) => fail('deleting failed', err)));

main();
