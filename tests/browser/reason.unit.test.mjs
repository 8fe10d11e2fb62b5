// Unit tests (Node, no browser) for js/reason.js: a request's events folded into a
// summary, an OpenAI-style chat.completion, streamed chunks, and the request that
// chat.completions.create() parameters become.

import { test } from 'node:test';
import assert from 'node:assert/strict';
import { chunksOf, finishReason, requestOf, summarize, toCompletion } from '../../js/reason.js';

const tally = [
  { key: '42', votes: 2, weight: 2, first: 0 },
  { key: '41', votes: 1, weight: 1, first: 1 },
];
const EVENTS = [
  { type: 'route', mode: 'reason', pReason: 0.91 },
  { type: 'token', candidate: 0, text: '<think>\n6 times', phase: 'think' },
  { type: 'token', candidate: 1, text: '<think>\nsix', phase: 'think' },
  { type: 'token', candidate: 0, text: ' 7</think>', phase: 'think' },
  { type: 'token', candidate: 0, text: '\n\nFinal answer: 42', phase: 'answer' },
  { type: 'candidate_done', candidate: 0, answer: '42', tokens: 9, logprob: -0.2, reason: 'eos' },
  { type: 'token', candidate: 2, text: '<think>\nx', phase: 'think' },
  { type: 'token', candidate: 1, text: '\n</think>\n\nFinal answer:', phase: 'answer' },
  { type: 'token', candidate: 1, text: ' 41', phase: 'answer' },
  { type: 'candidate_done', candidate: 1, answer: '41', tokens: 12, logprob: -0.9, reason: 'budget' },
  { type: 'candidate_done', candidate: 2, answer: null, tokens: 3, logprob: 0, reason: 'consensus' },
  { type: 'vote', answer: '42', tally, weights: [1, 1, 0], stoppedEarly: 1 },
  { type: 'done', stats: { promptTokens: 20, ttftMs: 5, prefillTokS: 100, decodeTokS: 50, tokens: 24, kvBytes: 1000, tokensSaved: 30 } },
];
const META = { id: 'chatcmpl-x', created: 1, model: 'm.gguf' };

test('a request summary keeps each candidate thinking and answer apart', () => {
  const s = summarize(EVENTS);
  assert.deepEqual(s.route, { mode: 'reason', pReason: 0.91 });
  assert.equal(s.answer, '42');
  assert.equal(s.candidates.length, 3);
  assert.equal(s.candidates[0].thinking, '<think>\n6 times 7</think>');
  assert.equal(s.candidates[0].text, '\n\nFinal answer: 42');
  assert.deepEqual(s.candidates[2].done, { answer: null, tokens: 3, logprob: 0, reason: 'consensus' });
  assert.equal(s.vote.stoppedEarly, 1);
  assert.equal(s.stats.kvBytes, 1000);
});

test('a chat.completion has one choice per candidate, the vote and the usage', () => {
  const c = toCompletion(EVENTS, META);
  assert.equal(c.object, 'chat.completion');
  assert.equal(c.model, 'm.gguf');
  assert.equal(c.choices.length, 3);
  assert.deepEqual(c.choices[0].message, { role: 'assistant', content: 'Final answer: 42', reasoning_content: '6 times 7' });
  assert.equal(c.choices[1].message.content, 'Final answer: 41');
  assert.equal(c.choices[1].message.reasoning_content, 'six');
  assert.deepEqual(c.choices.map((x) => x.finish_reason), ['stop', 'length', 'early_consensus']);
  assert.deepEqual(c.choices.map((x) => x.answer), ['42', '41', null]);
  assert.deepEqual(c.usage, { prompt_tokens: 20, completion_tokens: 24, total_tokens: 44 });
  assert.equal(c.vote.answer, '42');
  assert.deepEqual(c.route, { mode: 'reason', pReason: 0.91 });
});

test('a chat answer (no thinking) has null reasoning_content', () => {
  const chat = [
    { type: 'route', mode: 'chat', pReason: 0.1 },
    { type: 'token', candidate: 0, text: 'Hello!', phase: 'answer' },
    { type: 'candidate_done', candidate: 0, answer: null, tokens: 3, logprob: -1, reason: 'eos' },
    { type: 'vote', answer: null, tally: [], weights: [1], stoppedEarly: 0 },
    { type: 'done', stats: { promptTokens: 5, tokens: 3 } },
  ];
  const c = toCompletion(chat, META);
  assert.deepEqual(c.choices[0].message, { role: 'assistant', content: 'Hello!', reasoning_content: null });
});

test('streamed chunks carry the same text as the whole completion, then the vote', () => {
  const state = {};
  const chunks = EVENTS.flatMap((e) => chunksOf(e, META, state));
  assert.ok(chunks.every((c) => c.object === 'chat.completion.chunk' && c.id === 'chatcmpl-x'));
  assert.deepEqual(chunks[0].route, { mode: 'reason', pReason: 0.91 });
  const text = (i, key) =>
    chunks
      .flatMap((c) => c.choices)
      .filter((ch) => ch.index === i)
      .map((ch) => ch.delta[key] ?? '')
      .join('');
  assert.equal(text(0, 'reasoning_content'), '<think>\n6 times 7</think>');
  assert.equal(text(0, 'content'), '\n\nFinal answer: 42');
  // The role comes once per candidate, on its first chunk.
  const roles = chunks.flatMap((c) => c.choices).filter((ch) => ch.delta.role === 'assistant');
  assert.deepEqual(roles.map((ch) => ch.index).sort(), [0, 1, 2]);
  const finishes = chunks.flatMap((c) => c.choices).filter((ch) => ch.finish_reason);
  assert.deepEqual(finishes.map((ch) => [ch.index, ch.finish_reason]), [[0, 'stop'], [1, 'length'], [2, 'early_consensus']]);
  const last = chunks.at(-1);
  assert.deepEqual(last.choices, []);
  assert.equal(last.vote.answer, '42');
  assert.equal(last.usage.total_tokens, 44);
});

test('chat.completions.create parameters become a reason request', () => {
  const r = requestOf({
    messages: [{ role: 'user', content: 'What is 6*7?', name: 'ignored' }],
    n: 8,
    temperature: 0.7,
    max_tokens: 64,
    seed: 3,
    reasoning: { mode: 'auto', budget: 256 },
  });
  assert.deepEqual(r, {
    messages: [{ role: 'user', content: 'What is 6*7?' }],
    options: { n: 8, temperature: 0.7, max_tokens: 64, seed: 3, mode: 'auto', budget: { think: 256, answer: 32 } },
  });
  const both = requestOf({ messages: [{ role: 'user', content: 'x' }], reasoning: { budget: { think: 9, answer: 4 }, weighted: true }, adapter: 'math' });
  assert.deepEqual(both.options, { weighted: true, budget: { think: 9, answer: 4 } });
  assert.equal(both.adapter, 'math');
  assert.throws(() => requestOf({ messages: [] }), (e) => e.code === 'INVALID_ARGUMENT');
  assert.equal(finishReason('eos'), 'stop');
});
