// The npm `eventsource` package (a WHATWG-compatible EventSource for Node) as
// a second real client, through the same scenarios as the browser: exact
// content, reconnect with Last-Event-ID after a cut, history-lost after a
// restart on the same port.
//
//   node --test eventsource.test.mjs      (from tests/deploy, after npm ci)
import { after, before, describe, it } from 'node:test';
import assert from 'node:assert/strict';
import { EventSource } from 'eventsource';
import { CutProxy, cleanup, startSsecast } from './lib/harness.mjs';
import { contentScenario, openStreams, proxyCutScenario, restartScenario } from './lib/scenarios.mjs';

const CHANNEL = 'node-eventsource-test';

function nodeClient() {
  const logs = {};
  const sources = {};
  return {
    sources,
    async open(stream, url) {
      const es = new EventSource(url);
      sources[stream] = es;
      const l = (logs[stream] = []);
      const rec = (type) => (e) => l.push(e && 'data' in e ? { type, data: e.data, id: e.lastEventId, t: Date.now() } : { type, t: Date.now() });
      es.onopen = rec('open');
      es.onerror = rec('error');
      es.onmessage = rec('message');
      es.addEventListener('greeting', rec('greeting'));
      es.addEventListener('history-lost', rec('history-lost'));
    },
    async log(stream) { return logs[stream] || []; },
    close() { for (const es of Object.values(sources)) es.close(); },
  };
}

describe('npm eventsource client against ssecast', { timeout: 90_000 }, () => {
  let server; let proxy; let client;

  before(async () => {
    server = await startSsecast({ args: ['--retry-ms', '200', '--heartbeat-interval', '0.5', '--shutdown-grace', '2'] });
    proxy = await new CutProxy(server.port).start();
    client = nodeClient();
  });

  after(async () => {
    if (client) client.close();
    await cleanup();
  });

  it('opens streams (direct and through the cutting proxy)', async () => {
    await openStreams(client, {
      direct: `http://127.0.0.1:${server.port}/events?channel=${CHANNEL}`,
      proxied: `http://127.0.0.1:${proxy.port}/events?channel=${CHANNEL}`,
    });
  });

  it('receives multi-line, unicode, JSON and named events exactly', async () => {
    await contentScenario({ client, port: server.port, channel: CHANNEL, streams: ['direct', 'proxied'] });
  });

  it('reconnects with Last-Event-ID after a cut and gets the missed events in order, once', async () => {
    const r = await proxyCutScenario({ client, port: server.port, channel: CHANNEL, proxy, stream: 'proxied', controlStreams: ['direct'] });
    assert.ok(r.reconnectMs < 2000, `reconnect took ${r.reconnectMs} ms (retry: 200 ms expected to be honoured)`);
  });

  it('gets history-lost after SIGTERM and a restart on the same port, then live events', async () => {
    const r = await restartScenario({ client, server, channel: CHANNEL, proxy, streams: ['direct', 'proxied'], proxiedStream: 'proxied' });
    server = r.server;
  });
});
