// Drives the admin port's dashboard in headless Chromium (Debian's /usr/bin/chromium)
// with playwright-core, for e2e/tests/dashboard.rs.
//
// Environment: ADMIN_URL (http://127.0.0.1:PORT), OUT_DIR (the test's temp dir: browser
// profile and screenshot), EXPECT_ROUTES (comma-separated Route keys the page must list),
// INVALID_ROUTE (key of an invalid Route) and INVALID_MESSAGE (a part of its message),
// TRAFFIC_ROUTE (the Route the test sends traffic to), CHROMIUM (optional, the browser).
//
// Protocol with the test, one line each: the script prints `READY <requests>` (what the
// page shows as TRAFFIC_ROUTE's request count) once the page is checked, then waits for
// `SENT <n>` on stdin (the test sent n requests to TRAFFIC_ROUTE), checks that the page
// shows the new count and a non-zero rate in the chart, and prints `OK <json>`. Any
// failure prints `FAIL <reason>` and exits 1. Every wait is bounded.

import { createInterface } from 'node:readline';
import { mkdtempSync } from 'node:fs';
import { join } from 'node:path';
import { chromium } from 'playwright-core';

const env = (name) => {
  const v = process.env[name];
  if (!v) throw new Error(`${name} is not set`);
  return v;
};
const ADMIN_URL = env('ADMIN_URL');
const OUT_DIR = env('OUT_DIR');
const EXPECT_ROUTES = env('EXPECT_ROUTES').split(',');
const INVALID_ROUTE = env('INVALID_ROUTE');
const INVALID_MESSAGE = env('INVALID_MESSAGE');
const TRAFFIC_ROUTE = env('TRAFFIC_ROUTE');
const CHROMIUM = process.env.CHROMIUM || '/usr/bin/chromium';
const WAIT_MS = 15000;

const lines = createInterface({ input: process.stdin })[Symbol.asyncIterator]();

function fail(reason) {
  process.stdout.write(`FAIL ${reason}\n`);
  process.exit(1);
}

