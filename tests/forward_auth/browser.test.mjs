// Headless Chromium (Debian's /usr/bin/chromium via playwright-core, the
// copy tests/deploy installs) subscribes through forward auth with the
// Flask app's session cookie; the app goes down and comes back. EventSource
// treats "closed without an answer" as a network error and retries by
// itself (a 503 would end it for good), so the page opens again once the
// app answers. The page records its open/message/error events.
import { spawn } from 'node:child_process';
import { createRequire } from 'node:module';
import fs from 'node:fs';
import http from 'node:http';
import os from 'node:os';
import path from 'node:path';
import { fileURLToPath } from 'node:url';
import { after, before, describe, it } from 'node:test';
import assert from 'node:assert/strict';

const HERE = path.dirname(fileURLToPath(import.meta.url));
const REPO = path.resolve(HERE, '..', '..');
const require = createRequire(path.join(REPO, 'tests', 'deploy', 'package.json'));
const { chromium } = require('playwright-core');
const CHROMIUM = process.env.CHROMIUM_PATH || '/usr/bin/chromium';
const BIN = process.env.SSECAST_BIN || path.join(REPO, 'target', 'release', 'ssecast');

const procs = new Set();

function spawnTracked(cmd, args, env) {
  const p = spawn(cmd, args, { env, stdio: ['ignore', 'pipe', 'pipe'] });
  procs.add(p);
  p.on('exit', () => procs.delete(p));
  return p;
}

/** Resolves with the first match of `re` in the process's `stream`. */
function readyLine(p, stream, re, what) {
  return new Promise((resolve, reject) => {
    let buf = '';
    const t = setTimeout(() => reject(new Error(`${what} did not start: ${buf}`)), 10_000);
    p[stream].setEncoding('utf8');
    p[stream].on('data', (d) => {
      buf += d;
      const m = buf.match(re);
      if (m) { clearTimeout(t); resolve(m[1]); }
    });
    p.on('exit', (code) => reject(new Error(`${what} exited (${code}): ${buf}`)));
  });
}

async function startApp(port = 0) {
  const env = { ...process.env, FLASK_SECRET: 'forward-auth-browser' };
  const p = spawnTracked('python3', [path.join(HERE, 'app.py'), String(port)], env);
  p.stderr.resume();
  const got = await readyLine(p, 'stdout', /ready (\d+)/, 'the Flask app');
  return { proc: p, port: Number(got) };
}

async function stop(p) {
  if (p.exitCode !== null || p.signalCode !== null) return;
  const gone = new Promise((r) => p.once('exit', r));
  p.kill('SIGKILL');
  await gone;
}

function publish(port, channel, data) {
  return new Promise((resolve, reject) => {
    const body = JSON.stringify({ channel, data });
    const req = http.request({ host: '127.0.0.1', port, method: 'POST', path: '/events/broadcast',
      headers: { 'Content-Type': 'application/json', 'Content-Length': Buffer.byteLength(body) } }, (res) => {
      res.resume();
      res.on('end', () => (res.statusCode === 200 ? resolve() : reject(new Error(`publish ${res.statusCode}`))));
    });
    req.on('error', reject);
    req.end(body);
  });
}

describe('Chromium EventSource through forward auth', { timeout: 90_000 }, () => {
  let app; let hub; let hubPort; let context; let page; let profileDir;

  before(async () => {
    assert.ok(fs.existsSync(CHROMIUM), `${CHROMIUM} not found (apt-get install chromium)`);
    app = await startApp();
    const env = Object.fromEntries(Object.entries(process.env).filter(([k]) => !k.startsWith('SSE_')));
    hub = spawnTracked(BIN, ['--bind', '127.0.0.1:0', '--retry-ms', '300', '--access-log', 'false',
      '--subscribe-auth-url', `http://127.0.0.1:${app.port}/auth`, '--subscribe-auth-timeout', '1',
      '--subscribe-auth-cache', '0'], env);
    hubPort = Number(await readyLine(hub, 'stderr', /listening on 127\.0\.0\.1:(\d+)/, 'ssecast'));
    profileDir = fs.mkdtempSync(path.join(os.tmpdir(), 'ssecast-fwd-chromium-'));
    context = await chromium.launchPersistentContext(profileDir, {
      executablePath: CHROMIUM, headless: true, timeout: 30_000,
      args: ['--headless', '--no-sandbox', '--disable-gpu', '--no-first-run',
        '--disable-background-networking', '--disable-component-update', '--disable-sync'],
    });
    page = context.pages()[0] || (await context.newPage());
  });

  after(async () => {
    try { if (context) await context.close(); } catch { /* already gone */ }
    for (const p of [...procs]) await stop(p);
    if (profileDir) fs.rmSync(profileDir, { recursive: true, force: true });
  });

  it('retries by itself while the app is down and opens again once it is back', async () => {
    // The session cookie is the app's (host 127.0.0.1: sent to the hub's port too).
    await page.goto(`http://127.0.0.1:${app.port}/login?user=gina&channels=gina&expires=2`);
    await page.goto(`http://127.0.0.1:${hubPort}/health`);
    await page.evaluate(() => {
      window.log = [];
      const es = new EventSource('/events?channel=gina');
      window.es = es;
      es.onopen = () => window.log.push({ t: 'open' });
      es.onmessage = (e) => window.log.push({ t: 'message', data: e.data });
      es.onerror = () => window.log.push({ t: 'error', state: es.readyState });
    });
    const count = (t) => page.evaluate((k) => window.log.filter((e) => e.t === k).length, t);
    await page.waitForFunction(() => window.log.some((e) => e.t === 'open'), null, { timeout: 10_000 });
    await publish(hubPort, 'gina', 'before');
    await page.waitForFunction(() => window.log.some((e) => e.data === 'before'), null, { timeout: 5_000 });

    // The app goes away; the 2 s stream ends and every retry is closed unanswered.
    const port = app.port;
    await stop(app.proc);
    const errorsBefore = await count('error');
    await page.waitForFunction((n) => window.log.filter((e) => e.t === 'error').length >= n + 3,
      errorsBefore, { timeout: 20_000 });
    const opensWhileDown = await count('open');

    app = await startApp(port);
    await page.waitForFunction((n) => window.log.filter((e) => e.t === 'open').length > n,
      opensWhileDown, { timeout: 15_000 });
    await publish(hubPort, 'gina', 'after');
    await page.waitForFunction(() => window.log.some((e) => e.data === 'after'), null, { timeout: 5_000 });

    const log = await page.evaluate(() => window.log);
    const closedForGood = log.filter((e) => e.t === 'error' && e.state === 2);
    assert.equal(closedForGood.length, 0, `EventSource gave up: ${JSON.stringify(log)}`);
    assert.notEqual(await page.evaluate(() => window.es.readyState), 2);
    assert.deepEqual(log.filter((e) => e.t === 'message').map((e) => e.data), ['before', 'after']);
  });
});
