// The npm package where web apps are built: `npm pack` of pkg/, unpacked into fresh apps
// as node_modules/edge-reason, and the package README's own example run unchanged in
// each of them in headless Chromium (the CPU path: no WebGPU flags):
// - Vite: the dev server, and `vite build` + `vite preview`;
// - webpack 5: a production build served as static files;
// - no bundler: a static host with a single-page-app fallback (unknown paths answer
//   index.html) and an import map;
// each cross-origin isolated (COOP/COEP: the multi-threaded build, threads > 1) and not
// (one thread, and why), and the example type-checked by `tsc --strict`.
// The apps share one browser; each origin downloads the model once into its own storage.

import { test, before, after, describe } from 'node:test';
import assert from 'node:assert/strict';
import { execFileSync } from 'node:child_process';
import fs from 'node:fs';
import net from 'node:net';
import os from 'node:os';
import path from 'node:path';
import { fileURLToPath } from 'node:url';
import { build as viteBuild, createServer as viteServer, preview as vitePreview } from 'vite';
import webpack from 'webpack';
import { BASE_FLAGS, launch } from './chromium.mjs';
import { createServer as fileServer, start as startFileServer } from '../../www/serve.mjs';

const here = path.dirname(fileURLToPath(import.meta.url));
const root = path.resolve(here, '../..');
const models = path.join(root, 'models');
const MODEL_NAME = 'SmolLM2-135M-Instruct.Q4_1.gguf';
const haveModel = fs.existsSync(path.join(models, MODEL_NAME));

const ISOLATION_HEADERS = {
  'Cross-Origin-Opener-Policy': 'same-origin',
  'Cross-Origin-Embedder-Policy': 'require-corp',
};

/** The first ```js block after `heading` in a README: the example users copy. */
export function readmeExample(file, heading = '## Use it') {
  const text = fs.readFileSync(file, 'utf8');
  const at = text.indexOf(`\n${heading}\n`);
  assert.ok(at >= 0, `${file} has a "${heading}" section`);
  const m = /```js\n([\s\S]*?)```/.exec(text.slice(at));
  assert.ok(m, `${file} has a js block under "${heading}"`);
  return m[1];
}

// What the app adds after the README's lines: the results, for the test to read.
const REPORT = `
globalThis.__edgeReason = {
  threads: engine.threads, threadsReason: engine.threadsReason, isolated: globalThis.crossOriginIsolated,
  route: r.route, vote: r.vote,
  choices: r.choices.map((c) => ({ content: c.message.content, finish: c.finish_reason })),
};
`;

// Any failure of the app, for the test to read instead of waiting for a time-out.
const CATCH = `<script>
  addEventListener('error', (e) => { globalThis.__edgeReasonError ??= String(e.error?.stack ?? e.message); });
  addEventListener('unhandledrejection', (e) => { globalThis.__edgeReasonError ??= String(e.reason?.stack ?? e.reason); });
</script>`;

let work;
let tarball;
let example;
let browser;

before(async () => {
  work = fs.mkdtempSync(path.join(os.tmpdir(), 'edge-reason-apps-'));
  const [out] = JSON.parse(execFileSync('npm', ['pack', path.join(root, 'pkg'), '--pack-destination', work, '--json'], { encoding: 'utf8' }));
  tarball = path.join(work, out.filename);
  const unpacked = makeApp('readme');
  example = readmeExample(path.join(unpacked, 'node_modules', 'edge-reason', 'README.md'));
  if (haveModel) browser = await launch(BASE_FLAGS);
});

after(async () => {
  await browser?.close();
  if (work) fs.rmSync(work, { recursive: true, force: true });
});

/** A fresh app folder with the packed package installed as node_modules/edge-reason. */
function makeApp(name) {
  const app = path.join(work, name);
  const pkg = path.join(app, 'node_modules', 'edge-reason');
  fs.mkdirSync(pkg, { recursive: true });
  execFileSync('tar', ['-xzf', tarball, '-C', pkg, '--strip-components=1']);
  fs.writeFileSync(path.join(app, 'package.json'), JSON.stringify({ name, private: true, type: 'module', dependencies: { 'edge-reason': `file:${tarball}` } }));
  return app;
}

/** An app whose one module is the README example (plus the report), and its page. */
function exampleApp(name, { head = '', script = '/src/main.js', module = true } = {}) {
  const app = makeApp(name);
  fs.mkdirSync(path.join(app, 'src'));
  fs.writeFileSync(path.join(app, 'src', 'main.js'), example + REPORT);
  fs.writeFileSync(
    path.join(app, 'index.html'),
    `<!doctype html><meta charset="utf-8"><title>${name}</title>\n${CATCH}\n${head}\n<script ${module ? 'type="module" ' : ''}src="${script}"></script>\n`,
  );
  return app;
}

