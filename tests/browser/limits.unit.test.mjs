// Unit tests (Node, no browser) for what the engine reads from servers and manifests:
// the byte limits on a head's files (js/engine-worker.js readBytes), and a seeded
// mutation fuzzer over model manifests (js/download.js validateManifest): every input
// gives a checked manifest or a coded error, never a crash or an unchecked value.

import { test } from 'node:test';
import assert from 'node:assert/strict';
import { MAX_BYTES, readBytes, readText } from '../../js/engine-worker.js';
import { MAX_CHUNK_BYTES, MAX_MODEL_BYTES, MIN_CHUNK_BYTES, validateManifest } from '../../js/download.js';

/** A response whose body is `n` bytes of 'a' in pieces of 64 KiB, declared or not. */
function response(n, { declare = true } = {}) {
  let sent = 0;
  const body = new ReadableStream({
    pull(controller) {
      const piece = Math.min(64 << 10, n - sent);
      if (piece <= 0) return controller.close();
      sent += piece;
      controller.enqueue(new Uint8Array(piece).fill(97));
    },
  });
  const headers = declare ? { 'Content-Length': String(n) } : {};
  return { res: new Response(body, { headers }), sent: () => sent };
}

test('a head file is read up to its limit, whether the server declares its size or not', async () => {
  assert.deepEqual(MAX_BYTES, { config: 1 << 20, adapter: 512 << 20, head: 16 << 20 });
  const ok = response(100_000);
  assert.equal((await readBytes(ok.res, 100_000)).length, 100_000);
  assert.equal(await readText(response(3).res, 3), 'aaa');

  // Declared too large: refused before the body is read.
  const declared = response(5 << 20);
  await assert.rejects(readBytes(declared.res, 1 << 20), (e) => e.code === 'INVALID_ARGUMENT' && /larger than 1048576 bytes/.test(e.message));
  assert.equal(declared.sent(), 0);

  // Undeclared (a stream with no end in sight): reading stops past the limit.
  const endless = response(1 << 30, { declare: false });
  await assert.rejects(readBytes(endless.res, 1 << 20), (e) => e.code === 'INVALID_ARGUMENT');
  assert.ok(endless.sent() <= (1 << 20) + (256 << 10), `${endless.sent()} bytes read`);
});

/** A seeded splitmix64 stream in BigInt: numbers in 0..n. */
function rng(seed) {
  let s = BigInt(seed);
  const M = (1n << 64n) - 1n;
  return (n) => {
    s = (s + 0x9e3779b97f4a7c15n) & M;
    let z = s;
    z = ((z ^ (z >> 30n)) * 0xbf58476d1ce4e5b9n) & M;
    z = ((z ^ (z >> 27n)) * 0x94d049bb133111ebn) & M;
    return Number((z ^ (z >> 31n)) % BigInt(n));
  };
}

const HOSTILE = [0, -1, 1.5, 1e308, -1e308, 2 ** 53, 2 ** 53 - 1, 2 ** 32, '', 'x'.repeat(100), '65536', [], {}, null, true,
  MIN_CHUNK_BYTES, MAX_CHUNK_BYTES, MAX_CHUNK_BYTES + 1, MAX_MODEL_BYTES, MAX_MODEL_BYTES + 1, 'a'.repeat(64), 'A'.repeat(64), ['a'.repeat(64)]];

/** A JSON value with one to three members or items replaced by hostile values, removed,
 *  or added. */
function mutate(value, below) {
  const v = structuredClone(value);
  for (let k = 0; k < 1 + below(3); k++) {
    let holder = { root: v };
    let key = 'root';
    while (holder[key] && typeof holder[key] === 'object' && below(3) !== 0) {
      const keys = Object.keys(holder[key]);
      if (keys.length === 0) break;
      holder = holder[key];
      key = keys[below(keys.length)];
    }
    if (below(8) === 0 && key !== 'root') delete holder[key];
    else holder[key] = structuredClone(HOSTILE[below(HOSTILE.length)]);
    if (below(8) === 0) holder[['size', 'sha256', 'chunkBytes', 'chunks', 'extra'][below(5)]] = structuredClone(HOSTILE[below(HOSTILE.length)]);
    if (key === 'root') return holder.root;
  }
  return v;
}

test('mutated model manifests give a checked manifest or INVALID_ARGUMENT (seeded fuzzer)', () => {
  const sha = 'ab'.repeat(32);
  const seeds = [
    { size: 98362432, sha256: sha, chunkBytes: 8 << 20, chunks: Array(12).fill(sha) },
    { size: 5000, chunkBytes: MIN_CHUNK_BYTES, chunks: [sha] },
    { size: 5000, sha256: sha },
  ];
  const below = rng(0x5eed);
  const rounds = 20_000 * (Number(process.env.EDGE_REASON_FUZZ_ROUNDS) || 1);
  const outcomes = { valid: 0, refused: 0 };
  for (let round = 0; round < rounds; round++) {
    const input = mutate(seeds[below(seeds.length)], below);
    const text = JSON.stringify(input);
    let m;
    try {
      m = validateManifest(JSON.parse(text), 'm');
    } catch (e) {
      assert.equal(e.code, 'INVALID_ARGUMENT', `round ${round}: ${text.slice(0, 200)} threw ${e}`);
      outcomes.refused++;
      continue;
    }
    // What passes is what the downloader may size arrays and requests by.
    assert.ok(Number.isSafeInteger(m.size) && m.size >= 1 && m.size <= MAX_MODEL_BYTES, `round ${round}: size ${m.size}`);
    assert.ok(m.chunkBytes === null || (Number.isInteger(m.chunkBytes) && m.chunkBytes >= MIN_CHUNK_BYTES && m.chunkBytes <= MAX_CHUNK_BYTES), `round ${round}`);
    assert.ok(m.chunks === null || (m.chunks.length === Math.max(1, Math.ceil(m.size / m.chunkBytes)) && m.chunks.every((h) => /^[0-9a-f]{64}$/.test(h))), `round ${round}: ${text.slice(0, 300)} -> ${JSON.stringify(m).slice(0, 300)}`);
    assert.ok(m.sha256 === null || /^[0-9a-f]{64}$/.test(m.sha256), `round ${round}`);
    outcomes.valid++;
  }
  // The mutations reach both sides of every check.
  assert.ok(outcomes.valid > rounds / 50 && outcomes.refused > rounds / 50, JSON.stringify(outcomes));
});
