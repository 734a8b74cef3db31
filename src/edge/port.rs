//! Whether another process already listens on the port this instance is to
//! listen on. Every shard binds with `SO_REUSEPORT`, and Linux lets any
//! process of the same user join such a port: a second instance started on
//! it by mistake would silently take a share of the connections. The
//! kernel's socket tables (`/proc/net/tcp`, `/proc/net/tcp6`) say who
//! listens; the check runs before this process binds anything.

use std::net::{IpAddr, Ipv4Addr, Ipv6Addr, SocketAddr};

/// A listening socket in the kernel's tables whose address overlaps
/// `addr` (same port; same address, or either one unspecified).
pub fn listener_on(addr: SocketAddr) -> Option<SocketAddr> {
    ["/proc/net/tcp", "/proc/net/tcp6"].iter().find_map(|path| {
        let table = std::fs::read_to_string(path).ok()?;
        // Bound first: the iterator borrows `table`, which a tail
        // expression would outlive.
        let found = listeners(&table).find(|l| overlaps(*l, addr));
        found
    })
}

/// [`listener_on`], asked again every 50 ms for up to `grace` while it
/// finds one: a process that was just stopped can still be listed as
/// listening a moment after it is gone (seen in back-to-back benchmark runs;
/// a likely cause is the kernel releasing what its io_uring held after the
/// exit), and a supervisor restarting an instance starts the new one then.
pub fn listener_after(addr: SocketAddr, grace: std::time::Duration) -> Option<SocketAddr> {
    let until = std::time::Instant::now() + grace;
    loop {
        let found = listener_on(addr)?;
        if std::time::Instant::now() >= until {
            return Some(found);
        }
        std::thread::sleep(std::time::Duration::from_millis(50));
    }
}

fn overlaps(a: SocketAddr, b: SocketAddr) -> bool {
    a.port() == b.port() && (a.ip().is_unspecified() || b.ip().is_unspecified() || a.ip() == b.ip())
}

/// The listening sockets of one table (state `0A`).
fn listeners(table: &str) -> impl Iterator<Item = SocketAddr> + '_ {
    table.lines().skip(1).filter_map(|line| {
        let mut f = line.split_whitespace();
        let local = f.nth(1)?;
        let state = f.nth(1)?;
        if state != "0A" {
            return None;
        }
        parse_addr(local)
    })
}

/// `0100007F:0BB8` (IPv4) or 32 hex digits and a port (IPv6): the address
/// as the kernel prints it, each 32-bit word in host (little-endian) order.
fn parse_addr(s: &str) -> Option<SocketAddr> {
    let (ip, port) = s.split_once(':')?;
    let port = u16::from_str_radix(port, 16).ok()?;
    let words: Vec<u32> = (0..ip.len() / 8)
        .map(|i| {
            ip.get(i * 8..i * 8 + 8)
                .and_then(|w| u32::from_str_radix(w, 16).ok())
        })
        .collect::<Option<_>>()?;
    let ip = match words[..] {
        [w] => IpAddr::V4(Ipv4Addr::from(w.swap_bytes())),
        [a, b, c, d] => {
            let mut bytes = [0u8; 16];
            for (i, w) in [a, b, c, d].iter().enumerate() {
                bytes[i * 4..i * 4 + 4].copy_from_slice(&w.to_le_bytes());
            }
            let v6 = Ipv6Addr::from(bytes);
            // A v4-mapped listener overlaps the v4 address it maps.
            v6.to_ipv4_mapped().map_or(IpAddr::V6(v6), IpAddr::V4)
        }
        _ => return None,
    };
    Some(SocketAddr::new(ip, port))
}

#[cfg(test)]
mod tests {
    use super::*;

    const TCP: &str = "  sl  local_address rem_address   st tx_queue rx_queue tr tm->when retrnsmt   uid  timeout inode
   0: 0100007F:18EB 00000000:0000 0A 00000000:00000000 00:00000000 00000000     0        0 1 1 0 100 0 0 10 0
   1: 00000000:0BB8 00000000:0000 0A 00000000:00000000 00:00000000 00000000     0        0 2 1 0 100 0 0 10 0
   2: 0100007F:0BB9 0100007F:D2F0 01 00000000:00000000 00:00000000 00000000     0        0 3 1 0 20 4 30 10 -1
";
    const TCP6: &str = "  sl  local_address                         remote_address                        st tx_queue rx_queue tr tm->when retrnsmt   uid  timeout inode
   0: 00000000000000000000000001000000:1F90 00000000000000000000000000000000:0000 0A 00000000:00000000 00:00000000 00000000     0        0 4 1 0 100 0 0 10 0
   1: 0000000000000000FFFF00000100007F:1F91 00000000000000000000000000000000:0000 0A 00000000:00000000 00:00000000 00000000     0        0 5 1 0 100 0 0 10 0
";

    #[test]
    fn reads_the_kernels_listeners() {
        let l: Vec<SocketAddr> = listeners(TCP).collect();
        assert_eq!(
            l,
            vec![
                "127.0.0.1:6379".parse().unwrap(),
                "0.0.0.0:3000".parse().unwrap()
            ],
            "an established connection is no listener"
        );
        let l6: Vec<SocketAddr> = listeners(TCP6).collect();
        assert_eq!(
            l6,
            vec![
                "[::1]:8080".parse().unwrap(),
                "127.0.0.1:8081".parse().unwrap()
            ]
        );
    }

    #[test]
    fn overlapping_addresses() {
        let any3000: SocketAddr = "0.0.0.0:3000".parse().unwrap();
        let lo3000: SocketAddr = "127.0.0.1:3000".parse().unwrap();
        assert!(overlaps(any3000, lo3000));
        assert!(overlaps(lo3000, any3000));
        assert!(overlaps(lo3000, lo3000));
        assert!(!overlaps(lo3000, "127.0.0.2:3000".parse().unwrap()));
        assert!(!overlaps(lo3000, "127.0.0.1:3001".parse().unwrap()));
        assert!(overlaps("[::]:3000".parse().unwrap(), lo3000));
    }

    #[test]
    fn garbage_is_no_listener() {
        assert_eq!(
            listeners("header\nnot a line\n  0: XYZ:ZZ 0 0A\n").count(),
            0
        );
        assert_eq!(parse_addr("0100007F"), None);
        assert_eq!(parse_addr("01:0BB8"), None);
    }
}
