// Shared plumbing for the real-client deploy tests: start/stop the ssecast
// release binary, publish to it, a TCP proxy that can cut connections, and a
// tiny static server for the browser page. Every process and socket started
// here is tracked and ended by PID/handle in cleanup(); nothing is killed by
// name.
import { spawn } from 'node:child_process';
import fs from 'node:fs';
import http from 'node:http';
import net from 'node:net';
import os from 'node:os';
import path from 'node:path';
import { fileURLToPath } from 'node:url';

export const DEPLOY_DIR = path.resolve(path.dirname(fileURLToPath(import.meta.url)), '..');
export const REPO_DIR = path.resolve(DEPLOY_DIR, '..', '..');

const started = new Set(); // child processes we spawned (killed by handle in cleanup)
const closers = new Set(); // servers / sockets to close in cleanup

export function ssecastBin() {
  const bin = process.env.SSECAST_BIN || path.join(REPO_DIR, 'target', 'release', 'ssecast');
  if (!fs.existsSync(bin)) {
    throw new Error(`ssecast binary not found at ${bin}: run 'cargo build --release' first (or set SSECAST_BIN)`);
  }
  return bin;
}

export const sleep = (ms) => new Promise((r) => setTimeout(r, ms));

/** Poll `fn` (sync or async) until it returns a truthy value; throw `what` on timeout. */
export async function waitFor(fn, timeoutMs, what) {
  const deadline = Date.now() + timeoutMs;
  let last;
  for (;;) {
    last = await fn();
    if (last) return last;
    if (Date.now() > deadline) throw new Error(`timed out after ${timeoutMs} ms waiting for: ${what}`);
    await sleep(20);
  }
}

/**
 * Start ssecast. Resolves once it logged `listening on HOST:PORT` on stderr.
 * `bind` defaults to 127.0.0.1:0 (a free port). The environment is cleaned of
 * SSE_* variables so that only `args` configure it.
 */
export function startSsecast({ bind = '127.0.0.1:0', args = [], readyTimeoutMs = 10_000, name = 'ssecast' } = {}) {
  const bin = ssecastBin();
  const env = Object.fromEntries(Object.entries(process.env).filter(([k]) => !k.startsWith('SSE_')));
  const fullArgs = ['--bind', bind, ...args];
  const proc = spawn(bin, fullArgs, { env, stdio: ['ignore', 'pipe', 'pipe'] });
  started.add(proc);
  const logs = [];
  let exited = null;
  const exitPromise = new Promise((resolve) => {
    proc.on('exit', (code, signal) => {
      exited = { code, signal };
      started.delete(proc);
      resolve(exited);
    });
  });
  const onLine = (stream) => {
    let buf = '';
    proc[stream].setEncoding('utf8');
    proc[stream].on('data', (d) => {
      buf += d;
      let i;
      while ((i = buf.indexOf('\n')) >= 0) {
        const line = buf.slice(0, i);
        buf = buf.slice(i + 1);
        logs.push(line);
        if (process.env.DEPLOY_TEST_VERBOSE) process.stderr.write(`[${name}] ${line}\n`);
      }
    });
  };
  onLine('stdout');
  onLine('stderr');

  return new Promise((resolve, reject) => {
    const t0 = Date.now();
    const timer = setInterval(() => {
      const hit = logs.map((l) => /listening on (\S+):(\d+)/.exec(l)).find(Boolean);
      if (hit) {
        clearInterval(timer);
        resolve({
          proc,
          pid: proc.pid,
          host: hit[1],
          port: Number(hit[2]),
          logs,
          args: fullArgs,
          exitPromise,
          get exited() { return exited; },
          /** SIGTERM (or `signal`), wait up to `timeoutMs`, SIGKILL after that. Resolves {code, signal, ms, killed}. */
          async stop(signal = 'SIGTERM', timeoutMs = 15_000) {
            if (exited) return { ...exited, ms: 0, killed: false };
            const s = Date.now();
            proc.kill(signal);
            let timer;
            const r = await Promise.race([exitPromise, new Promise((res) => { timer = setTimeout(() => res(null), timeoutMs); })]);
            clearTimeout(timer);
            if (r) return { ...r, ms: Date.now() - s, killed: false };
            proc.kill('SIGKILL');
            const r2 = await exitPromise;
            return { ...r2, ms: Date.now() - s, killed: true };
          },
        });
      } else if (exited) {
        clearInterval(timer);
        reject(new Error(`${name} exited early (${JSON.stringify(exited)}); output:\n${logs.join('\n')}`));
      } else if (Date.now() - t0 > readyTimeoutMs) {
        clearInterval(timer);
        proc.kill('SIGKILL');
        reject(new Error(`${name} did not log 'listening on' within ${readyTimeoutMs} ms; output:\n${logs.join('\n')}`));
      }
    }, 10);
  });
}

