//! Deterministic crash points for the reliability suite (test-only, inert otherwise).
//!
//! `BPFTUNE_TEST_CRASH_AT=POINT[:N]` makes the daemon SIGKILL itself the N-th time
//! (default 1st) it reaches POINT, to prove that a crash exactly there loses nothing:
//! * `persist`: an original is persisted, the sysctl is not written yet;
//! * `state-rewrite`: half of the new state file is written to its temporary file,
//!   which is neither complete nor renamed over `originals.json`.
//!
//! The variable is read once, at the first check; without it every check is one atomic
//! load. It is meant for tests only (reliability/ and tests/reliability_*.rs) and is
//! not a supported interface.

use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::OnceLock;

pub const ENV: &str = "BPFTUNE_TEST_CRASH_AT";

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Point {
    Persist,
    StateRewrite,
}

impl Point {
    fn name(self) -> &'static str {
        match self {
            Point::Persist => "persist",
            Point::StateRewrite => "state-rewrite",
        }
    }
}

/// Parses `POINT[:N]`; `None` for anything else (an unknown value is inert).
fn parse(v: &str) -> Option<(Point, u64)> {
    let (p, n) = match v.split_once(':') {
        Some((p, n)) => (p, n.parse().ok().filter(|&n| n > 0)?),
        None => (v, 1),
    };
    let p = match p {
        "persist" => Point::Persist,
        "state-rewrite" => Point::StateRewrite,
        _ => return None,
    };
    Some((p, n))
}

fn armed() -> Option<(Point, u64)> {
    static ARMED: OnceLock<Option<(Point, u64)>> = OnceLock::new();
    *ARMED.get_or_init(|| std::env::var(ENV).ok().as_deref().and_then(parse))
}

/// Is `point` armed (whatever its count)? For extra work only a crash test needs.
pub fn is_armed(point: Point) -> bool {
    armed().is_some_and(|(p, _)| p == point)
}

static HITS: AtomicU64 = AtomicU64::new(0);

/// SIGKILLs this process if `point` is armed and this is its N-th hit.
pub fn check(point: Point) {
    let Some((p, n)) = armed() else { return };
    if p != point || HITS.fetch_add(1, Ordering::SeqCst) + 1 != n {
        return;
    }
    eprintln!("bpftune: {ENV}={}:{n}: crashing now (SIGKILL)", point.name());
    // SAFETY: kill(2) on our own pid has no memory-safety preconditions; SIGKILL
    // cannot be caught, so nothing runs after it (a real crash, no unwinding).
    unsafe {
        libc::kill(libc::getpid(), libc::SIGKILL);
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn parses_points_and_counts() {
        assert_eq!(parse("persist"), Some((Point::Persist, 1)));
        assert_eq!(parse("state-rewrite:7"), Some((Point::StateRewrite, 7)));
        assert_eq!(parse("persist:0"), None);
        assert_eq!(parse("persist:x"), None);
        assert_eq!(parse("elsewhere"), None);
        assert_eq!(parse(""), None);
    }
}
