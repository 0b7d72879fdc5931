//! `check`: every subscriber lifetime against the publisher's log. An event
//! sent after the subscriber had its response head (so published after it
//! subscribed) and acknowledged more than `--margin-ms` before the subscriber
//! left must lie in [first id seen, last id seen]; inside that range ids were
//! already checked contiguous (by sequence number) by the subscriber itself.
//! Ids are only compared, never subtracted: they are time-based. When the subscriber
//! recorded the last id acknowledged at the moment it decided to leave (and
//! waited for it), that id is the end of its span instead of the margin.

use crate::common::*;

pub fn run(a: &Args) {
    let pub_log = a.opt("pub-log").unwrap_or_else(|| die("--pub-log FILE"));
    let recs = a.opt("records").unwrap_or_else(|| die("--records FILE"));
    let margin = (a.f64("margin-ms", 250.0) * 1e6) as u64;
    let text =
        std::fs::read_to_string(&pub_log).unwrap_or_else(|e| die(&format!("{pub_log}: {e}")));
    let mut log: Vec<(u64, u64, u64)> = Vec::new(); // id, t_send, t_ack
    for l in text.lines() {
        let f: Vec<u64> = l
            .split_whitespace()
            .filter_map(|x| x.parse().ok())
            .collect();
        if f.len() == 4 {
            log.push((f[0], f[2], f[3]));
        }
    }
    log.sort_unstable();
    let mut monotonic = true;
    for w in log.windows(2) {
        if w[1].1 < w[0].1 || w[1].2 < w[0].2 {
            monotonic = false;
        }
    }
    let text = std::fs::read_to_string(&recs).unwrap_or_else(|e| die(&format!("{recs}: {e}")));
    let (mut checked, mut with_events, mut expected_total, mut bad, mut not200, mut gaps) =
        (0u64, 0u64, 0u64, 0u64, 0u64, 0u64);
    let mut examples: Vec<String> = Vec::new();
    for l in text.lines() {
        let f: Vec<&str> = l.split_whitespace().collect();
        if f.len() < 10 {
            continue;
        }
        let p = |i: usize| f[i].parse::<u64>().unwrap_or(0);
        let (t_head, t_end, status, first, last, n, gap, dups) =
            (p(0), p(1), p(2), p(3), p(4), p(5), p(6), p(7));
        if status != 200 || t_head == 0 {
            not200 += 1;
            continue;
        }
        checked += 1;
        if gap > 0 || dups > 0 {
            gaps += 1;
            if examples.len() < 5 {
                examples.push(format!("gap/dup in stream: {l}"));
            }
        }
        // The last id acknowledged when it decided to leave, if the client
        // knew it (churn --ack-file); else by time, with the margin.
        let known = f.get(10).and_then(|x| x.parse::<u64>().ok()).unwrap_or(0);
        let i0 = log.partition_point(|e| e.1 <= t_head);
        let i1 = if known > 0 {
            log.partition_point(|e| e.0 <= known)
        } else {
            log.partition_point(|e| e.2 + margin < t_end)
        };
        if i0 >= i1 {
            continue;
        }
        with_events += 1;
        let (want_first, want_last) = (log[i0].0, log[i1 - 1].0);
        expected_total += (i1 - i0) as u64;
        if n == 0 || first > want_first || last < want_last {
            bad += 1;
            if examples.len() < 5 {
                examples.push(format!(
                    "expected ids {want_first}..={want_last}, saw {first}..={last} ({n} events): {l}"
                ));
            }
        }
    }
    let mut j = Json::default();
    j.num("pub_events", log.len())
        .b("pub_log_monotonic", monotonic)
        .num("lifetimes_checked", checked)
        .num("lifetimes_with_events", with_events)
        .num("events_expected", expected_total)
        .num("lifetimes_missing_events", bad)
        .num("lifetimes_with_gaps", gaps)
        .num("not_200", not200);
    let ex: Vec<String> = examples
        .iter()
        .map(|e| format!("\"{}\"", e.replace('"', "'")))
        .collect();
    j.raw("examples", &format!("[{}]", ex.join(",")));
    println!("{}", j.done());
}
