// The reasoning runtime's events as the shapes developers already use: a summary of
// one request, and OpenAI-style chat completions (whole, or streamed as chunks).
// Pure functions over the events Engine.reason() emits; no worker, no wasm.

import { EngineError } from './errors.js';

/** The OpenAI-style finish reason of a candidate's end ("eos", "budget", "length",
 *  "consensus"): a candidate stopped by early consensus is "early_consensus". */
export function finishReason(reason) {
  switch (reason) {
    case 'eos':
      return 'stop';
    case 'budget':
    case 'length':
      return 'length';
    case 'consensus':
      return 'early_consensus';
    default:
      return reason ?? null;
  }
}

/** Splits a candidate's thinking text from `<think>` / `</think>` markers. */
function cleanThinking(text) {
  return text.replace(/^\s*<think>\s*/, '').replace(/\s*<\/think>\s*$/, '');
}

/** Its answer text without the `</think>` that opens it. */
function cleanAnswer(text) {
  return text.replace(/^\s*<\/think>\s*/, '').trim();
}

/**
 * Folds a request's events into {route, candidates, vote, stats, answer}: each
 * candidate's thinking and answer text, its end, extracted answer, tokens and mean
 * answer log-probability, in candidate order.
 */
export function summarize(events) {
  const out = { route: null, candidates: [], vote: null, stats: null, answer: null };
  const cand = (i) => (out.candidates[i] ??= { index: i, thinking: '', text: '', done: null });
  for (const e of events) {
    switch (e.type) {
      case 'route':
        out.route = { mode: e.mode, pReason: e.pReason };
        break;
      case 'token':
        if (e.phase === 'think') cand(e.candidate).thinking += e.text;
        else cand(e.candidate).text += e.text;
        break;
      case 'candidate_done':
        cand(e.candidate).done = {
          answer: e.answer,
          tokens: e.tokens,
          logprob: e.logprob,
          reason: e.reason,
        };
        break;
      case 'vote':
        out.vote = { answer: e.answer, tally: e.tally, weights: e.weights, stoppedEarly: e.stoppedEarly };
        out.answer = e.answer;
        break;
      case 'done':
        out.stats = e.stats;
        break;
    }
  }
  out.candidates = Array.from(out.candidates, (c, i) => c ?? cand(i));
  return out;
}

/** An OpenAI-style choice for one summarized candidate. */
function choiceOf(c) {
  const reasoning = cleanThinking(c.thinking);
  return {
    index: c.index,
    message: {
      role: 'assistant',
      content: cleanAnswer(c.text),
      reasoning_content: reasoning === '' ? null : reasoning,
    },
    finish_reason: finishReason(c.done?.reason),
    answer: c.done?.answer ?? null,
    tokens: c.done?.tokens ?? 0,
    logprob: c.done?.logprob ?? 0,
  };
}

function usageOf(stats) {
  const prompt = stats?.promptTokens ?? 0;
  const completion = stats?.tokens ?? 0;
  return { prompt_tokens: prompt, completion_tokens: completion, total_tokens: prompt + completion };
}

/** `chat.completion` object for a finished request's events. `meta`: {id, created, model}. */
export function toCompletion(events, meta) {
  const s = summarize(events);
  return {
    id: meta.id,
    object: 'chat.completion',
    created: meta.created,
    model: meta.model,
    choices: s.candidates.map(choiceOf),
    route: s.route,
    vote: s.vote,
    usage: usageOf(s.stats),
    stats: s.stats,
  };
}

/**
 * The `chat.completion.chunk`s one event becomes (OpenAI's streaming shape): the route
 * rides on the first chunk; thinking text is `delta.reasoning_content`, answer text
 * `delta.content`; a candidate's end is a chunk with its `finish_reason`; the last
 * chunk has no choices and carries the vote, usage and stats. `state` is per stream.
 */
export function chunksOf(event, meta, state) {
  const chunk = (choices, extra = {}) => ({
    id: meta.id,
    object: 'chat.completion.chunk',
    created: meta.created,
    model: meta.model,
    choices,
    ...extra,
  });
  state.started ??= new Set();
  const delta = (i, d) => {
    if (!state.started.has(i)) {
      state.started.add(i);
      d = { role: 'assistant', ...d };
    }
    return d;
  };
  switch (event.type) {
    case 'route':
      state.route = { mode: event.mode, pReason: event.pReason };
      return [chunk([], { route: state.route })];
    case 'token': {
      const key = event.phase === 'think' ? 'reasoning_content' : 'content';
      return [chunk([{ index: event.candidate, delta: delta(event.candidate, { [key]: event.text }), finish_reason: null }])];
    }
    case 'candidate_done':
      return [
        chunk([{ index: event.candidate, delta: delta(event.candidate, {}), finish_reason: finishReason(event.reason), answer: event.answer }]),
      ];
    case 'vote':
      state.vote = { answer: event.answer, tally: event.tally, weights: event.weights, stoppedEarly: event.stoppedEarly };
      return [];
    case 'done':
      return [chunk([], { vote: state.vote, usage: usageOf(event.stats), stats: event.stats })];
    default:
      return [];
  }
}

/** The request Engine.reason() takes for chat.completions.create() parameters. */
export function requestOf({ messages, n, temperature, top_p, top_k, max_tokens, seed, reasoning = {}, adapter }) {
  if (!Array.isArray(messages) || messages.length === 0) {
    throw new EngineError('INVALID_ARGUMENT', 'chat.completions.create: `messages` must be a non-empty array of {role, content}');
  }
  const options = {};
  const set = (k, v) => {
    if (v !== undefined && v !== null) options[k] = v;
  };
  set('n', n);
  set('temperature', temperature);
  set('top_p', top_p);
  set('top_k', top_k);
  set('max_tokens', max_tokens);
  set('seed', seed);
  set('mode', reasoning.mode);
  set('weighted', reasoning.weighted);
  set('early_stop', reasoning.early_stop);
  if (typeof reasoning.budget === 'number') {
    options.budget = { think: reasoning.budget, answer: reasoning.answer_tokens ?? 32 };
  } else if (reasoning.budget) {
    options.budget = reasoning.budget;
  }
  const request = { messages: messages.map(({ role, content }) => ({ role, content })), options };
  if (adapter) request.adapter = adapter;
  return request;
}