async function main() {
  const profile = mkdtempSync(join(OUT_DIR, 'chromium-profile-'));
  const context = await chromium.launchPersistentContext(profile, {
    executablePath: CHROMIUM,
    headless: true,
    args: [
      '--no-sandbox', '--disable-gpu', '--disable-quic', '--no-first-run',
      '--disable-background-networking', '--disable-component-update', '--disable-sync',
    ],
    viewport: { width: 1366, height: 768 },
    timeout: WAIT_MS,
  });
  const problems = [];
  const page = context.pages()[0] || (await context.newPage());
  page.setDefaultTimeout(WAIT_MS);
  page.on('console', (m) => {
    if (m.type() === 'error') problems.push(`console error: ${m.text()}`);
  });
  page.on('pageerror', (e) => problems.push(`page error: ${e.message}`));
  page.on('requestfailed', (r) => problems.push(`request failed: ${r.url()} ${r.failure()?.errorText}`));
  page.on('response', (r) => {
    if (r.status() >= 400) problems.push(`HTTP ${r.status()} for ${r.url()}`);
  });

  const response = await page.goto(`${ADMIN_URL}/`, { waitUntil: 'load' });
  const csp = response.headers()['content-security-policy'] || '';
  if (!csp.includes("default-src 'self'")) fail(`no strict CSP on the page: ${csp}`);

  // The Routes table lists every quickstart Route, and the invalid one with its message.
  for (const key of EXPECT_ROUTES) {
    await page.locator(`#routes-table tbody th[scope=row]`, { hasText: key }).first().waitFor();
  }
  const invalidRow = page.locator(`#routes-table tr.invalid[data-route="${INVALID_ROUTE}"]`);
  await invalidRow.waitFor();
  const invalidText = await invalidRow.innerText();
  if (!invalidText.includes(INVALID_MESSAGE)) {
    fail(`invalid Route row lacks ${JSON.stringify(INVALID_MESSAGE)}: ${invalidText}`);
  }
  const problemsText = await page.locator('#problems-table').innerText();
  if (!problemsText.includes(INVALID_ROUTE) || !problemsText.includes(INVALID_MESSAGE)) {
    fail(`Problems table lacks the invalid Route: ${problemsText}`);
  }
  const backends = await page.locator('#backends-table tbody').innerText();
  if (!/healthy/.test(backends)) fail(`no healthy endpoint in the Backends table: ${backends}`);

  // Keyboard: the first Tab lands on the skip link, later ones reach the controls, and the
  // focused element has a visible outline.
  await page.locator('body').focus();
  const reached = [];
  for (let i = 0; i < 20; i++) {
    await page.keyboard.press('Tab');
    const f = await page.evaluate(() => {
      const a = document.activeElement;
      const s = getComputedStyle(a);
      return { id: a.id, tag: a.tagName, text: a.textContent.trim(), outline: s.outlineStyle };
    });
    if (f.tag === 'BODY') break; // past the last focusable element
    reached.push(f);
    if (f.outline === 'none') fail(`focused ${f.tag} ${f.text} has no visible outline`);
  }
  if (reached[0].text !== 'Skip to content') fail(`first Tab: ${JSON.stringify(reached[0])}`);
  for (const control of ['Pause updates', '1 min', '5 min']) {
    if (!reached.some((f) => f.tag === 'BUTTON' && f.text === control)) {
      fail(`Tab never reached the ${control} button: ${JSON.stringify(reached.map((f) => f.text))}`);
    }
  }

  // Traffic: the count the page shows now, then after the test's requests.
  const card = page.locator(`.card[data-route="${TRAFFIC_ROUTE}"]`);
  const requests = card.locator('[data-metric=requests]');
  await page.waitForFunction((sel) => /^\d+$/.test(document.querySelector(sel)?.textContent ?? ''),
    `.card[data-route="${TRAFFIC_ROUTE}"] [data-metric=requests]`);
  const before = Number(await requests.textContent());
  const rateBefore = await card.locator('svg.chart').first().getAttribute('aria-label');
  process.stdout.write(`READY ${before}\n`);

  const next = await lines.next();
  const sent = /^SENT (\d+)$/.exec(next.value || '');
  if (!sent) fail(`expected SENT n on stdin, got ${JSON.stringify(next.value)}`);
  const expected = before + Number(sent[1]);
  await page.waitForFunction(
    ([sel, want]) => document.querySelector(sel)?.textContent === String(want),
    [`.card[data-route="${TRAFFIC_ROUTE}"] [data-metric=requests]`, expected],
  ).catch(async () => fail(`requests stayed ${await requests.textContent()}, expected ${expected}`));
  // The rate chart drew a non-zero point: a path point above the baseline (y < 52).
  await page.waitForFunction((sel) => {
    const d = document.querySelector(sel)?.getAttribute('d') || '';
    return [...d.matchAll(/[ML][\d.]+,([\d.]+)/g)].some((m) => Number(m[1]) < 51.5);
  }, `.card[data-route="${TRAFFIC_ROUTE}"] svg.chart path[data-series=rate]`)
    .catch(() => fail('the rate chart shows no traffic'));
  // The same interval's latency: p50 and p99 drawn from the histogram's deltas.
  for (const q of ['p50', 'p99']) {
    if ((await card.locator(`svg.chart path[data-series=${q}]`).count()) !== 1) {
      fail(`no ${q} line in the latency chart after traffic`);
    }
  }
  const rateAfter = await card.locator('svg.chart').first().getAttribute('aria-label');
  const total = await page.locator('.card.total [data-metric=requests]').textContent();
  // One more poll, so the charts hold a point after the burst too.
  await page.waitForTimeout(2500);

  await page.evaluate(() => {
    document.activeElement?.blur();
    window.scrollTo(0, 0);
  });
  const screenshot = join(OUT_DIR, 'dashboard.png');
  await page.screenshot({ path: screenshot });
  await context.close();
  if (problems.length) fail(problems.join('; '));
  process.stdout.write(`OK ${JSON.stringify({ before, after: expected, total, rateBefore, rateAfter, screenshot })}\n`);
  process.exit(0);
}

main().catch((e) => fail(e && e.stack ? e.stack.replace(/\n/g, ' | ') : String(e)));
