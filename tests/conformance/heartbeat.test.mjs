// Heartbeat events in Chromium's EventSource: with --heartbeat-event tick the
// hub's heartbeats are `event: tick` + `data: {"time": <unix ms>}` without an
// `id:` line. The browser must see them as named events (not as messages),
// and its lastEventId must stay at the last real event.
//
//   node --test heartbeat.test.mjs        (from tests/conformance, after npm ci)
import assert from 'node:assert/strict';
import fs from 'node:fs';
import os from 'node:os';
import path from 'node:path';
import { after, before, describe, it } from 'node:test';
import { chromium } from 'playwright-core';
import { cleanup, publish, request, startSsecast, waitFor } from '../deploy/lib/harness.mjs';
import { startCollector } from './lib/collector.mjs';

const CHROMIUM = process.env.CHROMIUM_PATH || '/usr/bin/chromium';

describe('heartbeat events in headless Chromium', { timeout: 60_000 }, () => {
  let server; let collector; let context; let page; let profileDir;

  before(async () => {
    assert.ok(fs.existsSync(CHROMIUM), `${CHROMIUM} not found: apt-get install chromium (run.sh does)`);
    collector = await startCollector();
    server = await startSsecast({ args: ['--cors-origins', collector.origin, '--heartbeat-event', 'tick',
      '--heartbeat-interval', '0.5', '--retry-ms', '500', '--access-log', 'false'] });
    profileDir = fs.mkdtempSync(path.join(os.tmpdir(), 'ssecast-chromium-'));
    context = await chromium.launchPersistentContext(profileDir, {
      executablePath: CHROMIUM, headless: true, timeout: 30_000,
      args: ['--headless', '--no-sandbox', '--disable-gpu', '--no-first-run', '--disable-background-networking',
        '--disable-component-update', '--disable-sync'],
    });
    page = context.pages()[0] || (await context.newPage());
    await page.goto(`${collector.origin}/`, { timeout: 10_000 });
  });

  after(async () => {
    try { if (context) await context.close(); } catch { /* gone */ }
    if (collector) await collector.close();
    await cleanup();
    if (profileDir) fs.rmSync(profileDir, { recursive: true, force: true });
  });

  const log = () => page.evaluate(() => window.hb);
  const ticksAfter = (n) => page.waitForFunction((k) => window.hb.filter((e) => e.type === 'tick').length >= k, n, { timeout: 5000 });

  it('sees heartbeats as named events that leave lastEventId alone', async () => {
    await page.evaluate((url) => {
      window.hb = [];
      const es = new EventSource(url);
      const rec = (e) => window.hb.push({ type: e.type, data: e.data, id: e.lastEventId, t: Date.now() });
      es.onopen = () => window.hb.push({ type: 'open' });
      es.onmessage = rec;
      es.onerror = () => window.hb.push({ type: 'error' });
      es.addEventListener('tick', rec);
    }, `http://127.0.0.1:${server.port}/events?channel=hb`);
    await page.waitForFunction(() => window.hb.some((e) => e.type === 'open'), null, { timeout: 10_000 });
    await waitFor(async () => (await request({ port: server.port, path: '/events/status' })).json.channels.hb === 1, 5000, 'the subscriber');

    const first = String((await publish(server.port, { channel: 'hb', data: 'real one' })).id);
    await ticksAfter(2);
    const second = String((await publish(server.port, { channel: 'hb', data: 'real two' })).id);
    await page.waitForFunction(() => window.hb.filter((e) => e.type === 'message').length >= 2, null, { timeout: 5000 });
    const seen = (await log()).filter((e) => e.type === 'tick').length;
    await ticksAfter(seen + 1);

    const events = (await log()).filter((e) => e.type !== 'open');
    assert.deepEqual(events.filter((e) => e.type === 'error'), [], 'no error events');
    const messages = events.filter((e) => e.type === 'message');
    assert.deepEqual(messages.map((m) => [m.data, m.id]), [['real one', first], ['real two', second]], 'heartbeats are not messages');
    let last = ''; // an EventSource's lastEventId before any id
    for (const e of events) {
      if (e.type === 'message') { last = e.id; continue; }
      assert.equal(e.id, last, `a tick moved lastEventId from ${last} to ${e.id}`);
      const body = JSON.parse(e.data);
      assert.deepEqual(Object.keys(body), ['time']);
      assert.ok(Number.isInteger(body.time) && Math.abs(body.time - e.t) < 5000, `time ${body.time} is unix ms`);
    }
    assert.ok(events.filter((e) => e.type === 'tick' && e.id === second).length >= 1, 'a tick after the second event');
  });
});
