// edge-reason's service worker: keeps the app shell, the wasm and the reasoning heads
// so that the page works with the network off after one full load. The model weights
// are not here: they live in OPFS (or the Cache API store 'edge-reason-models'), where
// the engine keeps them resumable and verified.
//
// Online, every request goes to the network first (a new deploy shows at once) and the
// answer refreshes the cache; offline, the cache answers.

const VERSION = 4;
const CACHE = `edge-reason-app-v${VERSION}`;

// What the page needs, relative to this worker's scope. The JS module graph below
// these (index.js -> errors.js, ..., edge_reason.js -> snippets/...) is followed from
// their static imports, so no build step has to list it.
const SEEDS = [
  './',
  'index.html',
  'main.js',
  'style.css',
  'manifest.webmanifest',
  'icons/icon-192.png',
  'icons/icon-512.png',
  '/pkg/index.js',
  '/pkg/worker.js',
  '/pkg/edge_reason.js',
  '/pkg/edge_reason_bg.wasm',
  '/reasoning/adapter/adapter_config.json',
  '/reasoning/adapter/adapter_model.safetensors',
  '/reasoning/switcher/switcher.json',
  '/reasoning/switcher/switcher.safetensors',
];
// The multi-threaded build, whose worker and pool threads index.js and pool.js start with
// `new Worker(...)` (not followed from the seeds), and which a package may lack (the
// engine then runs on one thread).
const OPTIONAL = ['/pkg/worker-threads.js', '/pkg/pool-worker.js', '/pkg/threads/edge_reason.js', '/pkg/threads/edge_reason_bg.wasm'];
// Files an adapter may or may not have: their 404 is kept too, so that offline the
// engine still learns there is none instead of failing to fetch.
const MAYBE_ABSENT = ['/reasoning/adapter/budget_hint.json'];

// The requests this worker answers: the app's own files. Everything else (the model
// weights, large and ranged, which the engine stores itself; other pages on the origin)
// goes to the network untouched.
const APP = [/^\/$/, /^\/(index\.html|main\.js|style\.css|manifest\.webmanifest)$/, /^\/(pkg|reasoning|icons)\//];

const IMPORT = /(?:^|[;\s])(?:import|export)\s*(?:[^'";]*?\sfrom\s*)?['"]([^'"]+)['"]/g;

/** Fetches the seeds and every module they import; all into one new cache. */
async function precache() {
  const cache = await caches.open(CACHE);
  const seen = new Set();
  const href = (p) => new URL(p, self.registration.scope).href;
  const optional = new Set(OPTIONAL.map(href));
  const maybeAbsent = new Set(MAYBE_ABSENT.map(href));
  const queue = [...SEEDS, ...OPTIONAL, ...MAYBE_ABSENT].map(href);
  while (queue.length) {
    const url = queue.shift();
    if (seen.has(url)) continue;
    seen.add(url);
    const response = await fetch(url, { cache: 'no-cache' });
    if (!response.ok && optional.has(url)) continue;
    if (response.status === 404 && maybeAbsent.has(url)) {
      await cache.put(url, response);
      continue;
    }
    if (!response.ok) throw new Error(`precaching ${url}: HTTP ${response.status}`);
    if (url.endsWith('.js')) {
      const text = await response.clone().text();
      for (const m of text.matchAll(IMPORT)) {
        if (m[1].startsWith('.') || m[1].startsWith('/')) queue.push(new URL(m[1], url).href);
      }
    }
    await cache.put(url, response);
  }
}

self.addEventListener('install', (event) => {
  event.waitUntil(precache().then(() => self.skipWaiting()));
});

self.addEventListener('activate', (event) => {
  event.waitUntil(
    (async () => {
      for (const name of await caches.keys()) {
        if (name.startsWith('edge-reason-app-') && name !== CACHE) await caches.delete(name);
      }
      await self.clients.claim();
    })(),
  );
});

self.addEventListener('fetch', (event) => {
  const request = event.request;
  const url = new URL(request.url);
  if (request.method !== 'GET' || url.origin !== self.location.origin) return;
  if (request.headers.has('range') || !APP.some((re) => re.test(url.pathname))) return;
  event.respondWith(networkFirst(request));
});

async function networkFirst(request) {
  const cache = await caches.open(CACHE);
  try {
    const response = await fetch(request);
    if (response.ok && response.status === 200) await cache.put(request, response.clone());
    return response;
  } catch (err) {
    // The page's own URL may carry a query (?max_tokens=...): the shell is one page.
    const cached = (await cache.match(request)) ?? (await cache.match(request, { ignoreSearch: true }));
    if (cached) return cached;
    throw err;
  }
}
