// Types of edge-reason's main-thread API (index.js). The engine runs in a Web Worker.

// The wasm module's classes (edge_reason.d.ts, from wasm-bindgen) declare
// `[Symbol.dispose]`: this brings its type in for projects whose `lib` predates it.
/// <reference lib="esnext.disposable" />

import type {
  AdapterSummary, BenchOptions, BenchReport, EngineBackend, GenerateOptions, Generation, LoadOptions,
  ReasonEvent, ReasonRequest,
} from './edge_reason.js';

export type { AdapterSummary, ReasonEvent, ReasonOptions, ReasonRequest } from './edge_reason.js';

export type ErrorCode =
  | 'QUOTA_EXCEEDED' | 'NETWORK' | 'INTEGRITY' | 'ABORTED' | 'NOT_FOUND' | 'STORAGE'
  | 'UNSUPPORTED_MODEL' | 'CORRUPT_MODEL' | 'NO_WEBGPU' | 'GPU_MEMORY' | 'GPU'
  | 'CONTEXT_OVERFLOW' | 'INVALID_ADAPTER' | 'INVALID_ARGUMENT' | 'NOT_LOADED' | 'INTERNAL';

export const ERROR_CODES: readonly ErrorCode[];

/** Every failure: a stable `code` to branch on and a message that says what to do. */
export class EngineError extends Error {
  readonly code: ErrorCode;
}

export interface Progress {
  phase: 'download' | 'verify' | 'upload' | 'ready';
  loadedBytes: number;
  totalBytes: number;
  /** null where it has no meaning (upload). */
  bytesPerSec: number | null;
  etaSec: number | null;
  /** The bytes come from browser storage, not the network. */
  fromCache: boolean;
}

/** Where a model comes from and how to fetch it. */
export interface ModelSource {
  /** The GGUF file (same-origin or CORS, e.g. a Hugging Face `resolve` URL). */
  url?: string;
  /** Name in browser storage; default: the URL's file name. `{id}` alone loads from storage. */
  id?: string;
  /** Expected SHA-256 of the whole file (hex); a mismatch is an INTEGRITY error. */
  sha256?: string;
  /** Expected size in bytes. */
  size?: number;
  /** A model manifest JSON {size, sha256, chunkBytes, chunks: [sha256 per chunk]}:
   *  a bad chunk is caught and refetched as soon as it arrives. */
  manifestUrl?: string;
  /** Bytes per Range request, 64 KiB to 16 MiB (default 8 MiB). */
  chunkBytes?: number;
  /** Requests in flight, 1 to 16 (default 4). */
  concurrency?: number;
  /** Retries of a failing request, with exponential backoff from baseDelayMs. */
  retry?: { attempts?: number; baseDelayMs?: number };
  signal?: AbortSignal;
  onProgress?: (p: Progress) => void;
}

export interface Stored {
  id: string;
  size: number;
  sha256: string;
  /** Already complete in storage: nothing was fetched. */
  fromCache: boolean;
  /** Bytes fetched from the network by this call. */
  fetchedBytes: number;
  retries: number;
  refetchedChunks: number;
  seconds: number;
  /** Whether the browser agreed to keep the storage (navigator.storage.persist()). */
  persisted: boolean | null;
}

export interface Loaded extends Stored {
  /** Where the model is stored: the Origin Private File System or the Cache API. */
  storage: 'opfs' | 'cache';
  backend: EngineBackend;
  /** Milliseconds from load() to ready, and of the storage-to-engine part alone. */
  loadMs: number;
  uploadMs: number;
  /** wasm memory after loading (its peak so far). */
  memoryBytes: number;
  /** CPU threads the CPU path computes on, and why it is one when it is (else null). */
  threads: number;
  threadsReason: string | null;
}

export interface StoredModel {
  id: string;
  url: string | null;
  size: number | null;
  storedBytes: number;
  complete: boolean;
  sha256: string | null;
  updatedAt: string | null;
}

/** How an adapter was trained to be told its thinking budget: `{budget}` in
 *  `template` becomes the smallest bucket at least the request's budget. */
export interface BudgetHint {
  template: string;
  buckets?: number[];
}

/** A LoRA adapter or switcher: nothing (the one shipped in the package, for the default
 *  model), a directory URL, or its files' contents. */
