//! Which server process holds the other end of a subscriber's socket, for
//! `--by-server-pid` (several processes sharing one port with SO_REUSEPORT:
//! the kernel picks the process, the client cannot). Read from /proc: each
//! server PID's fds name socket inodes, and /proc/net/tcp maps an inode to
//! its (local, remote) addresses; the server's remote address is our local one.

use std::collections::HashMap;
use std::net::{Ipv4Addr, SocketAddrV4};

/// Socket inode -> index in `pids`, from /proc/PID/fd of each server process.
fn inodes_of(pids: &[u32]) -> HashMap<u64, usize> {
    let mut m = HashMap::new();
    for (i, pid) in pids.iter().enumerate() {
        let Ok(dir) = std::fs::read_dir(format!("/proc/{pid}/fd")) else {
            continue;
        };
        for e in dir.flatten() {
            let Ok(target) = std::fs::read_link(e.path()) else {
                continue;
            };
            let t = target.to_string_lossy();
            if let Some(n) = t
                .strip_prefix("socket:[")
                .and_then(|r| r.strip_suffix(']'))
                .and_then(|n| n.parse().ok())
            {
                m.insert(n, i);
            }
        }
    }
    m
}

/// `0100007F:1F90` (the kernel prints the address as the raw big-endian
/// word in host order, the port in plain hex) as an address.
pub fn parse_addr(s: &str) -> Option<SocketAddrV4> {
    let (a, p) = s.split_once(':')?;
    let a = u32::from_str_radix(a, 16).ok()?;
    let p = u16::from_str_radix(p, 16).ok()?;
    Some(SocketAddrV4::new(Ipv4Addr::from(a.to_ne_bytes()), p))
}

/// (local, remote, inode) of every line of a /proc/net/tcp text.
pub fn parse_tcp_table(text: &str) -> Vec<(SocketAddrV4, SocketAddrV4, u64)> {
    text.lines()
        .skip(1)
        .filter_map(|l| {
            let f: Vec<&str> = l.split_whitespace().collect();
            Some((
                parse_addr(f.get(1)?)?,
                parse_addr(f.get(2)?)?,
                f.get(9)?.parse().ok()?,
            ))
        })
        .collect()
}

/// For each of our local addresses, the index in `pids` of the server
/// process that holds the peer socket (connected to one of `servers`), if found.
pub fn owners(
    servers: &[SocketAddrV4],
    pids: &[u32],
    ours: &[Option<SocketAddrV4>],
) -> Vec<Option<usize>> {
    let inodes = inodes_of(pids);
    let text = std::fs::read_to_string("/proc/net/tcp").unwrap_or_default();
    let mut by_remote: HashMap<SocketAddrV4, usize> = HashMap::new();
    for (local, remote, inode) in parse_tcp_table(&text) {
        if !servers.contains(&local) {
            continue;
        }
        if let Some(&i) = inodes.get(&inode) {
            by_remote.insert(remote, i);
        }
    }
    ours.iter()
        .map(|a| a.and_then(|a| by_remote.get(&a).copied()))
        .collect()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn parses_the_kernel_table() {
        // Two lines as a little-endian kernel prints them.
        let text = "  sl  local_address rem_address   st tx_queue rx_queue tr tm->when retrnsmt   uid  timeout inode\n   0: 0100007F:15E1 0200007F:9C40 01 00000000:00000000 00:00000000 00000000     0        0 4242 1 0000000000000000 20 4 30 10 -1\n   1: 0200007F:9C40 0100007F:15E1 01 00000000:00000000 00:00000000 00000000     0        0 4243 1 0000000000000000 20 4 30 10 -1\n";
        let rows = parse_tcp_table(text);
        assert_eq!(rows.len(), 2);
        if cfg!(target_endian = "little") {
            assert_eq!(rows[0].0, "127.0.0.1:5601".parse().expect("addr"));
            assert_eq!(rows[0].1, "127.0.0.2:40000".parse().expect("addr"));
        }
        assert_eq!(rows[0].2, 4242);
    }

    #[test]
    fn finds_this_process_as_the_owner_of_its_own_listener_peer() {
        // A connected pair inside this process: the accepted end is ours,
        // so looking up the client's local address must name our PID.
        let l = std::net::TcpListener::bind("127.0.0.1:0").expect("bind");
        let server = match l.local_addr().expect("addr") {
            std::net::SocketAddr::V4(a) => a,
            _ => unreachable!(),
        };
        let c = std::net::TcpStream::connect(server).expect("connect");
        let (_accepted, _) = l.accept().expect("accept");
        let mine = match c.local_addr().expect("addr") {
            std::net::SocketAddr::V4(a) => a,
            _ => unreachable!(),
        };
        let got = owners(&[server], &[1, std::process::id()], &[Some(mine), None]);
        assert_eq!(got, vec![Some(1), None]);
    }
}
