// End-to-end tests of the demo page (www/): what a person sees and does, on the CPU
// fallback at a phone's 360 x 740 and, up to the first answer, on WebGPU (SwiftShader)
// at a desktop size. Load with the progress bar reaching 100%, the shipped reasoning
// heads, a multi-step question routed to reasoning with N candidate panels and a vote,
// a greeting routed to chat, a reload served from storage, and an offline reload
// through the service worker. Screenshots of both sizes go to target/browser-artifacts/.

import { test, before, after, describe } from 'node:test';
import assert from 'node:assert/strict';
import fs from 'node:fs';
import path from 'node:path';
import { fileURLToPath } from 'node:url';
import { BASE_FLAGS, WEBGPU_FLAGS, launch } from './chromium.mjs';
import { start, defaultMounts } from '../../www/serve.mjs';
import { createFaults } from '../../www/faults.mjs';

const here = path.dirname(fileURLToPath(import.meta.url));
const root = path.resolve(here, '../..');
const MODEL_NAME = 'SmolLM2-135M-Instruct.Q4_1.gguf';
const MODEL_URL = `/models/${MODEL_NAME}`;
const modelPath = path.join(root, 'models', MODEL_NAME);
const ARTIFACTS = path.join(root, 'target', 'browser-artifacts');

// Short answers keep a SwiftShader decode (seconds a step) within the test's time.
const QUERY = (answerTokens) => `?max_tokens=4&answer_tokens=${answerTokens}`;
const QUESTION = 'Tom has 12 apples. He buys 30 more. He gives 5 to Ann. How many apples does Tom have now?';
const GREETING = 'Hi! How are you?';
const LONG = 600_000;

let server;
let faults;
// While true the server cuts every connection: only the service worker can answer.
let serverDown = false;
const downHook = async (ctx) => {
  if (!serverDown) return false;
  ctx.res.socket?.destroy();
  return true;
};

before(async () => {
  faults = createFaults();
  server = await start({ port: 0, host: '127.0.0.1', mounts: defaultMounts(root), hooks: [downHook, faults.hook] });
  fs.mkdirSync(ARTIFACTS, { recursive: true });
});

after(async () => {
  await server?.close();
});

const testid = (id) => `[data-testid="${id}"]`;

/** Waits until the model is ready or the page shows an error; fails on the error. */
async function waitLoaded(page) {
  await page.waitForSelector(`${testid('status')}[data-state="ready"], ${testid('error')}:not([hidden])`, { timeout: LONG });
  assert.equal(await page.isHidden(testid('error')), true, await page.textContent(testid('error')));
}

/** Opens the page, records page errors, and clicks "Load"; resolves once loaded. */
async function openAndLoad(page, errors, query, answerTokens) {
  page.on('pageerror', (e) => errors.push(String(e)));
  page.on('console', (m) => m.type() === 'error' && errors.push(m.text()));
  await page.goto(`${server.url}${QUERY(answerTokens)}${query}`, { waitUntil: 'load' });
  await page.waitForSelector(`${testid('backend')}:not([data-state="loading"])`);
  await page.click(testid('load'));
  await waitLoaded(page);
  await page.waitForSelector(`${testid('heads')}[data-state]`, { timeout: LONG });
  assert.match(await page.textContent(testid('heads')), /^Reasoning adapter \(rank 16, [\d.]+ MB in memory\) and switcher loaded\.$/);
}

/** Asks `prompt` with the form's settings; resolves to what the page shows. */
async function ask(page, prompt, { mode = 'auto', n = 2, budget = 6 } = {}) {
  await page.fill(testid('prompt'), prompt);
  await page.selectOption(testid('mode'), mode);
  await page.fill(testid('n'), String(n));
  await page.fill(testid('budget'), String(budget));
  await page.click(testid('run'));
  // While it runs, nothing of a previous request's stats is shown or kept.
  const during = await page.evaluate(() => {
    const q = (id) => document.querySelector(`[data-testid="${id}"]`);
    return { running: q('result').dataset.state === 'running', shown: !q('stats').hidden, kept: q('stats').childElementCount };
  });
  if (during.running) assert.deepEqual(during, { running: true, shown: false, kept: 0 });
  await page.waitForSelector(`${testid('result')}[data-state="done"], ${testid('error')}:not([hidden])`, { timeout: LONG });
  const shown = await page.evaluate(() => {
    const q = (id) => document.querySelector(`[data-testid="${id}"]`);
    const panels = [...document.querySelectorAll('[data-testid^="candidate-"]')];
    return {
      error: q('error').hidden ? null : q('error').textContent,
      mode: q('route').dataset.mode,
      route: q('route').textContent,
      panels: panels.map((p) => ({ id: p.dataset.testid, state: p.dataset.state, answer: p.querySelector('.answer').textContent, text: p.textContent })),
      vote: {
        hidden: q('vote').hidden,
        state: q('vote').dataset.state,
        answer: q('vote').dataset.answer,
        bars: [...q('vote').querySelectorAll('.bars li')].map((li) => ({
          key: li.querySelector('.key')?.textContent,
          count: li.querySelector('.count')?.textContent,
          winner: li.classList.contains('winner'),
        })),
        verdict: q('vote').querySelector('.verdict').textContent,
      },
      stats: q('stats').hidden ? null : q('stats').textContent,
    };
  });
  assert.equal(shown.error, null);
  // The page disables Run while a request runs and gives it back after.
  assert.equal(await page.isDisabled(testid('run')), false);
  return shown;
}

