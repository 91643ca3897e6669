//! The ring-buffer event every tuner receives, decoded (the raw record and its decoding
//! are in `bpf::event`), and the namespace it came from.

/// Number of values one proposal carries.
pub const MAX_VALUES: usize = 3;
/// Auxiliary words of an event (`aux[]` in `struct bpftune_event`).
pub const AUX_MAX: usize = 4;

/// Low-memory flags set by the kernel side.
pub const F_NEAR_PRESSURE: u32 = 0x1;
pub const F_NEAR_EXHAUSTION: u32 = 0x2;

/// The network namespace an event came from, or that a tunable is read or written in.
/// Tuners never see raw cookies: "global" is a value of its own, not cookie 0.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub enum Ns {
    /// The initial namespace (the daemon's own).
    Global,
    /// Another namespace: identified by its cookie (unique per boot), located through its
    /// nsfs inode number.
    Netns { cookie: u64, ino: u64 },
}

impl Ns {
    /// Classifies a (cookie, inode) pair from the kernel: cookie 0 (kernels without
    /// `net->net_cookie`) and the initial namespace's cookie are the global namespace.
    pub fn from_kernel(cookie: u64, ino: u64, global_cookie: u64) -> Ns {
        if cookie == 0 || cookie == global_cookie {
            Ns::Global
        } else {
            Ns::Netns { cookie, ino }
        }
    }

    pub fn is_global(self) -> bool {
        self == Ns::Global
    }
}

/// A decoded event, owned (ring-buffer memory is read-only and reused).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Event {
    pub tuner_id: u32,
    pub scenario_id: u32,
    pub ns: Ns,
    pub pid: i32,
    /// CLOCK_MONOTONIC nanoseconds when the kernel posted the event.
    pub ts_ns: u64,
    pub tunable_id: u32,
    pub flags: u32,
    pub old: [i64; MAX_VALUES],
    pub new: [i64; MAX_VALUES],
    pub aux: [u64; AUX_MAX],
    pub text: String,
}

/// CLOCK_MONOTONIC now, in nanoseconds (the clock `bpf_ktime_get_ns` uses).
pub fn monotonic_ns() -> u64 {
    let ts = nix::time::clock_gettime(nix::time::ClockId::CLOCK_MONOTONIC)
        .unwrap_or(nix::sys::time::TimeSpec::new(0, 0));
    (ts.tv_sec() as u64)
        .saturating_mul(1_000_000_000)
        .saturating_add(ts.tv_nsec() as u64)
}