/** One HTTP request on a fresh connection (no pooling: the server may have restarted). */
export function request({ port, host = '127.0.0.1', method = 'GET', path: p = '/', headers = {}, body, timeoutMs = 5000, localAddress }) {
  return new Promise((resolve, reject) => {
    const req = http.request(
      { host, port, method, path: p, headers: { Connection: 'close', ...headers }, agent: false, localAddress, timeout: timeoutMs },
      (res) => {
        const chunks = [];
        res.on('data', (c) => chunks.push(c));
        res.on('end', () => {
          const text = Buffer.concat(chunks).toString('utf8');
          let json;
          try { json = JSON.parse(text); } catch { json = undefined; }
          resolve({ status: res.statusCode, headers: res.headers, text, json });
        });
        res.on('error', reject);
      },
    );
    req.on('timeout', () => req.destroy(new Error(`${method} ${p} timed out after ${timeoutMs} ms`)));
    req.on('error', reject);
    if (body !== undefined) req.write(body);
    req.end();
  });
}

/** Publish one event (object) or a batch (array) as JSON; resolves the parsed answer, throws on non-200. */
export async function publish(port, event) {
  const r = await request({
    port,
    method: 'POST',
    path: '/events/broadcast',
    headers: { 'Content-Type': 'application/json' },
    body: JSON.stringify(event),
  });
  if (r.status !== 200) throw new Error(`publish ${JSON.stringify(event)} -> ${r.status} ${r.text}`);
  return r.json;
}

/** Publish a text/plain body; channel and event in the query. */
export async function publishText(port, text, { channel, event } = {}) {
  const q = new URLSearchParams();
  if (channel) q.set('channel', channel);
  if (event) q.set('event', event);
  const r = await request({
    port,
    method: 'POST',
    path: `/events/broadcast${q.toString() ? `?${q}` : ''}`,
    headers: { 'Content-Type': 'text/plain; charset=utf-8' },
    body: Buffer.from(text, 'utf8'),
  });
  if (r.status !== 200) throw new Error(`publish text ${JSON.stringify(text)} -> ${r.status} ${r.text}`);
  return r.json;
}

/**
 * A TCP proxy in front of ssecast that the test can tell to cut every
 * connection (cutAll), or to cut and hold new connections (pause) until
 * resume(). It records the request head of every connection it sees, so a test
 * can check what a client sent on reconnect (Last-Event-ID).
 */
export class CutProxy {
  constructor(targetPort, targetHost = '127.0.0.1') {
    this.targetPort = targetPort;
    this.targetHost = targetHost;
    this.pairs = new Set();
    this.held = [];
    this.heads = []; // request heads, in arrival order
    this.paused = false;
    this.server = net.createServer((c) => this._onClient(c));
  }

  async start() {
    await new Promise((resolve, reject) => {
      this.server.once('error', reject);
      this.server.listen(0, '127.0.0.1', resolve);
    });
    this.port = this.server.address().port;
    closers.add(this);
    return this;
  }

