// Many SSE parsers agree: every payload of payloads.json is published once and
// read back by independent parsers, all subscribed to one stream before the
// first publish:
//   Chromium's EventSource (playwright-core + /usr/bin/chromium)
//   Firefox ESR's EventSource (firefox-esr --headless on the collector's page)
//   eventsource-parser, fetch-event-stream, extended-eventsource (Node)
//   httpx-sse, sseclient-py (Python, py_readers.py)
// Each must return exactly the published data (LF, CR and CRLF in the data
// become LF), the event name and the id from the publish answer. A client
// that deviates from the WHATWG parsing rules is listed in deviations.json:
// its deviation is asserted as it is, so a change in either direction fails.
//
//   node --test parsers.test.mjs        (from tests/conformance, after npm ci)
import assert from 'node:assert/strict';
import { spawn } from 'node:child_process';
import fs from 'node:fs';
import os from 'node:os';
import path from 'node:path';
import { after, before, describe, it } from 'node:test';
import { fileURLToPath } from 'node:url';
import { chromium } from 'playwright-core';
import { cleanup, publish, request, startSsecast, waitFor } from '../deploy/lib/harness.mjs';
import { startCollector, startFirefox } from './lib/collector.mjs';
import { startNodeClients } from './lib/parsers.mjs';

const HERE = path.dirname(fileURLToPath(import.meta.url));
const CHROMIUM = process.env.CHROMIUM_PATH || '/usr/bin/chromium';
const RETRY_MS = 1000;
const HEARTBEAT_S = 0.3;
const { channel: CHANNEL, cases: CASES } = JSON.parse(fs.readFileSync(path.join(HERE, 'payloads.json'), 'utf8'));
const DEVIATIONS = JSON.parse(fs.readFileSync(path.join(HERE, 'deviations.json'), 'utf8')).deviations;
const CLIENTS = ['chromium', 'firefox', 'eventsource-parser', 'fetch-event-stream', 'extended-eventsource', 'httpx-sse', 'sseclient-py'];

/** The data a case publishes (JSON value or string). */
function published(c) {
  if (c.data_repeat) return c.data_repeat[0].repeat(c.data_repeat[1]);
  if (c.data_lines) return Array.from({ length: c.data_lines[1] }, (_, i) => c.data_lines[0].replace('{i}', i)).join('\n');
  return c.data;
}
/** What a WHATWG parser must return: the hub's rule, every CRLF, CR or LF becomes LF. */
function expected(c) {
  return c.expect ?? published(c).replace(/\r\n|\r/g, '\n');
}

