//! `raw-write`: this machine's cost of one write() per delivery. N loopback
//! TCP pairs; this process loops write() of a small frame to each of its N
//! accepted sockets while a reader process (`__raw-reader`) drains the other
//! ends. Reports writes/s and the time of one pass over N sockets.

use std::io::{self, BufRead, Read, Write};
use std::net::{SocketAddrV4, TcpListener};
use std::os::fd::AsRawFd;
use std::process::{Command, Stdio};
use std::time::Duration;

use mio::{Events, Interest, Poll, Token};
use serde_json::{json, Value};

use crate::args::Config;
use crate::net::{connect_nb, err_name, would_block};
use crate::procstat::{now_ns, pin_to_cpu, self_cpu_ns};

fn quantile(sorted: &[u64], q: f64) -> u64 {
    if sorted.is_empty() {
        return 0;
    }
    let i = ((q * sorted.len() as f64).ceil() as usize).clamp(1, sorted.len()) - 1;
    sorted[i]
}

fn fail(msg: &str) -> i32 {
    println!(
        "{}",
        json!({"tool": "sse-load", "mode": "raw-write", "ok": false, "error": msg})
    );
    eprintln!("sse-load raw-write: setup failed: {msg}");
    3
}

pub fn run(cfg: &Config) -> i32 {
    if let Some(c) = cfg.writer_cpu {
        if let Err(e) = pin_to_cpu(c) {
            return fail(&e);
        }
    }
    let listener = match TcpListener::bind("127.0.0.1:0") {
        Ok(l) => l,
        Err(e) => return fail(&format!("bind: {e}")),
    };
    // SAFETY: re-listen with a deeper backlog on our own listening socket.
    unsafe { libc::listen(listener.as_raw_fd(), 4096) };
    let addr = match listener.local_addr() {
        Ok(std::net::SocketAddr::V4(a)) => a,
        _ => return fail("listener address"),
    };
    if listener.set_nonblocking(true).is_err() {
        return fail("nonblocking listener");
    }
    let exe = match std::env::current_exe() {
        Ok(e) => e,
        Err(e) => return fail(&format!("current_exe: {e}")),
    };
    let mut cmd = Command::new(exe);
    cmd.arg("__raw-reader")
        .arg(addr.to_string())
        .arg(cfg.sockets.to_string())
        .arg(cfg.sources.to_string())
        .arg(cfg.reader_cpu.map(|c| c.to_string()).unwrap_or_default())
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .stderr(Stdio::inherit());
    let mut child = match cmd.spawn() {
        Ok(c) => c,
        Err(e) => return fail(&format!("spawn reader: {e}")),
    };
    // Accept every pair.
    let mut socks = Vec::with_capacity(cfg.sockets);
    let limit = now_ns() + 60_000_000_000;
    while socks.len() < cfg.sockets && now_ns() < limit {
        match listener.accept() {
            Ok((s, _)) => {
                let _ = s.set_nodelay(true);
                let _ = s.set_nonblocking(true);
                socks.push(s);
            }
            Err(e) if would_block(&e) => {
                if let Ok(Some(_)) = child.try_wait() {
                    break;
                }
                std::thread::sleep(Duration::from_millis(1));
            }
            Err(e) => {
                let _ = child.kill();
                let _ = child.wait();
                return fail(&format!("accept: {}", err_name(&e)));
            }
        }
    }
    if socks.len() < cfg.sockets {
        let _ = child.kill();
        let _ = child.wait();
        return fail(&format!(
            "only {} of {} pairs connected",
            socks.len(),
            cfg.sockets
        ));
    }
    let fds: Vec<i32> = socks.iter().map(|s| s.as_raw_fd()).collect();
    let frame = {
        let mut f = b"id: 1234567890123456\ndata: {\"seq\":0,\"t\":0}".to_vec();
        f.resize(cfg.frame_bytes.saturating_sub(2), b'x');
        f.extend_from_slice(b"\n\n");
        f.truncate(cfg.frame_bytes);
        f
    };
    std::thread::sleep(Duration::from_millis(200));
    let cpu0 = self_cpu_ns();
    let t0 = now_ns();
    let end = t0 + cfg.seconds.as_nanos() as u64;
    let (mut writes, mut eagain, mut errors) = (0u64, 0u64, 0u64);
    let mut passes = Vec::new();
    loop {
        let p0 = now_ns();
        for &fd in &fds {
            // SAFETY: fd is an open socket we own; frame is a valid buffer.
            let r = unsafe { libc::write(fd, frame.as_ptr().cast(), frame.len()) };
            if r >= 0 {
                writes += 1;
            } else if io::Error::last_os_error().kind() == io::ErrorKind::WouldBlock {
                eagain += 1;
            } else {
                errors += 1;
            }
        }
        let p1 = now_ns();
        passes.push(p1 - p0);
        if p1 >= end {
            break;
        }
    }
    let t1 = now_ns();
    let cpu = self_cpu_ns() - cpu0;
    // Let the reader drain, then stop it.
    std::thread::sleep(Duration::from_millis(300));
    let mut reader = Value::Null;
    if let (Some(mut stdin), Some(stdout)) = (child.stdin.take(), child.stdout.take()) {
        let _ = stdin.write_all(b"stop\n");
        drop(stdin);
        let mut line = String::new();
        let _ = io::BufReader::new(stdout).read_line(&mut line);
        reader = serde_json::from_str(&line).unwrap_or(Value::Null);
    }
    let _ = child.wait();
    let first_pass = passes.first().copied().unwrap_or(0);
    let mut sorted = passes.clone();
    sorted.sort_unstable();
    let wall = t1 - t0;
    let wps = writes as f64 / (wall as f64 / 1e9);
    let per_write_ns = if writes > 0 {
        wall as f64 / writes as f64
    } else {
        0.0
    };
    let out = json!({
        "tool": "sse-load",
        "mode": "raw-write",
        "label": cfg.label,
        "ok": errors == 0,
        "sockets": cfg.sockets,
        "frame_bytes": frame.len(),
        "seconds": wall as f64 / 1e9,
        "writes": writes,
        "eagain": eagain,
        "errors": errors,
        "writes_per_s": wps.round(),
        "ns_per_write": (per_write_ns * 10.0).round() / 10.0,
        "bytes_per_s": (wps * frame.len() as f64).round(),
        "passes": passes.len(),
        "pass_ns": {
            "first": first_pass,
            "min": sorted.first().copied().unwrap_or(0),
            "p50": quantile(&sorted, 0.5),
            "p99": quantile(&sorted, 0.99),
            "max": sorted.last().copied().unwrap_or(0),
        },
        "writer_cpu_pct": (cpu as f64 * 1000.0 / wall as f64).round() / 10.0,
        "writer_cpu": cfg.writer_cpu,
        "reader_cpu": cfg.reader_cpu,
        "reader": reader,
    });
    println!("{out}");
    eprintln!(
        "sse-load raw-write: {} writes of {} B to {} sockets in {:.2}s = {:.0} writes/s ({:.0} ns/write), one pass over {} sockets: median {:.2} ms, first {:.2} ms; eagain {eagain}, writer cpu {:.0}%",
        writes,
        frame.len(),
        cfg.sockets,
        wall as f64 / 1e9,
        wps,
        per_write_ns,
        cfg.sockets,
        quantile(&sorted, 0.5) as f64 / 1e6,
        first_pass as f64 / 1e6,
        cpu as f64 * 100.0 / wall as f64,
    );
    if errors == 0 {
        0
    } else {
        3
    }
}

