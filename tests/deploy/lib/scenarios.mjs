// The client-independent scenarios, run once with headless Chromium's
// EventSource and once with the npm `eventsource` package. A "client" adapter
// has: open(stream, url) and log(stream) -> [{type, data, id, t}] where type is
// 'open' | 'error' | 'message' | 'greeting' | 'history-lost'.
import assert from 'node:assert/strict';
import { publish, publishText, sleep, startSsecast, waitFor } from './harness.mjs';

export const EVENT_TYPES = new Set(['message', 'greeting', 'history-lost']);

// Data that must survive the round trip exactly (LF-separated lines incl. an
// empty line and a trailing newline), line endings a client normalises to LF,
// and unicode outside the BMP plus U+2028 (not a line end for SSE).
export const MULTI_LINE = 'first line\nsecond line\n\nfourth line, after an empty one\nends with a newline\n';
export const MIXED_ENDINGS = 'crlf one\r\ncr two\rlf three';
export const MIXED_ENDINGS_AS_RECEIVED = 'crlf one\ncr two\nlf three';
export const UNICODE = 'héllo wörld — 日本語テキスト — 🎉🚀 — line\u2028separator is not a line end — tab\there';
export const UNICODE_PLAIN = 'text/plain: Ελληνικά, русский, עברית, 한국어 ✓ 𝄞';
export const JSON_DATA = { a: [1, 2, 3], b: { c: 'ü', d: null, e: true } };

/** The events (not open/error) of `stream`, from the `from`-th event on. */
export async function eventsOf(client, stream, from = 0) {
  return (await client.log(stream)).filter((e) => EVENT_TYPES.has(e.type)).slice(from);
}

async function countEvents(client, stream) {
  return (await eventsOf(client, stream)).length;
}

async function lastEventId(client, stream) {
  const ev = await eventsOf(client, stream);
  assert.ok(ev.length > 0, `${stream}: no event received yet`);
  return ev[ev.length - 1].id;
}

async function waitEvents(client, stream, from, n, timeoutMs, what) {
  await waitFor(async () => (await eventsOf(client, stream)).slice(from).length >= n, timeoutMs, `${stream}: ${what}`);
  return (await eventsOf(client, stream)).slice(from);
}

const simplify = (evs) => evs.map((e) => ({ type: e.type, data: e.data, id: e.id }));

function assertIncreasing(ids, what) {
  for (let i = 1; i < ids.length; i++) {
    assert.ok(BigInt(ids[i]) > BigInt(ids[i - 1]), `${what}: ids not strictly increasing: ${ids.join(', ')}`);
  }
}

/** Open the streams and wait until each client reports 'open'. */
export async function openStreams(client, urls) {
  for (const [stream, url] of Object.entries(urls)) await client.open(stream, url);
  for (const stream of Object.keys(urls)) {
    await waitFor(async () => (await client.log(stream)).some((e) => e.type === 'open'), 10_000, `${stream}: EventSource open`);
  }
}

