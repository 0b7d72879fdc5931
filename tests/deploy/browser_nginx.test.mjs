// Headless Chromium through nginx (the shipped scripts/deploy/nginx/ssecast.conf) to ssecast:
// events arrive exactly, and a restart of ssecast behind nginx does not end the browser's
// stream. While ssecast is down nginx must not answer 502 (an EventSource gives up for good on
// any status but 200): the config closes the connection instead (444), so the browser keeps
// retrying and, once ssecast is back, gets history-lost and live events.
//
//   node --test browser_nginx.test.mjs    (from tests/deploy, after npm ci; needs nginx)
import assert from 'node:assert/strict';
import fs from 'node:fs';
import os from 'node:os';
import path from 'node:path';
import { after, before, describe, it } from 'node:test';
import { chromium } from 'playwright-core';
import { DEPLOY_DIR, cleanup, startNginx, startSsecast, startStaticServer } from './lib/harness.mjs';
import { contentScenario, openStreams, restartScenario } from './lib/scenarios.mjs';

const CHROMIUM = process.env.CHROMIUM_PATH || '/usr/bin/chromium';
const CHANNEL = 'browser-nginx-test';

describe('headless Chromium through nginx', { timeout: 120_000 }, () => {
  let site; let server; let nginx; let context; let page; let profileDir; let client;

  before(async () => {
    assert.ok(fs.existsSync(CHROMIUM), `${CHROMIUM} not found: apt-get install chromium (tests/deploy/run.sh does)`);
    site = await startStaticServer(path.join(DEPLOY_DIR, 'browser'));
    server = await startSsecast({
      args: ['--cors-origins', site.origin, '--retry-ms', '200', '--heartbeat-interval', '0.5',
        '--trusted-proxies', '127.0.0.1', '--shutdown-grace', '2'],
    });
    nginx = await startNginx(server.port);
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

  it('opens a cross-origin stream through nginx and receives events exactly', async () => {
    await openStreams(client, { nginx: `http://127.0.0.1:${nginx.port}/events?channel=${CHANNEL}` });
    await contentScenario({ client, port: server.port, channel: CHANNEL, streams: ['nginx'] });
  });

  it('keeps retrying while ssecast restarts behind nginx, then gets history-lost and live events', async () => {
    const r = await restartScenario({ client, server, channel: CHANNEL, streams: ['nginx'], downMs: 1500 });
    server = r.server;
    const log = await client.log('nginx');
    const closed = log.filter((e) => e.type === 'error' && e.readyState === 2);
    assert.deepEqual(closed, [], 'the browser closed the EventSource for good (nginx answered with a non-200 status?)');
    // The shipped log format has no query (a ?token= must not reach the disk): the path only.
    const lines = nginx.accessLog().split('\n').filter((l) => l.includes('"GET /events HTTP/'));
    const refused = lines.filter((l) => / 444 /.test(l));
    const bad = lines.filter((l) => / 50[234] /.test(l));
    assert.ok(refused.length >= 1, `no attempt reached nginx while ssecast was down:\n${lines.join('\n')}`);
    assert.deepEqual(bad, [], 'nginx answered streams with 502/503/504');
  });
});
