// Fault injection for the dev server's test mode (serve.mjs --faults, or
// `start({ hooks: [faults.hook] })` in a test): per-request faults on chosen paths, and
// the server's own byte counters, so a test can tell what a download really fetched.
//
//   const faults = createFaults();
//   faults.add({ path: '/models/x.gguf', kind: 'drop', afterBytes: 1 << 20 });
//   ... run the browser ...
//   faults.count('/models/x.gguf')  // { requests, bytes, statuses, ranges, times }
//
// Rule kinds (each fires `times` times, default 1; `when(range)` narrows which requests):
//   drop     answer normally but cut the connection after `afterBytes` body bytes
//   status   answer HTTP `status` (e.g. 500) with no body
//   corrupt  flip the byte at file offset `offset` in the answer
//   noRange  ignore the Range header: 200 with the whole file, no Accept-Ranges
//   stall    never answer (until release() or the client goes away)

import fs from 'node:fs';

/** The largest rule /__faults takes (rules are a few dozen bytes of JSON). */
const MAX_RULE_BYTES = 64 << 10;

export function createFaults() {
  const rules = [];
  const counters = new Map();
  const stalled = new Set();

  function counter(path) {
    if (!counters.has(path)) counters.set(path, { requests: 0, bytes: 0, statuses: [], ranges: [], times: [] });
    return counters.get(path);
  }

  /** Counts the body bytes of every answer on this request. */
  function countBytes(ctx) {
    const c = counter(ctx.url.pathname);
    c.requests += 1;
    c.ranges.push(ctx.req.headers.range ?? null);
    c.times.push(Date.now());
    const { res } = ctx;
    const write = res.write.bind(res);
    const end = res.end.bind(res);
    const add = (chunk) => {
      if (chunk && typeof chunk !== 'function' && ctx.req.method !== 'HEAD') c.bytes += Buffer.byteLength(chunk);
    };
    res.write = (chunk, ...rest) => (add(chunk), write(chunk, ...rest));
    res.end = (chunk, ...rest) => (add(chunk), end(chunk, ...rest));
    res.on('finish', () => c.statuses.push(res.statusCode));
  }

  function take(ctx) {
    const i = rules.findIndex((r) => r.path === ctx.url.pathname && (!r.when || r.when(ctx.range === 'unsatisfiable' ? null : ctx.range)));
    if (i < 0) return null;
    const rule = rules[i];
    rule.fired = (rule.fired ?? 0) + 1;
    if (rule.fired >= (rule.times ?? 1)) rules.splice(i, 1);
    return rule;
  }

  function streamBody(ctx, status, start, end, { headers = {}, afterBytes = Infinity, flip = null } = {}) {
    const { res, file } = ctx;
    const length = end - start + 1;
    res.writeHead(status, {
      'Content-Type': 'application/octet-stream',
      'Content-Length': length,
      'Cache-Control': 'no-store',
      'Cross-Origin-Resource-Policy': 'same-origin',
      ...headers,
    });
    let sent = 0;
    const stream = fs.createReadStream(file, { start, end, highWaterMark: 64 << 10 });
    stream.on('data', (buf) => {
      let piece = buf;
      if (flip != null && flip >= start + sent && flip < start + sent + buf.length) {
        piece = Buffer.from(buf);
        piece[flip - start - sent] ^= 0xff;
      }
      if (sent + piece.length >= afterBytes) {
        res.write(piece.subarray(0, afterBytes - sent));
        stream.destroy();
        // Let the bytes leave, then cut the connection mid-body.
        setTimeout(() => res.socket?.destroy(), 20);
        return;
      }
      sent += piece.length;
      res.write(piece);
    });
    stream.on('end', () => res.end());
    stream.on('error', (err) => res.destroy(err));
    res.on('close', () => stream.destroy());
  }

  /** The server hook: counts, then applies the first matching rule. */
  async function hook(ctx) {
    countBytes(ctx);
    const rule = take(ctx);
    if (!rule) return false;
    const size = ctx.stat.size;
    const range = ctx.range && ctx.range !== 'unsatisfiable' ? ctx.range : null;
    const [status, start, end] = range ? [206, range.start, range.end] : [200, 0, size - 1];
    const rangeHeaders = range ? { 'Content-Range': `bytes ${start}-${end}/${size}`, 'Accept-Ranges': 'bytes' } : { 'Accept-Ranges': 'bytes' };
    switch (rule.kind) {
      case 'status':
        ctx.res.writeHead(rule.status ?? 500, { 'Content-Type': 'text/plain', 'Cache-Control': 'no-store' });
        ctx.res.end();
        return true;
      case 'drop':
        streamBody(ctx, status, start, end, { headers: rangeHeaders, afterBytes: rule.afterBytes ?? 0 });
        return true;
      case 'corrupt':
        streamBody(ctx, status, start, end, { headers: rangeHeaders, flip: rule.offset ?? start });
        return true;
      case 'noRange':
        streamBody(ctx, 200, 0, size - 1);
        return true;
      case 'stall':
        stalled.add(ctx.res);
        ctx.res.on('close', () => stalled.delete(ctx.res));
        return true;
      default:
        throw new Error(`unknown fault kind ${rule.kind}`);
    }
  }

  /**
   * The HTTP control of `serve.mjs --faults` at /__faults: GET the counters, POST a rule
   * as JSON (`fromOffset` narrows it to ranges starting there or later), DELETE to clear
   * rules and counters.
   */
  async function control(req, res, url) {
    if (url.pathname !== '/__faults') return false;
    const reply = (status, body) => {
      res.writeHead(status, { 'Content-Type': 'application/json', 'Cache-Control': 'no-store' });
      res.end(JSON.stringify(body) + '\n');
    };
    // Same origin only: a page of another site must not set faults (a browser sends
    // Origin on cross-origin requests; tools such as curl or Node send none).
    const origin = req.headers.origin;
    if (origin && origin !== `http://${req.headers.host}`) return reply(403, { error: 'same-origin only' }), true;
    if (req.method === 'GET') return reply(200, Object.fromEntries(counters)), true;
    if (req.method === 'DELETE') return api.clear(), api.resetCounts(), reply(200, { ok: true }), true;
    if (req.method === 'POST') {
      let body = '';
      for await (const piece of req) {
        body += piece;
        if (body.length > MAX_RULE_BYTES) return req.destroy(), reply(413, { error: `a rule is at most ${MAX_RULE_BYTES} bytes` }), true;
      }
      try {
        const { fromOffset, ...rule } = JSON.parse(body);
        if (fromOffset != null) rule.when = (range) => (range?.start ?? 0) >= fromOffset;
        api.add(rule);
        return reply(200, { ok: true, rules: rules.length }), true;
      } catch (err) {
        return reply(400, { error: String(err?.message ?? err) }), true;
      }
    }
    return reply(405, { error: 'GET, POST or DELETE' }), true;
  }

  const api = {
    hook,
    control,
    /** Adds a rule (see the kinds above). */
    add(rule) {
      rules.push({ times: 1, ...rule });
    },
    /** Removes every rule and answers stalled requests by cutting them. */
    clear() {
      rules.length = 0;
      for (const res of stalled) res.socket?.destroy();
      stalled.clear();
    },
    /** Requests, body bytes, statuses and Range headers seen for `path` so far. */
    count(path) {
      return structuredClone(counter(path));
    },
    /** Forgets the counters. */
    resetCounts() {
      counters.clear();
    },
    pending: () => rules.length,
    stalledCount: () => stalled.size,
  };
  return api;
}
