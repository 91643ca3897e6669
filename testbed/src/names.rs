//! Unique, parseable names for network namespaces and interfaces, and
//! clean-up of namespaces/devices left behind by killed processes.
//!
//! Format: `{prefix}-{pid base36}-{tail}`, at most [`MAX_NAME_LEN`] (15)
//! characters so that the same names are valid interface names
//! (`IFNAMSIZ - 1`).
//!
//! * `prefix` is sanitised to `[a-z0-9]` and cut to [`MAX_PREFIX_LEN`]
//!   characters (an empty prefix becomes [`DEFAULT_PREFIX`]).
//! * `pid` is the creating process id, so [`cleanup_stale`] can tell whether
//!   the creator is still alive.
//! * `tail` is a per-process counter in base36 followed by random base36
//!   characters filling up to 15 characters (at least 4 tail characters).

use std::collections::HashSet;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::{SystemTime, UNIX_EPOCH};

use anyhow::Result;

use crate::cmd;

/// Longest name produced by [`unique_name`] (`IFNAMSIZ - 1`).
pub const MAX_NAME_LEN: usize = 15;
/// Longest prefix kept by [`unique_name`]; longer prefixes are cut.
pub const MAX_PREFIX_LEN: usize = 4;
/// Prefix used when the given one is empty after sanitising.
pub const DEFAULT_PREFIX: &str = "bt";

const ALPHABET: &[u8; 36] = b"0123456789abcdefghijklmnopqrstuvwxyz";

static COUNTER: AtomicU64 = AtomicU64::new(0);
static RNG_STATE: AtomicU64 = AtomicU64::new(0);

/// Encode `v` in lower-case base36.
pub fn base36(mut v: u64) -> String {
    if v == 0 {
        return "0".to_string();
    }
    let mut out = Vec::new();
    while v > 0 {
        out.push(ALPHABET[(v % 36) as usize]);
        v /= 36;
    }
    out.reverse();
    out.into_iter().map(char::from).collect()
}

/// Decode lower-case base36; `None` if empty, not base36 or overflowing.
pub fn parse_base36(s: &str) -> Option<u64> {
    if s.is_empty() {
        return None;
    }
    let mut v: u64 = 0;
    for c in s.bytes() {
        let d = match c {
            b'0'..=b'9' => c - b'0',
            b'a'..=b'z' => c - b'a' + 10,
            _ => return None,
        };
        v = v.checked_mul(36)?.checked_add(u64::from(d))?;
    }
    Some(v)
}

/// The prefix as it appears in generated names: only `[a-z0-9]`, at most
/// [`MAX_PREFIX_LEN`] characters, [`DEFAULT_PREFIX`] if nothing is left.
pub fn sanitize_prefix(prefix: &str) -> String {
    let p: String = prefix
        .chars()
        .map(|c| c.to_ascii_lowercase())
        .filter(|c| c.is_ascii_lowercase() || c.is_ascii_digit())
        .take(MAX_PREFIX_LEN)
        .collect();
    if p.is_empty() {
        DEFAULT_PREFIX.to_string()
    } else {
        p
    }
}

/// splitmix64 step: a cheap, well-mixed PRNG good enough for name suffixes
/// and packet loss decisions. Not cryptographic.
pub fn splitmix64(state: &mut u64) -> u64 {
    *state = state.wrapping_add(0x9E37_79B9_7F4A_7C15);
    let mut z = *state;
    z = (z ^ (z >> 30)).wrapping_mul(0xBF58_476D_1CE4_E5B9);
    z = (z ^ (z >> 27)).wrapping_mul(0x94D0_49BB_1331_11EB);
    z ^ (z >> 31)
}

/// A random seed from the clock, the pid and a process-wide counter.
pub fn random_seed() -> u64 {
    let nanos = SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map(|d| d.as_nanos() as u64)
        .unwrap_or(0);
    let mut s = nanos
        ^ (u64::from(std::process::id()) << 32)
        ^ RNG_STATE.fetch_add(0x2545_F491_4F6C_DD1D, Ordering::Relaxed);
    splitmix64(&mut s)
}

/// A name unique to this process (and, with overwhelming probability,
/// machine-wide): `{prefix}-{pid36}-{counter36}{random36…}`, ≤ 15 characters,
/// usable both as a netns name and as an interface name.
///
/// The prefix is sanitised with [`sanitize_prefix`] (≤ 4 chars of `[a-z0-9]`).
pub fn unique_name(prefix: &str) -> String {
    make_name(
        prefix,
        std::process::id(),
        COUNTER.fetch_add(1, Ordering::Relaxed),
        random_seed(),
    )
}

