// edge-reason demo page: loads the wasm engine and shows its version and backend.
import init, { version, detectBackend } from '/pkg/edge_reason.js';

const $ = (id) => document.querySelector(`[data-testid="${id}"]`);

function fail(where, err) {
  const box = $('error');
  box.hidden = false;
  box.textContent += `${where}: ${err?.message ?? err}\n`;
  console.error(where, err);
}

async function main() {
  try {
    await init();
  } catch (err) {
    $('version').textContent = 'unavailable';
    $('version').dataset.state = 'error';
    $('backend').textContent = 'unavailable';
    $('backend').dataset.state = 'error';
    fail('loading the engine failed', err);
    return;
  }
  $('version').textContent = version();
  $('version').dataset.state = 'ready';

  try {
    const choice = await detectBackend();
    $('backend').textContent = choice.backend;
    $('backend').dataset.adapter = choice.adapter ?? '';
    $('backend-reason').textContent = choice.reason;
    $('backend').dataset.state = 'ready';
    console.info(`edge-reason ${version()}: backend ${choice.backend} (${choice.reason})`);
  } catch (err) {
    $('backend').textContent = 'unknown';
    $('backend').dataset.state = 'error';
    fail('detecting the backend failed', err);
  }
}

main();