export interface WeightsSource {
  /** Directory holding adapter_config.json + adapter_model.safetensors (or
   *  switcher.json + switcher.safetensors); resolved against the page. An optional file
   *  (budget_hint.json) answered by a 404 or an HTML page counts as absent. */
  url?: string;
  config?: string | object;
  weights?: Uint8Array | ArrayBuffer;
}

/** One candidate of a request, folded from its events. */
export interface CandidateSummary {
  index: number;
  /** Text of the thinking phase (with the `<think>` markers). */
  thinking: string;
  /** Text of the answer phase. */
  text: string;
  done: { answer: string | null; tokens: number; logprob: number; reason: 'eos' | 'budget' | 'length' | 'consensus' } | null;
}

export interface ReasonResult {
  /** The vote's winning answer (normalized key), or null. */
  answer: string | null;
  route: { mode: 'chat' | 'reason'; pReason: number | null } | null;
  candidates: CandidateSummary[];
  vote: { answer: string | null; tally: { key: string; votes: number; weight: number; first: number }[]; weights: number[]; stoppedEarly: number } | null;
  stats: { promptTokens: number; ttftMs: number; prefillTokS: number; decodeTokS: number; tokens: number; kvBytes: number; tokensSaved: number } | null;
  events: ReasonEvent[];
}

export interface ChatCompletionParams {
  /** Each message's content is text: control-token text in it (`<|im_end|>`, ...) stays
   *  characters, only the chat template's own markup becomes control tokens. A role is
   *  markup too: one of these five (else INVALID_ARGUMENT). */
  messages: { role: 'system' | 'user' | 'assistant' | 'tool' | 'developer'; content: string }[];
  /** Candidates when the request reasons (1 to 16); a chat answer has one. */
  n?: number;
  stream?: boolean;
  temperature?: number;
  top_p?: number;
  top_k?: number;
  /** Tokens of a direct (chat) answer. */
  max_tokens?: number;
  seed?: number;
  reasoning?: {
    mode?: 'auto' | 'chat' | 'reason';
    /** Thinking tokens per candidate (then `</think>` is forced), or both limits. */
    budget?: number | { think: number; answer: number };
    /** Answer tokens after the thinking when `budget` is a number (default 32). */
    answer_tokens?: number;
    /** Weigh votes by each candidate's answer log-probability. */
    weighted?: boolean;
    early_stop?: boolean;
  };
  /** Which loaded adapter reasons (default: the only one). */
  adapter?: string;
  /** Aborts the request (rejects, or ends the stream, with ABORTED). */
  signal?: AbortSignal;
}

export interface ChatCompletionChoice {
  index: number;
  message: { role: 'assistant'; content: string; reasoning_content: string | null };
  /** "stop", "length", or "early_consensus" (stopped once the vote was decided). */
  finish_reason: 'stop' | 'length' | 'early_consensus';
  /** The answer extracted for the vote. */
  answer: string | null;
  tokens: number;
  logprob: number;
}

export interface ChatCompletion {
  id: string;
  object: 'chat.completion';
  created: number;
  model: string;
  choices: ChatCompletionChoice[];
  route: ReasonResult['route'];
  vote: ReasonResult['vote'];
  usage: { prompt_tokens: number; completion_tokens: number; total_tokens: number };
  stats: ReasonResult['stats'];
}

export interface ChatCompletionChunk {
  id: string;
  object: 'chat.completion.chunk';
  created: number;
  model: string;
  choices: { index: number; delta: { role?: 'assistant'; content?: string; reasoning_content?: string }; finish_reason: ChatCompletionChoice['finish_reason'] | null; answer?: string | null }[];
  /** On the first chunk. */
  route?: ReasonResult['route'];
  /** On the last chunk. */
  vote?: ReasonResult['vote'];
  usage?: ChatCompletion['usage'];
  stats?: ReasonResult['stats'];
}

/** The `progress` event an engine dispatches while it downloads and loads a model. */
export interface EdgeEngineEventMap {
  progress: CustomEvent<Progress>;
}

