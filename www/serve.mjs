#!/usr/bin/env node
// Dev server for edge-reason (Node 20, no dependencies).
//
//   node www/serve.mjs [--port 8080] [--host 127.0.0.1]
//
// Serves:  /          -> www/
//          /pkg/      -> pkg/     (wasm-bindgen output, made by `./build.sh wasm`)
//          /models/   -> models/  (GGUF files, made by `./build.sh model`)
//
// Every answer carries COOP/COEP/CORP (so SharedArrayBuffer works; `isolated: false`
// leaves them out, as most static hosts do), GET and HEAD only, byte ranges
// (`Range: bytes=a-b`, `a-`, `-n`, one range per request) with 206/416. `spa: true`
// answers unknown paths with the "/" mount's index.html (HTTP 200), as single-page-app
// hosts and dev servers do.
//
// Hook point: `createServer({ hooks })` takes an optional list of request hooks. Each is
// `async (ctx) => boolean`, called in order before a file is served, with
// ctx = { req, res, url, file, stat, range, mount }. A hook that answers the request
// itself returns true and the server does nothing more. `control(req, res, url)` (also
// optional) sees every request first and may answer it.
//
// Test mode: `--faults` injects faults per request and counts the bytes it serves
// (www/faults.mjs), controlled over HTTP at /__faults.

import http from 'node:http';
import fs from 'node:fs';
import fsp from 'node:fs/promises';
import path from 'node:path';
import { fileURLToPath, pathToFileURL } from 'node:url';

const here = path.dirname(fileURLToPath(import.meta.url));
export const repoRoot = path.resolve(here, '..');

export const MIME = {
  '.html': 'text/html; charset=utf-8',
  '.htm': 'text/html; charset=utf-8',
  '.js': 'text/javascript; charset=utf-8',
  '.mjs': 'text/javascript; charset=utf-8',
  '.css': 'text/css; charset=utf-8',
  '.json': 'application/json; charset=utf-8',
  '.map': 'application/json; charset=utf-8',
  '.wasm': 'application/wasm',
  '.png': 'image/png',
  '.jpg': 'image/jpeg',
  '.jpeg': 'image/jpeg',
  '.gif': 'image/gif',
  '.webp': 'image/webp',
  '.ico': 'image/x-icon',
  '.svg': 'image/svg+xml',
  '.webmanifest': 'application/manifest+json',
  '.txt': 'text/plain; charset=utf-8',
  '.md': 'text/plain; charset=utf-8',
  '.ts': 'text/plain; charset=utf-8',
  '.gguf': 'application/octet-stream',
  '.bin': 'application/octet-stream',
  '.safetensors': 'application/octet-stream',
};

export function mimeType(file) {
  return MIME[path.extname(file).toLowerCase()] ?? 'application/octet-stream';
}

/** URL prefix -> directory on disk. Longest prefix wins; "/" is the fallback. */
export function defaultMounts(root = repoRoot) {
  return [
    { prefix: '/pkg/', dir: path.join(root, 'pkg') },
    { prefix: '/models/', dir: path.join(root, 'models') },
    { prefix: '/', dir: path.join(root, 'www') },
  ];
}

const SECURITY_HEADERS = {
  'Cross-Origin-Opener-Policy': 'same-origin',
  'Cross-Origin-Embedder-Policy': 'require-corp',
  'Cross-Origin-Resource-Policy': 'same-origin',
  'X-Content-Type-Options': 'nosniff',
};
// What a host that does not isolate its pages sends.
const PLAIN_HEADERS = { 'X-Content-Type-Options': 'nosniff' };

/** The Content-Security-Policy the demo page and the engine run under (documented for
 *  hosts in js/README.md): scripts and workers from this origin only, wasm compiled
 *  but no other eval, no plugins, no <base>, no framing. */
export const CSP = "default-src 'self'; script-src 'self' 'wasm-unsafe-eval'; object-src 'none'; base-uri 'none'; frame-ancestors 'none'";

/** Host names a dev server bound to a loopback address answers to (others are a DNS
 *  rebinding attempt: a page of another site reaching this one through its name). */
