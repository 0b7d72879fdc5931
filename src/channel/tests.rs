//! The hub's lifecycle and budget, without sockets.

use super::*;

fn limits(max_channels: usize, history_memory: usize, ttl_ms: u64) -> Limits {
    Limits {
        history_bytes: 1024,
        max_channels,
        history_memory,
        history_ttl_ms: ttl_ms,
    }
}

fn at(unix_us: u64, mono_ms: u64) -> Stamp {
    Stamp { unix_us, mono_ms }
}

/// Publishes (fanning out first whenever asked) and returns the id.
fn publish(hub: &mut Hub, name: &str, data: &str, now: Stamp) -> u64 {
    let ch = hub.channel(name, now).expect("channel");
    loop {
        match hub.publish(ch, None, data, now).expect("publish") {
            Appended::Id(id) => return id,
            Appended::FanOutFirst(x) => hub.mark_sent(x),
        }
    }
}

fn sent_all(hub: &mut Hub) {
    let mut d = Vec::new();
    hub.take_dirty(&mut d);
    for ch in d {
        hub.mark_sent(ch);
    }
}

fn names(hub: &Hub) -> Vec<String> {
    let mut v: Vec<String> = hub.iter().map(|c| c.name.to_string()).collect();
    v.sort();
    v
}

#[test]
fn hub_marks_dirty_once_and_swaps_subscribers() {
    let mut hub = Hub::new(limits(2, 1 << 20, 0));
    let now = at(1, 0);
    let a = hub.channel("a", now).unwrap();
    let b = hub.channel("b", now).unwrap();
    assert_eq!(hub.channel("a", now), Some(a));
    assert_eq!(hub.publish(a, None, "x", now), Ok(Appended::Id(1)));
    assert_eq!(hub.publish(a, None, "y", now), Ok(Appended::Id(2)));
    let mut d = Vec::new();
    hub.take_dirty(&mut d);
    assert_eq!(d, vec![a]);
    hub.take_dirty(&mut d);
    assert!(d.is_empty());
    assert_eq!(hub.subscribe(b, 7), 0);
    assert_eq!(hub.subscribe(b, 8), 1);
    assert_eq!(hub.subscribe(b, 9), 2);
    assert_eq!(hub.unsubscribe(b, 0), Some(9));
    assert_eq!(hub.get(b).subscribers, vec![9, 8]);
    assert_eq!(hub.unsubscribe(b, 1), None);
    assert_eq!(hub.subscriber_count(), 1);
}

#[test]
fn unsent_bytes_are_fanned_out_before_the_history_overflows() {
    let mut hub = Hub::new(limits(4, 1 << 20, 0));
    let now = at(1, 0);
    let a = hub.channel("a", now).unwrap();
    // 1024-byte history, 114-byte frames: the ninth one overflows it.
    let data = "d".repeat(100);
    for _ in 0..8 {
        assert!(matches!(
            hub.publish(a, None, &data, now),
            Ok(Appended::Id(_))
        ));
    }
    assert_eq!(
        hub.publish(a, None, &data, now),
        Ok(Appended::FanOutFirst(a))
    );
    assert_eq!(hub.counts().evicted_size, 0);
    hub.mark_sent(a);
    assert!(matches!(
        hub.publish(a, None, &data, now),
        Ok(Appended::Id(_))
    ));
    assert_eq!(hub.counts().evicted_size, 1);
    let big = "x".repeat(2000);
    assert!(matches!(
        hub.publish(a, None, &big, now),
        Err(PublishError::TooLarge { .. })
    ));
}