fn make_name(prefix: &str, pid: u32, counter: u64, mut rng: u64) -> String {
    let mut name = sanitize_prefix(prefix);
    name.push('-');
    name.push_str(&base36(u64::from(pid)));
    name.push('-');
    // pid ≤ 2^22 (pid_max) → ≤ 5 base36 chars; 4 + 1 + 5 + 1 = 11 → ≥ 4 left.
    // For absurd pids (u32 max = 7 chars) we still keep ≥ 2 tail chars.
    let budget = MAX_NAME_LEN.saturating_sub(name.len()).max(2);
    let mut ctr = base36(counter);
    if ctr.len() >= budget {
        // Keep the low-order digits; the random tail still disambiguates.
        let keep = budget.saturating_sub(1).max(1);
        ctr = ctr.split_off(ctr.len() - keep);
    }
    name.push_str(&ctr);
    while name.len() < MAX_NAME_LEN {
        let r = splitmix64(&mut rng);
        name.push(char::from(ALPHABET[(r % 36) as usize]));
    }
    name.truncate(MAX_NAME_LEN);
    name
}

/// Parsed form of a name made by [`unique_name`].
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ParsedName {
    /// The (sanitised) prefix.
    pub prefix: String,
    /// Process id of the creator.
    pub pid: u32,
    /// Counter + random part.
    pub tail: String,
}

/// Parse a name produced by [`unique_name`]; `None` if it does not have the
/// `{prefix}-{pid36}-{tail}` shape.
pub fn parse_name(name: &str) -> Option<ParsedName> {
    let mut parts = name.split('-');
    let prefix = parts.next()?;
    let pid = parts.next()?;
    let tail = parts.next()?;
    if parts.next().is_some()
        || prefix.is_empty()
        || tail.is_empty()
        || !prefix
            .bytes()
            .all(|c| c.is_ascii_lowercase() || c.is_ascii_digit())
        || !tail.bytes().all(|c| c.is_ascii_lowercase() || c.is_ascii_digit())
    {
        return None;
    }
    let pid = u32::try_from(parse_base36(pid)?).ok()?;
    Some(ParsedName {
        prefix: prefix.to_string(),
        pid,
        tail: tail.to_string(),
    })
}

/// True if `name` was generated with `prefix` (compared after sanitising).
pub fn has_prefix(name: &str, prefix: &str) -> bool {
    parse_name(name).is_some_and(|p| p.prefix == sanitize_prefix(prefix))
}

/// Whether `pid` is a live process (zombies count as dead).
pub fn pid_alive(pid: u32) -> bool {
    if pid == 0 {
        return false;
    }
    match std::fs::read_to_string(format!("/proc/{pid}/stat")) {
        // "pid (comm) S ...": the state follows the last ')'.
        Ok(stat) => stat
            .rsplit_once(')')
            .and_then(|(_, rest)| rest.split_whitespace().next())
            .is_some_and(|state| state != "Z" && state != "X"),
        Err(_) => false,
    }
}

/// Names of the network namespaces in `/run/netns` generated with `prefix`.
pub fn list_netns(prefix: &str) -> Result<Vec<String>> {
    let mut out = Vec::new();
    let dir = match std::fs::read_dir("/run/netns") {
        Ok(d) => d,
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => return Ok(out),
        Err(e) => return Err(e.into()),
    };
    for entry in dir {
        let name = entry?.file_name().to_string_lossy().into_owned();
        if has_prefix(&name, prefix) {
            out.push(name);
        }
    }
    out.sort();
    Ok(out)
}

/// Interfaces in the current (normally root) netns generated with `prefix`.
pub fn list_links(prefix: &str) -> Result<Vec<String>> {
    let mut out = Vec::new();
    // SAFETY: if_nameindex has no preconditions; the returned array is
    // terminated by an entry with if_index == 0 and freed below.
    let head = unsafe { libc::if_nameindex() };
    if head.is_null() {
        return Err(std::io::Error::last_os_error().into());
    }
    let mut p = head;
    loop {
        // SAFETY: `p` points into the array returned by if_nameindex, which is
        // valid until if_freenameindex and ends with a zeroed entry we stop at.
        let entry = unsafe { &*p };
        if entry.if_index == 0 || entry.if_name.is_null() {
            break;
        }
        // SAFETY: if_name is a valid NUL-terminated string owned by the array.
        let name = unsafe { std::ffi::CStr::from_ptr(entry.if_name) }
            .to_string_lossy()
            .into_owned();
        if has_prefix(&name, prefix) {
            out.push(name);
        }
        // SAFETY: the terminating entry has not been reached yet, so the next
        // element is still inside the array.
        p = unsafe { p.add(1) };
    }
    // SAFETY: `head` came from if_nameindex and is freed exactly once.
    unsafe { libc::if_freenameindex(head) };
    let mut seen = HashSet::new();
    out.retain(|n| seen.insert(n.clone()));
    out.sort();
    Ok(out)
}

