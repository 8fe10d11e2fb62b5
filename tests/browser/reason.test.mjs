// Browser tests of the reasoning runtime through the engine's Web Worker (createEngine
// from pkg/index.js) on the default model: a LoRA adapter and a switcher made here
// (seeded random weights in PEFT's safetensors layout, served from a fixtures
// directory), requests on WebGPU (SwiftShader) and on the CPU backend with the same
// events, candidates and vote, OpenAI-style chat completions whole and streamed, and
// clear errors for bad input.

import { test, before, after, describe } from 'node:test';
import assert from 'node:assert/strict';
import fs from 'node:fs';
import os from 'node:os';
import path from 'node:path';
import { fileURLToPath } from 'node:url';
import { BASE_FLAGS, WEBGPU_FLAGS, launch } from './chromium.mjs';
import { start, defaultMounts } from '../../www/serve.mjs';

const here = path.dirname(fileURLToPath(import.meta.url));
const root = path.resolve(here, '../..');
const MODEL_NAME = 'SmolLM2-135M-Instruct.Q4_1.gguf';
const MODEL_URL = `/models/${MODEL_NAME}`;
const modelPath = path.join(root, 'models', MODEL_NAME);
// SmolLM2-135M: 30 blocks, width 576, 3 KV heads of 64, feed-forward 1536.
const SMOL = { layers: 30, d: 576, kv: 192, ff: 1536 };

/** Seeded uniform values in [-scale, scale). */
function random(n, seed, scale) {
  let s = BigInt(seed) * 0x9e3779b97f4a7c15n + 1n;
  const out = new Float32Array(n);
  for (let i = 0; i < n; i++) {
    s = (s * 6364136223846793005n + 1442695040888963407n) & 0xffffffffffffffffn;
    out[i] = (Number(s >> 40n) / 2 ** 24 - 0.5) * 2 * scale;
  }
  return out;
}

/** The safetensors bytes of `tensors` ([name, shape, Float32Array]), all F32. */
function safetensors(tensors) {
  const header = {};
  let offset = 0;
  for (const [name, shape, data] of tensors) {
    header[name] = { dtype: 'F32', shape, data_offsets: [offset, offset + data.byteLength] };
    offset += data.byteLength;
  }
  let json = JSON.stringify(header);
  json += ' '.repeat((8 - (json.length % 8)) % 8);
  const out = Buffer.alloc(8 + json.length + offset);
  out.writeBigUInt64LE(BigInt(json.length), 0);
  out.write(json, 8, 'latin1');
  let at = 8 + json.length;
  for (const [, , data] of tensors) {
    Buffer.from(data.buffer, data.byteOffset, data.byteLength).copy(out, at);
    at += data.byteLength;
  }
  return out;
}

/** A random rank-`r` PEFT adapter on every linear layer of `layers` blocks. */
function peftAdapter(r, layers, seed) {
  const shapes = {
    'self_attn.q_proj': [SMOL.d, SMOL.d],
    'self_attn.k_proj': [SMOL.kv, SMOL.d],
    'self_attn.v_proj': [SMOL.kv, SMOL.d],
    'self_attn.o_proj': [SMOL.d, SMOL.d],
    'mlp.gate_proj': [SMOL.ff, SMOL.d],
    'mlp.up_proj': [SMOL.ff, SMOL.d],
    'mlp.down_proj': [SMOL.d, SMOL.ff],
  };
  const tensors = [];
  let k = seed;
  for (let i = 0; i < layers; i++) {
    for (const [m, [out, inp]] of Object.entries(shapes)) {
      const base = `base_model.model.model.layers.${i}.${m}`;
      tensors.push([`${base}.lora_A.weight`, [r, inp], random(r * inp, k++, 1 / Math.sqrt(inp))]);
      tensors.push([`${base}.lora_B.weight`, [out, r], random(out * r, k++, 0.02)]);
    }
  }
  const config = {
    peft_type: 'LORA',
    r,
    lora_alpha: 2 * r,
    target_modules: ['q_proj', 'k_proj', 'v_proj', 'o_proj', 'gate_proj', 'up_proj', 'down_proj'],
  };
  return { config: JSON.stringify(config), weights: safetensors(tensors) };
}

let server;
let fixtureDir;
const HINT = { template: 'Think for at most {budget} tokens.', buckets: [32, 64] };

