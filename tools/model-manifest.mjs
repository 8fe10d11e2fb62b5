#!/usr/bin/env node
// Writes the model manifest that lets the browser engine verify a download chunk by
// chunk (ModelSource.manifestUrl): the file's size and SHA-256, and the SHA-256 of
// each chunk of `chunkBytes`.
//
//   node tools/model-manifest.mjs models/SmolLM2-135M-Instruct.Q4_1.gguf [--chunk-bytes 8388608]
//
// writes models/SmolLM2-135M-Instruct.Q4_1.gguf.manifest.json next to the file.

import crypto from 'node:crypto';
import fs from 'node:fs';
import path from 'node:path';

export const DEFAULT_CHUNK_BYTES = 8 << 20;

/** The manifest of `file` as an object. */
export function modelManifest(file, chunkBytes = DEFAULT_CHUNK_BYTES) {
  const fd = fs.openSync(file, 'r');
  try {
    const size = fs.fstatSync(fd).size;
    const whole = crypto.createHash('sha256');
    const chunks = [];
    const buf = Buffer.alloc(chunkBytes);
    for (let at = 0; at < size || chunks.length === 0; at += chunkBytes) {
      const n = fs.readSync(fd, buf, 0, Math.min(chunkBytes, size - at), at);
      whole.update(buf.subarray(0, n));
      chunks.push(crypto.createHash('sha256').update(buf.subarray(0, n)).digest('hex'));
      if (size === 0) break;
    }
    return { name: path.basename(file), size, sha256: whole.digest('hex'), chunkBytes, chunks };
  } finally {
    fs.closeSync(fd);
  }
}

const isMain = process.argv[1] && path.resolve(process.argv[1]) === path.resolve(new URL(import.meta.url).pathname);
if (isMain) {
  const args = process.argv.slice(2);
  const file = args.find((a) => !a.startsWith('--'));
  const i = args.indexOf('--chunk-bytes');
  const chunkBytes = i >= 0 ? Number(args[i + 1]) : DEFAULT_CHUNK_BYTES;
  if (!file || !Number.isInteger(chunkBytes) || chunkBytes <= 0) {
    console.error('usage: node tools/model-manifest.mjs FILE [--chunk-bytes N]');
    process.exit(2);
  }
  const out = `${file}.manifest.json`;
  fs.writeFileSync(out, JSON.stringify(modelManifest(file, chunkBytes), null, 1) + '\n');
  console.log(`wrote ${out}`);
}