#[test]
fn the_cap_evicts_the_least_recently_used_channel_without_subscribers() {
    let mut hub = Hub::new(limits(3, 1 << 20, 0));
    let now = at(1, 0);
    publish(&mut hub, "a", "1", now);
    publish(&mut hub, "b", "1", now);
    publish(&mut hub, "c", "1", now);
    let b = hub.find("b").unwrap();
    hub.subscribe(b, 1);
    publish(&mut hub, "a", "2", now); // a is now more recent than c
    publish(&mut hub, "d", "1", now);
    assert_eq!(names(&hub), ["a", "b", "d"]);
    // The last subscriber leaving counts as a use: a goes before b.
    hub.unsubscribe(b, 0);
    publish(&mut hub, "e", "1", now);
    assert_eq!(names(&hub), ["b", "d", "e"]);
    assert_eq!(hub.counts().freed_evicted, 2);
    // Every channel has subscribers: a new one is refused.
    for (i, name) in ["b", "d", "e"].iter().enumerate() {
        let ch = hub.find(name).unwrap();
        hub.subscribe(ch, 10 + i as u32);
    }
    assert!(!hub.can_create(1));
    assert_eq!(hub.channel("f", now), None);
    assert_eq!(names(&hub), ["b", "d", "e"]);
    let d = hub.find("d").unwrap();
    hub.unsubscribe(d, 0);
    assert!(hub.can_create(1) && !hub.can_create(2));
    assert!(hub.channel("f", now).is_some());
    assert_eq!(names(&hub), ["b", "e", "f"]);
}

#[test]
fn idle_channels_are_freed_at_the_end_of_the_turn() {
    let mut hub = Hub::new(limits(10, 1 << 20, 0));
    let now = at(1, 0);
    let a = hub.channel("a", now).unwrap();
    hub.subscribe(a, 1);
    hub.collect_idle();
    assert_eq!(names(&hub), ["a"]); // it has a subscriber
    hub.unsubscribe(a, 0);
    hub.collect_idle();
    assert!(hub.is_empty());
    assert_eq!(hub.counts().freed_idle, 1);
    // A channel with history stays after its subscribers leave.
    let b = hub.channel("b", now).unwrap();
    hub.subscribe(b, 1);
    publish(&mut hub, "b", "kept", now);
    hub.unsubscribe(b, 0);
    hub.collect_idle();
    assert_eq!(names(&hub), ["b"]);
    // The slot is reused; memory is back to what the history holds.
    assert_eq!(hub.channels.len(), 1);
    assert_eq!(hub.memory(), hub.get(b).log.memory());
    assert_eq!(hub.counts().channels_created, 2);
}

#[test]
fn a_freed_channel_comes_back_above_its_last_id_with_nothing_missed() {
    let mut hub = Hub::new(limits(10, 1 << 20, 1000));
    let last = publish(&mut hub, "job", "done", at(5_000_000, 0));
    sent_all(&mut hub);
    hub.expire(1000);
    hub.collect_idle();
    assert!(hub.find("job").is_none(), "expired and idle: freed");
    assert_eq!(hub.counts().evicted_age, 1);
    // The wall clock went back; the id must not.
    let ch = hub.channel("job", at(10, 2000)).unwrap();
    assert_eq!(hub.get(ch).log.last_id(), last);
    assert_eq!(hub.get(ch).log.resume_after(last), Resume::At(0));
    let next = publish(&mut hub, "job", "again", at(10, 2000));
    assert_eq!(next, last + 1);
    // An older id of the first life is lost.
    assert_eq!(hub.get(ch).log.resume_after(last - 1), Resume::Lost);
    // Evicted at the cap: the last id is remembered too.
    let mut hub = Hub::new(limits(1, 1 << 20, 0));
    let last = publish(&mut hub, "x", "1", at(100, 0));
    publish(&mut hub, "y", "1", at(200, 0));
    assert!(hub.find("x").is_none());
    let x = hub.channel("x", at(300, 0)).unwrap();
    assert_eq!(hub.get(x).log.resume_after(last), Resume::At(0));
}

