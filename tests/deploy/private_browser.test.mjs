// Private channels in real headless Chromium (Debian's /usr/bin/chromium via
// playwright-core): a page on one origin subscribes to the hub on another with
// `withCredentials: true` and the token in the `ssecast_token` cookie, as an
// application that logs its users in would set it; the same page without the
// cookie gets an error event and no data. The token is minted here with Node's
// own HMAC-SHA256 (an implementation independent of the hub's).
//
//   node --test private_browser.test.mjs      (from tests/deploy, after npm ci)
import assert from 'node:assert/strict';
import crypto from 'node:crypto';
import fs from 'node:fs';
import os from 'node:os';
import path from 'node:path';
import { after, before, describe, it } from 'node:test';
import { chromium } from 'playwright-core';
import { DEPLOY_DIR, cleanup, publish, startSsecast, startStaticServer, waitFor } from './lib/harness.mjs';

const CHROMIUM = process.env.CHROMIUM_PATH || '/usr/bin/chromium';
const CHANNEL = 'user.42';
const SECRET = crypto.randomBytes(32).toString('hex');

function mint(claims) {
  const b64 = (v) => Buffer.from(JSON.stringify(v)).toString('base64url');
  const body = `${b64({ alg: 'HS256', typ: 'JWT' })}.${b64(claims)}`;
  const sig = crypto.createHmac('sha256', SECRET).update(body).digest('base64url');
  return `${body}.${sig}`;
}

describe('private channels in headless Chromium: the token in a cookie, cross-origin', { timeout: 90_000 }, () => {
  let site; let hub; let context; let page; let profileDir;

  before(async () => {
    assert.ok(fs.existsSync(CHROMIUM), `${CHROMIUM} not found: apt-get install chromium (tests/deploy/run.sh does)`);
    site = await startStaticServer(path.join(DEPLOY_DIR, 'browser'));
    hub = await startSsecast({
      args: ['--subscribe-secret', SECRET, '--cors-origins', site.origin, '--cors-credentials',
        '--retry-ms', '0', '--heartbeat-interval', '0.5'],
    });
    profileDir = fs.mkdtempSync(path.join(os.tmpdir(), 'ssecast-chromium-private-'));
    context = await chromium.launchPersistentContext(profileDir, {
      executablePath: CHROMIUM,
      headless: true,
      timeout: 30_000,
      args: ['--headless', '--no-sandbox', '--disable-gpu', '--no-first-run',
        '--disable-background-networking', '--disable-component-update', '--disable-sync'],
    });
    page = context.pages()[0] || (await context.newPage());
    await page.goto(`${site.origin}/`, { timeout: 10_000 });
    // The page's own streams, recorded for the test to read.
    await page.evaluate(() => {
      window.privateStreams = {};
      window.openPrivate = (name, url) => {
        const rec = { opened: false, errors: 0, data: [], closed: false };
        const es = new EventSource(url, { withCredentials: true });
        es.onopen = () => { rec.opened = true; };
        es.onmessage = (e) => { rec.data.push(e.data); };
        es.onerror = () => { rec.errors += 1; rec.closed = es.readyState === EventSource.CLOSED; };
        window.privateStreams[name] = { es, rec };
      };
      window.privateLog = (name) => window.privateStreams[name].rec;
    });
  });

  after(async () => {
    try { if (context) await context.close(); } catch { /* browser already gone */ }
    await cleanup();
    if (profileDir) fs.rmSync(profileDir, { recursive: true, force: true });
  });

  const hubUrl = () => `http://127.0.0.1:${hub.port}/events?channel=${CHANNEL}`;
  const log = (name) => page.evaluate((n) => window.privateLog(n), name);

  it('with the cookie the stream opens and receives the channel\'s events', async () => {
    const token = mint({ exp: Math.floor(Date.now() / 1000) + 600, channels: [CHANNEL], sub: 'u42' });
    // As the application would after a login: a cookie for the hub's host.
    await page.evaluate((t) => { document.cookie = `ssecast_token=${t}; path=/`; }, token);
    await page.evaluate((u) => window.openPrivate('with', u), hubUrl());
    await waitFor(async () => (await log('with')).opened, 10_000, 'the stream with the cookie to open');
    await publish(hub.port, { channel: CHANNEL, data: 'for user 42' });
    await waitFor(async () => (await log('with')).data.length === 1, 10_000, 'the event to arrive');
    assert.deepEqual((await log('with')).data, ['for user 42']);
    assert.equal((await log('with')).errors, 0);
  });

  it('without the cookie the page gets an error event and no data', async () => {
    await page.evaluate(() => { document.cookie = 'ssecast_token=; path=/; max-age=0'; });
    await page.evaluate((u) => window.openPrivate('without', u), hubUrl());
    // A 401 fails the EventSource for good: one error, readyState CLOSED.
    await waitFor(async () => (await log('without')).closed, 10_000, 'the stream without the cookie to fail');
    await publish(hub.port, { channel: CHANNEL, data: 'not for strangers' });
    // The stream that has the cookie gets it: by then the other would have too.
    await waitFor(async () => (await log('with')).data.length === 2, 10_000, 'the second event on the allowed stream');
    const without = await log('without');
    assert.equal(without.opened, false);
    assert.deepEqual(without.data, []);
    assert.ok(without.errors >= 1);
  });
});
