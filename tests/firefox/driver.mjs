// Drives Debian's firefox-esr for the Python browser tests (tests/firefoxpage.py): headless,
// over WebDriver BiDi with puppeteer-core (never a browser download: `executablePath` is the
// Debian package that ./dev test installs).
//
// One Firefox per process. Requests are JSON lines on stdin, answers JSON lines on stdout:
//   → {"id": 1, "op": "launch", "prefs": {...}}        ← {"id": 1, "ok": true, "value": …}
//   → {"id": 2, "op": "newPage"}                        ← {"id": 2, "ok": true, "value": "p1"}
//   → {"id": 3, "op": "evaluate", "page": "p1", "expression": "(a) => a + 1", "arg": 1}
//   …                                                   ← {"id": …, "ok": false, "error": "…"}
// Ops: launch, newPage, preload (a script run before the page's own, with one argument),
// goto, evaluate (an expression; a function is called with `arg`), fill, click, waitFor (a
// selector), screenshot, close. A page's console lines and uncaught errors arrive unasked:
//                                                     ← {"event": "console", "page": "p1", "text": "…"}
// Every op is bounded (`timeout` ms, default 30 s); stdin's end closes Firefox.

import { createInterface } from 'node:readline';
import puppeteer from 'puppeteer-core';

const EXECUTABLE = process.env.SEALROOM_FIREFOX ?? '/usr/bin/firefox-esr';
const DEFAULT_TIMEOUT_MS = 30000;

let browser = null;
const pages = new Map(); // id → {page}

function pageOf(msg) {
  const entry = pages.get(msg.page);
  if (entry === undefined) throw new Error(`no page ${msg.page}`);
  return entry;
}

const ops = {
  async launch({ prefs = {}, args = [] }) {
    if (browser !== null) throw new Error('already launched');
    browser = await puppeteer.launch({
      browser: 'firefox',
      executablePath: EXECUTABLE,
      headless: true,
      protocol: 'webDriverBiDi',
      extraPrefsFirefox: prefs,
      args,
      protocolTimeout: DEFAULT_TIMEOUT_MS,
    });
    return await browser.version();
  },

  async newPage() {
    const page = await browser.newPage();
    const id = `p${pages.size + 1}`;
    page.on('console', (m) => answer({ event: 'console', page: id, text: `${m.type()}: ${m.text()}` }));
    page.on('pageerror', (e) => answer({ event: 'pageerror', page: id, text: String(e?.message ?? e) }));
    page.setDefaultTimeout(DEFAULT_TIMEOUT_MS);
    pages.set(id, { page });
    return id;
  },

  async preload(msg) {
    const source = msg.source;
    // A function's source and its argument, run in the page before any of its scripts.
    await pageOf(msg).page.evaluateOnNewDocument(`(${source})(${JSON.stringify(msg.arg ?? null)})`);
    return null;
  },

  async goto(msg) {
    await pageOf(msg).page.goto(msg.url, { waitUntil: 'load' });
    return null;
  },

  async evaluate(msg) {
    // Playwright's rule: an expression that is a function is called with the argument.
    return await pageOf(msg).page.evaluate(async (source, arg) => {
      const value = (0, eval)(`(${source})`);
      return typeof value === 'function' ? await value(arg) : await value;
    }, msg.expression, msg.arg ?? null);
  },

  async fill(msg) {
    const { page } = pageOf(msg);
    await page.$eval(msg.selector, (el) => { el.value = ''; });
    await page.type(msg.selector, msg.value);
    return null;
  },

  async click(msg) {
    await pageOf(msg).page.click(msg.selector);
    return null;
  },

  async waitFor(msg) {
    await pageOf(msg).page.waitForSelector(msg.selector, { timeout: msg.timeout ?? DEFAULT_TIMEOUT_MS });
    return null;
  },

  async screenshot(msg) {
    await pageOf(msg).page.screenshot({ path: msg.path });
    return null;
  },

  async close() {
    const b = browser;
    browser = null;
    pages.clear();
    if (b !== null) await b.close();
    return null;
  },
};

function answer(reply) {
  process.stdout.write(`${JSON.stringify(reply)}\n`);
}

async function handle(line) {
  let msg;
  try {
    msg = JSON.parse(line);
  } catch {
    answer({ id: null, ok: false, error: 'not JSON' });
    return;
  }
  const op = ops[msg.op];
  if (op === undefined || (browser === null && msg.op !== 'launch' && msg.op !== 'close')) {
    answer({ id: msg.id, ok: false, error: op === undefined ? `unknown op ${msg.op}` : 'launch first' });
    return;
  }
  let timer;
  const limit = msg.timeout ?? DEFAULT_TIMEOUT_MS;
  try {
    const value = await Promise.race([
      op(msg),
      new Promise((_, reject) => { timer = setTimeout(() => reject(new Error(`${msg.op} timed out after ${limit} ms`)), limit); }),
    ]);
    answer({ id: msg.id, ok: true, value: value ?? null });
  } catch (err) {
    answer({ id: msg.id, ok: false, error: String(err?.stack ?? err) });
  } finally {
    clearTimeout(timer);
  }
}

const input = createInterface({ input: process.stdin });
input.on('line', (line) => { if (line.trim()) handle(line); });
input.on('close', async () => {
  // The test process is gone or done: never leave a Firefox behind.
  const timer = setTimeout(() => process.exit(1), 10000);
  try {
    await ops.close();
  } finally {
    clearTimeout(timer);
    process.exit(0);
  }
});
