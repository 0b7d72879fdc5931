//! `channel::Log` against a model, on random operation sequences.
//!
//! Input: byte 0 the capacity (in 8-byte units), bytes 1..3 the floor id,
//! then operations of 2 bytes each: append (with or without an event name,
//! data of a given length, the wall clock moving forward or back), drop the
//! oldest frame, shrink (to fit, or by the quarter rule), drop by age, or
//! check a resume point.
//! After every operation: `tail <= head`, `head - tail <= cap`, the retained
//! bytes are exactly the retained events' frames, ids are
//! `max(previous + 1, clock)`, `resume_after(id)` is `At` exactly for the
//! id before the oldest retained one and every retained id, and replays
//! exactly the events after `id`, and `complete_before(head)` counts every
//! event.

#![no_main]

use std::collections::VecDeque;

use libfuzzer_sys::fuzz_target;
use ssecast::channel::{Log, PublishError, Resume};
use ssecast::sse;

/// A retained event: (id, publish time, frame).
type Model = VecDeque<(u64, u64, Vec<u8>)>;

fuzz_target!(|input: &[u8]| {
    if input.len() < 3 {
        return;
    }
    let cap = 8 * usize::from(input[0]) + 1;
    let floor = u64::from(u16::from_le_bytes([input[1], input[2]]));
    let mut log = Log::new(cap, floor + 1);
    let mut model: Model = VecDeque::new();
    let mut last_id = floor;
    let mut before_id = floor;
    let mut clock = floor / 2;
    let mut time = 0u64;
    let mut published = 0u64;
    let mut scratch = Vec::new();

    for op in input[3..].chunks(2) {
        let (a, b) = (op[0], op.get(1).copied().unwrap_or(0));
        match a >> 5 {
            0..=3 => {
                // Append: data of `b` bytes (with a line break or two), an
                // optional name, the clock moved by the op's low bits.
                let mut data: String = (0..b).map(|i| char::from(b'a' + (i % 26))).collect();
                if a & 2 != 0 && !data.is_empty() {
                    data.insert(data.len() / 2, '\n');
                }
                if a & 4 != 0 {
                    data.push_str("\r\n");
                }
                clock = match a & 0x18 {
                    0 => clock,
                    8 => clock + 1_000,
                    16 => clock.saturating_sub(500),
                    _ => clock + u64::from(b),
                };
                time += u64::from(a & 1);
                let event = (a & 1 == 1).then_some("ev");
                let id = last_id.saturating_add(1).max(clock);
                assert_eq!(log.next_id(clock), id);
                let len = sse::encoded_len(id, event, &data);
                match log.append_at(event, &data, clock, time, a & 0x40 != 0, &mut scratch) {
                    Ok(got) => {
                        assert!(len <= cap);
                        assert_eq!(got, id);
                        let mut frame = Vec::new();
                        sse::encode_event(&mut frame, id, event, &data);
                        assert_eq!(frame.len(), len);
                        model.push_back((id, time, frame));
                        let mut held: usize = model.iter().map(|(_, _, f)| f.len()).sum();
                        while held > cap {
                            let (old, _, f) = model.pop_front().unwrap();
                            held -= f.len();
                            before_id = old;
                        }
                        last_id = id;
                        published += 1;
                    }
                    Err(PublishError::TooLarge { frame, history }) => {
                        assert_eq!((frame, history), (len, cap));
                        assert!(len > cap);
                    }
                    Err(e) => panic!("unexpected {e:?}"),
                }
            }
            4 => {
                assert_eq!(log.drop_oldest(), !model.is_empty());
                if let Some((old, _, _)) = model.pop_front() {
                    before_id = old;
                }
            }
            5 => {
                log.shrink(b & 1 == 1);
                if model.is_empty() {
                    assert_eq!(log.memory(), 0);
                }
            }
            6 => {
                // Drop by age; bytes up to `sent` have been fanned out.
                let cutoff = time.saturating_sub(u64::from(b % 8));
                let sent = log.head()
                    - u64::from(b & 0x80 != 0) * model.back().map_or(0, |m| m.2.len() as u64);
                let mut want = 0;
                let mut end = log.tail();
                while let Some((id, at, f)) = model.front() {
                    if *at > cutoff || end + f.len() as u64 > sent {
                        break;
                    }
                    end += f.len() as u64;
                    before_id = *id;
                    model.pop_front();
                    want += 1;
                }
                assert_eq!(log.drop_older_than(cutoff, sent), want);
            }
            _ => {
                // Resume from an id near the retained range.
                let first = log.first_available_id();
                let probe = (first + u64::from(b)).saturating_sub(8);
                check_resume(&log, &model, before_id, probe);
            }
        }
        check(&log, &model, cap, last_id, published);
    }
    let ids: Vec<u64> = model.iter().map(|m| m.0).collect();
    for probe in [0, u64::MAX, last_id, before_id, before_id.saturating_sub(1)]
        .into_iter()
        .chain(ids)
    {
        check_resume(&log, &model, before_id, probe);
    }
});

fn concat<'a>(frames: impl Iterator<Item = &'a (u64, u64, Vec<u8>)>) -> Vec<u8> {
    frames.flat_map(|(_, _, f)| f.iter().copied()).collect()
}

fn check(log: &Log, model: &Model, cap: usize, last_id: u64, published: u64) {
    let (tail, head) = (log.tail(), log.head());
    assert!(tail <= head);
    assert!(head - tail <= cap as u64);
    assert_eq!(log.last_id(), last_id);
    assert_eq!(log.published(), published);
    assert_eq!(log.frames(), model.len());
    assert_eq!(
        log.first_available_id(),
        model.front().map_or(last_id.saturating_add(1), |m| m.0)
    );
    assert_eq!(log.oldest_at(), model.front().map(|m| m.1));
    assert!(log.memory() >= log.held());
    let (x, y) = log.slices(tail);
    assert_eq!([x, y].concat(), concat(model.iter()), "retained bytes");
    assert_eq!(log.slices(head), (&[][..], &[][..]));
    assert_eq!(log.complete_before(head), published);
    assert_eq!(log.complete_before(tail), published - model.len() as u64);
}

fn check_resume(log: &Log, model: &Model, before_id: u64, id: u64) {
    let held = id == before_id || model.iter().any(|m| m.0 == id);
    match log.resume_after(id) {
        Resume::At(pos) => {
            assert!(held, "resume_after({id}) is At but the id is not held");
            assert!(log.tail() <= pos && pos <= log.head());
            let (x, y) = log.slices(pos);
            let want = concat(model.iter().filter(|m| m.0 > id));
            assert_eq!([x, y].concat(), want, "replay after {id}");
        }
        Resume::Lost => assert!(!held, "resume_after({id}) is Lost but the id is held"),
    }
}