before(async () => {
  fixtureDir = fs.mkdtempSync(path.join(os.tmpdir(), 'edge-reason-reason-'));
  const adapter = peftAdapter(4, SMOL.layers, 11);
  fs.mkdirSync(path.join(fixtureDir, 'adapter'));
  fs.writeFileSync(path.join(fixtureDir, 'adapter', 'adapter_config.json'), adapter.config);
  fs.writeFileSync(path.join(fixtureDir, 'adapter', 'adapter_model.safetensors'), adapter.weights);
  // The same adapter as trained with its budget stated in the prompt.
  fs.cpSync(path.join(fixtureDir, 'adapter'), path.join(fixtureDir, 'hinted'), { recursive: true });
  fs.writeFileSync(path.join(fixtureDir, 'hinted', 'budget_hint.json'), JSON.stringify(HINT));
  const h = 8;
  fs.mkdirSync(path.join(fixtureDir, 'switcher'));
  fs.writeFileSync(
    path.join(fixtureDir, 'switcher', 'switcher.json'),
    JSON.stringify({ hidden: h, threshold: 0.5, pooling: 'mean', ema_alpha: 0.5, chunk: 16 }),
  );
  fs.writeFileSync(
    path.join(fixtureDir, 'switcher', 'switcher.safetensors'),
    safetensors([
      ['w1', [h, SMOL.d], random(h * SMOL.d, 3, 0.2)],
      ['b1', [h], random(h, 4, 0.1)],
      ['w2', [1, h], random(h, 5, 1)],
      ['b2', [1], random(1, 6, 0.1)],
    ]),
  );
  server = await start({
    port: 0,
    host: '127.0.0.1',
    mounts: [{ prefix: '/fixtures/', dir: fixtureDir }, ...defaultMounts(root)],
  });
});

after(async () => {
  await server?.close();
  if (fixtureDir) fs.rmSync(fixtureDir, { recursive: true, force: true });
});

/** Runs `engine.<method>(...args)` in the page for the engine named `which`;
 *  resolves to {ok, value} or {ok: false, code, message}. */
function call(page, which, method, ...args) {
  return page.evaluate(
    async ({ which, method, args }) => {
      try {
        return { ok: true, value: await window.engines[which][method](...args) };
      } catch (e) {
        return { ok: false, code: e.code, message: e.message };
      }
    },
    { which, method, args },
  );
}

const PROMPT = 'Tom has 12 apples and buys 30 more. How many apples does he have?';
// Small, since one WebGPU pass takes seconds on SwiftShader (a CPU emulating a GPU).
const REQUEST = {
  prompt: PROMPT,
  options: { mode: 'reason', n: 2, budget: { think: 2, answer: 2 }, temperature: 0.8, top_k: 40, seed: 5, early_stop: false },
};