  _onClient(client) {
    const pair = { client, upstream: null, connected: false, pending: [], head: '', headDone: false };
    this.pairs.add(pair);
    client.setNoDelay(true);
    client.on('data', (chunk) => {
      if (!pair.headDone) {
        pair.head += chunk.toString('latin1');
        const end = pair.head.indexOf('\r\n\r\n');
        if (end >= 0) {
          pair.head = pair.head.slice(0, end);
          pair.headDone = true;
          this.heads.push(pair.head);
        }
      }
      if (pair.connected) pair.upstream.write(chunk);
      else pair.pending.push(chunk);
    });
    const drop = () => {
      client.destroy();
      if (pair.upstream) pair.upstream.destroy();
      this.pairs.delete(pair);
      this.held = this.held.filter((p) => p !== pair);
    };
    client.on('error', drop);
    client.on('close', drop);
    if (this.paused) this.held.push(pair);
    else this._connect(pair);
  }

  _connect(pair) {
    const up = net.connect(this.targetPort, this.targetHost);
    pair.upstream = up;
    up.setNoDelay(true);
    up.on('connect', () => {
      pair.connected = true;
      for (const c of pair.pending) up.write(c);
      pair.pending = [];
    });
    up.on('data', (d) => pair.client.write(d));
    // Server closed (or refused): pass the close on, after what was already read.
    up.on('end', () => pair.client.end());
    up.on('error', () => pair.client.destroy());
    up.on('close', () => pair.client.end());
  }

  /** Abruptly close every proxied connection (both sides). Returns how many. */
  cutAll() {
    const n = this.pairs.size;
    for (const p of [...this.pairs]) {
      p.client.destroy();
      if (p.upstream) p.upstream.destroy();
      this.pairs.delete(p);
    }
    this.held = [];
    return n;
  }

  /** Cut every connection and hold new ones (accepted, not forwarded) until resume(). */
  pause() {
    this.paused = true;
    return this.cutAll();
  }

  resume() {
    this.paused = false;
    const held = this.held;
    this.held = [];
    for (const p of held) this._connect(p);
    return held.length;
  }

  async close() {
    this.cutAll();
    await new Promise((r) => this.server.close(r));
    closers.delete(this);
  }
}

/** A static server for the browser page(s): serves files of `dir` by name. */
export async function startStaticServer(dir) {
  const types = { '.html': 'text/html; charset=utf-8', '.js': 'text/javascript; charset=utf-8', '.mjs': 'text/javascript; charset=utf-8' };
  const server = http.createServer((req, res) => {
    const u = new URL(req.url, 'http://x');
    const name = u.pathname === '/' ? 'page.html' : path.basename(u.pathname);
    const file = path.join(dir, name);
    if (!fs.existsSync(file)) {
      res.writeHead(404, { 'Content-Type': 'text/plain' });
      res.end('not found');
      return;
    }
    res.writeHead(200, { 'Content-Type': types[path.extname(file)] || 'application/octet-stream', 'Cache-Control': 'no-store' });
    fs.createReadStream(file).pipe(res);
  });
  await new Promise((resolve, reject) => {
    server.once('error', reject);
    server.listen(0, '127.0.0.1', resolve);
  });
  const handle = {
    server,
    port: server.address().port,
    origin: `http://127.0.0.1:${server.address().port}`,
    close: () => new Promise((r) => { server.closeAllConnections?.(); server.close(r); closers.delete(handle); }),
  };
  closers.add(handle);
  return handle;
}

/**
 * nginx with the shipped scripts/deploy/nginx/ssecast.conf, its three substitution points
 * rewritten to a free loopback port, `upstreamPort` and a log in the temp dir; prefix, pid file, temp paths and logs
 * in a fresh temp dir (never the system's). Resolves once the port accepts connections.
 */
