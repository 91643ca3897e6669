//! Sysctl read/write in the daemon's own network namespace or in any other one.
//!
//! [`ProcSysctl`] is the real store (`/proc/sys`); unit tests use the in-memory
//! `kernel::mem_sysctl::MemSysctl`. Both implement [`SysctlStore`].
//!
//! Net sysctls resolve against the network namespace of the thread that *opens* the
//! `/proc/sys` file, so for [`Target::Netns`] the open happens on a dedicated thread that
//! entered the namespace ([`run_in_netns`]).

use std::fs::{File, OpenOptions};
use std::io::{self, Read, Write};
use std::path::{Path, PathBuf};

use crate::kernel::netns::{run_in_netns, NetnsError};
use crate::model::tunable::{sysctl_path, ParseError, SysctlValue, TunableDesc};

/// Where to do the operation: [`Target::Global`] is the daemon's own namespace (no
/// `setns`), [`Target::Netns`] is entered on a dedicated thread.
pub use crate::kernel::netns::Target;

/// Default mount point of the sysctl tree.
pub const DEFAULT_SYSCTL_ROOT: &str = "/proc/sys";

/// Errors of sysctl reads and writes.
#[derive(Debug, thiserror::Error)]
pub enum SysctlError {
    /// No such sysctl (in that namespace: e.g. `net.core.*` outside init_net, IPv6 off).
    #[error("sysctl '{0}' does not exist")]
    NotFound(String),
    /// EACCES/EPERM (e.g. read-only in a non-init namespace, missing capability).
    #[error("permission denied on '{name}': {source}")]
    PermissionDenied {
        name: String,
        #[source]
        source: io::Error,
    },
    /// The descriptor says bpftune never writes this sysctl (it only reads it).
    #[error("'{0}' is read by bpftune, never written")]
    ReadOnly(String),
    /// The file's content does not have the expected shape.
    #[error("invalid value for '{name}': {source}")]
    Parse {
        name: String,
        #[source]
        source: ParseError,
    },
    /// EINVAL on write: the kernel refused the value (out of range, unknown algorithm…).
    #[error("kernel rejected value {value:?} for '{name}': {source}")]
    Rejected {
        name: String,
        value: String,
        #[source]
        source: io::Error,
    },
    /// The target namespace could not be entered (or is gone).
    #[error(transparent)]
    Netns(#[from] NetnsError),
    /// Any other I/O error.
    #[error("io error on '{name}': {source}")]
    Io {
        name: String,
        #[source]
        source: io::Error,
    },
}

impl SysctlError {
    /// The errno behind the error, when there is one (metrics label it).
    pub fn errno(&self) -> Option<i32> {
        match self {
            SysctlError::NotFound(_) => Some(libc::ENOENT),
            SysctlError::PermissionDenied { source, .. }
            | SysctlError::Rejected { source, .. }
            | SysctlError::Io { source, .. } => source.raw_os_error(),
            SysctlError::Netns(NetnsError::Gone) => Some(libc::ENOENT),
            SysctlError::Netns(NetnsError::Enter { source, .. }) => source.raw_os_error(),
            SysctlError::Netns(NetnsError::Io(e)) => e.raw_os_error(),
            _ => None,
        }
    }

    /// The errno's symbolic name (`EPERM`), or `none`.
    pub fn errno_name(&self) -> String {
        match self.errno() {
            Some(n) => format!("{:?}", nix::errno::Errno::from_raw(n)),
            None => "none".to_string(),
        }
    }

    /// The target namespace no longer exists (stop trying to write there).
    pub fn is_gone(&self) -> bool {
        matches!(self, SysctlError::Netns(NetnsError::Gone))
    }

    /// Builds the error for an errno-carrying failure on `name`. `value` is the text being
    /// written (EINVAL on a write means "rejected").
    pub fn from_io(name: &str, value: Option<&str>, err: io::Error) -> Self {
        match (err.raw_os_error(), value) {
            (Some(libc::ENOENT), _) => SysctlError::NotFound(name.to_string()),
            (Some(libc::EACCES) | Some(libc::EPERM), _) => SysctlError::PermissionDenied {
                name: name.to_string(),
                source: err,
            },
            (Some(libc::EINVAL), Some(v)) => SysctlError::Rejected {
                name: name.to_string(),
                value: v.to_string(),
                source: err,
            },
            _ => SysctlError::Io {
                name: name.to_string(),
                source: err,
            },
        }
    }
}

/// Reads and writes sysctls, in the global namespace or in another one.
pub trait SysctlStore: Send + Sync {
    /// Reads `name` (dotted, e.g. `net.ipv4.tcp_rmem`) and parses it as `num_values`
    /// integers, or as a string when `is_string`.
    fn read(
        &self,
        target: &Target,
        name: &str,
        is_string: bool,
        num_values: u8,
    ) -> Result<SysctlValue, SysctlError>;

