// edge-reason benchmark page: runs Engine.bench() and shows its JSON (the same shape as
// `edge-reason bench --json`, plus the load time and the backend's reason).
import init, { Engine, version } from '/pkg/edge_reason.js';

const $ = (id) => document.querySelector(`[data-testid="${id}"]`);
const form = $('bench-form');

function status(text) {
  $('bench-status').textContent = text;
}

function fail(err) {
  const box = $('error');
  box.hidden = false;
  box.textContent = `${err?.message ?? err}`;
  document.body.dataset.state = 'error';
  console.error(err);
}

/** The form's options, as Engine.bench() and Engine.load() take them. */
function options() {
  const f = new FormData(form);
  const int = (k) => Number.parseInt(f.get(k), 10);
  return {
    model: f.get('model'),
    backend: f.get('backend'),
    bench: {
      prefill_tokens: int('prefill_tokens'),
      decode_tokens: int('decode_tokens'),
      runs: int('runs'),
      streams: String(f.get('streams')).split(',').map((s) => Number.parseInt(s, 10)).filter((n) => n > 0),
      profile: f.get('profile') === '1',
    },
  };
}

async function run() {
  const o = options();
  document.body.dataset.state = 'running';
  $('error').hidden = true;
  $('bench-json').textContent = '';
  try {
    status(`fetching ${o.model}…`);
    const res = await fetch(o.model);
    if (!res.ok) throw new Error(`fetching ${o.model} failed: HTTP ${res.status}`);
    const bytes = new Uint8Array(await res.arrayBuffer());
    status(`loading on ${o.backend}…`);
    const t0 = performance.now();
    const engine = await Engine.load(bytes, { backend: o.backend });
    const loadSeconds = (performance.now() - t0) / 1000;
    status(`running on ${engine.backend.backend} (${engine.backend.reason})…`);
    const report = await engine.bench(o.bench);
    const reason = engine.backend.reason;
    engine.free();
    const out = {
      ...report,
      engine: version(),
      reason,
      load_s: loadSeconds,
      user_agent: navigator.userAgent,
    };
    $('bench-json').textContent = JSON.stringify(out, null, 2);
    status('done');
    document.body.dataset.state = 'done';
  } catch (err) {
    status('failed');
    fail(err);
  }
}

async function main() {
  await init();
  const params = new URLSearchParams(location.search);
  for (const [k, v] of params) {
    const field = form.elements[k];
    if (field?.type === 'checkbox') field.checked = v === '1';
    else if (field) field.value = v;
  }
  form.addEventListener('submit', (e) => {
    e.preventDefault();
    run();
  });
  document.body.dataset.state = 'ready';
  if (params.get('run') === '1') run();
}

main().catch(fail);
