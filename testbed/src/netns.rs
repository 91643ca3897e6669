//! Named network namespaces (`ip netns`), deleted on drop.

use std::fs::File;
use std::os::fd::{AsRawFd, FromRawFd, OwnedFd};
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Output, Stdio};
use std::sync::Mutex;

use anyhow::{anyhow, bail, Context, Result};
use nix::sched::{setns, CloneFlags};

use crate::cmd;
use crate::names::unique_name;

/// `SO_NETNS_COOKIE` (include/uapi/asm-generic/socket.h).
pub const SO_NETNS_COOKIE: libc::c_int = 71;

/// Serialises `ip netns add`: the first add in a boot sets up the shared
/// `/run/netns` mount, which races when done concurrently.
static CREATE_LOCK: Mutex<()> = Mutex::new(());

/// A named network namespace (`/run/netns/<name>`), created with
/// `ip netns add` and deleted with `ip netns del` on drop.
#[derive(Debug)]
pub struct Netns {
    name: String,
}

impl Netns {
    /// Create a namespace named [`unique_name(prefix)`](unique_name) and bring
    /// its `lo` up.
    pub fn create(prefix: &str) -> Result<Netns> {
        let name = unique_name(prefix);
        {
            let _guard = CREATE_LOCK.lock().unwrap_or_else(|e| e.into_inner());
            cmd::run("ip", &["netns", "add", &name])?;
        }
        // From here on Drop deletes it, whatever fails below.
        let ns = Netns { name };
        ns.ip(&["link", "set", "lo", "up"])?;
        Ok(ns)
    }

    /// The namespace's name (as shown by `ip netns list`).
    pub fn name(&self) -> &str {
        &self.name
    }

    /// `/run/netns/<name>`, usable with `setns(2)` or `nsenter --net=`.
    pub fn path(&self) -> PathBuf {
        Path::new("/run/netns").join(&self.name)
    }

    /// A `Command` for `ip netns exec <name> args…` (not yet started), for
    /// callers that need custom stdio. `args` must not be empty.
    pub fn command(&self, args: &[&str]) -> Command {
        let mut c = Command::new("ip");
        c.args(["netns", "exec", &self.name]).args(args);
        c
    }

    /// Run `args` inside the namespace (`ip netns exec`) to completion.
    /// A non-zero exit is an error that includes stderr.
    pub fn exec(&self, args: &[&str]) -> Result<Output> {
        if args.is_empty() {
            bail!("Netns::exec: empty command");
        }
        cmd::output(&mut self.command(args))
    }

    /// Start `args` inside the namespace (`ip netns exec`) with stdin and
    /// stdout connected to /dev/null and stderr inherited. Use
    /// [`Netns::command`] for other stdio. The caller owns (and must reap)
    /// the child.
    pub fn spawn(&self, args: &[&str]) -> Result<Child> {
        if args.is_empty() {
            bail!("Netns::spawn: empty command");
        }
        let mut c = self.command(args);
        c.stdin(Stdio::null()).stdout(Stdio::null());
        c.spawn()
            .with_context(|| format!("cannot start `{}`", cmd::describe(&c)))
    }

    /// `ip -n <name> args…` (iproute2 in the namespace, no mount games).
    pub fn ip(&self, args: &[&str]) -> Result<Output> {
        let mut c = Command::new("ip");
        c.args(["-n", &self.name]).args(args);
        cmd::output(&mut c)
    }

    /// Run `f` on a fresh thread that has `setns(2)`'d into this namespace
    /// and return its result. Sockets created and `/proc/sys/net` files
    /// opened in `f` belong to the namespace. Inside `f` use
    /// `/proc/thread-self/net/*` rather than `/proc/self/net/*`.
    pub fn run_in<F, T>(&self, f: F) -> Result<T>
    where
        F: FnOnce() -> Result<T> + Send,
        T: Send,
    {
        let path = self.path();
        std::thread::scope(|s| {
            let handle = s.spawn(move || -> Result<T> {
                let file = File::open(&path).with_context(|| format!("open {}", path.display()))?;
                setns(&file, CloneFlags::CLONE_NEWNET)
                    .with_context(|| format!("setns({})", path.display()))?;
                f()
            });
            handle
                .join()
                .map_err(|_| anyhow!("thread inside netns {} panicked", self.name))?
        })
    }