/** A free TCP port on 127.0.0.1. */
function freePort() {
  return new Promise((resolve, reject) => {
    const s = net.createServer();
    s.once('error', reject);
    s.listen(0, '127.0.0.1', () => {
      const { port } = s.address();
      s.close(() => resolve(port));
    });
  });
}

/** A Vite plugin that serves /models/ (with ranges) from the repository's models/, as
 *  an app would serve its model file; before Vite's own middlewares. */
function serveModels(isolated) {
  const files = fileServer({ mounts: [{ prefix: '/models/', dir: models }], isolated });
  const use = (server) => {
    server.middlewares.use((req, res, next) => (req.url.startsWith('/models/') ? files.emit('request', req, res) : next()));
  };
  return { name: 'serve-models', configureServer: use, configurePreviewServer: use };
}

/** Opens `url` in the shared browser, waits for the example to finish, and returns
 *  what it reported, with the page's errors. */
async function runExample(url) {
  const page = await browser.context.newPage();
  const errors = [];
  page.on('pageerror', (e) => errors.push(String(e)));
  try {
    await page.goto(url, { waitUntil: 'load' });
    await page.waitForFunction(() => globalThis.__edgeReason || globalThis.__edgeReasonError, null, { timeout: 300_000 });
    const got = await page.evaluate(() => ({ result: globalThis.__edgeReason ?? null, error: globalThis.__edgeReasonError ?? null }));
    return { ...got, errors };
  } finally {
    await page.close();
  }
}

/** The README example's answer as a user relies on it: four candidates, a route, a
 *  vote; threads when the page is isolated, one thread and why when it is not. */
function assertAnswered(got, isolated) {
  assert.equal(got.error, null, got.error);
  assert.deepEqual(got.errors, []);
  const r = got.result;
  assert.equal(r.isolated, isolated);
  assert.equal(r.route?.mode, 'reason', JSON.stringify(r.route));
  assert.equal(r.choices.length, 4, JSON.stringify(r.choices));
  for (const c of r.choices) assert.equal(typeof c.content, 'string');
  assert.ok(r.vote && r.vote.tally.length > 0, JSON.stringify(r.vote));
  if (isolated) {
    assert.ok(r.threads > 1, `threads ${r.threads}: ${r.threadsReason}`);
    assert.equal(r.threadsReason, null);
  } else {
    assert.equal(r.threads, 1);
    assert.match(r.threadsReason, /not cross-origin isolated/);
  }
}

/** Every file a build wrote under `dir`, with sizes: the note's bundle sizes. */
function sizes(dir) {
  const out = [];
  const walk = (d) => {
    for (const e of fs.readdirSync(d, { withFileTypes: true })) {
      const p = path.join(d, e.name);
      if (e.isDirectory()) walk(p);
      else out.push([path.relative(dir, p), fs.statSync(p).size]);
    }
  };
  walk(dir);
  const total = out.reduce((a, [, n]) => a + n, 0);
  return { total, files: out.sort((a, b) => b[1] - a[1]) };
}

function logSizes(what, dir) {
  const { total, files } = sizes(dir);
  const list = files.map(([f, n]) => `${f} ${(n / 1024).toFixed(1)} KiB`).join(', ');
  console.log(`# ${what}: ${(total / 1048576).toFixed(2)} MiB in ${files.length} files (${list})`);
}

const VITE_QUIET = { configFile: false, logLevel: 'error', clearScreen: false };