#[test]
fn history_expires_by_age_even_with_subscribers() {
    let mut hub = Hub::new(limits(10, 1 << 20, 1000));
    let a = hub.channel("a", at(1, 0)).unwrap();
    hub.subscribe(a, 1);
    publish(&mut hub, "a", "old", at(1, 0));
    publish(&mut hub, "b", "old", at(1, 100));
    publish(&mut hub, "a", "new", at(1, 600));
    assert_eq!(hub.next_expiry(), Some(1000));
    assert_eq!(hub.next_expiry_of(a), Some(1000));
    // Not fanned out yet: nothing is dropped.
    hub.expire(5000);
    assert_eq!(hub.counts().evicted_age, 0);
    sent_all(&mut hub);
    hub.expire(999);
    assert_eq!(hub.counts().evicted_age, 0);
    hub.expire(1100);
    assert_eq!(hub.counts().evicted_age, 2);
    assert_eq!(hub.get(a).log.frames(), 1);
    assert_eq!(hub.next_expiry(), Some(1600));
    hub.collect_idle();
    assert_eq!(names(&hub), ["a"], "b had no subscribers and no history");
    hub.expire(1600);
    hub.collect_idle();
    assert_eq!(names(&hub), ["a"], "a keeps its subscriber");
    assert_eq!(hub.next_expiry(), None);
    assert_eq!(hub.memory(), 0);
}

#[test]
fn the_budget_evicts_the_oldest_events_of_the_whole_hub_first() {
    let budget = 16 * 1024;
    let mut hub = Hub::new(Limits {
        history_bytes: 4096,
        ..limits(100, budget, 0)
    });
    let data = "e".repeat(200);
    let mut t = 0;
    let mut ids: Vec<(String, u64)> = Vec::new();
    for round in 0..4 {
        for c in 0..8 {
            for _ in 0..3 {
                t += 1;
                let name = format!("c{c}");
                let id = publish(&mut hub, &name, &data, at(t, t));
                ids.push((name, id));
                sent_all(&mut hub);
                assert!(hub.memory() <= budget, "round {round}: {}", hub.memory());
            }
        }
    }
    assert!(hub.counts().evicted_budget > 0);
    assert_eq!(hub.counts().evicted_size, 0);
    // What is held is exactly the newest events, hub-wide: every held
    // event is newer than every evicted one.
    let held = |name: &str, id: u64| {
        hub.find(name).is_some_and(|ch| {
            let log = &hub.get(ch).log;
            id >= log.first_available_id() && log.resume_after(id) != Resume::Lost
        })
    };
    let first_held = ids
        .iter()
        .position(|(n, id)| held(n, *id))
        .expect("something held");
    assert!(ids[first_held + 1..].iter().all(|(n, id)| held(n, *id)));
    assert!(first_held > 0);
    // The newest channel's newest events replay; memory is accounted.
    let sum: usize = hub.iter().map(|c| c.log.memory()).sum();
    assert_eq!(sum, hub.memory());
}

#[test]
fn budget_eviction_fans_out_a_channel_before_taking_its_unsent_bytes() {
    let mut hub = Hub::new(Limits {
        history_bytes: 4096,
        ..limits(10, 6 * 1024, 0)
    });
    let data = "u".repeat(500);
    let a = hub.channel("a", at(1, 0)).unwrap();
    // Fill the budget with a's events, none fanned out.
    let mut asked = None;
    for i in 0..20 {
        let b = hub.channel("b", at(1, i)).unwrap();
        let ch = if i < 8 { a } else { b };
        match hub.publish(ch, None, &data, at(1, i)).unwrap() {
            Appended::Id(_) => {}
            Appended::FanOutFirst(x) => {
                asked = Some(x);
                break;
            }
        }
    }
    assert_eq!(asked, Some(a), "a's unsent bytes are the oldest");
    assert_eq!(hub.counts().evicted_budget, 0);
}

