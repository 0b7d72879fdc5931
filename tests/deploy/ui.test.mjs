// The built-in page (GET /, source src/routes/ui/index.html) in real headless Chromium
// (Debian's /usr/bin/chromium, driven by playwright-core), served by the ssecast
// release binary itself (same origin: no CORS involved).
//
//   * the page loads with no script/CSP errors and its hub view goes live;
//   * Subscribe: connect to channel `demo` through the form;
//   * Publish: a multi-line unicode event sent through the page's own form is
//     answered 200 and shows up in #events with exactly the text typed, its id
//     and its name;
//   * events published from outside (POST /events/broadcast) show up too,
//     newest first, including astral-plane / CJK text;
//   * the hub view (fed by GET /events/status/stream, `event: status` once a
//     second) updates by itself: subscribers >= 1, a #hub-channels row for
//     `demo`, events/s > 0, internal `$status` hidden;
//   * `--ui false`: GET / is 404;
//   * a 1280x900 screenshot after the activity goes to docs/ui.png.
//
//   node --test ui.test.mjs          (from tests/deploy, after npm ci)
import assert from 'node:assert/strict';
import fs from 'node:fs';
import os from 'node:os';
import path from 'node:path';
import { after, before, describe, it } from 'node:test';
import { chromium } from 'playwright-core';
import { REPO_DIR, cleanup, publish, request, startSsecast, waitFor } from './lib/harness.mjs';

const CHROMIUM = process.env.CHROMIUM_PATH || '/usr/bin/chromium';
const SCREENSHOT = process.env.SSECAST_UI_SCREENSHOT || path.join(REPO_DIR, 'docs', 'ui.png');
const CHANNEL = 'demo';
// What a user types into the Data textarea: several lines, accents, Greek,
// Cyrillic, symbols (all in the DejaVu fonts Debian's chromium has, so the
// screenshot shows them rather than boxes).
const FORM_DATA = 'Grüße aus dem Browser ✓\nΕλληνικά · Кириллица · naïve café\n→ third line, “quoted” — done';
// From outside: outside the BMP and CJK (checked as text; not kept for the screenshot).
const ASTRAL = 'emoji 🎉🚀 and 日本語\nsecond line 𝄞';

/** The events listed in #events, in page order (newest first). */
function listedEvents(page) {
  return page.$$eval('#events > li', (lis) => lis.map((li) => {
    const spans = [...li.querySelectorAll('.meta span')];
    return {
      id: (spans.find((s) => s.textContent.startsWith('id ')) || { textContent: '' }).textContent.slice(3),
      type: (li.querySelector('.meta .name') || { textContent: '' }).textContent,
      data: (li.querySelector('pre') || { textContent: null }).textContent,
    };
  }));
}

/** A number shown by the page (Intl-formatted, e.g. "1,234" or "2.5"); NaN for "–". */
const shownNumber = (page, sel) => page.$eval(sel, (e) => Number(e.textContent.replace(/[^\d.]/g, '') || NaN));

