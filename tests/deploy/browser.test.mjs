// Real headless Chromium (Debian's /usr/bin/chromium, driven by playwright-core)
// against the ssecast release binary. The page is served by a tiny static
// server on its own origin; its EventSources are cross-origin, so CORS is
// configured with --cors-origins. One stream goes straight to ssecast
// ("direct"), one through a TCP proxy the test can cut ("proxied").
//
//   node --test browser.test.mjs          (from tests/deploy, after npm ci)
import assert from 'node:assert/strict';
import fs from 'node:fs';
import os from 'node:os';
import path from 'node:path';
import { after, before, describe, it } from 'node:test';
import { chromium } from 'playwright-core';
import { CutProxy, DEPLOY_DIR, cleanup, request, startSsecast, startStaticServer, waitFor } from './lib/harness.mjs';
import { EVENT_TYPES, contentScenario, openStreams, proxyCutScenario, restartScenario } from './lib/scenarios.mjs';

const CHROMIUM = process.env.CHROMIUM_PATH || '/usr/bin/chromium';
const CHANNEL = 'browser-test';

describe('headless Chromium EventSource against ssecast', { timeout: 120_000 }, () => {
  let site; let server; let proxy; let proxy2; let context; let page; let profileDir; let client;
  const pageErrors = [];

  before(async () => {
    assert.ok(fs.existsSync(CHROMIUM), `${CHROMIUM} not found: apt-get install chromium (tests/deploy/run.sh does)`);
    site = await startStaticServer(path.join(DEPLOY_DIR, 'browser'));
    server = await startSsecast({
      args: ['--cors-origins', site.origin, '--retry-ms', '200', '--heartbeat-interval', '0.5', '--shutdown-grace', '2'],
    });
    proxy = await new CutProxy(server.port).start();
    profileDir = fs.mkdtempSync(path.join(os.tmpdir(), 'ssecast-chromium-'));
    context = await chromium.launchPersistentContext(profileDir, {
      executablePath: CHROMIUM,
      headless: true,
      timeout: 30_000,
      args: [
        '--headless', '--no-sandbox', '--disable-gpu', '--disable-quic', '--no-first-run',
        '--disable-background-networking', '--disable-component-update', '--disable-sync',
      ],
    });
    page = context.pages()[0] || (await context.newPage());
    page.on('pageerror', (e) => pageErrors.push(String(e)));
    page.on('console', (m) => { if (m.type() === 'error') pageErrors.push(m.text()); });
    await page.goto(`${site.origin}/`, { timeout: 10_000 });
    client = {
      open: (s, url) => page.evaluate(([st, u]) => window.openStream(st, u), [s, url]),
      log: (s) => page.evaluate((st) => window.streamLog(st), s),
    };
  });

  after(async () => {
    try { if (context) await context.close(); } catch { /* browser already gone */ }
    await cleanup();
    if (profileDir) fs.rmSync(profileDir, { recursive: true, force: true });
  });

  it('opens cross-origin streams (CORS from --cors-origins)', async () => {
    const pre = await request({ port: server.port, method: 'OPTIONS', path: `/events?channel=${CHANNEL}`,
      headers: { Origin: site.origin, 'Access-Control-Request-Method': 'GET', 'Access-Control-Request-Headers': 'last-event-id' } });
    assert.ok(pre.status === 200 || pre.status === 204, `preflight status ${pre.status}`);
    assert.equal(pre.headers['access-control-allow-origin'], site.origin, 'preflight Access-Control-Allow-Origin');
    await openStreams(client, {
      direct: `http://127.0.0.1:${server.port}/events?channel=${CHANNEL}`,
      proxied: `http://127.0.0.1:${proxy.port}/sse?channel=${CHANNEL}`,
    });
  });

  it('receives multi-line, unicode, JSON and named (greeting) events exactly', async () => {
    await contentScenario({ client, port: server.port, channel: CHANNEL, streams: ['direct', 'proxied'] });
  });

  it('resumes from ?lastEventId= in the URL (for polyfills), and the header wins over that query on reconnect', async () => {
    // A page that saved the last id (e.g. in localStorage) and resumes with it in the URL.
    const all = (await client.log('direct')).filter((e) => EVENT_TYPES.has(e.type));
    assert.ok(all.length >= 4, 'content events first');
    const from = all.length - 3;
    const resumeId = all[from - 1].id;
    proxy2 = await new CutProxy(server.port).start();
    await openStreams(client, { query: `http://127.0.0.1:${proxy2.port}/events?channel=${CHANNEL}&lastEventId=${resumeId}` });
    const got = await waitFor(async () => {
      const ev = (await client.log('query')).filter((e) => EVENT_TYPES.has(e.type));
      return ev.length >= 3 && ev;
    }, 5000, 'query: replay after ?lastEventId=');
    assert.deepEqual(got.map((e) => [e.type, e.data, e.id]), all.slice(from).map((e) => [e.type, e.data, e.id]), 'replayed from the query id');
    // The browser keeps the URL (with its now stale lastEventId) and adds a Last-Event-ID header on
    // reconnect: the header must win, or every reconnect would replay from the stale id again.
    await proxyCutScenario({ client, port: server.port, channel: CHANNEL, proxy: proxy2, stream: 'query' });
    await page.evaluate(() => window.sources.query.close());
    await proxy2.close();
  });

  it('after a cut connection, reconnects by itself with Last-Event-ID and gets the missed events in order, once', async () => {
    const r = await proxyCutScenario({ client, port: server.port, channel: CHANNEL, proxy, stream: 'proxied', controlStreams: ['direct'] });
    // --retry-ms 200 (+ up to 50 % jitter) was honoured: nowhere near the 3 s default.
    assert.ok(r.reconnectMs < 2000, `reconnect took ${r.reconnectMs} ms`);
  });

  it('after SIGTERM and a restart on the same port, gets history-lost, then live events with higher ids', async () => {
    const r = await restartScenario({ client, server, channel: CHANNEL, proxy, streams: ['direct', 'proxied'], proxiedStream: 'proxied' });
    server = r.server;
    assert.deepEqual(pageErrors.filter((e) => !/net::ERR_|EventSource/.test(e)), [], 'page errors');
  });

  it('still serves after the restart (status endpoint counts the browser streams)', async () => {
    const st = await request({ port: server.port, path: '/events/status' });
    assert.equal(st.status, 200);
    assert.ok(JSON.stringify(st.json).includes(CHANNEL), `status mentions the channel: ${st.text}`);
  });
});
