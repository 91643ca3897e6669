//! Tunable descriptors, typed sysctl values and the learning-rate arithmetic
//! (GROW / SHRINK / NEARLY_FULL / NEARLY_EMPTY) shared by every tuner.

use std::fmt;

use caps::Capability;

/// Largest value a sysctl int (`proc_dointvec`) can hold; buffers must stay below it
/// (C bpftune issues #36/#93: growth overflowed into negative tcp_rmem).
pub const INT_MAX: i64 = i32::MAX as i64;

/// Maximum number of values one sysctl carries (tcp_rmem has three).
pub const MAX_VALUES: usize = 3;

/// Learning rate `-r 0..4` turned into the bit shift used for both "how close to a
/// limit before acting" and "how much to change": shift = 6 - min(rate, 4).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Rate {
    shift: u32,
}

impl Rate {
    /// Default learning rate (4): steps of 25 %.
    pub const DEFAULT: Rate = Rate { shift: 2 };

    /// Validates a learning rate given on the command line.
    pub fn from_learning_rate(rate: u32) -> Option<Rate> {
        (rate <= 4).then(|| Rate { shift: 6 - rate })
    }

    pub fn shift(self) -> u32 {
        self.shift
    }

    /// The fraction of `v` one step moves: `v >> shift` (never negative input).
    pub fn delta(self, v: i64) -> i64 {
        v.max(0) >> self.shift
    }

    /// GROW(v) = v + (v >> shift); `None` on overflow.
    pub fn grow(self, v: i64) -> Option<i64> {
        v.checked_add(self.delta(v))
    }

    /// SHRINK(v) = v - (v >> shift).
    pub fn shrink(self, v: i64) -> i64 {
        v - self.delta(v)
    }

    /// NEARLY_FULL(v, lim): v within one step of lim (or beyond it).
    pub fn nearly_full(self, v: i64, lim: i64) -> bool {
        v >= lim || v.saturating_add(self.delta(lim)) >= lim
    }

    /// NEARLY_EMPTY(v, lim): v at most one step of lim.
    pub fn nearly_empty(self, v: i64, lim: i64) -> bool {
        v <= self.delta(lim)
    }
}

impl Default for Rate {
    fn default() -> Self {
        Rate::DEFAULT
    }
}

/// What a tunable is: a real sysctl, or a pseudo-tunable only used for accounting.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum TunableKind {
    Sysctl,
    Other,
}

/// Descriptor of one tunable a tuner manages (and the sysctl tuner protects).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct TunableDesc {
    /// Dotted sysctl name, e.g. `net.ipv4.tcp_rmem`.
    pub name: &'static str,
    pub kind: TunableKind,
    /// Per network namespace in the kernel: written in the namespace the event came from.
    pub namespaced: bool,
    /// Missing sysctl is not an error (e.g. IPv6 disabled).
    pub optional: bool,
    /// String valued (e.g. tcp_congestion_control).
    pub string: bool,
    /// 1..=3 for sysctls, 0 for `Other`.
    pub num_values: u8,
    /// Read by the tuner, never written (e.g. `tcp_available_congestion_control`, mode
    /// 0444): the engine refuses a proposal for it.
    pub read_only: bool,
    /// Capabilities the kernel checks when this sysctl is written, raised for the write
    /// alone (the daemon's effective set is empty when idle, `kernel::privs`). Most `/proc/sys`
    /// handlers check none: `proc_sys_permission()` grants euid 0 the owner bits in every
    /// namespace. The exceptions are the handler's own checks, e.g. `proc_do_static_key`
    /// (`CAP_SYS_ADMIN`) or a module autoload (`CAP_NET_ADMIN`); see [`TunableDesc::write_caps`].
    pub write_caps: &'static [Capability],
}

impl TunableDesc {
    pub const fn sysctl(name: &'static str, num_values: u8, namespaced: bool) -> Self {
        TunableDesc {
            name,
            kind: TunableKind::Sysctl,
            namespaced,
            optional: false,
            string: false,
            num_values,
            read_only: false,
            write_caps: &[],
        }
    }

    /// Never written by the tuner (read for its decisions).
    pub const fn read_only(mut self) -> Self {
        self.read_only = true;
        self
    }

    /// The capabilities the kernel's handler of this sysctl checks on a write (beyond the
    /// file permission, which euid 0 always has): the writer raises exactly these. The
    /// root test `every_managed_sysctl_is_writable_with_idle_capabilities` writes every
    /// built-in descriptor this way from a thread with the daemon's idle set.
    pub const fn write_caps(mut self, caps: &'static [Capability]) -> Self {
        self.write_caps = caps;
        self
    }

    /// Written by the engine: a sysctl that is not read-only.
    pub fn writable(&self) -> bool {
        self.kind == TunableKind::Sysctl && !self.read_only
    }

    pub const fn optional(mut self) -> Self {
        self.optional = true;
        self
    }

    /// A string-valued sysctl (e.g. `net.ipv4.tcp_congestion_control`).
    pub const fn string(mut self) -> Self {
        self.string = true;
        self
    }

    /// A pseudo-tunable that is not a sysctl (e.g. a per-socket setting), used for
    /// accounting: scenarios are counted against it, nothing is read or written.
    pub const fn other(name: &'static str) -> Self {
        TunableDesc {
            name,
            kind: TunableKind::Other,
            namespaced: true,
            optional: false,
            string: false,
            num_values: 0,
            read_only: false,
            write_caps: &[],
        }
    }