/// `__raw-reader ADDR N SOURCES [CPU]`: connects N sockets and drains them
/// until its stdin says stop (or closes).
pub fn reader(args: &[String]) -> Result<(), String> {
    let addr: SocketAddrV4 = args
        .first()
        .and_then(|a| a.parse().ok())
        .ok_or("reader: address")?;
    let n: usize = args
        .get(1)
        .and_then(|a| a.parse().ok())
        .ok_or("reader: count")?;
    let sources: usize = args.get(2).and_then(|a| a.parse().ok()).unwrap_or(0);
    if let Some(cpu) = args.get(3).and_then(|a| a.parse::<usize>().ok()) {
        pin_to_cpu(cpu)?;
    }
    let mut poll = Poll::new().map_err(|e| e.to_string())?;
    let mut socks = Vec::with_capacity(n);
    // Connect in waves so the listener's backlog never overflows.
    let mut events = Events::with_capacity(4096);
    let mut i = 0;
    while i < n {
        let wave = (n - i).min(512);
        for k in 0..wave {
            let src = if sources == 0 {
                None
            } else {
                Some(std::net::Ipv4Addr::new(
                    127,
                    0,
                    0,
                    2 + ((i + k) % sources) as u8,
                ))
            };
            let mut s =
                connect_nb(addr, src).map_err(|e| format!("reader connect: {}", err_name(&e)))?;
            poll.registry()
                .register(&mut s, Token(i + k), Interest::READABLE)
                .map_err(|e| e.to_string())?;
            socks.push(s);
        }
        i += wave;
        // Give the writer a moment to accept the wave.
        let _ = poll.poll(&mut events, Some(Duration::from_millis(5)));
    }
    let fd0 = io::stdin().as_raw_fd();
    poll.registry()
        .register(
            &mut mio::unix::SourceFd(&fd0),
            Token(usize::MAX - 1),
            Interest::READABLE,
        )
        .map_err(|e| e.to_string())?;
    let mut buf = vec![0u8; 256 * 1024];
    let mut bytes: u64 = 0;
    let mut reads: u64 = 0;
    let cpu0 = self_cpu_ns();
    loop {
        if let Err(e) = poll.poll(&mut events, Some(Duration::from_millis(500))) {
            if e.kind() == io::ErrorKind::Interrupted {
                continue;
            }
            return Err(e.to_string());
        }
        for ev in events.iter() {
            let t = ev.token().0;
            if t == usize::MAX - 1 {
                let cpu = self_cpu_ns() - cpu0;
                println!(
                    "{}",
                    json!({"bytes": bytes, "reads": reads, "cpu_s": cpu as f64 / 1e9})
                );
                return Ok(());
            }
            let Some(s) = socks.get_mut(t) else { continue };
            loop {
                match s.read(&mut buf) {
                    Ok(0) => break,
                    Ok(k) => {
                        bytes += k as u64;
                        reads += 1;
                    }
                    Err(e) if would_block(&e) => break,
                    Err(e) if e.kind() == io::ErrorKind::Interrupted => {}
                    Err(_) => break,
                }
            }
        }
    }
}