#[test]
fn dirty_and_idle_lists_survive_a_freed_and_reused_slot() {
    let mut hub = Hub::new(limits(1, 1 << 20, 0));
    publish(&mut hub, "a", "1", at(1, 0));
    publish(&mut hub, "b", "1", at(1, 0)); // evicts a, reuses its slot
    let b = hub.find("b").unwrap();
    let mut d = Vec::new();
    hub.take_dirty(&mut d);
    assert_eq!(d, vec![b]);
    hub.collect_idle();
    assert_eq!(names(&hub), ["b"]);
}

#[test]
fn memory_stays_under_the_budget_whatever_happens() {
    let budget = 20 * 1024;
    let mut hub = Hub::new(Limits {
        history_bytes: 8 * 1024,
        max_channels: 12,
        history_memory: budget,
        history_ttl_ms: 2,
    });
    let mut x = 0x9e37_79b9_7f4a_7c15u64;
    let mut subs: Vec<(u32, u32)> = Vec::new(); // (channel, token)
    for t in 0..6_000u64 {
        x ^= x << 13;
        x ^= x >> 7;
        x ^= x << 17;
        let now = at(t, t / 4);
        let name = format!("c{}", x % 20);
        match x % 16 {
            0 => {
                if let Some(ch) = hub.channel(&name, now) {
                    let token = t as u32;
                    hub.subscribe(ch, token);
                    subs.push((ch, token));
                }
            }
            1 if !subs.is_empty() => {
                let (ch, token) = subs.swap_remove((x as usize / 16) % subs.len());
                let list = &hub.get(ch).subscribers;
                let i = list.iter().position(|&s| s == token).unwrap();
                hub.unsubscribe(ch, i as u32);
            }
            2 => {
                sent_all(&mut hub);
                hub.expire(t / 4);
            }
            3 => {
                sent_all(&mut hub);
                hub.collect_idle();
            }
            _ => {
                let len = 1 + (x >> 24) as usize % 3000;
                if let Some(ch) = hub.channel(&name, now) {
                    let data = "z".repeat(len);
                    loop {
                        match hub.publish(ch, None, &data, now).unwrap() {
                            Appended::Id(id) => {
                                assert_eq!(hub.get(ch).log.last_id(), id);
                                break;
                            }
                            Appended::FanOutFirst(c) => hub.mark_sent(c),
                        }
                    }
                }
            }
        }
        let sum: usize = hub.iter().map(|c| c.log.memory()).sum();
        assert_eq!(sum, hub.memory(), "step {t}");
        assert!(hub.memory() <= budget, "step {t}: {}", hub.memory());
        assert!(hub.len() <= 12);
        // Subscribed channels are never evicted.
        for &(ch, token) in &subs {
            assert!(hub.get(ch).subscribers.contains(&token), "step {t}");
        }
    }
    let c = hub.counts();
    assert!(
        c.evicted_budget > 0 && c.evicted_age > 0 && c.freed_evicted > 0,
        "{c:?}"
    );
}

#[test]
fn an_event_as_large_as_the_budget_allows_fits_after_everything_else_goes() {
    let budget = 4096;
    let mut hub = Hub::new(Limits {
        history_bytes: 4096,
        ..limits(10, budget, 0)
    });
    assert_eq!(hub.max_frame(), 4096 - 4 * FRAME_INDEX_BYTES);
    for i in 0..30 {
        publish(&mut hub, &format!("s{}", i % 3), "small", at(i, i));
        sent_all(&mut hub);
    }
    let now = at(100, 100);
    let ch = hub.channel("big", now).unwrap();
    let fixed = crate::sse::encoded_len(hub.get(ch).log.next_id(100), None, "");
    let data = "B".repeat(hub.max_frame() - fixed);
    assert!(matches!(
        hub.publish(ch, None, &data, now),
        Ok(Appended::Id(_))
    ));
    assert!(hub.memory() <= budget);
    let more = format!("{data}B");
    assert!(matches!(
        hub.publish(ch, None, &more, now),
        Err(PublishError::TooLarge { .. })
    ));
}