describe('the README example in apps', { timeout: 1_800_000, skip: !haveModel && 'no default model (./build.sh model)' }, () => {
  for (const isolated of [true, false]) {
    const headers = isolated ? ISOLATION_HEADERS : {};
    const label = isolated ? 'cross-origin isolated' : 'not isolated';

    test(`Vite dev server, ${label}`, async () => {
      const app = exampleApp(`vite-dev-${isolated}`);
      const server = await viteServer({
        ...VITE_QUIET,
        root: app,
        server: { host: '127.0.0.1', port: await freePort(), strictPort: true, headers },
        plugins: [serveModels(isolated)],
      });
      await server.listen();
      try {
        assertAnswered(await runExample(server.resolvedUrls.local[0]), isolated);
      } finally {
        await server.close();
      }
    });

    test(`Vite build + preview, ${label}`, async () => {
      const app = exampleApp(`vite-build-${isolated}`);
      const outDir = path.join(app, 'dist');
      await viteBuild({ ...VITE_QUIET, root: app, build: { outDir, emptyOutDir: true } });
      if (isolated) logSizes('vite build', outDir);
      const server = await vitePreview({
        ...VITE_QUIET,
        root: app,
        build: { outDir },
        preview: { host: '127.0.0.1', port: await freePort(), strictPort: true, headers },
        plugins: [serveModels(isolated)],
      });
      try {
        assertAnswered(await runExample(server.resolvedUrls.local[0]), isolated);
      } finally {
        await server.close();
      }
    });

    test(`webpack 5 production build on a static host, ${label}`, async () => {
      const app = exampleApp(`webpack-${isolated}`, { script: 'main.js', module: false });
      const dist = path.join(app, 'dist');
      const stats = await new Promise((resolve, reject) =>
        webpack({
          mode: 'production',
          context: app,
          entry: './src/main.js',
          output: { path: dist, clean: true },
          performance: { hints: false },
          devtool: false,
        }).run((err, s) => (err ? reject(err) : resolve(s))),
      );
      assert.equal(stats.hasErrors(), false, stats.toString('errors-only'));
      fs.copyFileSync(path.join(app, 'index.html'), path.join(dist, 'index.html'));
      if (isolated) logSizes('webpack build', dist);
      const server = await startFileServer({
        port: 0,
        isolated,
        csp: false, // the test page's inline error catcher
        mounts: [
          { prefix: '/models/', dir: models },
          { prefix: '/', dir: dist },
        ],
      });
      try {
        assertAnswered(await runExample(server.url), isolated);
      } finally {
        await server.close();
      }
    });
  }

  test('no bundler: a static host with a single-page-app fallback and an import map', async () => {
    const importMap = '<script type="importmap">{"imports": {"edge-reason": "/node_modules/edge-reason/index.js"}}</script>';
    const app = exampleApp('static-spa', { head: importMap });
    fs.writeFileSync(path.join(app, 'check.html'), `<!doctype html><meta charset="utf-8"><title>check</title>\n${importMap}\n`);
    const server = await startFileServer({
      port: 0,
      isolated: false,
      spa: true,
      csp: false, // the import map and the error catcher are inline scripts
      mounts: [
        { prefix: '/models/', dir: models },
        { prefix: '/', dir: app },
      ],
    });
    try {
      assertAnswered(await runExample(server.url), false);
      // An adapter directory on this host: its optional budget_hint.json answers the
      // app's index.html (HTTP 200), which is no hint; a missing required file is
      // NOT_FOUND, not a JSON error.
      const page = await browser.context.newPage();
      try {
        await page.goto(`${server.url}check.html`, { waitUntil: 'load' });
        const got = await page.evaluate(async () => {
          const { createEngine } = await import('edge-reason');
          const engine = await createEngine({ threads: 1 });
          await engine.load({ url: '/models/SmolLM2-135M-Instruct.Q4_1.gguf' });
          const adapter = await engine.loadAdapter({ url: '/node_modules/edge-reason/reasoning/adapter/' });
          const missing = await engine.loadSwitcher({ url: '/no-such-switcher/' }).then(
            () => null,
            (e) => ({ code: e.code, message: e.message }),
          );
          engine.terminate();
          return { hint: adapter.budget_hint ?? null, rank: adapter.rank, missing };
        });
        assert.equal(got.hint, null, 'an HTML page is not a budget hint');
        assert.ok(got.rank > 0, JSON.stringify(got));
        assert.equal(got.missing?.code, 'NOT_FOUND', JSON.stringify(got.missing));
        assert.match(got.missing.message, /answered an HTML page, not the file/);
      } finally {
        await page.close();
      }
    } finally {
      await server.close();
    }
  });
});

describe('types', { timeout: 120_000 }, () => {
  test('the README examples compile under tsc --strict', () => {
    const app = makeApp('tsc');
    const repoExample = readmeExample(path.join(root, 'README.md'));
    assert.equal(repoExample, example, "the repository README's example is the package README's");
    fs.writeFileSync(path.join(app, 'example.ts'), `${example}\nexport {};\n`);
    fs.writeFileSync(
      path.join(app, 'tsconfig.json'),
      JSON.stringify({
        compilerOptions: {
          strict: true,
          noEmit: true,
          target: 'es2022',
          module: 'esnext',
          moduleResolution: 'bundler',
          lib: ['es2022', 'dom', 'dom.iterable'],
          skipLibCheck: false,
        },
        files: ['example.ts'],
      }),
    );
    const tsc = path.join(here, 'node_modules', '.bin', 'tsc');
    try {
      execFileSync(tsc, ['-p', app], { encoding: 'utf8', stdio: 'pipe' });
    } catch (err) {
      assert.fail(`tsc --strict failed:\n${err.stdout}${err.stderr}`);
    }
  });
});