const LOOPBACK_NAMES = new Set(['localhost', '127.0.0.1', '[::1]', '::1']);

function isLoopbackHost(host) {
  return host === 'localhost' || host === '::1' || /^127\.\d+\.\d+\.\d+$/.test(host);
}

/** Whether the Host header `value` names this loopback server (ports aside). */
function hostAllowed(value) {
  if (!value) return false;
  const name = value.startsWith('[') ? value.slice(0, value.indexOf(']') + 1) : value.split(':')[0];
  return LOOPBACK_NAMES.has(name.toLowerCase()) || name.toLowerCase().endsWith('.localhost');
}

/**
 * Parse a Range header against a file size.
 * Returns null (no/ignored header: serve the whole file), {start, end} (inclusive),
 * or 'unsatisfiable'.
 */
export function parseRange(header, size) {
  if (header == null || header === '') return null;
  const m = /^\s*bytes\s*=\s*(\d*)\s*-\s*(\d*)\s*$/i.exec(header);
  if (!m) {
    // Multiple ranges or another unit: allowed by RFC 9110 to ignore; send it all.
    if (/^\s*bytes\s*=/i.test(header) && !header.includes(',')) return 'unsatisfiable';
    return null;
  }
  const [, a, b] = m;
  if (a === '' && b === '') return 'unsatisfiable';
  let start;
  let end;
  if (a === '') {
    // Suffix range: the last n bytes.
    const n = Number(b);
    if (n === 0 || size === 0) return 'unsatisfiable';
    start = Math.max(0, size - n);
    end = size - 1;
  } else {
    start = Number(a);
    end = b === '' ? size - 1 : Math.min(Number(b), size - 1);
    if (b !== '' && Number(b) < start) return 'unsatisfiable';
    if (start >= size) return 'unsatisfiable';
  }
  return { start, end };
}

/** Map a URL path to a file inside one of the mounts, or null when it escapes them. */
export function resolvePath(mounts, urlPath) {
  let decoded;
  try {
    decoded = decodeURIComponent(urlPath);
  } catch {
    return null;
  }
  if (decoded.includes('\0') || decoded.includes('\\')) return null;
  // Any ".." segment is refused outright, before and after normalisation.
  if (decoded.split('/').some((seg) => seg === '..')) return null;
  const mount = mounts
    .filter((m) => decoded === m.prefix.slice(0, -1) || decoded.startsWith(m.prefix))
    .sort((x, y) => y.prefix.length - x.prefix.length)[0];
  if (!mount) return null;
  const rest = decoded === mount.prefix.slice(0, -1) ? '' : decoded.slice(mount.prefix.length);
  const file = path.resolve(mount.dir, '.' + path.posix.normalize('/' + rest));
  const base = path.resolve(mount.dir);
  if (file !== base && !file.startsWith(base + path.sep)) return null;
  // Dotfiles (.git, .env, ...) are never served.
  if (path.relative(base, file).split(path.sep).some((seg) => seg.startsWith('.'))) return null;
  return { mount, file };
}

/** Whether `file`, links resolved, is inside `dir`, links resolved. */
async function insideRealDir(file, dir) {
  const [real, root] = await Promise.all([fsp.realpath(file).catch(() => null), fsp.realpath(dir).catch(() => null)]);
  return Boolean(real && root) && (real === root || real.startsWith(root + path.sep));
}

function send(res, status, body, headers = {}, base = SECURITY_HEADERS) {
  const buf = Buffer.from(body);
  res.writeHead(status, {
    ...base,
    'Content-Type': 'text/plain; charset=utf-8',
    'Content-Length': buf.length,
    'Cache-Control': 'no-store',
    ...headers,
  });
  res.end(res.req.method === 'HEAD' ? undefined : buf);
}

/**
 * Create (not start) the server.
 * options: { mounts?, hooks?: Array<async (ctx) => boolean>, log?: (line) => void,
 *            isolated? (default true), spa? (default false), csp? (default true: the
 *            CSP header on every answer; an app with inline scripts passes false),
 *            host? (the address it listens on: on a loopback one, requests must name
 *            a loopback host) }
 */