/// Delete network namespaces (in `/run/netns`) and root-netns interfaces whose
/// names were generated with `prefix` by a process that no longer exists.
/// Returns the names removed. Objects of live processes are left alone.
///
/// Caveat: a recycled pid makes a stale object look alive until that pid
/// exits too.
pub fn cleanup_stale(prefix: &str) -> Result<Vec<String>> {
    let mut removed = Vec::new();
    for name in list_netns(prefix)? {
        if let Some(p) = parse_name(&name) {
            if !pid_alive(p.pid) && cmd::run("ip", &["netns", "del", &name]).is_ok() {
                removed.push(name);
            }
        }
    }
    for name in list_links(prefix)? {
        if let Some(p) = parse_name(&name) {
            if !pid_alive(p.pid) && cmd::run("ip", &["link", "del", &name]).is_ok() {
                removed.push(name);
            }
        }
    }
    Ok(removed)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn base36_roundtrip() {
        for v in [0u64, 1, 35, 36, 1295, 1296, 4_194_304, u64::from(u32::MAX)] {
            assert_eq!(parse_base36(&base36(v)), Some(v));
        }
        assert_eq!(base36(35), "z");
        assert_eq!(base36(36), "10");
        assert_eq!(parse_base36(""), None);
        assert_eq!(parse_base36("A"), None);
        assert_eq!(parse_base36("-1"), None);
        assert_eq!(parse_base36("zzzzzzzzzzzzzzzzzzzzzz"), None);
    }

    #[test]
    fn sanitize() {
        assert_eq!(sanitize_prefix("bt"), "bt");
        assert_eq!(sanitize_prefix("BT_x-1"), "btx1");
        assert_eq!(sanitize_prefix("benchmark"), "benc");
        assert_eq!(sanitize_prefix(""), DEFAULT_PREFIX);
        assert_eq!(sanitize_prefix("--"), DEFAULT_PREFIX);
    }

    #[test]
    fn names_are_short_unique_and_parse() {
        let mut seen = HashSet::new();
        for _ in 0..5000 {
            let n = unique_name("bt");
            assert!(n.len() <= MAX_NAME_LEN, "{n}");
            assert!(n
                .bytes()
                .all(|c| c.is_ascii_lowercase() || c.is_ascii_digit() || c == b'-'));
            let p = parse_name(&n).expect("parse");
            assert_eq!(p.prefix, "bt");
            assert_eq!(p.pid, std::process::id());
            assert!(has_prefix(&n, "bt"));
            assert!(!has_prefix(&n, "b"));
            assert!(!has_prefix(&n, "btx"));
            assert!(seen.insert(n));
        }
    }

    #[test]
    fn extreme_inputs_stay_within_limit() {
        for pid in [0, 1, 4_194_304, u32::MAX] {
            for counter in [0, 35, 1_679_615, u64::MAX] {
                let n = make_name("longprefix", pid, counter, 42);
                assert!(n.len() <= MAX_NAME_LEN, "{n}");
                let p = parse_name(&n).expect("parse");
                assert_eq!(p.pid, pid);
                assert_eq!(p.prefix, "long");
                assert!(!p.tail.is_empty());
            }
        }
    }

    #[test]
    fn parse_rejects_foreign_names() {
        for n in [
            "eth0",
            "lo",
            "bt-1a",
            "bt--x",
            "-1a-x",
            "bt-1a-x-y",
            "bt-A-x",
            "b t-1-x",
        ] {
            assert_eq!(parse_name(n), None, "{n}");
        }
        assert_eq!(
            parse_name("bt-1a-x"),
            Some(ParsedName {
                prefix: "bt".into(),
                pid: 46,
                tail: "x".into()
            })
        );
    }

    #[test]
    fn liveness() {
        assert!(pid_alive(std::process::id()));
        assert!(!pid_alive(0));
        assert!(!pid_alive(u32::MAX));
    }

    #[test]
    fn prng_spreads() {
        let mut s = 1;
        let mut buckets = [0u32; 10];
        for _ in 0..100_000 {
            buckets[(splitmix64(&mut s) % 10) as usize] += 1;
        }
        for b in buckets {
            assert!((9000..11000).contains(&b), "{buckets:?}");
        }
    }
}
