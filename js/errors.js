// Errors that cross from the engine (worker, wasm) to the page: an `Error` with a
// stable `code` to branch on and a message that says what to do.

/** Every code an EngineError can carry. */
export const ERROR_CODES = Object.freeze([
  'QUOTA_EXCEEDED', // browser storage cannot hold the model
  'NETWORK', // the download failed after its retries
  'INTEGRITY', // the bytes do not match the expected SHA-256
  'ABORTED', // the caller's AbortSignal fired
  'NOT_FOUND', // no such model in storage
  'STORAGE', // the browser's storage (OPFS) failed or is missing
  'UNSUPPORTED_MODEL', // not a GGUF the engine runs
  'CORRUPT_MODEL', // a truncated or damaged GGUF
  'NO_WEBGPU', // WebGPU was asked for and is not available
  'GPU_MEMORY', // the model does not fit the GPU's limits
  'GPU', // a WebGPU failure
  'CONTEXT_OVERFLOW', // prompt + max_tokens longer than the context
  'INVALID_ADAPTER', // a LoRA adapter that does not fit the model
  'INVALID_ARGUMENT', // a bad option or argument
  'NOT_LOADED', // a model call before load()
  'INTERNAL', // a bug: please report it
]);

export class EngineError extends Error {
  /**
   * @param {string} code one of ERROR_CODES
   * @param {string} message what happened and what to do
   */
  constructor(code, message, options) {
    super(message, options);
    this.name = 'EngineError';
    this.code = ERROR_CODES.includes(code) ? code : 'INTERNAL';
  }
}

/** Any thrown value as an EngineError (wasm errors already carry a `code`). */
export function asEngineError(err, fallbackCode = 'INTERNAL') {
  if (err instanceof EngineError) return err;
  if (err?.name === 'AbortError') return new EngineError('ABORTED', 'the operation was aborted', { cause: err });
  if (err?.name === 'QuotaExceededError') {
    return new EngineError(
      'QUOTA_EXCEEDED',
      'browser storage is full: free space (delete cached models with deleteModel) or allow this site more storage',
      { cause: err },
    );
  }
  const code = typeof err?.code === 'string' && ERROR_CODES.includes(err.code) ? err.code : fallbackCode;
  const message = err?.message ?? String(err);
  return new EngineError(code, message, { cause: err });
}

/** An error as a structured-clone-safe object (for postMessage). */
export function toPlain(err) {
  const e = asEngineError(err);
  return { code: e.code, message: e.message };
}

/** The inverse of toPlain. */
export function fromPlain(plain) {
  return new EngineError(plain?.code ?? 'INTERNAL', plain?.message ?? 'unknown error');
}
