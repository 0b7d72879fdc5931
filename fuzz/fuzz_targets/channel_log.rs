//! `channel::Log` against a model, on random operation sequences.
//!
//! Input: byte 0 the capacity (in 8-byte units), bytes 1..3 the seed, then
//! operations of 2 bytes each: append (with or without an event name, data
//! of a given length), or check a resume point.
//! After every operation: `tail <= head`, `head - tail <= cap`, the retained
//! bytes are exactly the retained events' frames, `resume_after(id)` is `At`
//! exactly for `first_available_id - 1 ..= last_id` and replays exactly the
//! events after `id`, and `complete_before(head)` counts every event.

#![no_main]

use std::collections::VecDeque;

use libfuzzer_sys::fuzz_target;
use ssecast::channel::{Log, PublishError, Resume};
use ssecast::sse;

fuzz_target!(|input: &[u8]| {
    if input.len() < 3 {
        return;
    }
    let cap = 8 * usize::from(input[0]) + 1;
    let seed = u64::from(u16::from_le_bytes([input[1], input[2]]));
    let mut log = Log::new(cap, seed);
    // (id, frame) of every retained event, oldest first.
    let mut model: VecDeque<(u64, Vec<u8>)> = VecDeque::new();
    let mut next_id = seed.max(1);
    let mut published = 0u64;

    for op in input[3..].chunks(2) {
        let (a, b) = (op[0], op.get(1).copied().unwrap_or(0));
        if a & 0x80 == 0 {
            // Append: data of `b` bytes (with a line break or two), optional name.
            let mut data: String = (0..b).map(|i| char::from(b'a' + (i % 26))).collect();
            if a & 2 != 0 && !data.is_empty() {
                data.insert(data.len() / 2, '\n');
            }
            if a & 4 != 0 {
                data.push_str("\r\n");
            }
            let event = (a & 1 == 1).then_some("ev");
            let len = sse::encoded_len(next_id, event, &data);
            match log.append(event, &data) {
                Ok(id) => {
                    assert!(len <= cap);
                    assert_eq!(id, next_id);
                    let mut frame = Vec::new();
                    sse::encode_event(&mut frame, id, event, &data);
                    assert_eq!(frame.len(), len);
                    model.push_back((id, frame));
                    let mut held: usize = model.iter().map(|(_, f)| f.len()).sum();
                    while held > cap {
                        held -= model.pop_front().unwrap().1.len();
                    }
                    next_id += 1;
                    published += 1;
                }
                Err(PublishError::TooLarge { frame, history }) => {
                    assert_eq!((frame, history), (len, cap));
                    assert!(len > cap);
                }
            }
        } else {
            // Resume from an id near the retained range.
            let first = log.first_available_id();
            let probe = (first + u64::from(b)).saturating_sub(4);
            check_resume(&log, &model, probe);
        }
        check(&log, &model, cap, next_id, published);
    }
    for probe in [
        0,
        u64::MAX,
        log.last_id(),
        log.first_available_id().saturating_sub(1),
    ] {
        check_resume(&log, &model, probe);
    }
});

fn concat<'a>(frames: impl Iterator<Item = &'a (u64, Vec<u8>)>) -> Vec<u8> {
    frames.flat_map(|(_, f)| f.iter().copied()).collect()
}

fn check(log: &Log, model: &VecDeque<(u64, Vec<u8>)>, cap: usize, next_id: u64, published: u64) {
    let (tail, head) = (log.tail(), log.head());
    assert!(tail <= head);
    assert!(head - tail <= cap as u64);
    assert_eq!(log.last_id(), next_id - 1);
    assert_eq!(log.published(), published);
    assert_eq!(
        log.first_available_id(),
        model.front().map_or(next_id, |(id, _)| *id)
    );
    let (x, y) = log.slices(tail);
    assert_eq!([x, y].concat(), concat(model.iter()), "retained bytes");
    assert_eq!(log.slices(head), (&[][..], &[][..]));
    assert_eq!(log.complete_before(head), published);
    assert_eq!(log.complete_before(tail), published - model.len() as u64);
}

fn check_resume(log: &Log, model: &VecDeque<(u64, Vec<u8>)>, id: u64) {
    let held = log
        .first_available_id()
        .checked_sub(1)
        .is_some_and(|lo| id >= lo)
        && id <= log.last_id();
    match log.resume_after(id) {
        Resume::At(pos) => {
            assert!(held, "resume_after({id}) is At but the id is not held");
            assert!(log.tail() <= pos && pos <= log.head());
            let (x, y) = log.slices(pos);
            let want = concat(model.iter().filter(|(i, _)| *i > id));
            assert_eq!([x, y].concat(), want, "replay after {id}");
        }
        Resume::Lost => assert!(!held, "resume_after({id}) is Lost but the id is held"),
    }
}
