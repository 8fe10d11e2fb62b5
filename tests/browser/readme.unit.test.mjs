// The README's "Bad input → what you get" table against the tests it cites: every test
// named in a row exists in the file named before it, and every code is one the engine
// sends (js/errors.js).

import { test } from 'node:test';
import assert from 'node:assert/strict';
import fs from 'node:fs';
import path from 'node:path';
import { fileURLToPath } from 'node:url';
import { ERROR_CODES } from '../../js/errors.js';

const root = path.resolve(path.dirname(fileURLToPath(import.meta.url)), '..', '..');

test("the README's bad-input table names tests that exist and codes the engine sends", () => {
  const readme = fs.readFileSync(path.join(root, 'README.md'), 'utf8');
  const section = readme.split('## Bad input → what you get')[1]?.split('\n## ')[0];
  assert.ok(section, 'no "Bad input → what you get" section');
  const rows = section.split('\n').filter((l) => l.startsWith('| ') && !l.startsWith('| bad input') && !l.startsWith('| ---'));
  assert.ok(rows.length >= 15, `${rows.length} rows`);
  for (const row of rows) {
    const cells = row.split(/(?<!\\)\|/).slice(1, -1).map((c) => c.trim());
    assert.equal(cells.length, 3, row);
    const [, got, tested] = cells;
    for (const [, code] of got.matchAll(/`([A-Z][A-Z_]+)`/g)) assert.ok(ERROR_CODES.includes(code), `${code} in: ${got}`);
    let file = null;
    let named = 0;
    for (const [, item] of tested.matchAll(/`([^`]+)`/g)) {
      if (/^(src|tests)\/.+\.(rs|mjs)$/.test(item)) {
        file = fs.readFileSync(path.join(root, item), 'utf8');
        continue;
      }
      assert.ok(file, `a test named before its file: ${item}`);
      const declared = file.includes(`fn ${item}(`) || file.includes(`test('${item}'`) || file.includes(`test("${item}"`);
      assert.ok(declared, `no test "${item}" in the file before it (row: ${cells[0]})`);
      named++;
    }
    assert.ok(named > 0, `no test named in: ${row}`);
  }
});

test("the package README lists exactly the engine's error codes", () => {
  const readme = fs.readFileSync(path.join(root, 'js', 'README.md'), 'utf8');
  const list = readme.split('Error codes (`EngineError.code`): ')[1]?.split('. ')[0];
  assert.ok(list, 'no list of codes in js/README.md');
  assert.deepEqual([...list.matchAll(/`([A-Z_]+)`/g)].map((m) => m[1]), [...ERROR_CODES]);
});