export async function startNginx(upstreamPort, { nginx = process.env.NGINX || (fs.existsSync('/usr/sbin/nginx') ? '/usr/sbin/nginx' : 'nginx') } = {}) {
  const tmp = fs.mkdtempSync(path.join(os.tmpdir(), 'ssecast-nginx-'));
  fs.chmodSync(tmp, 0o755); // workers run as nobody when we are root
  const port = await freePort();
  const shipped = fs.readFileSync(process.env.SSECAST_NGINX_CONF || path.join(REPO_DIR, 'scripts', 'deploy', 'nginx', 'ssecast.conf'), 'utf8');
  let n = 0;
  const conf = shipped
    .replace(/^(\s*)listen 80;/m, (_, ws) => { n++; return `${ws}listen 127.0.0.1:${port};`; })
    .replace(/^(\s*)server 127\.0\.0\.1:5001;/m, (_, ws) => { n++; return `${ws}server 127.0.0.1:${upstreamPort};`; })
    .replace(/^(\s*)access_log \/var\/log\/nginx\/ssecast\.access\.log /m, (_, ws) => { n++; return `${ws}access_log ${tmp}/ssecast.access.log `; });
  if (n !== 3) throw new Error('substitution points not found in scripts/deploy/nginx/ssecast.conf');
  fs.writeFileSync(path.join(tmp, 'ssecast.conf'), conf);
  const main = `worker_processes 1; daemon off; master_process on;
pid ${tmp}/nginx.pid; error_log ${tmp}/error.log info;
events { worker_connections 256; }
http { access_log ${tmp}/access.log; default_type text/plain;
  client_body_temp_path ${tmp}/client_body; proxy_temp_path ${tmp}/proxy; fastcgi_temp_path ${tmp}/fastcgi;
  uwsgi_temp_path ${tmp}/uwsgi; scgi_temp_path ${tmp}/scgi;
  include ${tmp}/ssecast.conf; }\n`;
  fs.writeFileSync(path.join(tmp, 'nginx.conf'), main);
  const args = ['-p', `${tmp}/`, '-c', path.join(tmp, 'nginx.conf'), '-e', path.join(tmp, 'error.log')];
  const proc = spawn(nginx, args, { stdio: ['ignore', 'ignore', 'pipe'] });
  started.add(proc);
  let stderr = '';
  proc.stderr.on('data', (d) => { stderr += d; });
  let exited = null;
  const exitPromise = new Promise((r) => proc.on('exit', (code, signal) => { exited = { code, signal }; started.delete(proc); r(exited); }));
  const deadline = Date.now() + 10_000;
  for (;;) {
    const up = await new Promise((r) => {
      const c = net.connect(port, '127.0.0.1', () => { c.destroy(); r(true); });
      c.on('error', () => r(false));
    });
    if (up) break;
    const log = () => { try { return fs.readFileSync(path.join(tmp, 'error.log'), 'utf8'); } catch { return ''; } };
    if (exited || Date.now() > deadline) throw new Error(`nginx did not start (${JSON.stringify(exited)}): ${stderr}\n${log()}`);
    await sleep(50);
  }
  const handle = {
    port,
    dir: tmp,
    // The shipped config's own access log (substitution point 3): without query strings.
    accessLog: () => { try { return fs.readFileSync(path.join(tmp, 'ssecast.access.log'), 'utf8'); } catch { return ''; } },
    async close() {
      if (!exited) {
        proc.kill('SIGTERM');
        let t;
        await Promise.race([exitPromise, new Promise((r) => { t = setTimeout(r, 10_000); })]);
        clearTimeout(t);
        if (!exited) proc.kill('SIGKILL');
      }
      closers.delete(handle);
      fs.rmSync(tmp, { recursive: true, force: true });
    },
  };
  closers.add(handle);
  return handle;
}

export function freePort() {
  return new Promise((resolve, reject) => {
    const s = net.createServer();
    s.once('error', reject);
    s.listen(0, '127.0.0.1', () => { const { port } = s.address(); s.close(() => resolve(port)); });
  });
}

/** End everything this module started: processes by handle (SIGKILL if still alive), servers closed. */
export async function cleanup() {
  for (const c of [...closers]) {
    try { await c.close(); } catch { /* already closed */ }
  }
  for (const p of [...started]) {
    try { p.kill('SIGKILL'); } catch { /* gone */ }
  }
}

// Last resort if the test runner exits abruptly: no orphans.
process.on('exit', () => {
  for (const p of started) {
    try { p.kill('SIGKILL'); } catch { /* gone */ }
  }
});