/** Scenario 1: multi-line, mixed line endings, unicode, JSON and a named event arrive exactly. */
export async function contentScenario({ client, port, channel, streams }) {
  const from = {};
  for (const s of streams) from[s] = await countEvents(client, s);

  const expected = [];
  const add = (ans, type, data) => expected.push({ type, data, id: String(ans.id) });
  add(await publish(port, { channel, data: MULTI_LINE }), 'message', MULTI_LINE);
  add(await publish(port, { channel, data: MIXED_ENDINGS }), 'message', MIXED_ENDINGS_AS_RECEIVED);
  add(await publish(port, { channel, data: UNICODE }), 'message', UNICODE);
  add(await publishText(port, UNICODE_PLAIN, { channel }), 'message', UNICODE_PLAIN);
  add(await publish(port, { channel, event: 'greeting', data: 'hello, named event' }), 'greeting', 'hello, named event');
  add(await publishText(port, 'named via text/plain ✓', { channel, event: 'greeting' }), 'greeting', 'named via text/plain ✓');
  const jsonAns = await publish(port, { channel, data: JSON_DATA });
  add(jsonAns, 'message', JSON.stringify(JSON_DATA)); // compact encoding, same key order

  for (const s of streams) {
    const got = await waitEvents(client, s, from[s], expected.length, 5000, `${expected.length} published events`);
    const gotS = simplify(got);
    // The JSON event: compare as values (key order is the hub's choice), and require compact encoding.
    const j = gotS.length - 1;
    assert.deepEqual(JSON.parse(gotS[j].data), JSON_DATA, `${s}: JSON data round trip`);
    assert.ok(!/[\n ]/.test(gotS[j].data.replace(/"[^"]*"/g, '')), `${s}: JSON data is not compact: ${gotS[j].data}`);
    gotS[j].data = expected[j].data = 'json-compared-above';
    assert.deepEqual(gotS, expected, `${s}: events as received`);
    assertIncreasing(gotS.map((e) => e.id), s);
  }
  return expected;
}

/**
 * Scenario 2: the proxy cuts `stream` and holds its reconnect; meanwhile
 * events are published; on resume the client must have sent Last-Event-ID
 * and get exactly the missed events, in order, once; then live events.
 */
export async function proxyCutScenario({ client, port, channel, proxy, stream, controlStreams = [] }) {
  const lastId = await lastEventId(client, stream);
  const logLen = (await client.log(stream)).length;
  const from = await countEvents(client, stream);
  const ctlFrom = {};
  for (const s of controlStreams) ctlFrom[s] = await countEvents(client, s);

  const cut = proxy.pause();
  assert.ok(cut >= 1, `proxy had no connection to cut (${cut})`);
  const tCut = Date.now();
  await waitFor(async () => (await client.log(stream)).slice(logLen).some((e) => e.type === 'error'), 5000, `${stream}: client noticed the cut (error event)`);

  const missed = [];
  missed.push({ type: 'message', data: 'missed #1', id: String((await publish(port, { channel, data: 'missed #1' })).id) });
  missed.push({ type: 'greeting', data: 'missed #2 (named) ✓', id: String((await publish(port, { channel, event: 'greeting', data: 'missed #2 (named) ✓' })).id) });
  missed.push({ type: 'message', data: 'missed #3\nwith two lines', id: String((await publish(port, { channel, data: 'missed #3\nwith two lines' })).id) });

  // The client reconnects by itself after `retry:` (200 ms + jitter): the proxy holds that connection.
  const held = await waitFor(() => proxy.held.find((p) => p.headDone), 5000, `${stream}: reconnect attempt reached the proxy`);
  const reconnectMs = Date.now() - tCut;
  const m = /^last-event-id:[ \t]*(\S*)[ \t]*$/im.exec(held.head);
  assert.ok(m, `${stream}: reconnect request has no Last-Event-ID header:\n${held.head}`);
  assert.equal(m[1], lastId, `${stream}: Last-Event-ID sent on reconnect`);
  proxy.resume();

  await waitEvents(client, stream, from, missed.length, 5000, 'missed events after reconnect');
  // A live event after the replay: it must follow the replay, and nothing may be duplicated.
  await sleep(200);
  const live = { type: 'message', data: 'live after reconnect', id: String((await publish(port, { channel, data: 'live after reconnect' })).id) };
  await waitEvents(client, stream, from, missed.length + 1, 5000, 'live event after reconnect');
  await sleep(200); // room for a duplicate to show up
  const final = simplify(await eventsOf(client, stream, from));
  assert.deepEqual(final, [...missed, live], `${stream}: replay after reconnect (exactly once, in order, no history-lost)`);

  for (const s of controlStreams) {
    const ctl = simplify(await waitEvents(client, s, ctlFrom[s], missed.length + 1, 5000, 'control stream live events'));
    assert.deepEqual(ctl, [...missed, live], `${s} (not cut): live events`);
  }
  return { lastId, reconnectMs, reconnectHead: held.head };
}

/**
 * Scenario 3: SIGTERM ssecast, start it again on the same port. Every stream
 * reconnects with its Last-Event-ID, which the new process does not hold: it
 * must get one `history-lost` event (data names the id it sent), then live
 * events with ids above everything before the restart. Then (proving that the
 * history-lost id moved the client's last id forward) a proxy cut and resume
 * replays normally, without a second history-lost.
 */
export async function restartScenario({ client, server, channel, proxy, streams, proxiedStream, downMs = 0 }) {
  const lastIds = {};
  const from = {};
  for (const s of streams) {
    lastIds[s] = await lastEventId(client, s);
    from[s] = await countEvents(client, s);
  }
  const port = server.port;
  const stop = await server.stop('SIGTERM', 20_000);
  assert.equal(stop.killed, false, `ssecast did not exit within 20 s of SIGTERM`);
  assert.equal(stop.signal, null, `ssecast died of signal ${stop.signal} on SIGTERM`);
  assert.equal(stop.code, 0, `ssecast exit code on SIGTERM: ${stop.code}\n${server.logs.join('\n')}`);
  const args = server.args.slice(2); // drop --bind X
  if (downMs) await sleep(downMs); // clients retry against a dead port meanwhile
  const next = await startSsecast({ bind: `127.0.0.1:${port}`, args, name: 'ssecast#2' });
  assert.equal(next.port, port, 'restarted on the same port');

  const hl = {};
  for (const s of streams) {
    const got = await waitEvents(client, s, from[s], 1, 15_000, 'history-lost after restart');
    assert.equal(got[0].type, 'history-lost', `${s}: first event after restart: ${JSON.stringify(got[0])}`);
    let data;
    assert.doesNotThrow(() => { data = JSON.parse(got[0].data); }, `${s}: history-lost data is JSON: ${got[0].data}`);
    assert.equal(String(data.last_event_id), lastIds[s], `${s}: history-lost names the id the client sent`);
    assert.ok('first_available_id' in data, `${s}: history-lost data has first_available_id: ${got[0].data}`);
    assert.match(got[0].id, /^\d+$/, `${s}: history-lost carries a numeric id`);
    hl[s] = got[0];
  }

  // Immediately (before anything is published to the new process) cut the proxied stream again:
  // its Last-Event-ID is now the history-lost id, which must resume normally.
  let cutInfo = null;
  if (proxiedStream) {
    const s = proxiedStream;
    const logLen = (await client.log(s)).length;
    proxy.pause();
    await waitFor(async () => (await client.log(s)).slice(logLen).some((e) => e.type === 'error'), 5000, `${s}: noticed second cut`);
    const missed = [];
    for (const d of ['after restart #1', 'after restart #2 ✓']) {
      missed.push({ type: 'message', data: d, id: String((await publish(next.port, { channel, data: d })).id) });
    }
    const held = await waitFor(() => proxy.held.find((p) => p.headDone), 5000, `${s}: reconnect after restart reached the proxy`);
    const m = /^last-event-id:[ \t]*(\S*)[ \t]*$/im.exec(held.head);
    assert.ok(m, `${s}: reconnect has no Last-Event-ID:\n${held.head}`);
    assert.equal(m[1], hl[s].id, `${s}: Last-Event-ID after history-lost is the history-lost id`);
    proxy.resume();
    await waitEvents(client, s, from[s], 1 + missed.length, 5000, 'events published while cut after restart');
    cutInfo = { missed };
  }

  const live = { type: 'message', data: 'live after restart', id: String((await publish(next.port, { channel, data: 'live after restart' })).id) };
  for (const s of streams) {
    await waitEvents(client, s, from[s], 1 + (cutInfo ? cutInfo.missed.length : 0) + 1, 5000, 'live event after restart');
  }
  await sleep(200);
  for (const s of streams) {
    const got = simplify(await eventsOf(client, s, from[s]));
    // Streams that were not cut received the events of the second cut live.
    const want = [simplify([hl[s]])[0], ...(cutInfo ? cutInfo.missed : []), live];
    assert.deepEqual(got, want, `${s}: events after restart`);
    for (const e of got.slice(1)) {
      assert.ok(BigInt(e.id) > BigInt(lastIds[s]), `${s}: id ${e.id} after restart is not above ${lastIds[s]} from before`);
    }
    assertIncreasing(got.map((e) => e.id), `${s} after restart`);
  }
  return { server: next, stop, historyLost: Object.fromEntries(Object.entries(hl).map(([k, v]) => [k, { id: v.id, data: v.data }])) };
}
