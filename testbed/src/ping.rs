//! A minimal ICMP echo ("ping") over a raw socket, run inside a namespace.
//! The machine has no `ping` binary, so RTTs are measured here.

use std::net::Ipv4Addr;
use std::os::fd::{AsFd, AsRawFd, FromRawFd, OwnedFd};
use std::time::{Duration, Instant};

use anyhow::{bail, Context, Result};
use nix::poll::{poll, PollFd, PollFlags, PollTimeout};
use nix::sys::socket::{sendto, MsgFlags, SockaddrIn};

use crate::names::random_seed;
use crate::netns::Netns;

/// Internet checksum (RFC 1071).
pub fn inet_checksum(data: &[u8]) -> u16 {
    let mut sum: u32 = 0;
    let mut chunks = data.chunks_exact(2);
    for c in &mut chunks {
        sum += u32::from(u16::from_be_bytes([c[0], c[1]]));
    }
    if let [last] = chunks.remainder() {
        sum += u32::from(*last) << 8;
    }
    while sum >> 16 != 0 {
        sum = (sum & 0xffff) + (sum >> 16);
    }
    !(sum as u16)
}

fn echo_request(ident: u16, seq: u16, payload_len: usize) -> Vec<u8> {
    let mut p = vec![0u8; 8 + payload_len];
    p[0] = 8; // echo request
    p[4..6].copy_from_slice(&ident.to_be_bytes());
    p[6..8].copy_from_slice(&seq.to_be_bytes());
    for (i, b) in p.iter_mut().enumerate().skip(8) {
        *b = i as u8;
    }
    let csum = inet_checksum(&p);
    p[2..4].copy_from_slice(&csum.to_be_bytes());
    p
}

/// If `pkt` (an IPv4 packet as read from a raw ICMP socket) is an echo reply
/// with `ident`, return its sequence number.
fn parse_echo_reply(pkt: &[u8], ident: u16) -> Option<u16> {
    let ihl = usize::from(pkt.first()? & 0x0f) * 4;
    let icmp = pkt.get(ihl..)?;
    if *icmp.first()? != 0 || icmp.len() < 8 {
        return None;
    }
    let id = u16::from_be_bytes([icmp[4], icmp[5]]);
    (id == ident).then(|| u16::from_be_bytes([icmp[6], icmp[7]]))
}

/// Send `count` ICMP echo requests from inside `ns` to `dst` (IPv4), one
/// every `interval`, each waiting up to `timeout` for its reply. Returns the
/// RTTs of the replies received (lost ones are left out).
pub fn ping(
    ns: &Netns,
    dst: &str,
    count: u32,
    interval: Duration,
    timeout: Duration,
) -> Result<Vec<Duration>> {
    let dst: Ipv4Addr = dst
        .parse()
        .with_context(|| format!("not an IPv4 address: {dst}"))?;
    ns.run_in(move || ping_here(dst, count, interval, timeout))
}

/// [`ping`] from the calling thread's netns.
pub fn ping_here(dst: Ipv4Addr, count: u32, interval: Duration, timeout: Duration) -> Result<Vec<Duration>> {
    // SAFETY: plain socket(2) call; the result is checked before use.
    let raw = unsafe {
        libc::socket(
            libc::AF_INET,
            libc::SOCK_RAW | libc::SOCK_CLOEXEC,
            libc::IPPROTO_ICMP,
        )
    };
    if raw < 0 {
        return Err(std::io::Error::last_os_error()).context("raw ICMP socket (needs root)");
    }
    // SAFETY: `raw` is a freshly created descriptor that nothing else owns.
    let sock = unsafe { OwnedFd::from_raw_fd(raw) };
    let ident = (random_seed() & 0xffff) as u16;
    let addr = SockaddrIn::from(std::net::SocketAddrV4::new(dst, 0));
    let mut rtts = Vec::new();
    let mut buf = [0u8; 2048];
    for i in 0..count {
        let seq = (i & 0xffff) as u16;
        let req = echo_request(ident, seq, 56);
        let sent = Instant::now();
        sendto(sock.as_raw_fd(), &req, &addr, MsgFlags::empty()).with_context(|| format!("sendto {dst}"))?;
        let deadline = sent + timeout;
        loop {
            let now = Instant::now();
            if now >= deadline {
                break;
            }
            let left = PollTimeout::try_from(deadline - now).unwrap_or(PollTimeout::MAX);
            let mut fds = [PollFd::new(sock.as_fd(), PollFlags::POLLIN)];
            match poll(&mut fds, left) {
                Ok(0) => break,
                Ok(_) => {}
                Err(nix::errno::Errno::EINTR) => continue,
                Err(e) => bail!("poll: {e}"),
            }
            let n = match nix::sys::socket::recv(sock.as_raw_fd(), &mut buf, MsgFlags::MSG_DONTWAIT) {
                Ok(n) => n,
                Err(nix::errno::Errno::EAGAIN) | Err(nix::errno::Errno::EINTR) => continue,
                Err(e) => bail!("recv: {e}"),
            };
            if parse_echo_reply(buf.get(..n).unwrap_or(&[]), ident) == Some(seq) {
                rtts.push(sent.elapsed());
                break;
            }
        }
        if i + 1 < count {
            let spent = sent.elapsed();
            if spent < interval {
                std::thread::sleep(interval - spent);
            }
        }
    }
    Ok(rtts)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn checksum_verifies() {
        let p = echo_request(0x1234, 7, 56);
        assert_eq!(inet_checksum(&p), 0);
        assert_eq!(inet_checksum(&[0x45, 0x00, 0x00]), !0x4500u16);
    }

    #[test]
    fn parses_reply() {
        let mut pkt = vec![0x45u8; 20];
        let mut icmp = echo_request(0xabcd, 3, 8);
        icmp[0] = 0;
        pkt.extend_from_slice(&icmp);
        assert_eq!(parse_echo_reply(&pkt, 0xabcd), Some(3));
        assert_eq!(parse_echo_reply(&pkt, 0xabce), None);
        pkt[20] = 8;
        assert_eq!(parse_echo_reply(&pkt, 0xabcd), None);
        assert_eq!(parse_echo_reply(&[], 1), None);
    }
}