describe('independent SSE parsers read every payload exactly', { timeout: 150_000 }, () => {
  const results = {};
  let want; let server; let collector; let context; let firefox; let py; let profileDir;

  before(async () => {
    assert.ok(CASES.length >= 20, 'at least 20 payloads');
    assert.ok(fs.existsSync(CHROMIUM), `${CHROMIUM} not found: apt-get install chromium (run.sh does)`);
    collector = await startCollector();
    server = await startSsecast({ args: ['--cors-origins', collector.origin, '--heartbeat-interval', String(HEARTBEAT_S),
      '--retry-ms', String(RETRY_MS), '--access-log', 'false'] });
    const stream = `http://127.0.0.1:${server.port}/events?channel=${CHANNEL}`;
    const names = [...new Set(CASES.map((c) => c.event).filter((n) => n && n !== 'message'))];
    collector.configure({ stream, names });

    // Subscribe everyone; readiness is each client's own "opened" signal, then
    // the hub's count of subscribers on the channel.
    firefox = startFirefox(collector.pageUrl('firefox'));
    profileDir = fs.mkdtempSync(path.join(os.tmpdir(), 'ssecast-chromium-'));
    context = await chromium.launchPersistentContext(profileDir, {
      executablePath: CHROMIUM, headless: true, timeout: 30_000,
      args: ['--headless', '--no-sandbox', '--disable-gpu', '--no-first-run', '--disable-background-networking',
        '--disable-component-update', '--disable-sync'],
    });
    const page = context.pages()[0] || (await context.newPage());
    await page.goto(collector.pageUrl('chromium'), { timeout: 10_000 });
    py = spawn('python3', [path.join(HERE, 'py_readers.py'), stream], { stdio: ['ignore', 'pipe', 'pipe'] });
    let pyOut = ''; let pyErr = '';
    py.stdout.on('data', (d) => { pyOut += d; });
    py.stderr.on('data', (d) => { pyErr += d; });
    const pyDone = new Promise((r) => py.on('exit', (code) => r(code)));
    const node = await startNodeClients(stream, names);
    await collector.opened('chromium', 15_000);
    await collector.opened('firefox', 45_000).catch((e) => { throw new Error(`${e.message}; firefox stderr: ${firefox.stderr}`); });
    await waitFor(() => (pyErr.match(/^opened /gm) || []).length === 2 || py.exitCode !== null, 15_000, 'python readers to open');
    await waitFor(async () => {
      const s = await request({ port: server.port, path: '/events/status' });
      return s.json.channels[CHANNEL] === CLIENTS.length;
    }, 10_000, `${CLIENTS.length} subscribers on ${CHANNEL}`);

    want = [];
    for (const c of CASES) {
      const body = { channel: CHANNEL, data: published(c), ...(c.event ? { event: c.event } : {}) };
      const { id } = await publish(server.port, body);
      want.push({ case: c.name, type: c.event ?? 'message', data: expected(c), id: String(id) });
    }
    // A quiet spell: every subscriber gets heartbeats (`:` comments) before the end marker.
    const beats = async () => (await request({ port: server.port, path: '/events/status' })).json.heartbeats;
    const before = await beats();
    await waitFor(async () => (await beats()) >= before + 2 * CLIENTS.length, 10_000, 'two heartbeats per subscriber');
    await publish(server.port, { channel: CHANNEL, event: 'end', data: 'end' });

    for (const [name, p] of Object.entries(node)) results[name] = await p;
    results.chromium = await collector.report('chromium', 30_000);
    results.firefox = await collector.report('firefox', 30_000);
    const code = await Promise.race([pyDone, new Promise((r) => setTimeout(() => r('timeout'), 70_000).unref())]);
    assert.equal(code, 0, `py_readers.py exited ${code}: ${pyErr}`);
    Object.assign(results, JSON.parse(pyOut));
    if (process.env.CONFORMANCE_DUMP) fs.writeFileSync(process.env.CONFORMANCE_DUMP, JSON.stringify({ want, results }));
  });

  after(async () => {
    try { if (context) await context.close(); } catch { /* gone */ }
    if (firefox) await firefox.stop();
    if (py && py.exitCode === null) py.kill('SIGKILL');
    if (collector) await collector.close();
    await cleanup();
    if (profileDir) fs.rmSync(profileDir, { recursive: true, force: true });
  });

  /** Compares what `client` reported with the table, its listed deviations applied. */
  function problemsOf(client) {
    const r = results[client];
    const mine = DEVIATIONS.filter((d) => d.client === client);
    const all = r.events.filter((e) => e.type !== 'end').map((e) => ({ type: e.type, data: e.data, id: e.id ?? '' }));
    // The table has no empty data (the hub refuses it), so an event with empty data is the
    // client's own: some dispatch one for the `retry:` block and for each heartbeat.
    // (A listed deviation that empties a payload keeps its one event.)
    const emptied = new Set(want.filter((w) => mine.some((d) => d.case === w.case && d.got?.data === '')).map((w) => w.id));
    const got = [];
    const empties = [];
    for (const e of all) {
      if (e.data !== '' || emptied.delete(e.id)) got.push(e);
      else empties.push(e);
    }
    const problems = [];
    const short = (v) => JSON.stringify(v).slice(0, 160);
    const byId = new Map(got.map((g, i) => [g.id, i]));
    let last = -1;
    for (const w of want) {
      const d = mine.find((x) => x.case === w.case);
      const exp = { type: w.type, data: w.data, id: w.id, ...(d?.got ?? {}) };
      const i = byId.get(w.id);
      if (i === undefined) { problems.push(`${w.case}: missing`); continue; }
      if (i < last) problems.push(`${w.case}: out of order`);
      last = i;
      for (const k of ['type', 'data']) {
        if (got[i][k] !== exp[k]) problems.push(`${w.case}: ${k} ${short(got[i][k])}, want ${short(exp[k])}${d ? ' (listed deviation)' : ''}`);
      }
    }
    const wanted = new Set(want.map((w) => w.id));
    const extras = got.filter((g) => !wanted.has(g.id));
    if (extras.length) problems.push(`events the hub never sent: ${short(extras)}`);
    if (mine.some((d) => d.empty_events)) {
      if (empties.length < 2 || empties.some((e) => e.type !== 'message')) problems.push(`listed as dispatching empty messages for \`retry:\` and heartbeats, got ${short(empties)}`);
    } else if (empties.length) problems.push(`${empties.length} events with empty data: ${short(empties)}`);
    return problems;
  }

  for (const client of CLIENTS) {
    it(`${client} returns every payload, event name and id`, () => {
      const r = results[client];
      assert.ok(r, `no result from ${client}`);
      assert.deepEqual(r.errors, [], `${client} reported errors`);
      const problems = problemsOf(client);
      assert.equal(problems.length, 0, `${client}:\n  ${problems.join('\n  ')}`);
    });
  }

  it('every listed deviation still differs from what the hub sent', () => {
    for (const d of DEVIATIONS) {
      assert.ok(CLIENTS.includes(d.client), `deviations.json names unknown client ${d.client}`);
      if (d.empty_events) continue;
      const w = want.find((x) => x.case === d.case);
      assert.ok(w, `deviations.json names unknown case ${d.case}`);
      assert.notDeepEqual({ ...w, ...d.got }, w, `${d.client}/${d.case}: listed as a deviation but no different`);
    }
  });

  it('fetch-event-stream turns numeric ids into Numbers', () => {
    assert.deepEqual(results['fetch-event-stream'].idTypes, ['number']);
  });
});
