//! What the hub keeps in Redis and how: key names, the two Lua scripts
//! (publish, replay), the commands' arguments and the decoding of their
//! replies. Pure: no sockets here.
//!
//! Keys, for prefix `P` and channel name encoded `E` (every byte outside
//! `A-Z a-z 0-9 . _ -` as `%XX`, so no two names share a key and no name
//! holds a brace):
//! - `P:{E}:s` the channel's stream: entries `<id>-0` with fields `p` (the
//!   channel's previous id), `e` (event name, when there is one), `d` (data);
//! - `P:{E}:m` the channel's last id, which outlives trimming and expiry;
//! - `P:{E}:i:<hex>` a stored publish answer (`Idempotency-Key`);
//! - `P:n` the notification stream: one entry per channel per publish, its
//!   field `c` naming the channel; followed by every process;
//! - `P:ctl` revocations, followed by every process.
//!
//! `{E}` is a Redis Cluster hash tag: a channel's keys share a slot.

use super::super::resp::Reply;

/// One event of a publish, validated and ready for Redis.
pub struct Event<'a> {
    pub channel: &'a str,
    pub event: Option<&'a str>,
    pub data: &'a str,
}

/// An entry read back from a stream.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Entry {
    pub id: u64,
    pub prev: u64,
    pub event: Option<String>,
    pub data: String,
}

/// The publish script: several publishes (each one event or a batch) in
/// one call, so what a turn brings costs Redis one script run, one meta
/// update, one expiry refresh and one notification per channel. Each
/// publish is all or none and they are applied in order. Validates before
/// its first write (a script error does not roll back): a channel's
/// previous id is its meta key, or without one its stream's last entry, so
/// XADD cannot refuse the id. Ids are `max(prev + 1, TIME in µs)`,
/// formatted with `%d` (Lua would print a float). Returns one item per
/// publish: `{id1, prev1, id2, prev2, ...}`, or `{"dup", stored}` when its
/// idempotency key is already there (set by an earlier call, or by an
/// earlier publish of this one).
///
/// KEYS: the notification stream, then per publish: its idempotency key
/// (or ""), then stream and meta key per event.
/// ARGV: publishes, maxlen, ttl_us (0: none), stream expiry ms (0: none),
/// meta expiry ms (0: none), idempotency ttl ms, the publishing process
/// (in the notifications: it reads its own events from the replies); then
/// per publish: events, stored answer prefix, then per event: has-name
/// ("1"/"0"), name, data, channel.
pub const PUBLISH: &str = r#"#!lua
local t = redis.call('TIME')
local now = tonumber(t[1]) * 1000000 + tonumber(t[2])
local maxlen, ttl = ARGV[2], tonumber(ARGV[3])
local sx, mx, ix = tonumber(ARGV[4]), tonumber(ARGV[5]), ARGV[6]
local last, streams, names, seen = {}, {}, {}, {}
local k, a = 2, 8
local plan = {}
for j = 1, tonumber(ARGV[1]) do
  local n = tonumber(ARGV[a])
  local p = {ikey = KEYS[k], prefix = ARGV[a + 1], first = k + 1, arg = a + 2, n = n}
  for i = 0, n - 1 do
    local s, m = KEYS[k + 1 + 2 * i], KEYS[k + 2 + 2 * i]
    if last[m] == nil then
      local meta = redis.call('GET', m)
      local prev = tonumber(meta or '0') or 0
      if not meta then
        local top = redis.call('XREVRANGE', s, '+', '-', 'COUNT', 1)
        if top[1] then
          local tid = tonumber(string.match(top[1][1], '^(%d+)')) or 0
          if tid > prev then prev = tid end
        end
      end
      last[m] = prev
    end
  end
  plan[j] = p
  k = k + 1 + 2 * n
  a = a + 2 + 4 * n