    /// `/proc/sys` relative path: dots become slashes (`net/ipv4/tcp_rmem`).
    pub fn proc_path(&self) -> String {
        sysctl_path(self.name)
    }
}

/// `net.ipv4.tcp_rmem` -> `net/ipv4/tcp_rmem`.
pub fn sysctl_path(name: &str) -> String {
    name.replace('.', "/")
}

/// `net/ipv4/tcp_rmem` -> `net.ipv4.tcp_rmem`.
pub fn sysctl_name(path: &str) -> String {
    path.trim_start_matches('/').replace('/', ".")
}

/// A scenario: why a tuner acts.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Scenario {
    pub name: &'static str,
    pub description: &'static str,
}

/// The live value of a sysctl: 1..=3 integers or a string.
#[derive(Debug, Clone, PartialEq, Eq, serde::Serialize, serde::Deserialize)]
#[serde(untagged)]
pub enum SysctlValue {
    Ints(Vec<i64>),
    Str(String),
}

#[derive(Debug, thiserror::Error, PartialEq, Eq)]
pub enum ParseError {
    #[error("expected {expected} integer value(s), found {found:?}")]
    Count { expected: usize, found: String },
    #[error("not an integer: {0:?}")]
    NotInteger(String),
}

impl SysctlValue {
    /// Parses the text of a `/proc/sys` file. `num_values == 0` or `string` means keep
    /// the first line as a string.
    pub fn parse(text: &str, desc_string: bool, num_values: u8) -> Result<SysctlValue, ParseError> {
        if desc_string {
            return Ok(SysctlValue::Str(
                text.lines().next().unwrap_or("").trim().to_string(),
            ));
        }
        let mut out = Vec::with_capacity(MAX_VALUES);
        for tok in text.split_whitespace() {
            out.push(
                tok.parse::<i64>()
                    .map_err(|_| ParseError::NotInteger(tok.to_string()))?,
            );
        }
        if num_values > 0 && out.len() != usize::from(num_values) {
            return Err(ParseError::Count {
                expected: usize::from(num_values),
                found: text.trim().to_string(),
            });
        }
        Ok(SysctlValue::Ints(out))
    }

    pub fn ints(&self) -> Option<&[i64]> {
        match self {
            SysctlValue::Ints(v) => Some(v),
            SysctlValue::Str(_) => None,
        }
    }

    /// Text written to `/proc/sys` in a single write(2): values separated by a space.
    pub fn to_proc_text(&self) -> String {
        match self {
            SysctlValue::Ints(v) => {
                let mut s = join_ints(v);
                s.push('\n');
                s
            }
            SysctlValue::Str(s) => format!("{s}\n"),
        }
    }

    /// C bpftune's "(a b c )" rendering inside summaries: each value followed by a space.
    pub fn c_style(&self) -> String {
        match self {
            SysctlValue::Ints(v) => v.iter().map(|x| format!("{x} ")).collect(),
            SysctlValue::Str(s) => s.clone(),
        }
    }
}

fn join_ints(v: &[i64]) -> String {
    v.iter().map(|x| x.to_string()).collect::<Vec<_>>().join(" ")
}

impl fmt::Display for SysctlValue {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            SysctlValue::Ints(v) => f.write_str(&join_ints(v)),
            SysctlValue::Str(s) => f.write_str(s),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn shift_follows_reference_table() {
        let shifts: Vec<u32> = (0..=4)
            .map(|r| Rate::from_learning_rate(r).expect("valid").shift())
            .collect();
        assert_eq!(shifts, vec![6, 5, 4, 3, 2]);
        assert!(Rate::from_learning_rate(5).is_none());
    }

    #[test]
    fn grow_shrink_at_default_rate() {
        let r = Rate::DEFAULT;
        assert_eq!(r.grow(4_000_000), Some(5_000_000));
        assert_eq!(r.shrink(4_000_000), 3_000_000);
        assert_eq!(r.grow(i64::MAX), None);
        let r0 = Rate::from_learning_rate(0).expect("valid");
        assert_eq!(r0.grow(6400), Some(6500));
    }

    #[test]
    fn nearly_full_and_empty() {
        let r = Rate::DEFAULT;
        assert!(r.nearly_full(750, 1000));
        assert!(!r.nearly_full(749, 1000));
        assert!(r.nearly_full(2000, 1000));
        assert!(r.nearly_empty(250, 1000));
        assert!(!r.nearly_empty(251, 1000));
    }

    #[test]
    fn parse_values() {
        assert_eq!(
            SysctlValue::parse("4096\t131072\t6291456\n", false, 3),
            Ok(SysctlValue::Ints(vec![4096, 131072, 6291456]))
        );
        assert!(SysctlValue::parse("4096 1", false, 3).is_err());
        assert!(SysctlValue::parse("abc", false, 1).is_err());
        assert_eq!(
            SysctlValue::parse("reno cubic\n", true, 1),
            Ok(SysctlValue::Str("reno cubic".into()))
        );
        let v = SysctlValue::Ints(vec![1, 2, 3]);
        assert_eq!(v.to_proc_text(), "1 2 3\n");
        assert_eq!(v.c_style(), "1 2 3 ");
        assert_eq!(sysctl_path("net.ipv4.tcp_rmem"), "net/ipv4/tcp_rmem");
        assert_eq!(sysctl_name("net/ipv4/tcp_rmem"), "net.ipv4.tcp_rmem");
    }
}

#[cfg(test)]
#[path = "tunable_prop.rs"]
mod prop_tests;
