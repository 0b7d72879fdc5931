//! `busy`: how busy processes were, from the kernel's own accounting
//! (`/proc/PID/task/*/schedstat`: nanoseconds on a CPU, nanoseconds
//! runnable but waiting for one). Sampled every `--interval-ms` (5); for
//! each process it reports the most CPU time and the most run-queue wait
//! that fell into any window of `--window-ms` (100, one hub timer tick).
//!
//! This is what latency bounds in the scripts are derived from: a request
//! that reaches the hub while it is inside a long loop turn waits for that
//! turn, and the turn shows up as CPU time of the hub in that window (plus
//! wait, if another process had the hub's core); a client that measures
//! latency is itself delayed by its own run-queue wait.
//!
//! `_busy2_max_ms` is the same CPU + wait over the longer `--window2-ms`
//! (1000): all the work a burst of connections queues ahead of a new one.
//! It also reports the longest stretch in which a process never slept: every
//! sampling interval in it was (nearly, >= 90 %) all CPU or run-queue wait.
//! The hub sleeps only in epoll_wait between loop turns, so no single turn
//! is longer than that stretch, however long the turn (the 100 ms window
//! caps what it can show).
//!
//! `--pids hub=123,probe=456`. Ends on SIGUSR1, when every process has
//! exited, or at `--duration` (a cap). `--ready-file` once sampling runs.

use std::collections::VecDeque;
use std::time::Duration;

use crate::common::*;

/// (CPU ns, wait ns) summed over the process's threads, or None once gone.
fn schedstat(pid: u32) -> Option<(u64, u64)> {
    let dir = std::fs::read_dir(format!("/proc/{pid}/task")).ok()?;
    let (mut run, mut wait, mut any) = (0u64, 0u64, false);
    for t in dir.flatten() {
        let Ok(s) = std::fs::read_to_string(t.path().join("schedstat")) else {
            continue;
        };
        let mut f = s.split_whitespace().map(|x| x.parse::<u64>().unwrap_or(0));
        run += f.next().unwrap_or(0);
        wait += f.next().unwrap_or(0);
        any = true;
    }
    any.then_some((run, wait))
}

struct Track {
    label: String,
    pid: u32,
    /// (t, run, wait) samples no older than the window.
    win: VecDeque<(u64, u64, u64)>,
    /// The same for the second, longer window (`--window2-ms`).
    win2: VecDeque<(u64, u64, u64)>,
    max_both2: u64,
    first: Option<(u64, u64)>,
    last: (u64, u64),
    max_run: u64,
    max_wait: u64,
    max_both: u64,
    /// (t, run + wait) of the previous sample; the current busy stretch.
    prev: Option<(u64, u64)>,
    stretch: u64,
    max_stretch: u64,
    gone: bool,
}

pub fn run(a: &Args) {
    let spec = a.opt("pids").unwrap_or_else(|| die("--pids label=PID,..."));
    let interval = Duration::from_micros((a.f64("interval-ms", 5.0) * 1000.0) as u64);
    let window = (a.f64("window-ms", 100.0) * 1e6) as u64;
    let window2 = (a.f64("window2-ms", 1000.0) * 1e6) as u64;
    let duration = a.f64("duration", 600.0);
    let ready = a.opt("ready-file");
    let mut tracks: Vec<Track> = spec
        .split(',')
        .map(|p| {
            let (l, pid) = p.split_once('=').unwrap_or(("p", p));
            Track {
                label: l.to_string(),
                pid: pid.parse().unwrap_or_else(|_| die("--pids: bad pid")),
                win: VecDeque::new(),
                win2: VecDeque::new(),
                max_both2: 0,
                first: None,
                last: (0, 0),
                max_run: 0,
                max_wait: 0,
                max_both: 0,
                prev: None,
                stretch: 0,
                max_stretch: 0,
                gone: false,
            }
        })
        .collect();
    let t0 = now_ns();
    let end = t0 + (duration * 1e9) as u64;
    let mut samples = 0u64;
    while now_ns() < end && !stopped() {
        let t = now_ns();
        for tr in tracks.iter_mut().filter(|t| !t.gone) {
            let Some((run, wait)) = schedstat(tr.pid) else {
                tr.gone = true;
                continue;
            };
            tr.first.get_or_insert((run, wait));
            tr.last = (run, wait);
            tr.win.push_back((t, run, wait));
            while tr.win.front().is_some_and(|f| t - f.0 > window) {
                tr.win.pop_front();
            }
            tr.win2.push_back((t, run, wait));
            while tr.win2.front().is_some_and(|f| t - f.0 > window2) {
                tr.win2.pop_front();
            }
            let &(_, r2, w2) = tr.win2.front().unwrap();
            tr.max_both2 = tr.max_both2.max(run - r2 + wait - w2);
            let &(_, r0, w0) = tr.win.front().unwrap();
            tr.max_run = tr.max_run.max(run - r0);
            tr.max_wait = tr.max_wait.max(wait - w0);
            tr.max_both = tr.max_both.max(run - r0 + wait - w0);
            if let Some((pt, pb)) = tr.prev {
                let dt = t - pt;
                if (run + wait - pb) * 10 >= dt * 9 {
                    tr.stretch += dt;
                    tr.max_stretch = tr.max_stretch.max(tr.stretch);
                } else {
                    tr.stretch = 0;
                }
            }
            tr.prev = Some((t, run + wait));
        }
        samples += 1;
        if samples == 1 {
            if let Some(p) = &ready {
                write_ready(p, "sampling\n");
            }
        }
        if tracks.iter().all(|t| t.gone) {
            break;
        }
        std::thread::sleep(interval);
    }
    let mut j = Json::default();
    j.num("samples", samples)
        .f("seconds", (now_ns() - t0) as f64 / 1e9)
        .f("window_ms", window as f64 / 1e6);
    for tr in &tracks {
        let (r0, w0) = tr.first.unwrap_or((0, 0));
        let l = &tr.label;
        j.f(&format!("{l}_cpu_max_ms"), tr.max_run as f64 / 1e6)
            .f(&format!("{l}_wait_max_ms"), tr.max_wait as f64 / 1e6)
            .f(&format!("{l}_busy_max_ms"), tr.max_both as f64 / 1e6)
            .f(&format!("{l}_stretch_max_ms"), tr.max_stretch as f64 / 1e6)
            .f(&format!("{l}_busy2_max_ms"), tr.max_both2 as f64 / 1e6)
            .f(&format!("{l}_cpu_total_ms"), (tr.last.0 - r0) as f64 / 1e6)
            .f(&format!("{l}_wait_total_ms"), (tr.last.1 - w0) as f64 / 1e6);
    }
    println!("{}", j.done());
}