export class EdgeEngine extends EventTarget {
  readonly ready: Promise<EdgeEngine>;
  addEventListener<K extends keyof EdgeEngineEventMap>(type: K, listener: (this: EdgeEngine, event: EdgeEngineEventMap[K]) => void, options?: boolean | AddEventListenerOptions): void;
  addEventListener(type: string, listener: EventListenerOrEventListenerObject | null, options?: boolean | AddEventListenerOptions): void;
  removeEventListener<K extends keyof EdgeEngineEventMap>(type: K, listener: (this: EdgeEngine, event: EdgeEngineEventMap[K]) => void, options?: boolean | EventListenerOptions): void;
  removeEventListener(type: string, listener: EventListenerOrEventListenerObject | null, options?: boolean | EventListenerOptions): void;
  readonly version: string;
  /** CPU threads the CPU path computes on (the multi-threaded build when above 1). */
  readonly threads: number;
  /** Why the CPU path has one thread (not cross-origin isolated, asked, ...), else null. */
  readonly threadsReason: string | null;
  load(options: ModelSource & LoadOptions): Promise<Loaded>;
  download(options: ModelSource): Promise<Stored>;
  listModels(): Promise<StoredModel[]>;
  deleteModel(id: string): Promise<boolean>;
  /** `signal` stops the generation before its next token (rejects with ABORTED). */
  generate(prompt: string, options?: GenerateOptions & { onText?: (text: string) => void; signal?: AbortSignal }): Promise<Generation>;
  tokenize(text: string, options?: { special?: boolean }): Promise<number[]>;
  logits(ids: ArrayLike<number>): Promise<Float32Array>;
  bench(options?: BenchOptions): Promise<BenchReport>;
  /** An adapter trained with its budget stated in the prompt carries how
   *  (`budget_hint.json` beside its weights, or `budgetHint`); requests to it state
   *  their budget that way unless they give `budget_hint` (null: none). */
  loadAdapter(source?: WeightsSource & { name?: string; budgetHint?: BudgetHint | string }): Promise<AdapterSummary>;
  unloadAdapter(name: string): Promise<boolean>;
  /** With no source, the switcher shipped in the package (for the default model). */
  loadSwitcher(source?: WeightsSource): Promise<{ loaded: true }>;
  loadVerifier(source: WeightsSource): Promise<{ loaded: true }>;
  /** `signal` stops the request between two decode steps: it rejects with ABORTED. */
  reason(request: ReasonRequest, options?: { onEvent?: (event: ReasonEvent) => void; signal?: AbortSignal }): Promise<ReasonResult>;
  benchReason(options?: { prompt_tokens?: number; n?: number; steps?: number; runs?: number; rank?: number; adapter?: string }): Promise<object>;
  readonly chat: {
    completions: {
      create(params: ChatCompletionParams & { stream?: false }): Promise<ChatCompletion>;
      create(params: ChatCompletionParams & { stream: true }): Promise<AsyncIterable<ChatCompletionChunk>>;
    };
  };
  info(): Promise<{ version: string; memoryBytes: number; model: { id: string; size: number; sha256: string } | null; backend: EngineBackend | null; threads: number; threadsReason: string | null }>;
  detectBackend(): Promise<EngineBackend>;
  unload(): Promise<void>;
  terminate(): void;
}

/** Starts the engine's worker; resolves once its wasm is ready. */
export function createEngine(options?: {
  /** Escape hatches for setups that do not follow `new URL(..., import.meta.url)`: the
   *  package's worker.js and edge_reason_bg.wasm (one thread), worker-threads.js and
   *  threads/edge_reason_bg.wasm (threads), wherever they are served. */
  workerUrl?: string | URL;
  wasmUrl?: string | URL;
  threadsWorkerUrl?: string | URL;
  threadsWasmUrl?: string | URL;
  /** Where models are stored: "auto" (default: OPFS, else the Cache API), "opfs" or "cache". */
  storage?: 'auto' | 'opfs' | 'cache';
  /**
   * CPU threads for the CPU path (WebGPU does not need them): "auto" (default: every
   * core up to 8 when the page is cross-origin isolated, else 1) or a number. Threads
   * need COOP: same-origin and COEP: require-corp; without them the engine runs on one
   * thread and `threadsReason` says so, as it does when the multi-threaded build fails to
   * start (with the cause).
   */
  threads?: 'auto' | number;
}): Promise<EdgeEngine>;
