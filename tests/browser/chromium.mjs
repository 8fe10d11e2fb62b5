// Headless Chromium for the browser tests and the browser benchmark
// (bench/browser_bench.mjs): the system Chromium (/usr/bin/chromium, or $CHROMIUM)
// driven by playwright-core, WebGPU on the CPU through SwiftShader (see
// shared/TOOLCHAIN.md), a fresh user-data-dir per browser.

import fs from 'node:fs';
import os from 'node:os';
import path from 'node:path';
import { chromium } from 'playwright-core';

export const CHROMIUM = process.env.CHROMIUM || '/usr/bin/chromium';

// Without these Chromium tries the network at every start.
export const BASE_FLAGS = [
  '--headless=new',
  '--no-sandbox',
  '--disable-background-networking',
  '--disable-component-update',
  '--disable-sync',
];
// WebGPU on the CPU through SwiftShader.
export const WEBGPU_FLAGS = [
  '--enable-unsafe-webgpu',
  '--enable-features=Vulkan',
  '--use-vulkan=swiftshader',
  '--use-webgpu-adapter=swiftshader',
];

/**
 * Launches Chromium with `flags` in a fresh user-data-dir and returns its first page;
 * `close()` closes the browser and removes the directory.
 */
export async function launch(flags) {
  const userDataDir = fs.mkdtempSync(path.join(os.tmpdir(), 'edge-reason-chromium-'));
  const removeDir = () => fs.rmSync(userDataDir, { recursive: true, force: true });
  let context;
  try {
    context = await chromium.launchPersistentContext(userDataDir, {
      executablePath: CHROMIUM,
      headless: true,
      ignoreDefaultArgs: ['--headless'], // the flags carry --headless=new
      args: flags,
      timeout: 60_000,
    });
    const page = context.pages()[0] ?? (await context.newPage());
    const close = async () => {
      await context.close().catch(() => {});
      removeDir();
    };
    return { context, page, close };
  } catch (err) {
    await context?.close().catch(() => {});
    removeDir();
    throw err;
  }
}