export function createServer(options = {}) {
  const mounts = options.mounts ?? defaultMounts();
  const base = {
    ...(options.isolated === false ? PLAIN_HEADERS : SECURITY_HEADERS),
    ...(options.csp === false ? {} : { 'Content-Security-Policy': CSP }),
  };
  const checkHost = isLoopbackHost(options.host ?? '127.0.0.1');
  const spaIndex = options.spa ? path.join(mounts.find((m) => m.prefix === '/')?.dir ?? '.', 'index.html') : null;
  const hooks = options.hooks ?? [];
  const control = options.control ?? null;
  const log = options.log ?? (() => {});

  return http.createServer(async (req, res) => {
    try {
      await handle(req, res);
    } catch (err) {
      log(`500 ${req.method} ${req.url}: ${err?.stack ?? err}`);
      if (!res.headersSent) send(res, 500, 'internal error\n', {}, base);
      else res.destroy(err);
    }
  });

  async function handle(req, res) {
    const url = new URL(req.url ?? '/', 'http://localhost');
    const done = (status) => log(`${status} ${req.method} ${url.pathname}`);
    if (checkHost && !hostAllowed(req.headers.host)) {
      send(res, 421, 'misdirected request: this dev server answers to localhost names only\n', {}, base);
      return done(421);
    }
    if (control && (await control(req, res, url))) return done('control');

    if (req.method !== 'GET' && req.method !== 'HEAD') {
      send(res, 405, 'method not allowed\n', { Allow: 'GET, HEAD' }, base);
      return done(405);
    }
    // Check the raw path too: URL() already folded "/a/../b", which must not pass silently.
    const rawPath = (req.url ?? '/').split('?')[0];
    if (/(^|\/|%2f|\\|%5c)(\.|%2e){2}(\/|%2f|\\|%5c|$)/i.test(rawPath)) {
      send(res, 403, 'forbidden\n', {}, base);
      return done(403);
    }
    const resolved = resolvePath(mounts, url.pathname);
    if (!resolved) {
      send(res, 403, 'forbidden\n', {}, base);
      return done(403);
    }
    let { file } = resolved;
    let stat = await fsp.stat(file).catch(() => null);
    if (stat?.isDirectory()) {
      if (!url.pathname.endsWith('/')) {
        send(res, 301, 'moved\n', { Location: url.pathname + '/' + url.search }, base);
        return done(301);
      }
      file = path.join(file, 'index.html');
      stat = await fsp.stat(file).catch(() => null);
    }
    if ((!stat || !stat.isFile()) && spaIndex) {
      file = spaIndex;
      stat = await fsp.stat(file).catch(() => null);
    }
    if (!stat || !stat.isFile()) {
      send(res, 404, 'not found\n', {}, base);
      return done(404);
    }
    // A symbolic link inside a mount may point anywhere: serve only what really lies
    // inside the mount's own directory.
    if (!(await insideRealDir(file, resolved.mount.dir))) {
      send(res, 403, 'forbidden\n', {}, base);
      return done(403);
    }

    const size = stat.size;
    const etag = `W/"${size.toString(16)}-${Math.floor(stat.mtimeMs).toString(16)}"`;
    let range = parseRange(req.headers.range, size);
    // If-Range: only honour the range when the validator still matches.
    const ifRange = req.headers['if-range'];
    if (range && ifRange && ifRange !== etag && ifRange !== stat.mtime.toUTCString()) range = null;

    const ctx = { req, res, url, file, stat, range, mount: resolved.mount };
    for (const hook of hooks) {
      if (await hook(ctx)) return done('hook');
    }

    const headers = {
      ...base,
      'Content-Type': mimeType(file),
      'Accept-Ranges': 'bytes',
      'Last-Modified': stat.mtime.toUTCString(),
      ETag: etag,
      'Cache-Control': 'no-cache',
    };

    if (range === 'unsatisfiable') {
      send(
        res,
        416,
        'range not satisfiable\n',
        { 'Content-Range': `bytes */${size}`, 'Accept-Ranges': 'bytes' },
        base,
      );
      return done(416);
    }
    if (!range && req.headers['if-none-match'] === etag) {
      res.writeHead(304, headers);
      res.end();
      return done(304);
    }

    let status = 200;
    let start = 0;
    let end = size - 1;
    if (range) {
      status = 206;
      ({ start, end } = range);
      headers['Content-Range'] = `bytes ${start}-${end}/${size}`;
    }
    headers['Content-Length'] = size === 0 ? 0 : end - start + 1;
    res.writeHead(status, headers);
    if (req.method === 'HEAD' || size === 0) {
      res.end();
      return done(status);
    }
    const stream = fs.createReadStream(file, { start, end });
    stream.on('error', (err) => res.destroy(err));
    res.on('close', () => stream.destroy());
    stream.pipe(res);
    return done(status);
  }
}