end
local replies = {}
for j, p in ipairs(plan) do
  local stored = nil
  if p.ikey ~= '' then stored = redis.call('GET', p.ikey) end
  if stored then
    replies[j] = {'dup', stored}
  else
    local out = {}
    for i = 0, p.n - 1 do
      local s, m = KEYS[p.first + 2 * i], KEYS[p.first + 1 + 2 * i]
      local b = p.arg + 4 * i
      local prev = last[m]
      local id = prev + 1
      if now > id then id = now end
      local ids, ps = string.format('%d', id), string.format('%d', prev)
      if ARGV[b] == '1' then
        redis.call('XADD', s, 'MAXLEN', '~', maxlen, ids .. '-0', 'p', ps, 'e', ARGV[b + 1], 'd', ARGV[b + 2])
      else
        redis.call('XADD', s, 'MAXLEN', '~', maxlen, ids .. '-0', 'p', ps, 'd', ARGV[b + 2])
      end
      last[m] = id
      if not seen[s] then
        seen[s] = true
        streams[#streams + 1] = s
        names[#names + 1] = ARGV[b + 3]
      end
      out[#out + 1] = ids
      out[#out + 1] = ps
    end
    if p.ikey ~= '' then
      redis.call('SET', p.ikey, p.prefix .. table.concat(out, ','), 'PX', ix)
    end
    replies[j] = out
  end
end
for m, id in pairs(last) do
  if mx > 0 then
    redis.call('SET', m, string.format('%d', id), 'PX', mx)
  else
    redis.call('SET', m, string.format('%d', id))
  end
end
for i, s in ipairs(streams) do
  -- Trimming by age is approximate anyway (and checked again on reading):
  -- about one call in 16 does it.
  if ttl > 0 and now % 16 == 0 then
    redis.call('XTRIM', s, 'MINID', '~', string.format('%d', now - ttl) .. '-0')
  end
  if sx > 0 then redis.call('PEXPIRE', s, sx) end
  redis.call('XADD', KEYS[1], 'MAXLEN', '~', '100000', '*', 'c', names[i], 'o', ARGV[7])
end
return replies
"#;

/// The replay script: the channel's last id (its tip) and the entries
/// after an id, atomically, so "complete" can be decided.
/// KEYS: stream, meta. ARGV: after ("" for only the tip), count.
/// Returns `{tip, entries}`.
pub const REPLAY: &str = r#"#!lua flags=no-writes
local tip = redis.call('GET', KEYS[2]) or '0'
local top = redis.call('XREVRANGE', KEYS[1], '+', '-', 'COUNT', 1)
if top[1] then
  local tid = string.match(top[1][1], '^(%d+)')
  if tonumber(tid) > tonumber(tip) then tip = tid end
end
if ARGV[1] == '' then return {tip, {}} end
return {tip, redis.call('XRANGE', KEYS[1], '(' .. ARGV[1] .. '-0', '+', 'COUNT', ARGV[2])}
"#;

/// The key names of one hub.
#[derive(Clone, Debug)]
pub struct Keys {
    prefix: String,
}

impl Keys {
    pub fn new(prefix: &str) -> Keys {
        Keys {
            prefix: prefix.to_string(),
        }
    }

    fn channel_key(&self, channel: &str, kind: &str) -> String {
        let mut k = String::with_capacity(self.prefix.len() + channel.len() + 8);
        k.push_str(&self.prefix);
        k.push_str(":{");
        encode_name(&mut k, channel);
        k.push_str("}:");
        k.push_str(kind);
        k
    }

    pub fn stream(&self, channel: &str) -> String {
        self.channel_key(channel, "s")
    }

    pub fn meta(&self, channel: &str) -> String {
        self.channel_key(channel, "m")
    }

    /// A stored answer: under the first event's channel, named by the
    /// scope's hash (never the client's key itself).
    pub fn idempotency(&self, channel: &str, scope_hex: &str) -> String {
        let mut k = self.channel_key(channel, "i:");
        k.push_str(scope_hex);
        k
    }

    pub fn control(&self) -> String {
        format!("{}:ctl", self.prefix)
    }

    pub fn notify(&self) -> String {
        format!("{}:n", self.prefix)
    }

    /// The channel a stream key names, when it is one of ours.
    pub fn channel_of(&self, key: &[u8]) -> Option<String> {
        let k = std::str::from_utf8(key).ok()?;
        let inner = k
            .strip_prefix(self.prefix.as_str())?
            .strip_prefix(":{")?
            .strip_suffix("}:s")?;
        decode_name(inner)
    }
}

/// Percent-encodes every byte outside `A-Z a-z 0-9 . _ -`.
pub fn encode_name(out: &mut String, name: &str) {
    const HEX: &[u8; 16] = b"0123456789ABCDEF";
    for &b in name.as_bytes() {
        if b.is_ascii_alphanumeric() || b"._-".contains(&b) {
            out.push(b as char);
        } else {
            out.push('%');
            out.push(HEX[(b >> 4) as usize] as char);
            out.push(HEX[(b & 15) as usize] as char);
        }
    }
}

fn decode_name(s: &str) -> Option<String> {
    let b = s.as_bytes();
    let mut out = Vec::with_capacity(b.len());
    let mut i = 0;
    while i < b.len() {
        if b[i] == b'%' {
            let h = std::str::from_utf8(b.get(i + 1..i + 3)?).ok()?;
            out.push(u8::from_str_radix(h, 16).ok()?);
            i += 3;
        } else {
            out.push(b[i]);
            i += 1;
        }
    }
    String::from_utf8(out).ok()
}

/// Parses `<u64>-0` (or `<u64>-<seq>`: the sequence is ignored) or `<u64>`.
pub fn parse_id(b: &[u8]) -> Option<u64> {
    let s = std::str::from_utf8(b).ok()?;
    let ms = s.split_once('-').map_or(s, |(a, _)| a);
    ms.parse().ok()
}

/// One stream entry `[id, [field, value, ...]]`.
pub fn parse_entry(r: &Reply) -> Option<Entry> {
    let Reply::Array(pair) = r else { return None };
    let [id, Reply::Array(fields)] = pair.as_slice() else {
        return None;
    };
    let mut e = Entry {
        id: parse_id(id.as_bytes()?)?,
        prev: 0,
        event: None,
        data: String::new(),
    };
    for kv in fields.chunks(2) {
        let [k, v] = kv else { return None };
        let v = v.as_bytes()?;
        match k.as_bytes()? {
            b"p" => e.prev = parse_id(v)?,
            b"e" => e.event = Some(String::from_utf8(v.to_vec()).ok()?),
            b"d" => e.data = String::from_utf8(v.to_vec()).ok()?,
            _ => {}
        }
    }
    Some(e)
}

/// The entries of an XRANGE reply.
pub fn parse_entries(r: &Reply) -> Option<Vec<Entry>> {
    match r {
        // An entry that is not ours (written by something else under our
        // prefix) is skipped, not a broken connection: reconnecting would
        // read it again, for ever.
        Reply::Array(items) => Some(
            items
                .iter()
                .filter_map(|e| {
                    let parsed = parse_entry(e);
                    if parsed.is_none() {
                        log::warn!("skipped a stream entry that is not ssecast's: {e:?}");
                    }
                    parsed
                })
                .collect(),
        ),
        Reply::Nil | Reply::NilArray => Some(Vec::new()),
        _ => None,
    }
}

/// What a publish script said.
#[derive(Debug, PartialEq, Eq)]
pub enum Appended {
    /// `(id, previous id)` per event, in order.
    Ids(Vec<(u64, u64)>),
    /// The idempotency key was there: the stored answer.
    Stored(String),
}

/// The replies of a publish call, one per publish in it.
pub fn parse_publishes(r: &Reply) -> Option<Vec<Appended>> {
    let Reply::Array(items) = r else { return None };
    items.iter().map(parse_publish).collect()
}

pub fn parse_publish(r: &Reply) -> Option<Appended> {
    let Reply::Array(items) = r else { return None };
    if let [Reply::Bulk(tag), stored] = items.as_slice() {
        if tag == b"dup" {
            return Some(Appended::Stored(stored.as_str()?.to_string()));
        }
    }
    let mut ids = Vec::with_capacity(items.len() / 2);
    for pair in items.chunks(2) {
        let [id, prev] = pair else { return None };
        ids.push((parse_id(id.as_bytes()?)?, parse_id(prev.as_bytes()?)?));
    }
    Some(Appended::Ids(ids))
}

/// A replay script's `{tip, entries}`.
pub fn parse_replay(r: &Reply) -> Option<(u64, Vec<Entry>)> {
    let Reply::Array(items) = r else { return None };
    let [tip, entries] = items.as_slice() else {
        return None;
    };
    Some((parse_id(tip.as_bytes()?)?, parse_entries(entries)?))
}

/// An XREAD reply: `(stream key, entries)` per stream that had any.
pub fn parse_xread(r: &Reply) -> Option<Vec<(Vec<u8>, Vec<Entry>)>> {
    match r {
        Reply::Nil | Reply::NilArray => Some(Vec::new()),
        Reply::Array(streams) => streams
            .iter()
            .map(|s| {
                let Reply::Array(kv) = s else { return None };
                let [k, entries] = kv.as_slice() else {
                    return None;
                };
                Some((k.as_bytes()?.to_vec(), parse_entries(entries)?))
            })
            .collect(),
        _ => None,
    }
}

/// An entry's fields as they came.
pub type Fields = Vec<(Vec<u8>, Vec<u8>)>;

/// A raw XREAD entry's fields, for streams that are not channels (the
/// control stream): `(id, [(field, value)])`.
pub fn raw_fields(r: &Reply) -> Option<(Vec<u8>, Fields)> {
    let Reply::Array(pair) = r else { return None };
    let [id, Reply::Array(fields)] = pair.as_slice() else {
        return None;
    };
    let mut out = Vec::with_capacity(fields.len() / 2);
    for kv in fields.chunks(2) {
        let [k, v] = kv else { return None };
        out.push((k.as_bytes()?.to_vec(), v.as_bytes()?.to_vec()));
    }
    Some((id.as_bytes()?.to_vec(), out))
}

#[cfg(test)]
mod tests {
    use super::*;

    fn bulk(s: &str) -> Reply {
        Reply::Bulk(s.as_bytes().to_vec())
    }

    #[test]
    fn names_encode_so_no_two_share_a_key() {
        let k = Keys::new("ssecast");
        assert_eq!(k.stream("news"), "ssecast:{news}:s");
        assert_eq!(k.stream("a}b{c"), "ssecast:{a%7Db%7Bc}:s");
        assert_ne!(k.stream("a:b"), k.stream("a%3Ab"));
        assert_eq!(k.meta("ü"), "ssecast:{%C3%BC}:m");
        for name in ["news", "a}b{c", "a:b", "a%3Ab", "ü", "x y"] {
            assert_eq!(
                k.channel_of(k.stream(name).as_bytes()).as_deref(),
                Some(name)
            );
        }
        assert_eq!(k.channel_of(b"other:{x}:s"), None);
        assert_eq!(k.channel_of(k.meta("x").as_bytes()), None);
        assert_eq!(k.idempotency("n", "ab"), "ssecast:{n}:i:ab");
    }

    #[test]
    fn replies_decode() {
        let entry = |id: &str, p: &str, e: Option<&str>, d: &str| {
            let mut f = vec![bulk("p"), bulk(p)];
            if let Some(e) = e {
                f.extend([bulk("e"), bulk(e)]);
            }
            f.extend([bulk("d"), bulk(d)]);
            Reply::Array(vec![bulk(id), Reply::Array(f)])
        };
        let r = Reply::Array(vec![
            bulk("1763778000000001"),
            Reply::Array(vec![
                entry("1763778000000002-0", "1763778000000001", Some("x"), "a\nb"),
                entry("1763778000000003-0", "1763778000000002", None, ""),
            ]),
        ]);
        let (tip, es) = parse_replay(&r).unwrap();
        assert_eq!(tip, 1763778000000001);
        assert_eq!(es.len(), 2);
        assert_eq!(
            es[0],
            Entry {
                id: 1763778000000002,
                prev: 1763778000000001,
                event: Some("x".into()),
                data: "a\nb".into()
            }
        );
        let p = Reply::Array(vec![bulk("5"), bulk("4"), bulk("6"), bulk("5")]);
        assert_eq!(parse_publish(&p), Some(Appended::Ids(vec![(5, 4), (6, 5)])));
        let d = Reply::Array(vec![bulk("dup"), bulk("h|1|5")]);
        assert_eq!(parse_publish(&d), Some(Appended::Stored("h|1|5".into())));
        assert_eq!(parse_publish(&Reply::Int(3)), None);
        assert_eq!(parse_xread(&Reply::NilArray), Some(vec![]));
        let x = Reply::Array(vec![Reply::Array(vec![
            bulk("k"),
            Reply::Array(vec![entry("9-0", "8", None, "z")]),
        ])]);
        assert_eq!(parse_xread(&x).unwrap()[0].1[0].id, 9);
        assert_eq!(parse_xread(&Reply::Array(vec![Reply::Int(1)])), None);
        // A foreign entry is skipped, the others kept.
        let mixed = Reply::Array(vec![Reply::Int(1), entry("9-0", "8", None, "z")]);
        assert_eq!(parse_entries(&mixed).map(|v| v.len()), Some(1));
        assert_eq!(parse_id(b"12-3"), Some(12));
        assert_eq!(parse_id(b"x"), None);
    }
}