function assertReasoned(shown, n) {
  assert.equal(shown.mode, 'reason', shown.route);
  assert.match(shown.route, /p\(reason\) = [01]\.\d\d/);
  assert.deepEqual(shown.panels.map((p) => p.id), Array.from({ length: n }, (_, i) => `candidate-${i}`));
  for (const p of shown.panels) assert.ok(['done', 'stopped'].includes(p.state), JSON.stringify(p));
  assert.equal(shown.vote.hidden, false);
  assert.equal(shown.vote.state, 'done');
  // One bar per answer with its count; the winner's bar marked and named below.
  const votes = shown.vote.bars.reduce((sum, b) => sum + Number(b.count), 0);
  assert.ok(votes <= n, JSON.stringify(shown.vote));
  if (shown.vote.answer !== '') {
    assert.ok(votes >= 1, JSON.stringify(shown.vote));
    assert.deepEqual(shown.vote.bars.filter((b) => b.winner).map((b) => b.key), [shown.vote.answer], JSON.stringify(shown.vote));
    assert.ok(shown.vote.verdict.startsWith(`Answer: ${shown.vote.answer}`), shown.vote.verdict);
  }
  assert.match(shown.stats, /Time to first token/);
  assert.match(shown.stats, /KV memory/);
}

/**
 * What a person does on the page, start to end: load (the progress bar reaching 100%),
 * a multi-step question routed to reasoning with 2 candidates and a vote, a greeting
 * routed to chat, a reload served from storage, the app installable, an offline reload
 * through the service worker and a request while offline, and delete. `between` runs
 * after the reasoned answer (layout checks). With `reasonOnly` the visit stops after
 * the reasoned answer: SwiftShader takes minutes a load, so the WebGPU visit leaves
 * the backend-independent rest (chat routing, storage, offline) to the CPU visit.
 */