describe('the built-in page (GET /) in headless Chromium', { timeout: 120_000 }, () => {
  let server; let context; let page; let profileDir;
  const pageErrors = [];
  const faviconErrors = [];

  before(async () => {
    assert.ok(fs.existsSync(CHROMIUM), `${CHROMIUM} not found: apt-get install chromium (tests/deploy/run.sh does)`);
    server = await startSsecast({ args: ['--heartbeat-interval', '5', '--retry-ms', '500'] });
    profileDir = fs.mkdtempSync(path.join(os.tmpdir(), 'ssecast-chromium-ui-'));
    context = await chromium.launchPersistentContext(profileDir, {
      executablePath: CHROMIUM,
      headless: true,
      timeout: 30_000,
      viewport: { width: 1280, height: 900 },
      deviceScaleFactor: 1,
      colorScheme: 'light',
      locale: 'en-US',
      args: [
        '--headless', '--no-sandbox', '--disable-gpu', '--disable-quic', '--no-first-run',
        '--disable-background-networking', '--disable-component-update', '--disable-sync',
      ],
    });
    context.setDefaultTimeout(10_000);
    page = context.pages()[0] || (await context.newPage());
    page.on('pageerror', (e) => pageErrors.push(String(e)));
    page.on('console', (m) => {
      if (m.type() !== 'error' && m.type() !== 'warning') return;
      const url = m.location()?.url || '';
      // A request for the icon is checked by a test of its own (below).
      if (new URL(url, 'http://x').pathname === '/favicon.ico') faviconErrors.push(`${m.type()}: ${m.text()} (${url})`);
      else pageErrors.push(`${m.type()}: ${m.text()}${url ? ` (${url})` : ''}`);
    });
  });

  after(async () => {
    try { if (context) await context.close(); } catch { /* browser already gone */ }
    await cleanup();
    if (profileDir) fs.rmSync(profileDir, { recursive: true, force: true });
  });

  it('serves the page at / (HTML, no-cache, with a CSP) and it loads without errors', async () => {
    const r = await request({ port: server.port, path: '/' });
    assert.equal(r.status, 200, r.text.slice(0, 200));
    assert.match(r.headers['content-type'], /^text\/html/);
    assert.ok(r.headers['content-security-policy'], 'Content-Security-Policy header');
    const res = await page.goto(`http://127.0.0.1:${server.port}/`, { timeout: 10_000 });
    assert.equal(res.status(), 200);
    assert.equal(await page.title(), 'ssecast');
    for (const id of ['sub-channel', 'sub-connect', 'events', 'pub-channel', 'pub-event', 'pub-data', 'pub-token', 'pub-send',
      'pub-result', 'hub-connections', 'hub-subscribers', 'hub-events-rate', 'hub-deliveries-rate', 'hub-channels']) {
      assert.equal(await page.locator(`#${id}`).count(), 1, `#${id} on the page`);
    }
    // The hub view goes live by itself (EventSource on /events/status/stream).
    await page.waitForSelector('#hub-state[data-state="open"]');
    await page.waitForFunction(() => document.getElementById('hub-uptime').textContent !== '–');
    assert.deepEqual(pageErrors, [], 'page errors');
  });

  it('loading the page makes no failing request (no /favicon.ico 404)', async () => {
    // Chromium asks for /favicon.ico unless the page names an icon; the page
    // names none and the hub answers 404, so every load of the page logs a
    // console error and counts in ssecast_rejected_total{reason="not_found"}.
    const icon = await page.$$eval('link[rel~="icon"]', (ls) => ls.map((l) => l.href));
    if (icon.length === 0) {
      const r = await request({ port: server.port, path: '/favicon.ico' });
      assert.ok(r.status < 400, `the page names no icon, so Chromium fetches /favicon.ico: ${r.status} ${r.text}`);
    } else {
      for (const href of icon.filter((h) => !h.startsWith('data:'))) {
        const r = await request({ port: server.port, path: new URL(href).pathname });
        assert.ok(r.status < 400, `icon ${href}: ${r.status}`);
      }
    }
    assert.deepEqual(faviconErrors, [], 'console errors from the page load');
  });

  it('connects to channel demo through the Subscribe form', async () => {
    await page.fill('#sub-channel', CHANNEL);
    await page.click('#sub-connect');
    await page.waitForSelector('#sub-state[data-state="open"]');
    assert.equal(await page.textContent('#sub-state'), `open: ${CHANNEL}`);
    // The hub counts the page's stream.
    await waitFor(async () => {
      const st = await request({ port: server.port, path: '/events/status' });
      return st.json?.channels?.[CHANNEL] === 1;
    }, 5000, 'status: one subscriber on demo');
  });

  it('publishes a multi-line unicode event through the Publish form; it appears in #events exactly', async () => {
    await page.fill('#pub-channel', CHANNEL);
    await page.fill('#pub-event', 'test');
    await page.fill('#pub-data', FORM_DATA);
    await page.click('#pub-send');
    await page.waitForSelector('#pub-result[data-ok="true"]');
    const shown = await page.textContent('#pub-result');
    assert.match(shown, /^HTTP 200\b/, shown);
    const answer = JSON.parse(shown.slice(shown.indexOf('\n') + 1));
    assert.equal(answer.channel, CHANNEL);
    assert.equal(answer.subscribers, 1, 'the page itself was subscribed when it published');
    await page.waitForFunction((d) => [...document.querySelectorAll('#events > li pre')].some((p) => p.textContent === d), FORM_DATA);
    const ev = await listedEvents(page);
    assert.deepEqual(ev[0], { id: String(answer.id), type: 'test', data: FORM_DATA });
    assert.equal(await page.textContent('#sub-count'), '1 event received (showing 1).');
  });

  it('shows events published from outside, newest first, astral-plane text intact; Clear list empties it', async () => {
    const r1 = await publish(server.port, { channel: CHANNEL, data: ASTRAL });
    const r2 = await publish(server.port, { channel: CHANNEL, event: 'greeting', data: { hello: 'wörld', n: [1, 2] } });
    await page.waitForFunction(() => document.querySelectorAll('#events > li').length >= 3);
    const ev = await listedEvents(page);
    assert.deepEqual(ev.slice(0, 2), [
      { id: String(r2.id), type: 'greeting', data: '{"hello":"wörld","n":[1,2]}' },
      { id: String(r1.id), type: 'message', data: ASTRAL },
    ]);
    await page.click('#sub-clear');
    assert.equal(await page.locator('#events > li').count(), 0);
    assert.equal(await page.textContent('#sub-count'), 'No events yet.');
  });

  it('the hub view updates by itself: subscribers, a row for demo, events/s > 0', async () => {
    const eventsBefore = await shownNumber(page, '#hub-events');
    // A few events from outside. The page shows events/s as the difference of two
    // consecutive status snapshots (1 s apart), so the first snapshot after these
    // publishes shows a rate > 0 (for about a second).
    const lines = [
      'deploy 4711 finished ✓',
      'cache warmed: 12 keys\nhit ratio 0.97',
      '{"user":"zoë","action":"login"}',
      'queue depth 3 → 0',
      'nightly report ready',
    ];
    for (const [i, data] of lines.entries()) {
      await publish(server.port, { channel: CHANNEL, data, ...(i === 2 ? { event: 'greeting' } : {}) });
    }
    await page.waitForFunction(() => Number(document.getElementById('hub-events-rate').textContent) > 0, null, { timeout: 5000 });
    // The page's list got them all (nothing else publishes to demo).
    await page.waitForFunction((n) => document.querySelectorAll('#events > li').length === n, lines.length);
    assert.deepEqual((await listedEvents(page)).map((e) => e.data), lines.slice().reverse());
    // The counters follow without a reload.
    await waitFor(async () => (await shownNumber(page, '#hub-events')) >= eventsBefore + lines.length, 5000, '#hub-events grows');
    assert.ok((await shownNumber(page, '#hub-subscribers')) >= 1, 'hub subscribers >= 1');
    assert.ok((await shownNumber(page, '#hub-connections')) >= 2, 'hub connections >= 2 (the page has two streams)');
    const rows = await page.$$eval('#hub-channels > tr', (trs) => trs.map((tr) => [...tr.children].map((td) => td.textContent)));
    const demo = rows.find((r) => r[0] === CHANNEL);
    assert.ok(demo, `a #hub-channels row for ${CHANNEL}: ${JSON.stringify(rows)}`);
    assert.ok(Number(demo[1]) >= 1, `subscribers on ${CHANNEL}: ${demo[1]}`);
    assert.ok(!rows.some((r) => r[0].startsWith('$')), `internal channels are hidden: ${JSON.stringify(rows)}`);
    assert.equal(await page.isHidden('#hub-channels-empty'), true, '"No channels." is hidden');
    // Deliveries/s is live too (the page's streams receive events and status snapshots).
    await page.waitForFunction(() => Number(document.getElementById('hub-deliveries-rate').textContent) > 0, null, { timeout: 5000 });
    assert.deepEqual(pageErrors, [], 'page errors');
  });

  it('a 1280x900 screenshot after the activity goes to docs/ui.png', async () => {
    // The multi-line unicode event through the form once more, so that the
    // picture shows it on top of the list, with the form and its answer.
    await page.fill('#pub-event', 'test');
    await page.fill('#pub-data', FORM_DATA);
    await page.click('#pub-send');
    await page.waitForSelector('#pub-result[data-ok="true"]');
    await page.waitForFunction((d) => document.querySelector('#events > li pre')?.textContent === d, FORM_DATA);
    // Wait for the status snapshot that has seen that publish: the counters are
    // up to date, and events/s (the difference to the previous snapshot) is > 0.
    const total = (await request({ port: server.port, path: '/events/status' })).json.events_published;
    await waitFor(async () => (await shownNumber(page, '#hub-events')) === total, 5000, `#hub-events shows ${total}`);
    assert.ok((await shownNumber(page, '#hub-events-rate')) > 0, 'events/s > 0 in the snapshot that counted the last publish');
    await page.evaluate(() => document.activeElement?.blur());
    fs.mkdirSync(path.dirname(SCREENSHOT), { recursive: true });
    const png = await page.screenshot({ path: SCREENSHOT, fullPage: false });
    // PNG IHDR: width and height, big-endian, at bytes 16..24.
    assert.equal(png.readUInt32BE(16), 1280);
    assert.equal(png.readUInt32BE(20), 900);
  });

  it('--ui false: GET / is 404 (JSON error); the rest of the hub still serves', async () => {
    const off = await startSsecast({ args: ['--ui', 'false'], name: 'ssecast-ui-off' });
    try {
      const r = await request({ port: off.port, path: '/' });
      assert.equal(r.status, 404, r.text);
      assert.ok(r.json && typeof r.json.error === 'string', `JSON error body: ${r.text}`);
      assert.ok(!/<html/i.test(r.text), 'no page');
      const res = await page.goto(`http://127.0.0.1:${off.port}/`, { timeout: 10_000 });
      assert.equal(res.status(), 404, 'the browser gets 404 too');
      assert.equal((await request({ port: off.port, path: '/health' })).status, 200);
    } finally {
      const s = await off.stop();
      assert.equal(s.code, 0, `ssecast --ui false exit ${JSON.stringify(s)}`);
    }
  });
});