/** Start the server; resolves to { server, url, port, host, close() }. port 0 = any free one. */
export async function start({ port = 8080, host = '127.0.0.1', ...options } = {}) {
  const server = createServer({ host, ...options });
  await new Promise((resolve, reject) => {
    server.once('error', reject);
    server.listen(port, host, () => {
      server.off('error', reject);
      resolve();
    });
  });
  const actual = server.address().port;
  const shownHost = host.includes(':') ? `[${host}]` : host;
  return {
    server,
    port: actual,
    host,
    url: `http://${shownHost}:${actual}/`,
    close: () =>
      new Promise((resolve) => {
        server.closeAllConnections?.();
        server.close(() => resolve());
      }),
  };
}

function parseArgs(argv) {
  const out = { port: 8080, host: '127.0.0.1', quiet: false, faults: false };
  for (let i = 0; i < argv.length; i++) {
    const arg = argv[i];
    const [key, inline] = arg.startsWith('--') && arg.includes('=') ? arg.split(/=(.*)/s) : [arg, undefined];
    const value = () => {
      if (inline !== undefined) return inline;
      if (i + 1 >= argv.length) throw new Error(`${key} needs a value`);
      return argv[++i];
    };
    switch (key) {
      case '--port':
      case '-p': {
        const v = value();
        const n = Number(v);
        if (!Number.isInteger(n) || n < 0 || n > 65535) throw new Error(`bad port: ${v}`);
        out.port = n;
        break;
      }
      case '--host':
        out.host = value();
        break;
      case '--faults':
        out.faults = true;
        break;
      case '--quiet':
      case '-q':
        out.quiet = true;
        break;
      case '--help':
      case '-h':
        out.help = true;
        break;
      default:
        throw new Error(`unknown option: ${arg}`);
    }
  }
  return out;
}

const isMain = process.argv[1] && pathToFileURL(path.resolve(process.argv[1])).href === import.meta.url;
if (isMain) {
  let args;
  try {
    args = parseArgs(process.argv.slice(2));
  } catch (err) {
    console.error(`serve.mjs: ${err.message}`);
    process.exit(2);
  }
  if (args.help) {
    console.log('usage: node www/serve.mjs [--port 8080] [--host 127.0.0.1] [--quiet] [--faults]');
    process.exit(0);
  }
  const log = args.quiet ? () => {} : (line) => console.log(line);
  const faults = args.faults ? (await import('./faults.mjs')).createFaults() : null;
  const testMode = faults ? { hooks: [faults.hook], control: faults.control } : {};
  start({ port: args.port, host: args.host, log, ...testMode })
    .then(({ url }) => {
      console.log(`edge-reason dev server: ${url}${faults ? ' (test mode: faults at /__faults)' : ''}`);
      if (!fs.existsSync(path.join(repoRoot, 'pkg', 'edge_reason.js'))) {
        console.log('note: pkg/ is not built yet; run ./build.sh wasm');
      }
    })
    .catch((err) => {
      console.error(`serve.mjs: cannot listen on ${args.host}:${args.port}: ${err.message}`);
      process.exit(1);
    });
  const stop = () => process.exit(0);
  process.on('SIGINT', stop);
  process.on('SIGTERM', stop);
}