    /// Read a sysctl of this namespace (`net.ipv4.tcp_rmem` or
    /// `net/ipv4/tcp_rmem`). Returns the trimmed file content (multi-value
    /// sysctls are tab-separated, as in /proc/sys).
    pub fn sysctl_read(&self, key: &str) -> Result<String> {
        let path = crate::sysctl::sysctl_path(key)?;
        self.run_in(move || crate::sysctl::read_path(&path))
    }

    /// Write a sysctl of this namespace. Only per-netns sysctls are
    /// namespaced (see environment.md §2); global ones written here change
    /// the host (and `net.core.*` are read-only in a non-init netns).
    pub fn sysctl_write(&self, key: &str, value: &str) -> Result<()> {
        let path = crate::sysctl::sysctl_path(key)?;
        self.run_in(move || crate::sysctl::write_path(&path, value))
    }

    /// The namespace's cookie (`SO_NETNS_COOKIE` on a socket created inside
    /// it); the value BPF programs see from `bpf_get_netns_cookie`. On kernels without
    /// cookies (5.10) its nsfs inode, which bpftune uses in the cookie's place there.
    pub fn cookie(&self) -> Result<u64> {
        self.run_in(socket_netns_cookie)
    }
}

/// `SO_NETNS_COOKIE` of a UDP socket created in the calling thread's netns; where the
/// kernel has no such option (before 5.14), the namespace's nsfs inode: how bpftune
/// identifies namespaces there.
pub fn socket_netns_cookie() -> Result<u64> {
    // SAFETY: plain socket(2) call; the result is checked before use.
    let raw = unsafe { libc::socket(libc::AF_INET, libc::SOCK_DGRAM | libc::SOCK_CLOEXEC, 0) };
    if raw < 0 {
        return Err(std::io::Error::last_os_error()).context("socket(AF_INET, SOCK_DGRAM)");
    }
    // SAFETY: `raw` is a freshly created, valid descriptor owned by nobody else.
    let sock = unsafe { OwnedFd::from_raw_fd(raw) };
    let mut cookie: u64 = 0;
    let mut len = std::mem::size_of::<u64>() as libc::socklen_t;
    // SAFETY: the option buffer is a valid, writable u64 and `len` holds its
    // size; the kernel writes at most `len` bytes.
    let rc = unsafe {
        libc::getsockopt(
            sock.as_raw_fd(),
            libc::SOL_SOCKET,
            SO_NETNS_COOKIE,
            (&mut cookie as *mut u64).cast(),
            &mut len,
        )
    };
    if rc != 0 {
        let err = std::io::Error::last_os_error();
        if err.raw_os_error() == Some(libc::ENOPROTOOPT) {
            use std::os::unix::fs::MetadataExt;
            return Ok(std::fs::metadata("/proc/thread-self/ns/net")
                .context("stat /proc/thread-self/ns/net")?
                .ino());
        }
        return Err(err).context("getsockopt(SO_NETNS_COOKIE)");
    }
    if len as usize != std::mem::size_of::<u64>() {
        bail!("SO_NETNS_COOKIE returned {len} bytes");
    }
    Ok(cookie)
}

impl Drop for Netns {
    fn drop(&mut self) {
        if !cmd::run_quiet("ip", &["netns", "del", &self.name]) && self.path().exists() {
            // One retry (e.g. a transient EBUSY); after that give up quietly,
            // `cleanup_stale` can still find it later by its name.
            std::thread::sleep(std::time::Duration::from_millis(50));
            cmd::run_quiet("ip", &["netns", "del", &self.name]);
        }
    }
}
