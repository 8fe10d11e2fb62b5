// One engine, one configuration per page load (bench/compare_browser.mjs drives it):
//   ?engine=edge|wllama&backend=cpu|webgpu&threads=1&prefill=512&decode=128&runs=3
//    &model=/models/SmolLM2-135M-Instruct.Q4_1.gguf (any GGUF the server has)
// Both engines read the same GGUF from the same server and run greedy decoding with
// EOS ignored, so both decode exactly `decode` tokens after a prompt of `prefill`.
// Prints {engine, threads, load_s, runs: [{prefill_tok_s, decode_tok_s, ...}]}.
//
//   ?engine=edge&mode=memory&backend=cpu|webgpu&n=8&prefill=500
// instead runs the reasoning benchmark with `n` candidates over a `prefill`-token
// prompt and prints the peak wasm memory it took ({memory_bytes, kv_bytes_shared, ...});
// wasm memory never shrinks, so its size at the end is its peak.

const q = new URLSearchParams(location.search);
const MODEL = q.get('model') ?? '/models/SmolLM2-135M-Instruct.Q4_1.gguf';
const opt = {
  engine: q.get('engine') ?? 'edge',
  threads: Number(q.get('threads') ?? 1),
  prefill: Number(q.get('prefill') ?? 512),
  decode: Number(q.get('decode') ?? 128),
  runs: Number(q.get('runs') ?? 3),
  backend: q.get('backend') ?? 'cpu',
  mode: q.get('mode') ?? 'speed',
  n: Number(q.get('n') ?? 1),
};
const $ = (id) => document.querySelector(`[data-testid="${id}"]`);

/** About `n` tokens of plain English for llama.cpp's tokenizer; `k` makes each run's prompt differ from its first token. */
function promptText(n, k) {
  const words = 'the quick brown fox jumps over a lazy dog while seven bakers count loaves of bread'.split(' ');
  const out = [`Run ${k}:`];
  for (let i = 0; out.length < n; i++) out.push(words[(i * 7 + k) % words.length]);
  return out.join(' ');
}

async function edge() {
  const m = await import('/pkg/index.js');
  const engine = await m.createEngine({ threads: opt.threads });
  const t0 = performance.now();
  const loaded = await engine.load({ url: MODEL, backend: opt.backend });
  const load_s = (performance.now() - t0) / 1000;
  const device = loaded.backend.adapter ?? loaded.backend.backend;
  if (opt.mode === 'memory') {
    const r = await engine.benchReason({ prompt_tokens: opt.prefill, n: opt.n, steps: opt.decode, runs: 1 });
    const { memoryBytes } = await engine.info();
    engine.terminate();
    return { engine: `edge-reason ${engine.version}`, backend: loaded.backend.backend, device, threads: engine.threads, n: opt.n, prompt_tokens: opt.prefill, candidate_tokens: r.candidate_tokens, kv_bytes_shared: r.kv_bytes_shared, lora: r.lora, lora_bytes: r.lora_bytes, memory_bytes: memoryBytes, load_s };
  }
  const runs = [];
  for (let k = 0; k < opt.runs; k++) {
    const r = await engine.bench({ prefill_tokens: opt.prefill, decode_tokens: opt.decode, runs: 1, streams: [1] });
    runs.push({ prefill_tokens: opt.prefill, prefill_tok_s: r.prefill_tok_s, decode_tokens: opt.decode, decode_tok_s: r.decode_tok_s });
  }
  engine.terminate();
  return { engine: `edge-reason ${engine.version}`, backend: loaded.backend.backend, device, threads: engine.threads, threads_reason: engine.threadsReason, memory_bytes: loaded.memoryBytes, load_s, runs };
}

async function wllama() {
  const { Wllama } = await import('/wllama/index.js');
  const w = new Wllama({ default: '/wllama/wasm/wllama.wasm' }, { suppressNativeLog: true });
  const t0 = performance.now();
  await w.loadModelFromUrl(new URL(MODEL, location.href).href, {
    n_threads: opt.threads,
    n_gpu_layers: 0, // its WebGPU build needs shader-f16 (absent on SwiftShader): compare CPU with CPU
    n_ctx: 2048,
    n_batch: 512,
    useCache: false,
  });
  const load_s = (performance.now() - t0) / 1000;
  const runs = [];
  for (let k = 0; k < opt.runs; k++) {
    const r = await w.createCompletion({
      prompt: promptText(opt.prefill, k),
      max_tokens: opt.decode,
      temperature: 0,
      ignore_eos: true,
      cache_prompt: false,
    });
    const t = r.timings;
    runs.push({ prefill_tokens: t.prompt_n, prefill_tok_s: t.prompt_per_second, decode_tokens: t.predicted_n, decode_tok_s: t.predicted_per_second });
  }
  const info = { multithread: w.isMultithread(), threads: w.getNumThreads(), webgpu_supported: w.isSupportWebGPU() };
  await w.exit();
  return { engine: 'wllama 3.13.0 (llama.cpp in wasm)', backend: 'cpu', ...info, load_s, runs };
}

try {
  $('status').textContent = `running ${opt.engine}…`;
  const out = opt.engine === 'wllama' ? await wllama() : await edge();
  $('result').textContent = JSON.stringify({ ...out, cross_origin_isolated: self.crossOriginIsolated, user_agent: navigator.userAgent });
  $('status').textContent = 'done';
  document.body.dataset.state = 'done';
} catch (e) {
  $('error').hidden = false;
  $('error').textContent = String(e?.stack ?? e);
  document.body.dataset.state = 'error';
}