async function wholeVisit(flags, viewport, { backend, status, screenshot, between, reasonOnly, query = '', budget = 6, answerTokens = 4 }) {
  const browser = await launch(flags);
  try {
    const { page, context } = browser;
    await page.setViewportSize(viewport);
    const errors = [];
    const progress = [];
    await page.exposeFunction('noteProgress', (v) => progress.push(v));
    await page.addInitScript(() => {
      document.addEventListener('DOMContentLoaded', () => {
        const bar = document.querySelector('[data-testid="progress"]');
        new MutationObserver(() => window.noteProgress(bar.value)).observe(bar, { attributes: true });
      });
    });
    faults.resetCounts();
    await openAndLoad(page, errors, query, answerTokens);
    assert.equal(await page.textContent(testid('backend')), backend);
    const why = await page.getAttribute(testid('backend'), 'title');
    assert.ok(why.length > 0, 'the badge says why this backend');
    // In a browser user's words: no command-line flags (the CLI's `--backend cpu`).
    assert.doesNotMatch(why, /--|`/, why);
    const mb = `${(fs.statSync(modelPath).size / 1e6).toFixed(1)} MB`;
    assert.match(await page.textContent(testid('status')), new RegExp(`^Ready on ${status} in [\\d.]+ s \\(downloaded ${mb}\\)$`));
    assert.equal(await page.getAttribute(testid('progress'), 'data-state'), 'done');
    assert.equal(Math.max(...progress), 1, 'the progress bar reaches 100%');
    assert.ok(progress.some((v) => v > 0 && v < 1), `progress went through values between: ${progress.slice(0, 5)}`);
    assert.ok((await page.textContent(testid('storage'))).includes(`${MODEL_NAME} (${mb})`));

    const reasoned = await ask(page, QUESTION, { n: 2, budget });
    assertReasoned(reasoned, 2);
    await page.screenshot({ path: path.join(ARTIFACTS, screenshot), fullPage: true });
    await between?.(page);
    assert.deepEqual(errors, []);
    if (reasonOnly) return;
    const chat = await ask(page, GREETING, { n: 2 });
    assert.equal(chat.mode, 'chat', chat.route);
    assert.deepEqual(chat.panels.map((p) => p.id), ['candidate-0']);
    assert.equal(chat.vote.hidden, true, 'one answer: no vote');

    // Reload: the model comes from storage, nothing is downloaded again.
    const fetched = faults.count(MODEL_URL).bytes;
    await page.reload({ waitUntil: 'load' });
    await page.click(testid('load'));
    await waitLoaded(page);
    assert.match(await page.textContent(testid('status')), /\(from storage\)$/);
    assert.equal(faults.count(MODEL_URL).bytes, fetched, 'no model bytes after the reload');

    // Offline: the service worker serves the page, the wasm and the heads; the model
    // comes from OPFS.
    await page.waitForSelector(`${testid('offline')}[data-state="ready"]`, { timeout: 60_000 });
    // Installable: Chromium parses the manifest cleanly and finds nothing missing
    // (without a manifest, icons or a start URL it lists what is).
    const cdp = await context.newCDPSession(page);
    assert.deepEqual((await cdp.send('Page.getAppManifest')).errors, []);
    assert.deepEqual((await cdp.send('Page.getInstallabilityErrors')).installabilityErrors, []);
    await context.setOffline(true);
    serverDown = true;
    await page.reload({ waitUntil: 'load' });
    await page.click(testid('load'));
    await waitLoaded(page);
    await page.waitForSelector(`${testid('heads')}[data-state]`, { timeout: LONG });
    assert.equal(await page.getAttribute(testid('heads'), 'data-state'), 'ready', await page.textContent(testid('heads')));
    const offline = await ask(page, GREETING, { n: 1 });
    assert.equal(offline.mode, 'chat', offline.route);
    assert.ok(offline.panels[0].text.length > 0);
    await context.setOffline(false);
    serverDown = false;

    await page.click(testid('forget'));
    await page.waitForSelector(`${testid('status')}[data-state="deleted"]`);
    assert.doesNotMatch(await page.textContent(testid('storage')), /SmolLM2/);
    assert.deepEqual(errors, []);
  } finally {
    serverDown = false;
    await browser.close();
  }
}

/** At 360 px: nothing wider than the phone, the panels stacked, the form in Tab order. */
async function phoneLayout(page) {
  const layout = await page.evaluate(() => {
    const [a, b] = ['candidate-0', 'candidate-1'].map((id) => document.querySelector(`[data-testid="${id}"]`).getBoundingClientRect());
    return { scrollWidth: document.documentElement.scrollWidth, stacked: b.top >= a.bottom, width: a.width };
  });
  assert.ok(layout.scrollWidth <= 360, `page is ${layout.scrollWidth} px wide`);
  assert.ok(layout.stacked, JSON.stringify(layout));
  await page.focus(testid('prompt'));
  const order = [];
  for (let i = 0; i < 4; i++) {
    await page.keyboard.press('Tab');
    order.push(await page.evaluate(() => document.activeElement?.dataset.testid ?? document.activeElement?.tagName));
  }
  // (Stop is disabled between requests, so Tab passes it.)
  assert.deepEqual(order, ['mode', 'n', 'budget', 'run'], `focus order ${order}`);
}

/** At 1280 px: the two candidates side by side. */
async function desktopLayout(page) {
  const [a, b] = await page.evaluate(() =>
    ['candidate-0', 'candidate-1'].map((id) => {
      const r = document.querySelector(`[data-testid="${id}"]`).getBoundingClientRect();
      return { top: r.top, left: r.left, right: r.right };
    }),
  );
  assert.ok(b.left >= a.right && Math.abs(a.top - b.top) < 1, `side by side: ${JSON.stringify([a, b])}`);
}

describe('the demo page', { timeout: 1_800_000 }, () => {
  test('WebGPU, desktop: load to 100%, reason with 2 candidates side by side and a vote', async (t) => {
    if (!fs.existsSync(modelPath)) return t.skip('no default model (./build.sh model)');
    await wholeVisit([...BASE_FLAGS, ...WEBGPU_FLAGS], { width: 1280, height: 900 }, {
      backend: 'WebGPU',
      status: 'WebGPU',
      screenshot: 'demo-desktop-webgpu.png',
      between: desktopLayout,
      reasonOnly: true,
      // SwiftShader, Chrome's software WebGPU, is taken only when asked for; a
      // thinking token and an answer token each, since every step takes seconds there
      // (the CPU visit reasons and answers longer).
      query: '&backend=webgpu',
      budget: 1,
      answerTokens: 1,
    });
  });

  test('CPU fallback, phone (360 x 740): the same, then chat for a greeting, reload from storage, offline reload and ask, delete; panels stacked, keyboard order', async (t) => {
    if (!fs.existsSync(modelPath)) return t.skip('no default model (./build.sh model)');
    await wholeVisit(BASE_FLAGS, { width: 360, height: 740 }, {
      backend: 'CPU fallback',
      status: 'the CPU',
      screenshot: 'demo-phone-cpu.png',
      between: phoneLayout,
    });
  });
});