    /// One write(2) of the whole value (never half-written), O_WRONLY without
    /// O_CREAT/O_TRUNC. Does not skip identical values: callers that want C bpftune's
    /// "unchanged → success without writing" compare first.
    fn write(&self, target: &Target, name: &str, value: &SysctlValue) -> Result<(), SysctlError>;
}

/// Writes `value` to the sysctl `desc` names with exactly the capabilities its kernel
/// handler checks ([`TunableDesc::write_caps`]) raised on the calling thread for the
/// duration of the write. The engine writes every proposal through here; so does the
/// root test that proves every built-in descriptor writable with the idle set.
pub fn write_desc(
    store: &dyn SysctlStore,
    target: &Target,
    desc: &TunableDesc,
    value: &SysctlValue,
) -> Result<(), SysctlError> {
    if desc.read_only {
        return Err(SysctlError::ReadOnly(desc.name.to_string()));
    }
    let _caps = crate::kernel::privs::raise(desc.write_caps);
    store.write(target, desc.name, value)
}

/// The real store: files under `/proc/sys` (or another root, for tests).
#[derive(Debug, Clone)]
pub struct ProcSysctl {
    root: PathBuf,
}

impl Default for ProcSysctl {
    fn default() -> Self {
        ProcSysctl::new(DEFAULT_SYSCTL_ROOT)
    }
}

impl ProcSysctl {
    /// A store rooted at `root` (`/proc/sys` in production).
    pub fn new(root: impl Into<PathBuf>) -> Self {
        ProcSysctl { root: root.into() }
    }

    /// The root directory.
    pub fn root(&self) -> &Path {
        &self.root
    }

    /// `net.ipv4.tcp_rmem` → `<root>/net/ipv4/tcp_rmem`. Names that could escape the root
    /// (containing '/', NUL, or empty) do not exist.
    pub fn path_of(&self, name: &str) -> Result<PathBuf, SysctlError> {
        if name.is_empty() || name.contains(['/', '\0']) {
            return Err(SysctlError::NotFound(name.to_string()));
        }
        Ok(self.root.join(sysctl_path(name)))
    }
}

fn read_text(path: &Path) -> io::Result<String> {
    let mut f = File::open(path)?;
    let mut s = String::new();
    f.read_to_string(&mut s)?;
    Ok(s)
}

/// Where a write failed: opening (the sysctl itself) or write(2) (the value).
#[derive(Debug)]
enum WriteFail {
    Open(io::Error),
    Write(io::Error),
}

/// Opens without O_CREAT/O_TRUNC and issues exactly one successful write(2).
fn write_text(path: &Path, text: &str) -> Result<(), WriteFail> {
    let mut f = OpenOptions::new()
        .write(true)
        .open(path)
        .map_err(WriteFail::Open)?;
    loop {
        match f.write(text.as_bytes()) {
            Ok(n) if n == text.len() => return Ok(()),
            Ok(n) => {
                return Err(WriteFail::Write(io::Error::new(
                    io::ErrorKind::WriteZero,
                    format!("short write ({n} of {} bytes)", text.len()),
                )))
            }
            Err(e) if e.kind() == io::ErrorKind::Interrupted => continue,
            Err(e) => return Err(WriteFail::Write(e)),
        }
    }
}

impl WriteFail {
    fn into_sysctl_error(self, name: &str, value: &str) -> SysctlError {
        match self {
            WriteFail::Open(e) => SysctlError::from_io(name, None, e),
            // ENOENT from write(2) is about the value (e.g. an unknown congestion control),
            // not about the sysctl, which was opened fine.
            WriteFail::Write(e) if e.raw_os_error() == Some(libc::ENOENT) => SysctlError::Rejected {
                name: name.to_string(),
                value: value.to_string(),
                source: e,
            },
            WriteFail::Write(e) => SysctlError::from_io(name, Some(value), e),
        }
    }
}

impl SysctlStore for ProcSysctl {
    fn read(
        &self,
        target: &Target,
        name: &str,
        is_string: bool,
        num_values: u8,
    ) -> Result<SysctlValue, SysctlError> {
        let path = self.path_of(name)?;
        let text = match target {
            Target::Global => read_text(&path),
            Target::Netns(info) => run_in_netns(&info.path, Some(info.ino), || read_text(&path))?,
        }
        .map_err(|e| SysctlError::from_io(name, None, e))?;
        SysctlValue::parse(&text, is_string, num_values).map_err(|source| SysctlError::Parse {
            name: name.to_string(),
            source,
        })
    }

