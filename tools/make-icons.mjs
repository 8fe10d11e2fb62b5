// Draws the PWA icons (www/icons/icon-{192,512}.png): one prompt node branching into
// three candidate nodes, white on the page's accent blue, full-bleed so that the
// icon is also maskable. Run: node tools/make-icons.mjs
import fs from 'node:fs';
import zlib from 'node:zlib';

const BG = [0x2f, 0x6f, 0xdb];
const FG = [0xff, 0xff, 0xff];

// The shape in unit coordinates (the maskable safe zone is the central 80%).
const root = [0.3, 0.5];
const leaves = [[0.7, 0.3], [0.7, 0.5], [0.7, 0.7]];
const R_ROOT = 0.085;
const R_LEAF = 0.065;
const LINE = 0.022;

function segmentDistance([px, py], [ax, ay], [bx, by]) {
  const [dx, dy] = [bx - ax, by - ay];
  const t = Math.max(0, Math.min(1, ((px - ax) * dx + (py - ay) * dy) / (dx * dx + dy * dy)));
  return Math.hypot(px - ax - t * dx, py - ay - t * dy);
}

/** Signed distance to the shape (negative inside). */
function shape(p) {
  let d = Math.hypot(p[0] - root[0], p[1] - root[1]) - R_ROOT;
  for (const leaf of leaves) {
    d = Math.min(d, Math.hypot(p[0] - leaf[0], p[1] - leaf[1]) - R_LEAF);
    d = Math.min(d, segmentDistance(p, root, leaf) - LINE);
  }
  return d;
}

function crc32(buf) {
  let c = ~0;
  for (const b of buf) {
    c ^= b;
    for (let k = 0; k < 8; k++) c = (c >>> 1) ^ (0xedb88320 & -(c & 1));
  }
  return ~c >>> 0;
}

function chunk(type, data) {
  const out = Buffer.alloc(12 + data.length);
  out.writeUInt32BE(data.length, 0);
  out.write(type, 4, 'ascii');
  data.copy(out, 8);
  out.writeUInt32BE(crc32(out.subarray(4, 8 + data.length)), 8 + data.length);
  return out;
}

function png(size) {
  const rows = Buffer.alloc(size * (1 + size * 3));
  for (let y = 0; y < size; y++) {
    rows[y * (1 + size * 3)] = 0; // filter: none
    for (let x = 0; x < size; x++) {
      const d = shape([(x + 0.5) / size, (y + 0.5) / size]) * size; // in pixels
      const a = Math.max(0, Math.min(1, 0.5 - d)); // one pixel of anti-aliasing
      for (let c = 0; c < 3; c++) rows[y * (1 + size * 3) + 1 + x * 3 + c] = Math.round(BG[c] + a * (FG[c] - BG[c]));
    }
  }
  const header = Buffer.alloc(13);
  header.writeUInt32BE(size, 0);
  header.writeUInt32BE(size, 4);
  header[8] = 8; // bit depth
  header[9] = 2; // RGB
  const signature = Buffer.from([0x89, 0x50, 0x4e, 0x47, 0x0d, 0x0a, 0x1a, 0x0a]);
  return Buffer.concat([signature, chunk('IHDR', header), chunk('IDAT', zlib.deflateSync(rows, { level: 9 })), chunk('IEND', Buffer.alloc(0))]);
}

const dir = new URL('../www/icons/', import.meta.url);
fs.mkdirSync(dir, { recursive: true });
for (const size of [192, 512]) fs.writeFileSync(new URL(`icon-${size}.png`, dir), png(size));
console.log('www/icons: icon-192.png, icon-512.png');
