// The collector: a small HTTP server on loopback that serves the browser page
// (browser/page.html), tells it which stream to open (/config), and receives
// what each browser's EventSource got (/report). It is how Firefox ESR, which
// has no driver here, takes part: `firefox-esr --headless` opens the page with a
// throwaway profile and the page POSTs its results back.
import { spawn } from 'node:child_process';
import fs from 'node:fs';
import http from 'node:http';
import os from 'node:os';
import path from 'node:path';
import { fileURLToPath } from 'node:url';

const HERE = path.dirname(fileURLToPath(import.meta.url));
const PAGE = fs.readFileSync(path.join(HERE, '..', 'browser', 'page.html'));

export async function startCollector() {
  const reports = new Map(); // client -> report
  const opened = new Set(); // clients whose EventSource fired `open`
  const waiters = [];
  let config = null;
  const wake = () => { for (const w of waiters.splice(0)) w(); };
  const server = http.createServer((req, res) => {
    const u = new URL(req.url, 'http://collector');
    const client = u.searchParams.get('client');
    if (req.method === 'GET' && u.pathname === '/') {
      res.writeHead(200, { 'Content-Type': 'text/html; charset=utf-8', 'Cache-Control': 'no-store' });
      return res.end(PAGE);
    }
    if (req.method === 'GET' && u.pathname === '/config') {
      res.writeHead(200, { 'Content-Type': 'application/json', 'Cache-Control': 'no-store' });
      return res.end(JSON.stringify(config));
    }
    if (req.method === 'POST' && (u.pathname === '/report' || u.pathname === '/opened')) {
      const chunks = [];
      req.on('data', (c) => chunks.push(c));
      req.on('end', () => {
        if (u.pathname === '/opened') opened.add(client);
        else reports.set(client, JSON.parse(Buffer.concat(chunks).toString('utf8')));
        res.writeHead(204);
        res.end();
        wake();
      });
      return undefined;
    }
    res.writeHead(404, { 'Content-Type': 'text/plain' });
    return res.end('not found');
  });
  await new Promise((resolve, reject) => {
    server.once('error', reject);
    server.listen(0, '127.0.0.1', resolve);
  });
  const origin = `http://127.0.0.1:${server.address().port}`;
  /** Resolves when `pred()` holds; rejects after `ms` naming `what`. */
  const until = (pred, ms, what) => new Promise((resolve, reject) => {
    const t = setTimeout(() => reject(new Error(`collector: timed out after ${ms} ms waiting for ${what}`)), ms);
    const check = () => {
      if (pred()) { clearTimeout(t); resolve(); } else waiters.push(check);
    };
    check();
  });
  return {
    origin,
    pageUrl: (client) => `${origin}/?client=${encodeURIComponent(client)}`,
    configure(c) { config = c; },
    opened: (client, ms) => until(() => opened.has(client), ms, `${client} to open its EventSource`),
    report: async (client, ms) => { await until(() => reports.has(client), ms, `${client}'s report`); return reports.get(client); },
    close: () => new Promise((r) => { server.closeAllConnections?.(); server.close(r); }),
  };
}

/**
 * Firefox ESR, headless, on `url`, with a fresh profile that switches off
 * everything that would reach the network or show a first-run page. Returns
 * { proc, stop() }; stop() ends it by its PID and removes the profile.
 */
export function startFirefox(url, { bin = process.env.FIREFOX_PATH || '/usr/bin/firefox-esr' } = {}) {
  if (!fs.existsSync(bin)) throw new Error(`${bin} not found: apt-get install firefox-esr (run.sh does)`);
  const profile = fs.mkdtempSync(path.join(os.tmpdir(), 'ssecast-firefox-'));
  const prefs = {
    'browser.shell.checkDefaultBrowser': false,
    'browser.startup.homepage_override.mstone': 'ignore',
    'browser.aboutwelcome.enabled': false,
    'datareporting.policy.dataSubmissionEnabled': false,
    'datareporting.healthreport.uploadEnabled': false,
    'toolkit.telemetry.enabled': false,
    'app.update.enabled': false,
    'app.normandy.enabled': false,
    'extensions.update.enabled': false,
    'browser.safebrowsing.malware.enabled': false,
    'browser.safebrowsing.phishing.enabled': false,
    'network.captive-portal-service.enabled': false,
    'network.connectivity-service.enabled': false,
    'browser.newtabpage.enabled': false,
    'network.proxy.type': 0,
  };
  fs.writeFileSync(path.join(profile, 'user.js'),
    Object.entries(prefs).map(([k, v]) => `user_pref(${JSON.stringify(k)}, ${JSON.stringify(v)});\n`).join(''));
  const env = { ...process.env, HOME: profile, MOZ_HEADLESS: '1', MOZ_CRASHREPORTER_DISABLE: '1' };
  const proc = spawn(bin, ['--headless', '--no-remote', '--profile', profile, url], { env, stdio: ['ignore', 'ignore', 'pipe'] });
  let stderr = '';
  proc.stderr.on('data', (d) => { stderr = (stderr + d).slice(-4000); });
  let exited = null;
  const exit = new Promise((r) => proc.on('exit', (code, signal) => { exited = { code, signal }; r(exited); }));
  return {
    proc,
    get stderr() { return stderr; },
    get exited() { return exited; },
    async stop() {
      if (!exited) {
        proc.kill('SIGTERM');
        let t;
        await Promise.race([exit, new Promise((r) => { t = setTimeout(r, 5000); })]);
        clearTimeout(t);
        if (!exited) { proc.kill('SIGKILL'); await exit; }
      }
      fs.rmSync(profile, { recursive: true, force: true });
    },
  };
}
