// The Node clients of the parsers test, each reading one stream until the
// `end` event: eventsource-parser (EventSourceParserStream over fetch),
// fetch-event-stream and extended-eventsource (each with a parser of its own,
// not eventsource-parser: see README.md). Each resolves
// { events: [{type, data, id}], errors: [], ...notes }.
import { EventSourceParserStream } from 'eventsource-parser/stream';
import { CustomEventSource } from 'extended-eventsource';
import { events as fetchEvents } from 'fetch-event-stream';

const LIMIT_MS = 60_000;

function bounded(name, run) {
  const ac = new AbortController();
  const t = setTimeout(() => ac.abort(new Error(`${name}: no end event within ${LIMIT_MS} ms`)), LIMIT_MS);
  return run(ac.signal)
    .catch((e) => ({ events: [], errors: [String(e?.stack || e)] }))
    .finally(() => clearTimeout(t));
}

/** Resolves once each client has its response headers: { name: Promise<result> }. */
export async function startNodeClients(url, names) {
  const opened = [];
  const open = () => { let r; opened.push(new Promise((res) => { r = res; })); return r; };

  const onOpen1 = open();
  const parser = bounded('eventsource-parser', async (signal) => {
    const res = await fetch(url, { signal, headers: { Accept: 'text/event-stream' } });
    onOpen1();
    const out = { events: [], errors: [] };
    const stream = res.body.pipeThrough(new TextDecoderStream()).pipeThrough(new EventSourceParserStream());
    for await (const e of stream) {
      out.events.push({ type: e.event ?? 'message', data: e.data, id: e.id ?? '' });
      if (e.event === 'end') break;
    }
    return out;
  });

  const onOpen2 = open();
  const fes = bounded('fetch-event-stream', async (signal) => {
    const res = await fetch(url, { signal, headers: { Accept: 'text/event-stream' } });
    onOpen2();
    const out = { events: [], errors: [], idTypes: new Set(), noData: 0 };
    for await (const e of fetchEvents(res, signal)) {
      if (e.data === undefined) { out.noData++; continue; } // e.g. the `retry:` block
      out.idTypes.add(typeof e.id);
      out.events.push({ type: e.event ?? 'message', data: e.data, id: e.id === undefined ? '' : String(e.id) });
      if (e.event === 'end') break;
    }
    out.idTypes = [...out.idTypes];
    return out;
  });

  const onOpen3 = open();
  const ees = bounded('extended-eventsource', (signal) => new Promise((resolve) => {
    const out = { events: [], errors: [] };
    const es = new CustomEventSource(url, { disableRetry: true, disableLogger: true });
    const record = (e) => out.events.push({ type: e.type, data: e.data, id: e.lastEventId });
    for (const n of names) es.addEventListener(n, record);
    es.onmessage = record;
    es.onopen = () => onOpen3();
    es.onerror = () => out.errors.push(`error event after ${out.events.length} events`);
    es.addEventListener('end', (e) => { record(e); es.close(); resolve(out); });
    signal.addEventListener('abort', () => { es.close(); out.errors.push(String(signal.reason)); resolve(out); });
  }));

  await Promise.race([Promise.all(opened), new Promise((_, rej) => setTimeout(() => rej(new Error('node clients did not open within 10 s')), 10_000).unref())]);
  return { 'eventsource-parser': parser, 'fetch-event-stream': fes, 'extended-eventsource': ees };
}