    fn write(&self, target: &Target, name: &str, value: &SysctlValue) -> Result<(), SysctlError> {
        let path = self.path_of(name)?;
        let text = value.to_proc_text();
        // No capability raised here: the permission itself needs none (euid 0), and what
        // a handler checks is raised by the caller for that sysctl alone
        // ([`write_desc`]), before the setns thread is spawned so that it inherits them.
        match target {
            Target::Global => write_text(&path, &text),
            Target::Netns(info) => run_in_netns(&info.path, Some(info.ino), || write_text(&path, &text))?,
        }
        .map_err(|e| e.into_sysctl_error(name, &value.to_string()))
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::kernel::netns::tests::{is_root, root_lock, NsGuard, TempDir};
    use crate::kernel::netns::{NetnsInfo, NetnsRegistry, DEFAULT_PROC_ROOT, DEFAULT_RUN_NETNS};
    use std::process::Command;

    fn store_with(files: &[(&str, &str)]) -> (TempDir, ProcSysctl) {
        let t = TempDir::new("sysctl");
        for (name, content) in files {
            let p = t.0.join(sysctl_path(name));
            std::fs::create_dir_all(p.parent().expect("parent")).expect("mkdir");
            std::fs::write(&p, content).expect("write");
        }
        let s = ProcSysctl::new(&t.0);
        (t, s)
    }

    #[test]
    fn proc_read_write_on_temp_root() {
        let (t, s) = store_with(&[
            ("net.ipv4.tcp_rmem", "4096\t131072\t6291456\n"),
            ("net.ipv4.tcp_congestion_control", "cubic\n"),
            ("net.core.somaxconn", "4096\n"),
        ]);
        assert_eq!(
            s.read(&Target::Global, "net.ipv4.tcp_rmem", false, 3)
                .expect("read"),
            SysctlValue::Ints(vec![4096, 131072, 6291456])
        );
        assert_eq!(
            s.read(&Target::Global, "net.ipv4.tcp_congestion_control", true, 1)
                .expect("read"),
            SysctlValue::Str("cubic".into())
        );
        s.write(
            &Target::Global,
            "net.ipv4.tcp_rmem",
            &SysctlValue::Ints(vec![4096, 262144, 8388608]),
        )
        .expect("write");
        // Exactly the new text, no truncation artefacts left over... the file is not
        // truncated by design (procfs ignores it), so compare the prefix that was written.
        let raw = std::fs::read_to_string(t.0.join("net/ipv4/tcp_rmem")).expect("raw");
        assert!(raw.starts_with("4096 262144 8388608\n"), "{raw:?}");
        s.write(
            &Target::Global,
            "net.core.somaxconn",
            &SysctlValue::Ints(vec![8192]),
        )
        .expect("write");
        assert_eq!(
            s.read(&Target::Global, "net.core.somaxconn", false, 1)
                .expect("read"),
            SysctlValue::Ints(vec![8192])
        );

        // Errors.
        assert!(matches!(
            s.read(&Target::Global, "net.ipv4.nope", false, 1),
            Err(SysctlError::NotFound(n)) if n == "net.ipv4.nope"
        ));
        assert!(matches!(
            s.write(&Target::Global, "net.ipv4.nope", &SysctlValue::Ints(vec![1])),
            Err(SysctlError::NotFound(_))
        ));
        assert!(!t.0.join("net/ipv4/nope").exists(), "write must not create");
        assert!(matches!(
            s.read(&Target::Global, "net.ipv4.tcp_rmem", false, 1),
            Err(SysctlError::Parse { .. })
        ));
        assert!(matches!(
            s.read(&Target::Global, "/etc/passwd", true, 1),
            Err(SysctlError::NotFound(_))
        ));
        assert!(matches!(
            s.read(&Target::Global, "", true, 1),
            Err(SysctlError::NotFound(_))
        ));
        // A netns that does not exist.
        let gone = Target::Netns(NetnsInfo {
            cookie: 77,
            ino: 4026599999,
            path: t.0.join("no-such-ns"),
            name: None,
        });
        let err = s.read(&gone, "net.ipv4.tcp_rmem", false, 3).expect_err("gone");
        assert!(err.is_gone(), "{err}");
    }

    #[test]
    fn errno_mapping() {
        let e = |n| io::Error::from_raw_os_error(n);
        assert!(matches!(
            SysctlError::from_io("a.b", Some("1"), e(libc::ENOENT)),
            SysctlError::NotFound(_)
        ));
        assert!(matches!(
            SysctlError::from_io("a.b", Some("1"), e(libc::EACCES)),
            SysctlError::PermissionDenied { .. }
        ));
        assert!(matches!(
            SysctlError::from_io("a.b", None, e(libc::EPERM)),
            SysctlError::PermissionDenied { .. }
        ));
        let r = SysctlError::from_io("a.b", Some("1 2"), e(libc::EINVAL));
        assert!(matches!(r, SysctlError::Rejected { .. }));
        assert_eq!(
            r.to_string(),
            "kernel rejected value \"1 2\" for 'a.b': Invalid argument (os error 22)"
        );
        assert!(matches!(
            SysctlError::from_io("a.b", None, e(libc::EIO)),
            SysctlError::Io { .. }
        ));
    }

    #[test]
    #[ignore = "needs root (run as root with --include-ignored; make test does)"]
    fn root_write_inside_named_namespace() {
        if !is_root("root_write_inside_named_namespace") {
            return;
        }
        let _l = root_lock();
        let store = ProcSysctl::default();
        let global_before = store
            .read(&Target::Global, "net.ipv4.tcp_rmem", false, 3)
            .expect("global read");
        let mut reg =
            NetnsRegistry::new(DEFAULT_PROC_ROOT.into(), DEFAULT_RUN_NETNS.into()).expect("registry");
        reg.refresh();
        let ns = NsGuard::new();
        let d = reg.refresh();
        let info = d
            .created
            .iter()
            .find(|i| i.name.as_deref() == Some(ns.name.as_str()))
            .unwrap_or_else(|| panic!("{} not created: {d:?}", ns.name))
            .clone();
        assert_ne!(info.cookie, reg.global_cookie());
        let target = reg.locate(info.cookie, info.ino).expect("located namespace");
        assert_eq!(target, Target::Netns(info.clone()));

        let ints = global_before.ints().expect("ints").to_vec();
        let new = SysctlValue::Ints(vec![ints[0], ints[1] + 4096, ints[2] + 1_048_576]);
        store
            .write(&target, "net.ipv4.tcp_rmem", &new)
            .expect("write in netns");
        assert_eq!(
            store
                .read(&target, "net.ipv4.tcp_rmem", false, 3)
                .expect("read in netns"),
            new
        );
        let via_ip = ip_netns_sysctl(&ns.name, "net.ipv4.tcp_rmem");
        assert_eq!(
            via_ip.split_whitespace().collect::<Vec<_>>().join(" "),
            new.to_string()
        );
        assert_eq!(
            store
                .read(&Target::Global, "net.ipv4.tcp_rmem", false, 3)
                .expect("global read"),
            global_before,
            "global value must be unchanged"
        );

        // String sysctl, kernel rejection, and a global-only sysctl inside the netns.
        let cc = Target::Netns(info.clone());
        store
            .write(
                &cc,
                "net.ipv4.tcp_congestion_control",
                &SysctlValue::Str("reno".into()),
            )
            .expect("write cc");
        assert_eq!(
            ip_netns_sysctl(&ns.name, "net.ipv4.tcp_congestion_control"),
            "reno"
        );
        assert!(matches!(
            store.write(
                &cc,
                "net.ipv4.tcp_congestion_control",
                &SysctlValue::Str("no_such_cc".into())
            ),
            Err(SysctlError::Rejected { .. })
        ));
        assert!(matches!(
            store.write(&cc, "net.ipv4.tcp_rmem", &SysctlValue::Ints(vec![-1, -1, -1])),
            Err(SysctlError::Rejected { .. })
        ));
        let r = store.write(&cc, "net.core.rmem_max", &SysctlValue::Ints(vec![1 << 20]));
        assert!(
            matches!(
                r,
                Err(SysctlError::PermissionDenied { .. } | SysctlError::NotFound(_))
            ),
            "{r:?}"
        );

        drop(ns);
        let err = store
            .read(&target, "net.ipv4.tcp_rmem", false, 3)
            .expect_err("namespace deleted");
        assert!(err.is_gone(), "{err}");
    }

    fn ip_netns_sysctl(ns: &str, name: &str) -> String {
        let out = Command::new("ip")
            .args(["netns", "exec", ns, "sysctl", "-n", name])
            .output()
            .expect("ip netns exec");
        assert!(out.status.success(), "ip netns exec failed: {out:?}");
        String::from_utf8_lossy(&out.stdout).trim().to_string()
    }
}
