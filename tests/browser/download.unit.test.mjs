// Unit tests (Node, no browser) for the pure parts of js/download.js: Content-Range
// parsing, the backoff schedule, and the quota check before a download.

import { test } from 'node:test';
import assert from 'node:assert/strict';
import { backoffMs, checkQuota, parseContentRange } from '../../js/download.js';

test('Content-Range headers parse, and malformed ones do not', () => {
  assert.deepEqual(parseContentRange('bytes 0-0/98362432'), { start: 0, end: 0, total: 98362432 });
  assert.deepEqual(parseContentRange('bytes 10-19/*'), { start: 10, end: 19, total: null });
  for (const bad of [null, '', 'bytes */100', 'items 0-1/2', 'bytes 0-1']) assert.equal(parseContentRange(bad), null, String(bad));
});

test('backoff doubles from the base, with jitter within 20%, capped at 30 s', () => {
  for (let attempt = 1; attempt <= 6; attempt++) {
    const d = backoffMs(attempt, 500);
    const nominal = 500 * 2 ** (attempt - 1);
    assert.ok(d >= 0.8 * nominal && d <= 1.2 * nominal, `attempt ${attempt}: ${d}`);
  }
  assert.ok(backoffMs(30, 500) <= 36_000);
});

test('the quota check refuses a download that cannot fit, before anything is written', async () => {
  const MiB = 2 ** 20;
  const storage = { estimate: async () => ({ quota: 100 * MiB, usage: 60 * MiB }) };
  Object.defineProperty(globalThis, 'navigator', { value: { storage }, configurable: true });
  await checkQuota(40 * MiB, 98 * MiB); // exactly fits
  await assert.rejects(checkQuota(40 * MiB + 1, 98 * MiB), (e) => {
    assert.equal(e.code, 'QUOTA_EXCEEDED');
    assert.match(e.message, /needs 40\.0 MiB more .* only 40\.0 MiB more .*delete cached models/);
    return true;
  });
  // No estimate() (old browsers): the write-time check is what remains.
  storage.estimate = undefined;
  await checkQuota(1e12, 1e12);
});

test('sizes from servers and manifests are bounded before anything is sized by them', async () => {
  const { checkedSize, validateManifest, MAX_MODEL_BYTES, MIN_CHUNK_BYTES, MAX_CHUNK_BYTES } = await import('../../js/download.js');
  assert.equal(checkedSize(98362432, 'x'), 98362432);
  // A Content-Range of 2^53 - 1 once built an array of 2^30 chunks.
  for (const bad of [9007199254740991, MAX_MODEL_BYTES + 1, 0, -1, 1.5, NaN, '100', null]) {
    assert.throws(() => checkedSize(bad, 'the server'), (e) => e.code === 'NETWORK' && /1 byte to 64 GiB/.test(e.message), String(bad));
  }
  const sha = 'a'.repeat(64);
  assert.deepEqual(validateManifest({ size: 5000, chunkBytes: MIN_CHUNK_BYTES, chunks: [sha] }, 'm'), {
    size: 5000, sha256: null, chunkBytes: MIN_CHUNK_BYTES, chunks: [sha],
  });
  const rejects = [
    [{ size: 5000, chunkBytes: 1 }, /chunkBytes 1/], // 5,002 manifest rewrites
    [{ size: 5000, chunkBytes: 1e12 }, /chunkBytes 1000000000000/], // past the 16 MiB cap
    [{ size: 5000, chunkBytes: MAX_CHUNK_BYTES + 1 }, /chunkBytes/],
    [{ size: 5000, chunks: [sha] }, /without chunkBytes/],
    [{ size: 5000, chunkBytes: MIN_CHUNK_BYTES, chunks: [sha, sha] }, /1 chunk hashes/],
    [{ size: 2 ** 53 }, /64 GiB/],
    // Found by the manifest fuzzer (limits.unit.test.mjs): a chunk with no hash passed.
    [{ size: 5000, chunkBytes: MIN_CHUNK_BYTES, chunks: [null] }, /chunk 0 .*not a SHA-256/],
    [{ size: 5000, chunkBytes: MIN_CHUNK_BYTES, chunks: [[sha]] }, /chunk 0 .*not a SHA-256/],
    [[], /not an object/],
    [null, /not an object/],
  ];
  for (const [m, why] of rejects) {
    assert.throws(() => validateManifest(m, 'm'), (e) => e.code === 'INVALID_ARGUMENT' && why.test(e.message), JSON.stringify(m));
  }
});