describe('the reasoning runtime in the browser', { timeout: 900_000 }, () => {
  let browser;
  let page;

  before(async () => {
    if (!fs.existsSync(modelPath)) return;
    browser = await launch([...BASE_FLAGS, ...WEBGPU_FLAGS]);
    page = browser.page;
    await page.goto(server.url, { waitUntil: 'load' });
    const loaded = await page.evaluate(async (url) => {
      const m = await import('/pkg/index.js');
      window.engines = { gpu: await m.createEngine(), cpu: await m.createEngine() };
      const gpu = await window.engines.gpu.load({ url, backend: 'webgpu', kv_cache: 'f32' });
      const cpu = await window.engines.cpu.load({ url, backend: 'cpu' });
      return { gpu: gpu.backend.backend, cpu: cpu.backend.backend };
    }, MODEL_URL);
    assert.deepEqual(loaded, { gpu: 'webgpu', cpu: 'cpu' });
  });
  after(async () => {
    await browser?.close();
  });

  test('WebGPU and the CPU: the same events, the switcher probability, and KV bytes', async (t) => {
    if (!page) return t.skip('no default model (./build.sh model)');
    for (const which of ['gpu', 'cpu']) {
      const a = await call(page, which, 'loadAdapter', { url: '/fixtures/adapter/' });
      assert.ok(a.ok, JSON.stringify(a));
      assert.equal(a.value.rank, 4);
      assert.equal(a.value.targets.length, 7);
      const s = await call(page, which, 'loadSwitcher', { url: '/fixtures/switcher' });
      assert.ok(s.ok, JSON.stringify(s));
    }
    const run = (which) =>
      page.evaluate(
        async ({ which, request }) => {
          const seen = [];
          const r = await window.engines[which].reason(request, { onEvent: (e) => seen.push(e.type) });
          return { ...r, seen };
        },
        { which, request: REQUEST },
      );
    const t0 = Date.now();
    const gpu = await run('gpu');
    const gpuMs = Date.now() - t0;
    const t1 = Date.now();
    const cpu = await run('cpu');
    const cpuMs = Date.now() - t1;
    // The prefix and forced suffix, in tokens, to count each candidate's own positions.
    const [prefix, forced] = await page.evaluate(async () => [
      (await window.engines.cpu.tokenize('<think>\n', { special: true })).length,
      (await window.engines.cpu.tokenize('\n</think>\n\nFinal answer:', { special: true })).length,
    ]);
    for (const [name, r] of [['WebGPU', gpu], ['CPU', cpu]]) {
      const types = r.events.map((e) => e.type);
      assert.deepEqual(r.seen, types, `${name}: onEvent saw every event as it came`);
      // The prompt's progress in the switcher's chunks, then the route.
      const parts = types.findIndex((type) => type !== 'prefill');
      const progress = r.events.slice(0, parts);
      assert.equal(types[parts], 'route', name);
      assert.ok(parts > 1, `${name}: ${parts} prefill events`);
      assert.deepEqual(progress.at(-1), { type: 'prefill', tokens: r.stats.promptTokens, total: r.stats.promptTokens }, name);
      assert.ok(progress.every((e, i) => i === 0 || e.tokens > progress[i - 1].tokens), name);
      assert.deepEqual(types.slice(-2), ['vote', 'done'], name);
      assert.equal(r.route.mode, 'reason', name);
      assert.equal(r.candidates.length, 2, name);
      assert.equal(r.vote.weights.length, 2, name);
      for (const c of r.candidates) {
        assert.ok(c.thinking.startsWith('<think>'), `${name}: ${JSON.stringify(c)}`);
        assert.ok(['eos', 'budget'].includes(c.done.reason), `${name}: ${JSON.stringify(c.done)}`);
      }
      // The prompt's keys and values once, then each candidate's own (f32, 30 layers x 2 x 192):
      // the think prefix, its sampled tokens but the last (picked, never fed), and the
      // forced suffix when its thinking was closed by force.
      const perPosition = SMOL.layers * 2 * SMOL.kv * 4;
      const own = r.candidates.map((c) => {
        const wasForced = c.text.startsWith('\n</think>\n\nFinal answer:');
        return prefix + c.done.tokens - 1 + (wasForced ? forced : 0);
      });
      const positions = r.stats.promptTokens + own.reduce((a, b) => a + b, 0);
      assert.equal(r.stats.kvBytes, positions * perPosition, `${name}: KV bytes`);
    }
    assert.deepEqual(gpu.events.filter((e) => e.type === 'prefill'), cpu.events.filter((e) => e.type === 'prefill'));
    // The switcher reads the same features on both backends, up to the CPU's 8-bit
    // activations in its matmuls (llama.cpp's Q4_1 x Q8_1 dot products).
    assert.ok(gpu.route.pReason > 0 && gpu.route.pReason < 1, JSON.stringify(gpu.route));
    assert.ok(Math.abs(gpu.route.pReason - cpu.route.pReason) < 0.02, `pReason ${gpu.route.pReason} vs ${cpu.route.pReason}`);
    t.diagnostic(`pReason WebGPU ${gpu.route.pReason.toFixed(4)} CPU ${cpu.route.pReason.toFixed(4)}; request WebGPU ${gpuMs} ms, CPU ${cpuMs} ms`);
  });

  test('chat.completions.create: choices per candidate, the vote, and the same text streamed', async (t) => {
    if (!page) return t.skip('no default model (./build.sh model)');
    const params = {
      messages: [{ role: 'user', content: PROMPT }],
      n: 3,
      temperature: 0.7,
      seed: 9,
      reasoning: { mode: 'reason', budget: 12, answer_tokens: 8 },
    };
    // On the CPU backend (the same runtime as WebGPU, checked above, and fast here).
    const out = await page.evaluate(async (params) => {
      const e = window.engines.cpu;
      const whole = await e.chat.completions.create(params);
      const chunks = [];
      for await (const c of await e.chat.completions.create({ ...params, stream: true })) chunks.push(c);
      return { whole, chunks };
    }, params);
    const { whole, chunks } = out;
    assert.equal(whole.object, 'chat.completion');
    assert.equal(whole.model, MODEL_NAME);
    assert.equal(whole.choices.length, 3);
    assert.equal(whole.route.mode, 'reason');
    assert.ok(whole.route.pReason > 0 && whole.route.pReason < 1, 'the switcher probability, reported in every mode');
    for (const c of whole.choices) {
      assert.equal(c.message.role, 'assistant');
      assert.ok(c.message.reasoning_content !== null);
      assert.ok(['stop', 'length', 'early_consensus'].includes(c.finish_reason), c.finish_reason);
    }
    assert.equal(whole.usage.total_tokens, whole.usage.prompt_tokens + whole.usage.completion_tokens);
    assert.ok(whole.usage.prompt_tokens > 10);
    assert.ok(whole.vote && Array.isArray(whole.vote.tally));
    // Streamed: the same seed gives the same text, chunk by chunk.
    assert.ok(chunks.every((c) => c.object === 'chat.completion.chunk'));
    for (const choice of whole.choices) {
      const deltas = chunks.flatMap((c) => c.choices).filter((c) => c.index === choice.index);
      const content = deltas.map((d) => d.delta.content ?? '').join('');
      assert.equal(content.replace(/^\s*<\/think>\s*/, '').trim(), choice.message.content);
      assert.equal(deltas.at(-1).finish_reason, choice.finish_reason);
    }
    assert.deepEqual(chunks.at(-1).usage, whole.usage);
    assert.deepEqual(chunks.at(-1).vote, whole.vote);
  });

  test('an aborted request stops between decode steps and the engine stays usable', async (t) => {
    if (!page) return t.skip('no default model (./build.sh model)');
    const request = {
      prompt: PROMPT,
      options: { mode: 'reason', n: 4, budget: { think: 48, answer: 8 }, temperature: 0.8, seed: 3, early_stop: false },
    };
    const out = await page.evaluate(async (request) => {
      const e = window.engines.cpu;
      const count = (events) => events.filter((x) => x.type === 'token').length;
      const full = count((await e.reason(request)).events);
      // Abort once the fifth token arrives.
      const controller = new AbortController();
      const seen = [];
      let code = null;
      try {
        await e.reason(request, {
          signal: controller.signal,
          onEvent: (x) => {
            seen.push(x.type);
            if (seen.filter((s) => s === 'token').length === 5) controller.abort();
          },
        });
      } catch (err) {
        code = err.code;
      }
      // A stream left after three chunks stops its request too.
      let chunks = 0;
      const stream = await e.chat.completions.create({ messages: [{ role: 'user', content: request.prompt }], n: 4, stream: true, seed: 3, reasoning: { mode: 'reason', budget: 48 } });
      for await (const c of stream) if (++chunks === 3) break;
      // The worker is free again: the next request runs to its end.
      const after = await e.reason({ ...request, options: { ...request.options, n: 1, budget: { think: 2, answer: 2 } } });
      return { full, code, aborted: count(seen.map((type) => ({ type }))), types: seen, chunks, afterTypes: after.events.map((x) => x.type) };
    }, request);
    assert.equal(out.code, 'ABORTED', JSON.stringify(out));
    assert.ok(out.full > 40, `the full request decodes enough to stop midway: ${out.full} tokens`);
    assert.ok(out.aborted >= 5 && out.aborted < out.full / 2, `stopped midway: ${out.aborted} of ${out.full} tokens`);
    assert.ok(!out.types.includes('vote') && !out.types.includes('done'), JSON.stringify(out.types));
    assert.equal(out.chunks, 3);
    assert.deepEqual(out.afterTypes.slice(-2), ['vote', 'done']);
    t.diagnostic(`aborted after ${out.aborted} of ${out.full} tokens`);
  });

  test("an adapter's budget_hint.json states the budget unless the request says otherwise", async (t) => {
    if (!page) return t.skip('no default model (./build.sh model)');
    const loaded = await call(page, 'cpu', 'loadAdapter', { name: 'hinted', url: '/fixtures/hinted/' });
    assert.ok(loaded.ok, JSON.stringify(loaded));
    assert.deepEqual(loaded.value.budget_hint, HINT);
    const plain = await call(page, 'cpu', 'loadAdapter', { name: 'plain', url: '/fixtures/adapter/' });
    assert.equal(plain.value.budget_hint, null, 'no budget_hint.json: no hint');
    const promptTokens = async (extra) => {
      const r = await call(page, 'cpu', 'reason', {
        prompt: PROMPT,
        ...extra,
        options: { mode: 'reason', n: 1, budget: { think: 40, answer: 1 }, temperature: 0, early_stop: false },
      });
      assert.ok(r.ok, JSON.stringify(r));
      return r.value.stats.promptTokens;
    };
    const tokens = (text) =>
      page.evaluate(async (text) => (await window.engines.cpu.tokenize(text, { special: true })).length, text);
    const bare = await promptTokens({ adapter: 'plain' });
    const withHint = await promptTokens({ adapter: 'hinted' });
    // 40 thinking tokens: the 64 bucket is stated.
    assert.equal(withHint - bare, (await tokens(`${PROMPT}\n\nThink for at most 64 tokens.`)) - (await tokens(PROMPT)));
    assert.equal(await promptTokens({ adapter: 'hinted', budget_hint: null }), bare, 'null states none');
    const own = await promptTokens({ adapter: 'hinted', budget_hint: { template: '({budget})' } });
    assert.ok(own > bare && own < withHint, `the request's own hint wins: ${bare} < ${own} < ${withHint}`);
    // Given beside a directory without budget_hint.json; checked before the adapter loads.
    const bad = await call(page, 'cpu', 'loadAdapter', {
      name: 'badhint', url: '/fixtures/adapter/', budgetHint: { template: 'Think briefly.' },
    });
    assert.equal(bad.code, 'INVALID_ADAPTER', JSON.stringify(bad));
    assert.match(bad.message, /\{budget\}/);
    assert.equal((await call(page, 'cpu', 'unloadAdapter', 'badhint')).value, false, 'a bad hint loads nothing');
    for (const name of ['hinted', 'plain']) assert.equal((await call(page, 'cpu', 'unloadAdapter', name)).value, true);
  });

  test('bad input is a clear error', async (t) => {
    if (!page) return t.skip('no default model (./build.sh model)');
    const missing = await call(page, 'cpu', 'loadAdapter', { name: 'x', url: '/fixtures/nowhere/' });
    assert.equal(missing.code, 'NOT_FOUND', JSON.stringify(missing));
    // An adapter made for a 1-block model.
    const wrong = await page.evaluate(async () => {
      const cfg = JSON.stringify({ peft_type: 'LORA', r: 2, lora_alpha: 4, target_modules: ['q_proj'] });
      const header = JSON.stringify({
        'base_model.model.model.layers.0.self_attn.q_proj.lora_A.weight': { dtype: 'F32', shape: [2, 100], data_offsets: [0, 800] },
        'base_model.model.model.layers.0.self_attn.q_proj.lora_B.weight': { dtype: 'F32', shape: [100, 2], data_offsets: [800, 1600] },
      });
      const bytes = new Uint8Array(8 + header.length + 1600);
      new DataView(bytes.buffer).setBigUint64(0, BigInt(header.length), true);
      bytes.set(new TextEncoder().encode(header), 8);
      try {
        await window.engines.cpu.loadAdapter({ name: 'wrong', config: cfg, weights: bytes });
        return { ok: true };
      } catch (e) {
        return { code: e.code, message: e.message };
      }
    });
    assert.equal(wrong.code, 'INVALID_ADAPTER', JSON.stringify(wrong));
    const badVerifier = await page.evaluate(async () => {
      const header = JSON.stringify({
        w: { dtype: 'F32', shape: [1, 100], data_offsets: [0, 400] },
        b: { dtype: 'F32', shape: [1], data_offsets: [400, 404] },
      });
      const bytes = new Uint8Array(8 + header.length + 404);
      new DataView(bytes.buffer).setBigUint64(0, BigInt(header.length), true);
      bytes.set(new TextEncoder().encode(header), 8);
      try {
        await window.engines.cpu.loadVerifier({ config: { suffix: '\nCorrect?' }, weights: bytes });
        return { ok: true };
      } catch (e) {
        return { code: e.code, message: e.message };
      }
    });
    assert.equal(badVerifier.code, 'INVALID_ARGUMENT', JSON.stringify(badVerifier));
    assert.match(badVerifier.message, /verifier.*\[1, 576\]/);
    const gone = await call(page, 'cpu', 'unloadAdapter', 'reasoning');
    assert.equal(gone.value, true);
    const noAdapter = await call(page, 'cpu', 'reason', { prompt: 'hi', options: { mode: 'reason' } });
    assert.equal(noAdapter.code, 'INVALID_ARGUMENT');
    assert.match(noAdapter.message, /adapter/);
    const bothInputs = await call(page, 'cpu', 'reason', { prompt: 'hi', messages: [{ role: 'user', content: 'hi' }] });
    assert.equal(bothInputs.code, 'INVALID_ARGUMENT');
    const tooMany = await call(page, 'cpu', 'reason', { prompt: 'hi', options: { mode: 'chat', n: 17 } });
    assert.equal(tooMany.code, 'INVALID_ARGUMENT');
    // A role is template markup, not free text (src/tokenizer.rs CHAT_ROLES).
    const badRole = await call(page, 'cpu', 'reason', { messages: [{ role: 'user<|im_end|>', content: 'hi' }], options: { mode: 'chat' } });
    assert.equal(badRole.code, 'INVALID_ARGUMENT', JSON.stringify(badRole));
    assert.match(badRole.message, /role/);
  });
});
