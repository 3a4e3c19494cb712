// Drives headless Chromium for tests/it/common/browser.rs: one JSON command per line on stdin,
// one JSON answer per line on stdout ({"ok": value} or {"error": message}). The Rust test
// decides what to do and what to assert; this only does it in a real browser.
'use strict';

const path = require('path');
const readline = require('readline');

const modules = process.env.SEXTANT_BROWSER_MODULES;
const { chromium } = require(path.join(modules, 'playwright-core'));

async function main() {
  const browser = await chromium.launch({
    executablePath: process.env.SEXTANT_CHROMIUM || '/usr/bin/chromium',
    args: ['--headless', '--no-sandbox', '--disable-gpu', '--disable-quic', '--no-first-run',
      '--disable-background-networking', '--disable-component-update', '--disable-sync'],
  });
  const page = await browser.newPage({ viewport: { width: 1200, height: 800 } });
  const consoleErrors = [];
  page.on('pageerror', (error) => consoleErrors.push(String(error)));

  const commands = {
    open: async ({ url }) => { await page.goto(url); return page.url(); },
    wait: async ({ selector, timeout_ms: timeout }) => { await page.waitForSelector(selector, { timeout }); return true; },
    waitGone: async ({ selector, timeout_ms: timeout }) => { await page.waitForSelector(selector, { state: 'detached', timeout }); return true; },
    fill: async ({ selector, text }) => { await page.fill(selector, text); return true; },
    click: async ({ selector }) => { await page.click(selector); return true; },
    press: async ({ selector, key }) => { await page.press(selector, key); return true; },
    count: async ({ selector }) => page.locator(selector).count(),
    attr: async ({ selector, name }) => page.locator(selector).first().getAttribute(name),
    text: async ({ selector }) => page.locator(selector).first().textContent(),
    visible: async ({ selector }) => page.locator(selector).first().isVisible(),
    texts: async ({ selector }) => page.locator(selector).allTextContents(),
    session: async ({ key }) => page.evaluate((k) => sessionStorage.getItem(k), key),
    screenshot: async ({ path: file }) => { await page.screenshot({ path: file, fullPage: true }); return file; },
    // A value kept in the page's window: a page load loses it, a same-page update does not.
    mark: async ({ value }) => page.evaluate((v) => { window.sextantTestMark = v; return v; }, value),
    marked: async () => page.evaluate(() => window.sextantTestMark ?? null),
    errors: async () => consoleErrors,
  };

  const lines = readline.createInterface({ input: process.stdin });
  for await (const line of lines) {
    let answer;
    try {
      const command = JSON.parse(line);
      const run = commands[command.do];
      if (!run) throw new Error(`unknown command ${command.do}`);
      answer = { ok: await run(command) };
    } catch (error) {
      answer = { error: String(error && error.message ? error.message : error) };
    }
    process.stdout.write(`${JSON.stringify(answer)}\n`);
  }
  await browser.close();
}

main().catch((error) => {
  process.stdout.write(`${JSON.stringify({ error: `the browser did not start: ${error.message}` })}\n`);
  process.exit(1);
});
