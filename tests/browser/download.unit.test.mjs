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
