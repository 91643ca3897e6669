//! Network-namespace discovery and cookie → namespace resolution.
//!
//! A namespace is *identified* by its cookie (`SO_NETNS_COOKIE`, unique per boot and never
//! reused) and *located* through its nsfs inode number, which the BPF events carry next to
//! the cookie (`net->net_cookie`, `net->ns.inum`). Inode numbers are recycled as soon as a
//! namespace dies, so an inode alone never proves identity: a cookie is only learnt by
//! entering the namespace and asking a socket.
//!
//! Locations are `/proc/<pid>/ns/net` (read with `readlink`, which yields `net:[N]` without
//! opening anything) and the bind mounts in `/run/netns` (`ip netns add`). Nothing here keeps
//! a namespace file descriptor open beyond one operation: an open nsfs fd pins a namespace
//! alive, so every entry is opened right before `setns` on a short-lived thread and closed
//! right after.
//!
//! Steady-state cost: [`NetnsRegistry::refresh`] only `readlink`s `/proc/*/ns/net` and stats
//! `/run/netns/*`; a namespace is entered (one thread + `setns`) only when it is new, or
//! when none of the locations it was seen at last time still shows it (a possible inode
//! reuse).

use std::collections::{HashMap, HashSet};
use std::ffi::{CString, OsStr, OsString};
use std::fs::File;
use std::io;
use std::mem::MaybeUninit;
use std::os::fd::{AsFd, AsRawFd, BorrowedFd, FromRawFd, OwnedFd};
use std::os::unix::ffi::OsStrExt;
use std::os::unix::fs::MetadataExt;
use std::path::{Path, PathBuf};
use std::sync::Mutex;
use std::time::{Duration, Instant};

use nix::errno::Errno;
use nix::sched::{setns, CloneFlags};
use nix::sys::inotify::{AddWatchFlags, InitFlags, Inotify, WatchDescriptor};
use nix::sys::socket::{socket, AddressFamily, SockFlag, SockType};

/// `SO_NETNS_COOKIE` (include/uapi/asm-generic/socket.h); not exported by every libc.
const SO_NETNS_COOKIE: libc::c_int = 71;
/// `STATX_MNT_ID_UNIQUE` (Linux 6.8+): a 64-bit mount id that is never reused.
const STATX_MNT_ID_UNIQUE: u32 = 0x4000;

/// The calling thread's own network namespace.
pub const THREAD_SELF_NETNS: &str = "/proc/thread-self/ns/net";
/// Where `ip netns add` bind-mounts named namespaces.
pub const DEFAULT_RUN_NETNS: &str = "/run/netns";
/// Default proc mount.
pub const DEFAULT_PROC_ROOT: &str = "/proc";

/// A miss (unknown cookie, stale location) triggers at most one targeted rescan per period.
const MISS_RESCAN_INTERVAL: Duration = Duration::from_millis(200);
/// A cookie that missed is not looked up again for this long.
const MISS_HOLD: Duration = Duration::from_secs(2);
/// Bound on the negative cache.
const MAX_MISS_CACHE: usize = 1024;
/// Locations tried (entered) per inode before giving up on it for this scan.
const MAX_ENTER_TRIES: usize = 3;
/// Locations remembered per namespace as identity witnesses between scans.
const MAX_WITNESSES: usize = 32;

/// A known (non-global) network namespace.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct NetnsInfo {
    /// `SO_NETNS_COOKIE`: unique per boot, never reused.
    pub cookie: u64,
    /// nsfs inode number (`net:[ino]`); reused after the namespace dies.
    pub ino: u64,
    /// Where the namespace can be opened: `/run/netns/<name>` or `/proc/<pid>/ns/net`.
    pub path: PathBuf,
    /// The `/run/netns` name, if the namespace has one.
    pub name: Option<String>,
}

/// Where an operation on behalf of an event has to happen.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Target {
    /// The daemon's own (initial) namespace: no `setns` needed.
    Global,
    /// Another namespace: enter it on a dedicated thread ([`run_in_netns`]).
    Netns(NetnsInfo),
}

/// Errors of namespace operations.
#[derive(Debug, thiserror::Error)]
pub enum NetnsError {
    /// The namespace no longer exists at its known location (or the location now
    /// holds a different namespace).
    #[error("network namespace is gone")]
    Gone,
    /// The location exists but could not be opened or entered.
    #[error("cannot enter network namespace {path}: {source}")]
    Enter {
        path: String,
        #[source]
        source: io::Error,
    },
    /// Any other I/O failure (socket creation, thread spawn, …).
    #[error("network namespace i/o error: {0}")]
    Io(#[from] io::Error),
    /// `SO_NETNS_COOKIE` is not available (kernel < 5.14).
    #[error("netns cookies are not supported by this kernel")]
    CookieUnsupported,
}

/// Runs `f` on a dedicated, short-lived OS thread that first `setns(CLONE_NEWNET)`s into the
/// namespace at `path`.
///
/// The namespace file is opened right before `setns` and closed right after it, so nothing
/// stays pinned. When `expected_ino` is `Some`, the opened file must be that nsfs inode,
/// otherwise (and when the path no longer exists) the result is [`NetnsError::Gone`]. The
/// caller's thread never changes namespace. Files opened by `f` (e.g. `/proc/sys/net/...`,
/// netlink sockets) resolve against the entered namespace; inside `f` use
/// `/proc/thread-self/...` rather than `/proc/self/...`. A panic in `f` is propagated.
pub fn run_in_netns<T: Send>(
    path: &Path,
    expected_ino: Option<u64>,
    f: impl FnOnce() -> T + Send,
) -> Result<T, NetnsError> {
    std::thread::scope(|s| {
        let handle = std::thread::Builder::new()
            .name("bpftune-netns".into())
            .spawn_scoped(s, move || -> Result<T, NetnsError> {
                enter_netns(path, expected_ino)?;
                Ok(f())
            })
            .map_err(NetnsError::Io)?;
        match handle.join() {
            Ok(result) => result,
            Err(panic) => std::panic::resume_unwind(panic),
        }
    })
}

/// Moves the calling thread into the namespace at `path` (fd closed before returning).
fn enter_netns(path: &Path, expected_ino: Option<u64>) -> Result<(), NetnsError> {
    let enter_err = |source: io::Error| NetnsError::Enter {
        path: path.display().to_string(),
        source,
    };
    let file = File::open(path).map_err(|e| match e.raw_os_error() {
        Some(libc::ENOENT) | Some(libc::ESRCH) | Some(libc::ENOTDIR) => NetnsError::Gone,
        _ => enter_err(e),
    })?;
    if let Some(ino) = expected_ino {
        let meta = file.metadata().map_err(enter_err)?;
        if meta.ino() != ino {
            return Err(NetnsError::Gone);
        }
    }
    setns(file.as_fd(), CloneFlags::CLONE_NEWNET).map_err(|e| enter_err(e.into()))?;
    drop(file);
    Ok(())
}

/// Cookie of the calling thread's current network namespace.
pub fn current_cookie() -> Result<u64, NetnsError> {
    let sock = probe_socket()?;
    let mut cookie: u64 = 0;
    let mut len = std::mem::size_of::<u64>() as libc::socklen_t;
    // SAFETY: `sock` is a valid open socket for the duration of the call; `cookie` and
    // `len` are live, writable locals and `len` holds the size of `cookie`.
    let rc = unsafe {
        libc::getsockopt(
            sock.as_raw_fd(),
            libc::SOL_SOCKET,
            SO_NETNS_COOKIE,
            (&mut cookie as *mut u64).cast::<libc::c_void>(),
            &mut len,
        )
    };
    if rc != 0 {
        let err = io::Error::last_os_error();
        return match err.raw_os_error() {
            Some(libc::ENOPROTOOPT) => Err(NetnsError::CookieUnsupported),
            _ => Err(NetnsError::Io(err)),
        };
    }
    if len as usize != std::mem::size_of::<u64>() {
        return Err(NetnsError::CookieUnsupported);
    }
    Ok(cookie)
}

/// A socket in the current netns: UDP/IPv4, or a unix socket where IPv4 is unavailable.
fn probe_socket() -> io::Result<OwnedFd> {
    match socket(
        AddressFamily::Inet,
        SockType::Datagram,
        SockFlag::SOCK_CLOEXEC,
        None,
    ) {
        Ok(fd) => Ok(fd),
        Err(Errno::EAFNOSUPPORT) => socket(
            AddressFamily::Unix,
            SockType::Datagram,
            SockFlag::SOCK_CLOEXEC,
            None,
        )
        .map_err(io::Error::from),
        Err(e) => Err(e.into()),
    }
}

/// nsfs inode of the calling thread's network namespace.
pub fn current_ino() -> Result<u64, NetnsError> {
    Ok(std::fs::metadata(THREAD_SELF_NETNS)?.ino())
}

/// Parses the target of a `/proc/<pid>/ns/net` link: `net:[4026531840]`.
fn parse_ns_link(target: &OsStr) -> Option<u64> {
    let b = target.as_bytes();
    let inner = b.strip_prefix(b"net:[")?.strip_suffix(b"]")?;
    std::str::from_utf8(inner).ok()?.parse().ok()
}

fn parse_pid(name: &OsStr) -> Option<u32> {
    let b = name.as_bytes();
    if b.is_empty() || !b.iter().all(u8::is_ascii_digit) {
        return None;
    }
    std::str::from_utf8(b).ok()?.parse().ok()
}

/// What identifies a location between two scans.
#[derive(Debug, Clone, PartialEq, Eq, Hash)]
enum LocKey {
    /// `/proc/<pid>/ns/net`.
    Pid(u32),
    /// `/run/netns/<name>` on mount `mnt_id` (unique mount id where the kernel has it).
    Run { name: OsString, mnt_id: u64 },
}

/// One place where a namespace was seen.
#[derive(Debug, Clone)]
struct Location {
    path: PathBuf,
    name: Option<String>,
    key: LocKey,
}

/// `stat` following the mount/link: (inode, mount id, is directory).
fn stat_ino_mnt(path: &Path) -> io::Result<(u64, u64, bool)> {
    let cpath = CString::new(path.as_os_str().as_bytes())
        .map_err(|_| io::Error::from(io::ErrorKind::InvalidInput))?;
    let mut stx = MaybeUninit::<libc::statx>::zeroed();
    // SAFETY: `cpath` is a NUL-terminated string that outlives the call, and `stx` points to
    // writable memory of the size of `struct statx`.
    let rc = unsafe {
        libc::statx(
            libc::AT_FDCWD,
            cpath.as_ptr(),
            0,
            libc::STATX_TYPE | libc::STATX_INO | libc::STATX_MNT_ID | STATX_MNT_ID_UNIQUE,
            stx.as_mut_ptr(),
        )
    };
    if rc != 0 {
        let err = io::Error::last_os_error();
        if err.raw_os_error() == Some(libc::ENOSYS) {
            let meta = std::fs::metadata(path)?;
            return Ok((meta.ino(), 0, meta.is_dir()));
        }
        return Err(err);
    }
    // SAFETY: the buffer was zero-initialised (a valid `statx` value) and statx succeeded.
    let stx = unsafe { stx.assume_init() };
    let mnt_id = if stx.stx_mask & (libc::STATX_MNT_ID | STATX_MNT_ID_UNIQUE) != 0 {
        stx.stx_mnt_id
    } else {
        0
    };
    let is_dir = u32::from(stx.stx_mode) & libc::S_IFMT == libc::S_IFDIR;
    Ok((stx.stx_ino, mnt_id, is_dir))
}

/// Entries of a `/run/netns`-style directory: (name, inode, mount id), sorted by name.
fn scan_run_dir(dir: &Path) -> Vec<(OsString, u64, u64)> {
    let Ok(rd) = std::fs::read_dir(dir) else {
        return Vec::new();
    };
    let mut out = Vec::new();
    for ent in rd.flatten() {
        let name = ent.file_name();
        match stat_ino_mnt(&ent.path()) {
            Ok((ino, mnt_id, false)) => out.push((name, ino, mnt_id)),
            Ok((_, _, true)) => {}
            Err(e) => tracing::debug!("netns: skipping {}: {e}", ent.path().display()),
        }
    }
    out.sort();
    out
}

/// Scans `run_netns` (first, so its entries are preferred) and `proc_root/*/ns/net`,
/// keeping inodes accepted by `keep`.
fn scan_locations(
    proc_root: &Path,
    run_netns: &Path,
    keep: impl Fn(u64) -> bool,
) -> HashMap<u64, Vec<Location>> {
    let mut out: HashMap<u64, Vec<Location>> = HashMap::new();
    for (name, ino, mnt_id) in scan_run_dir(run_netns) {
        if !keep(ino) {
            continue;
        }
        out.entry(ino).or_default().push(Location {
            path: run_netns.join(&name),
            name: Some(name.to_string_lossy().into_owned()),
            key: LocKey::Run { name, mnt_id },
        });
    }
    let rd = match std::fs::read_dir(proc_root) {
        Ok(rd) => rd,
        Err(e) => {
            tracing::debug!("netns: cannot list {}: {e}", proc_root.display());
            return out;
        }
    };
    for ent in rd.flatten() {
        let fname = ent.file_name();
        let Some(pid) = parse_pid(&fname) else {
            continue;
        };
        let path = ent.path().join("ns/net");
        // Processes exiting mid-scan (ENOENT, ESRCH) are simply skipped.
        let Ok(target) = std::fs::read_link(&path) else {
            continue;
        };
        let Some(ino) = parse_ns_link(target.as_os_str()) else {
            continue;
        };
        if !keep(ino) {
            continue;
        }
        out.entry(ino).or_default().push(Location {
            path,
            name: None,
            key: LocKey::Pid(pid),
        });
    }
    // Stable preference: named entries (by name), then processes by ascending pid (the
    // oldest process of a container is the likeliest to stay).
    for locs in out.values_mut() {
        locs.sort_by_key(|l| match l.key {
            LocKey::Run { .. } => (0, 0),
            LocKey::Pid(pid) => (1, pid),
        });
    }
    out
}

/// Pure scan of a proc root and a `/run/netns`-style directory: nsfs inode → (path, name).
///
/// Inodes of `proc_root/<pid>/ns/net` come from the link text (`net:[N]`), inodes of
/// `run_netns` entries from `stat` (which follows the bind mount). Processes that vanish
/// mid-scan are skipped. For an inode seen in both places the `run_netns` entry wins: it
/// carries a name and outlives processes. The global namespace is included.
pub fn scan(proc_root: &Path, run_netns: &Path) -> HashMap<u64, (PathBuf, Option<String>)> {
    scan_locations(proc_root, run_netns, |_| true)
        .into_iter()
        .filter_map(|(ino, locs)| {
            let first = locs.into_iter().next()?;
            Some((ino, (first.path, first.name)))
        })
        .collect()
}

/// Whether `path` currently shows the namespace `ino` (readlink for `/proc` links, stat
/// otherwise). Cheap: no open.
fn still_points_to(path: &Path, ino: u64) -> bool {
    if let Ok(target) = std::fs::read_link(path) {
        if let Some(found) = parse_ns_link(target.as_os_str()) {
            return found == ino;
        }
    }
    matches!(stat_ino_mnt(path), Ok((found, _, false)) if found == ino)
}

/// Changes found by [`NetnsRegistry::refresh`].
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct NetnsDiff {
    /// Namespaces seen for the first time (including ones first resolved by `locate`
    /// since the previous refresh).
    pub created: Vec<NetnsInfo>,
    /// Namespaces no longer reachable anywhere; they have been dropped from the registry.
    pub vanished: Vec<NetnsInfo>,
}

impl NetnsDiff {
    /// Nothing changed.
    pub fn is_empty(&self) -> bool {
        self.created.is_empty() && self.vanished.is_empty()
    }
}

/// Reads the cookie of the namespace at a path, given its expected inode.
pub type CookieReader = Box<dyn FnMut(&Path, u64) -> Result<u64, NetnsError> + Send>;

/// The default [`CookieReader`]: enter the namespace and ask a socket.
fn read_cookie_by_entering(path: &Path, ino: u64) -> Result<u64, NetnsError> {
    run_in_netns(path, Some(ino), current_cookie)?
}

#[derive(Debug)]
struct Known {
    info: NetnsInfo,
    /// Locations that showed this namespace at the last scan.
    witnesses: HashSet<LocKey>,
}

impl Known {
    fn new(info: NetnsInfo, locs: &[Location]) -> Self {
        let mut k = Known {
            info,
            witnesses: HashSet::new(),
        };
        k.set_witnesses(locs);
        k
    }

    fn set_witnesses(&mut self, locs: &[Location]) {
        self.witnesses.clear();
        self.witnesses
            .extend(locs.iter().take(MAX_WITNESSES).map(|l| l.key.clone()));
    }

    fn seen_at_any(&self, locs: &[Location]) -> bool {
        locs.iter().any(|l| self.witnesses.contains(&l.key))
    }
}

/// Known network namespaces, keyed by cookie, with cheap rescans and event-driven lookup.
///
/// Holds no file descriptors. Not internally synchronised: wrap it in a `Mutex` to share.
pub struct NetnsRegistry {
    proc_root: PathBuf,
    run_netns: PathBuf,
    global_cookie: u64,
    global_ino: u64,
    /// cookie → namespace (non-global only).
    known: HashMap<u64, Known>,
    /// inode → cookie of the namespace currently holding that inode.
    by_ino: HashMap<u64, u64>,
    /// inode → locations that could not be entered (e.g. a `/run/netns` file not yet
    /// mounted); retried only once the set of locations changes.
    unusable: HashMap<u64, HashSet<LocKey>>,
    /// Found by `locate`/refresh since the last refresh returned: reported by the next one.
    pending_created: Vec<u64>,
    pending_vanished: Vec<NetnsInfo>,
    last_full_scan: Option<Instant>,
    last_miss_scan: Option<Instant>,
    recent_misses: HashMap<u64, Instant>,
    read_cookie: CookieReader,
    /// Number of scans done (full and targeted), for tests and diagnostics.
    scans: u64,
}

impl std::fmt::Debug for NetnsRegistry {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("NetnsRegistry")
            .field("proc_root", &self.proc_root)
            .field("run_netns", &self.run_netns)
            .field("global_cookie", &self.global_cookie)
            .field("global_ino", &self.global_ino)
            .field("known", &self.known.len())
            .field("last_full_scan", &self.last_full_scan)
            .finish_non_exhaustive()
    }
}

impl NetnsRegistry {
    /// Creates a registry; the calling thread's namespace is taken as the global one.
    /// Nothing is scanned yet: call [`refresh`](Self::refresh).
    pub fn new(proc_root: PathBuf, run_netns: PathBuf) -> Result<Self, NetnsError> {
        let global_cookie = current_cookie()?;
        let global_ino = current_ino()?;
        Ok(Self::with_cookie_reader(
            proc_root,
            run_netns,
            global_cookie,
            global_ino,
            Box::new(read_cookie_by_entering),
        ))
    }

    /// Creates a registry with an explicit global namespace and cookie reader (the
    /// production reader enters the namespace; tests pass a fake one to run on fixture trees).
    pub fn with_cookie_reader(
        proc_root: PathBuf,
        run_netns: PathBuf,
        global_cookie: u64,
        global_ino: u64,
        read_cookie: CookieReader,
    ) -> Self {
        NetnsRegistry {
            proc_root,
            run_netns,
            global_cookie,
            global_ino,
            known: HashMap::new(),
            by_ino: HashMap::new(),
            unusable: HashMap::new(),
            pending_created: Vec::new(),
            pending_vanished: Vec::new(),
            last_full_scan: None,
            last_miss_scan: None,
            recent_misses: HashMap::new(),
            read_cookie,
            scans: 0,
        }
    }

    /// Cookie of the daemon's own (global) namespace.
    pub fn global_cookie(&self) -> u64 {
        self.global_cookie
    }

    /// nsfs inode of the daemon's own (global) namespace.
    pub fn global_ino(&self) -> u64 {
        self.global_ino
    }

    /// Cookie 0 (no cookie known, e.g. from BPF on init_net without `net_cookie`) and the
    /// daemon's own cookie both mean the global namespace.
    pub fn is_global(&self, cookie: u64) -> bool {
        cookie == 0 || cookie == self.global_cookie
    }

    /// The cached entry for `cookie`, without validation.
    pub fn get(&self, cookie: u64) -> Option<&NetnsInfo> {
        self.known.get(&cookie).map(|k| &k.info)
    }

    /// Known non-global namespaces, sorted by cookie.
    pub fn list(&self) -> Vec<NetnsInfo> {
        let mut v: Vec<NetnsInfo> = self.known.values().map(|k| k.info.clone()).collect();
        v.sort_by_key(|i| i.cookie);
        v
    }

    /// Drops a namespace from the registry (not reported as vanished). If it is still
    /// reachable, the next refresh reports it as created again.
    pub fn forget(&mut self, cookie: u64) {
        self.remove(cookie);
        self.pending_created.retain(|&c| c != cookie);
    }

    /// When the last full scan ran.
    pub fn last_full_scan(&self) -> Option<Instant> {
        self.last_full_scan
    }

    fn remove(&mut self, cookie: u64) -> Option<NetnsInfo> {
        let k = self.known.remove(&cookie)?;
        if self.by_ino.get(&k.info.ino) == Some(&cookie) {
            self.by_ino.remove(&k.info.ino);
        }
        Some(k.info)
    }

    /// Removes `cookie` and queues it for the next refresh's `vanished`.
    fn drop_vanished(&mut self, cookie: u64) {
        if let Some(info) = self.remove(cookie) {
            tracing::debug!("netns vanished (cookie {cookie}, ino {})", info.ino);
            self.pending_vanished.push(info);
        }
    }

    /// Enters up to [`MAX_ENTER_TRIES`] locations of `ino` to learn its cookie.
    fn identify(&mut self, ino: u64, locs: &[Location]) -> Option<(u64, usize)> {
        for (idx, loc) in locs.iter().enumerate().take(MAX_ENTER_TRIES) {
            match (self.read_cookie)(&loc.path, ino) {
                Ok(cookie) => return Some((cookie, idx)),
                Err(e) => tracing::debug!(
                    "netns: cannot read cookie of ino {ino} at {}: {e}",
                    loc.path.display()
                ),
            }
        }
        None
    }

    /// Records that `cookie` lives at inode `ino` (found at `locs[idx]`). Returns true if
    /// the namespace is new to the registry.
    fn adopt(&mut self, cookie: u64, ino: u64, locs: &[Location], idx: usize) -> bool {
        if self.is_global(cookie) {
            tracing::debug!("netns: ino {ino} reports the global cookie; ignored");
            return false;
        }
        let Some(loc) = locs.get(idx) else {
            return false;
        };
        // Whatever else claimed this inode is dead: nsfs inodes are unique among live
        // namespaces.
        if let Some(old) = self.by_ino.insert(ino, cookie) {
            if old != cookie {
                self.drop_vanished(old);
            }
        }
        let info = NetnsInfo {
            cookie,
            ino,
            path: loc.path.clone(),
            name: loc.name.clone(),
        };
        self.recent_misses.remove(&cookie);
        match self.known.get_mut(&cookie) {
            Some(k) => {
                if k.info.ino != ino && self.by_ino.get(&k.info.ino) == Some(&cookie) {
                    self.by_ino.remove(&k.info.ino);
                }
                k.info = info;
                k.set_witnesses(locs);
                false
            }
            None => {
                tracing::debug!(
                    "netns created (cookie {cookie}, ino {ino}, {})",
                    info.path.display()
                );
                self.known.insert(cookie, Known::new(info, locs));
                self.pending_created.push(cookie);
                true
            }
        }
    }

    /// Full rescan. Known namespaces still seen at one of their previous locations are
    /// kept without being entered; new inodes are entered once to read their cookie;
    /// namespaces found nowhere are dropped and reported as vanished.
    pub fn refresh(&mut self) -> NetnsDiff {
        let global_ino = self.global_ino;
        let scanned = scan_locations(&self.proc_root, &self.run_netns, |ino| ino != global_ino);
        self.scans += 1;
        self.last_full_scan = Some(Instant::now());

        let mut seen: HashSet<u64> = HashSet::with_capacity(scanned.len());
        for (&ino, locs) in &scanned {
            if let Some(&cookie) = self.by_ino.get(&ino) {
                if let Some(k) = self.known.get_mut(&cookie) {
                    if k.seen_at_any(locs) {
                        if let Some(first) = locs.first() {
                            if k.info.path != first.path {
                                tracing::debug!("netns cookie {cookie} now at {}", first.path.display());
                                k.info.path = first.path.clone();
                                k.info.name = first.name.clone();
                            }
                        }
                        k.set_witnesses(locs);
                        seen.insert(cookie);
                        continue;
                    }
                }
            }
            if let Some(bad) = self.unusable.get(&ino) {
                if locs.iter().all(|l| bad.contains(&l.key)) {
                    continue;
                }
            }
            match self.identify(ino, locs) {
                Some((cookie, idx)) => {
                    self.unusable.remove(&ino);
                    self.adopt(cookie, ino, locs, idx);
                    seen.insert(cookie);
                }
                None => {
                    self.unusable
                        .insert(ino, locs.iter().map(|l| l.key.clone()).collect());
                }
            }
        }
        let gone: Vec<u64> = self.known.keys().filter(|c| !seen.contains(c)).copied().collect();
        for cookie in gone {
            self.drop_vanished(cookie);
        }
        self.unusable.retain(|ino, _| scanned.contains_key(ino));

        let created_cookies = std::mem::take(&mut self.pending_created);
        let created_set: HashSet<u64> = created_cookies.iter().copied().collect();
        let created = created_cookies
            .iter()
            .filter_map(|c| self.known.get(c).map(|k| k.info.clone()))
            .collect();
        let vanished = std::mem::take(&mut self.pending_vanished)
            .into_iter()
            .filter(|i| !created_set.contains(&i.cookie))
            .collect();
        NetnsDiff { created, vanished }
    }

    /// Rate limit for lookups that need a scan.
    fn miss_allowed(&mut self, cookie: u64) -> bool {
        let now = Instant::now();
        if let Some(t) = self.recent_misses.get(&cookie) {
            if now.duration_since(*t) < MISS_HOLD {
                return false;
            }
        }
        if let Some(t) = self.last_miss_scan {
            if now.duration_since(t) < MISS_RESCAN_INTERVAL {
                return false;
            }
        }
        self.last_miss_scan = Some(now);
        if self.recent_misses.len() >= MAX_MISS_CACHE {
            self.recent_misses
                .retain(|_, t| now.duration_since(*t) < MISS_HOLD);
            if self.recent_misses.len() >= MAX_MISS_CACHE {
                self.recent_misses.clear();
            }
        }
        self.recent_misses.insert(cookie, now);
        true
    }

    /// Locates the namespace an event came from.
    ///
    /// The global cookie (or 0) gives [`Target::Global`]. A cached cookie is returned after a
    /// cheap check that its path still shows the same inode. Otherwise, when the event's
    /// inode `ino` is known (non-zero), only the locations of that inode are scanned
    /// (readlinks, no `setns` elsewhere) and the namespace is entered once to verify its
    /// cookie; with `ino == 0` a full refresh is done instead. Such scans happen at most
    /// once per 200 ms, and not again for the same cookie within 2 s, so a flood of events
    /// from an unknown or dead namespace costs nothing. Returns `None` when the namespace
    /// cannot be found (now).
    pub fn locate(&mut self, cookie: u64, ino: u64) -> Option<Target> {
        if self.is_global(cookie) {
            return Some(Target::Global);
        }
        if let Some(k) = self.known.get(&cookie) {
            if still_points_to(&k.info.path, k.info.ino) {
                return Some(Target::Netns(k.info.clone()));
            }
            let known_ino = k.info.ino;
            if !self.miss_allowed(cookie) {
                return None;
            }
            return self.resolve_by_ino(cookie, known_ino);
        }
        if ino == self.global_ino {
            // The global namespace never dies, so its inode cannot have been reused.
            return None;
        }
        if !self.miss_allowed(cookie) {
            return None;
        }
        if ino == 0 {
            let diff = self.refresh();
            // Keep the diff for the daemon's next refresh.
            self.pending_created.extend(diff.created.iter().map(|i| i.cookie));
            self.pending_vanished.extend(diff.vanished);
            return self.known.get(&cookie).map(|k| Target::Netns(k.info.clone()));
        }
        self.resolve_by_ino(cookie, ino)
    }

    /// Targeted scan for `ino`, then verify that it is `cookie`.
    fn resolve_by_ino(&mut self, cookie: u64, ino: u64) -> Option<Target> {
        let mut scanned = scan_locations(&self.proc_root, &self.run_netns, |i| i == ino);
        self.scans += 1;
        let locs = scanned.remove(&ino).unwrap_or_default();
        if locs.is_empty() {
            self.drop_vanished(cookie);
            return None;
        }
        let (found, idx) = self.identify(ino, &locs)?;
        self.adopt(found, ino, &locs, idx);
        if found == cookie {
            self.known.get(&cookie).map(|k| Target::Netns(k.info.clone()))
        } else {
            // The inode now belongs to another namespace: ours is dead.
            self.drop_vanished(cookie);
            None
        }
    }
}

/// Watches `/run/netns` (inotify) and the mount table (`/proc/self/mounts` poll) so that
/// `ip netns add/del` can trigger a prompt [`NetnsRegistry::refresh`].
///
/// `ip netns add` creates the file before bind-mounting the namespace on it, so the
/// inotify event alone can come too early; the mount-table notification covers the mount.
/// When the directory does not exist yet, its parent is watched for its creation.
/// [`fd`](Self::fd) is an epoll descriptor to add to the daemon's poll set.
pub struct RunNetnsWatcher {
    epoll: OwnedFd,
    inotify: Inotify,
    /// Kept open for its poll notifications; never read.
    _mounts: Option<File>,
    dir: PathBuf,
    state: Mutex<WatchState>,
}

#[derive(Debug)]
struct WatchState {
    dir_wd: Option<WatchDescriptor>,
    parent_wd: Option<WatchDescriptor>,
    signature: Vec<(OsString, u64, u64)>,
}

impl std::fmt::Debug for RunNetnsWatcher {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("RunNetnsWatcher")
            .field("dir", &self.dir)
            .finish_non_exhaustive()
    }
}

fn dir_flags() -> AddWatchFlags {
    AddWatchFlags::IN_CREATE
        | AddWatchFlags::IN_DELETE
        | AddWatchFlags::IN_MOVED_TO
        | AddWatchFlags::IN_MOVED_FROM
        | AddWatchFlags::IN_DELETE_SELF
        | AddWatchFlags::IN_MOVE_SELF
        | AddWatchFlags::IN_ONLYDIR
}

fn parent_flags() -> AddWatchFlags {
    AddWatchFlags::IN_CREATE | AddWatchFlags::IN_MOVED_TO | AddWatchFlags::IN_ONLYDIR
}

fn epoll_add(epoll: &OwnedFd, fd: BorrowedFd<'_>, events: u32) -> io::Result<()> {
    let mut ev = libc::epoll_event {
        events,
        u64: fd.as_raw_fd() as u64,
    };
    // SAFETY: both descriptors are valid for the call and `ev` is a live epoll_event.
    let rc = unsafe { libc::epoll_ctl(epoll.as_raw_fd(), libc::EPOLL_CTL_ADD, fd.as_raw_fd(), &mut ev) };
    if rc != 0 {
        return Err(io::Error::last_os_error());
    }
    Ok(())
}

impl RunNetnsWatcher {
    /// Starts watching `dir` (normally [`DEFAULT_RUN_NETNS`]).
    pub fn new(dir: &Path) -> Result<Self, NetnsError> {
        let inotify =
            Inotify::init(InitFlags::IN_NONBLOCK | InitFlags::IN_CLOEXEC).map_err(io::Error::from)?;
        // SAFETY: plain syscall without pointers.
        let raw = unsafe { libc::epoll_create1(libc::EPOLL_CLOEXEC) };
        if raw < 0 {
            return Err(io::Error::last_os_error().into());
        }
        // SAFETY: `raw` is a freshly created descriptor that nothing else owns.
        let epoll = unsafe { OwnedFd::from_raw_fd(raw) };
        epoll_add(&epoll, inotify.as_fd(), libc::EPOLLIN as u32)?;
        let mounts = match File::open("/proc/self/mounts") {
            Ok(f) => match epoll_add(&epoll, f.as_fd(), libc::EPOLLPRI as u32) {
                Ok(()) => Some(f),
                Err(e) => {
                    tracing::debug!("netns watcher: cannot poll mount table: {e}");
                    None
                }
            },
            Err(e) => {
                tracing::debug!("netns watcher: cannot open mount table: {e}");
                None
            }
        };
        let watcher = RunNetnsWatcher {
            epoll,
            inotify,
            _mounts: mounts,
            dir: dir.to_path_buf(),
            state: Mutex::new(WatchState {
                dir_wd: None,
                parent_wd: None,
                signature: scan_run_dir(dir),
            }),
        };
        {
            let mut st = watcher.lock_state();
            watcher.arm(&mut st);
        }
        Ok(watcher)
    }

    fn lock_state(&self) -> std::sync::MutexGuard<'_, WatchState> {
        self.state
            .lock()
            .unwrap_or_else(std::sync::PoisonError::into_inner)
    }

    /// Watches the directory, or its parent while the directory is missing.
    fn arm(&self, st: &mut WatchState) {
        if st.dir_wd.is_none() {
            match self.inotify.add_watch(&self.dir, dir_flags()) {
                Ok(wd) => {
                    st.dir_wd = Some(wd);
                    if let Some(pwd) = st.parent_wd.take() {
                        let _ = self.inotify.rm_watch(pwd);
                    }
                    return;
                }
                Err(e) => {
                    tracing::debug!("netns watcher: cannot watch {}: {e}", self.dir.display())
                }
            }
        }
        if st.dir_wd.is_none() && st.parent_wd.is_none() {
            if let Some(parent) = self.dir.parent() {
                match self.inotify.add_watch(parent, parent_flags()) {
                    Ok(wd) => st.parent_wd = Some(wd),
                    Err(e) => {
                        tracing::debug!("netns watcher: cannot watch {}: {e}", parent.display())
                    }
                }
            }
        }
    }

    /// Descriptor that becomes readable when something may have changed; then call
    /// [`drain`](Self::drain).
    pub fn fd(&self) -> BorrowedFd<'_> {
        self.epoll.as_fd()
    }

    /// Consumes pending notifications; true when the set of namespaces in the directory
    /// may have changed (a refresh is due).
    pub fn drain(&self) -> bool {
        let mut changed = false;
        let mut events = [libc::epoll_event { events: 0, u64: 0 }; 4];
        // SAFETY: `events` is a writable array of 4 epoll_event; timeout 0 never blocks.
        let _ = unsafe {
            libc::epoll_wait(
                self.epoll.as_raw_fd(),
                events.as_mut_ptr(),
                events.len() as libc::c_int,
                0,
            )
        };
        let mut st = self.lock_state();
        let dir_name = self.dir.file_name().map(OsStr::to_os_string);
        loop {
            match self.inotify.read_events() {
                Ok(evs) if !evs.is_empty() => {
                    for ev in evs {
                        if Some(ev.wd) == st.dir_wd {
                            changed = true;
                            if ev.mask.intersects(
                                AddWatchFlags::IN_IGNORED
                                    | AddWatchFlags::IN_DELETE_SELF
                                    | AddWatchFlags::IN_MOVE_SELF,
                            ) {
                                if let Some(wd) = st.dir_wd.take() {
                                    let _ = self.inotify.rm_watch(wd);
                                }
                            }
                        } else if Some(ev.wd) == st.parent_wd && ev.name == dir_name {
                            changed = true;
                        }
                    }
                }
                Ok(_) => break,
                Err(Errno::EAGAIN) => break,
                Err(e) => {
                    tracing::debug!("netns watcher: inotify read failed: {e}");
                    break;
                }
            }
        }
        if st.dir_wd.is_none() {
            self.arm(&mut st);
        }
        let signature = scan_run_dir(&self.dir);
        if signature != st.signature {
            st.signature = signature;
            changed = true;
        }
        changed
    }
}

#[cfg(test)]
pub(crate) mod tests {
    use super::*;
    use std::os::unix::fs::symlink;
    use std::process::Command;
    use std::sync::atomic::{AtomicU32, Ordering};
    use std::sync::{Arc, MutexGuard};

    /// Serialises the tests that create namespaces or count file descriptors.
    pub(crate) static ROOT_TEST_LOCK: Mutex<()> = Mutex::new(());

    pub(crate) fn root_lock() -> MutexGuard<'static, ()> {
        ROOT_TEST_LOCK
            .lock()
            .unwrap_or_else(std::sync::PoisonError::into_inner)
    }

    /// True when running as root; panics ("needs root: …") otherwise. The root tests are
    /// `#[ignore]`d, so this only runs with `--include-ignored` (make test): as non-root
    /// that must fail loudly, never pass.
    pub(crate) fn is_root(test: &str) -> bool {
        assert!(
            nix::unistd::geteuid().is_root(),
            "needs root: {test} (run as root, e.g. `make test`)"
        );
        true
    }

    /// Temporary directory removed on drop.
    pub(crate) struct TempDir(pub PathBuf);

    impl TempDir {
        pub(crate) fn new(tag: &str) -> Self {
            static N: AtomicU32 = AtomicU32::new(0);
            let p = std::env::temp_dir().join(format!(
                "bpftune-{tag}-{}-{}",
                std::process::id(),
                N.fetch_add(1, Ordering::Relaxed)
            ));
            let _ = std::fs::remove_dir_all(&p);
            std::fs::create_dir_all(&p).expect("create temp dir");
            TempDir(p)
        }
    }

    impl Drop for TempDir {
        fn drop(&mut self) {
            let _ = std::fs::remove_dir_all(&self.0);
        }
    }

    /// A namespace made with `ip netns add`, deleted on drop.
    pub(crate) struct NsGuard {
        pub name: String,
        pub path: PathBuf,
    }

    impl NsGuard {
        pub(crate) fn new() -> Self {
            static N: AtomicU32 = AtomicU32::new(0);
            let name = format!("bpt{}x{}", std::process::id(), N.fetch_add(1, Ordering::Relaxed));
            let st = Command::new("ip")
                .args(["netns", "add", &name])
                .status()
                .expect("run ip netns add");
            assert!(st.success(), "ip netns add {name} failed");
            let path = Path::new(DEFAULT_RUN_NETNS).join(&name);
            NsGuard { name, path }
        }

        pub(crate) fn delete(&mut self) {
            if !self.name.is_empty() {
                let _ = Command::new("ip").args(["netns", "del", &self.name]).status();
                self.name.clear();
            }
        }
    }

    impl Drop for NsGuard {
        fn drop(&mut self) {
            self.delete();
        }
    }

    fn fd_count() -> usize {
        std::fs::read_dir("/proc/self/fd")
            .map(|rd| rd.count())
            .unwrap_or(0)
    }

    fn write_file(p: &Path) {
        std::fs::create_dir_all(p.parent().expect("parent")).expect("mkdir");
        std::fs::write(p, b"").expect("write fixture");
    }

    fn ns_link(proc_root: &Path, pid: u32, ino: u64) {
        let d = proc_root.join(pid.to_string()).join("ns");
        std::fs::create_dir_all(&d).expect("mkdir");
        symlink(format!("net:[{ino}]"), d.join("net")).expect("symlink");
    }

    fn file_ino(p: &Path) -> u64 {
        std::fs::metadata(p).expect("stat").ino()
    }

    #[test]
    fn parses_links_and_pids() {
        assert_eq!(parse_ns_link(OsStr::new("net:[4026531840]")), Some(4026531840));
        assert_eq!(parse_ns_link(OsStr::new("mnt:[4026531840]")), None);
        assert_eq!(parse_ns_link(OsStr::new("net:[x]")), None);
        assert_eq!(parse_ns_link(OsStr::new("net:[1")), None);
        assert_eq!(parse_pid(OsStr::new("123")), Some(123));
        assert_eq!(parse_pid(OsStr::new("self")), None);
        assert_eq!(parse_pid(OsStr::new("")), None);
        assert_eq!(parse_pid(OsStr::new("-1")), None);
    }

    #[test]
    fn scan_fixture_tree() {
        let t = TempDir::new("scan");
        let proc_root = t.0.join("proc");
        let run = t.0.join("run/netns");
        write_file(&run.join("foo"));
        write_file(&run.join("bar"));
        std::fs::create_dir_all(run.join("subdir")).expect("mkdir");
        let foo_ino = file_ino(&run.join("foo"));
        let bar_ino = file_ino(&run.join("bar"));
        ns_link(&proc_root, 123, 4026532000);
        ns_link(&proc_root, 124, 4026532000);
        ns_link(&proc_root, 125, 4026532001);
        // Same namespace as /run/netns/foo: the named path must win.
        ns_link(&proc_root, 126, foo_ino);
        // A process that vanished: directory without ns/net.
        std::fs::create_dir_all(proc_root.join("127")).expect("mkdir");
        // Garbage link and non-pid entries.
        let d = proc_root.join("128/ns");
        std::fs::create_dir_all(&d).expect("mkdir");
        symlink("foo", d.join("net")).expect("symlink");
        symlink("123", proc_root.join("self")).expect("symlink");
        write_file(&proc_root.join("meminfo"));

        let m = scan(&proc_root, &run);
        assert_eq!(m.len(), 4, "{m:?}");
        let (p, name) = &m[&4026532000];
        assert!(
            p == &proc_root.join("123/ns/net") || p == &proc_root.join("124/ns/net"),
            "{p:?}"
        );
        assert_eq!(name, &None);
        assert_eq!(m[&4026532001], (proc_root.join("125/ns/net"), None::<String>));
        assert_eq!(m[&foo_ino], (run.join("foo"), Some("foo".to_string())));
        assert_eq!(m[&bar_ino], (run.join("bar"), Some("bar".to_string())));

        // Missing directories scan to nothing.
        assert!(scan(&t.0.join("nope"), &t.0.join("nope2")).is_empty());
    }

    /// Fake cookie reader: path → cookie from a shared table, counting calls.
    #[derive(Clone, Default)]
    struct FakeNs {
        cookies: Arc<Mutex<HashMap<PathBuf, u64>>>,
        calls: Arc<AtomicU32>,
    }

    impl FakeNs {
        fn set(&self, p: &Path, cookie: u64) {
            self.cookies.lock().expect("lock").insert(p.to_path_buf(), cookie);
        }
        fn calls(&self) -> u32 {
            self.calls.load(Ordering::Relaxed)
        }
        fn reader(&self) -> CookieReader {
            let me = self.clone();
            Box::new(move |p: &Path, ino: u64| {
                me.calls.fetch_add(1, Ordering::Relaxed);
                if !still_points_to(p, ino) {
                    return Err(NetnsError::Gone);
                }
                me.cookies
                    .lock()
                    .expect("lock")
                    .get(p)
                    .copied()
                    .ok_or(NetnsError::Gone)
            })
        }
    }

    const GLOBAL_INO: u64 = 4026531840;
    const GLOBAL_COOKIE: u64 = 1;

    #[test]
    fn registry_refresh_on_fixtures() {
        let t = TempDir::new("reg");
        let proc_root = t.0.join("proc");
        let run = t.0.join("run/netns");
        std::fs::create_dir_all(&run).expect("mkdir");
        ns_link(&proc_root, 1, GLOBAL_INO);
        ns_link(&proc_root, 2, GLOBAL_INO);
        ns_link(&proc_root, 100, 4026532100);
        ns_link(&proc_root, 101, 4026532100);
        write_file(&run.join("blue"));
        let blue_ino = file_ino(&run.join("blue"));
        let fake = FakeNs::default();
        fake.set(&proc_root.join("100/ns/net"), 1000);
        fake.set(&proc_root.join("101/ns/net"), 1000);
        fake.set(&run.join("blue"), 2000);
        let mut reg = NetnsRegistry::with_cookie_reader(
            proc_root.clone(),
            run.clone(),
            GLOBAL_COOKIE,
            GLOBAL_INO,
            fake.reader(),
        );
        assert!(reg.is_global(0) && reg.is_global(GLOBAL_COOKIE) && !reg.is_global(1000));

        let d = reg.refresh();
        let mut created: Vec<u64> = d.created.iter().map(|i| i.cookie).collect();
        created.sort();
        assert_eq!(created, vec![1000, 2000]);
        assert!(d.vanished.is_empty());
        assert_eq!(fake.calls(), 2, "one entry per new namespace");
        let blue = reg.get(2000).expect("blue known").clone();
        assert_eq!(blue.name.as_deref(), Some("blue"));
        assert_eq!(blue.ino, blue_ino);

        // Nothing changed: no namespace is entered again.
        let d = reg.refresh();
        assert!(d.is_empty(), "{d:?}");
        assert_eq!(fake.calls(), 2);

        // The first process of ns 1000 exits; another one still shows it.
        std::fs::remove_dir_all(proc_root.join("100")).expect("rm");
        ns_link(&proc_root, 102, 4026532100);
        assert!(reg.refresh().is_empty());
        assert_eq!(fake.calls(), 2);
        assert_eq!(reg.get(1000).expect("known").path, proc_root.join("101/ns/net"));

        // All its processes exit and a new namespace reuses the inode: vanished + created.
        std::fs::remove_dir_all(proc_root.join("101")).expect("rm");
        std::fs::remove_dir_all(proc_root.join("102")).expect("rm");
        ns_link(&proc_root, 103, 4026532100);
        fake.set(&proc_root.join("103/ns/net"), 1001);
        let d = reg.refresh();
        assert_eq!(d.created.iter().map(|i| i.cookie).collect::<Vec<_>>(), vec![1001]);
        assert_eq!(
            d.vanished.iter().map(|i| i.cookie).collect::<Vec<_>>(),
            vec![1000]
        );
        assert_eq!(reg.list().len(), 2);

        // A location that cannot be entered is not retried while unchanged.
        write_file(&run.join("stale"));
        let calls = fake.calls();
        assert!(reg.refresh().is_empty());
        assert_eq!(fake.calls(), calls + 1);
        assert!(reg.refresh().is_empty());
        assert_eq!(fake.calls(), calls + 1);

        // /run/netns entry removed: vanished.
        std::fs::remove_file(run.join("blue")).expect("rm");
        let d = reg.refresh();
        assert_eq!(
            d.vanished.iter().map(|i| i.cookie).collect::<Vec<_>>(),
            vec![2000]
        );
        assert!(reg.get(2000).is_none());
        reg.forget(1001);
        assert!(reg.list().is_empty());
        // Forgotten but still present: reported as created again.
        assert_eq!(reg.refresh().created.len(), 1);
    }

    #[test]
    fn registry_locate_on_fixtures() {
        let t = TempDir::new("loc");
        let proc_root = t.0.join("proc");
        let run = t.0.join("run/netns");
        std::fs::create_dir_all(&run).expect("mkdir");
        ns_link(&proc_root, 1, GLOBAL_INO);
        ns_link(&proc_root, 200, 4026532200);
        let fake = FakeNs::default();
        fake.set(&proc_root.join("200/ns/net"), 3000);
        let mut reg = NetnsRegistry::with_cookie_reader(
            proc_root.clone(),
            run.clone(),
            GLOBAL_COOKIE,
            GLOBAL_INO,
            fake.reader(),
        );
        assert_eq!(reg.locate(0, 0), Some(Target::Global));
        assert_eq!(reg.locate(GLOBAL_COOKIE, GLOBAL_INO), Some(Target::Global));

        // Unknown cookie with its inode: targeted scan + one entry.
        let Some(Target::Netns(info)) = reg.locate(3000, 4026532200) else {
            panic!("not located");
        };
        assert_eq!(info.path, proc_root.join("200/ns/net"));
        assert_eq!(reg.scans, 1);
        assert_eq!(fake.calls(), 1);
        // Cached afterwards; still reported by the next refresh as created.
        assert!(matches!(reg.locate(3000, 4026532200), Some(Target::Netns(_))));
        assert_eq!(reg.scans, 1);
        let d = reg.refresh();
        assert_eq!(d.created.len(), 1);
        assert_eq!(fake.calls(), 1);

        // A flood of events from an unknown namespace: at most one scan per 200 ms.
        std::thread::sleep(MISS_RESCAN_INTERVAL + Duration::from_millis(20));
        let scans = reg.scans;
        for _ in 0..10_000 {
            assert_eq!(reg.locate(9999, 4026539999), None);
        }
        assert_eq!(reg.scans, scans + 1);
        // Another unknown cookie within the 200 ms window: no scan either.
        assert_eq!(reg.locate(9998, 4026539998), None);
        assert_eq!(reg.scans, scans + 1);
        std::thread::sleep(MISS_RESCAN_INTERVAL + Duration::from_millis(20));
        // Same cookie is held for 2 s, a different one may scan again.
        assert_eq!(reg.locate(9999, 4026539999), None);
        assert_eq!(reg.scans, scans + 1);
        assert_eq!(reg.locate(9998, 4026539998), None);
        assert_eq!(reg.scans, scans + 2);

        // The process moves: the cached path goes stale and is re-resolved.
        std::fs::remove_dir_all(proc_root.join("200")).expect("rm");
        ns_link(&proc_root, 201, 4026532200);
        fake.set(&proc_root.join("201/ns/net"), 3000);
        std::thread::sleep(MISS_RESCAN_INTERVAL + Duration::from_millis(20));
        let Some(Target::Netns(info)) = reg.locate(3000, 4026532200) else {
            panic!("not relocated");
        };
        assert_eq!(info.path, proc_root.join("201/ns/net"));

        // Gone for good: dropped and reported vanished.
        std::fs::remove_dir_all(proc_root.join("201")).expect("rm");
        std::thread::sleep(MISS_RESCAN_INTERVAL + Duration::from_millis(20));
        assert_eq!(reg.locate(3000, 4026532200), None);
        assert!(reg.get(3000).is_none());
        let d = reg.refresh();
        assert_eq!(
            d.vanished.iter().map(|i| i.cookie).collect::<Vec<_>>(),
            vec![3000]
        );
    }

    #[test]
    fn own_namespace_cookie_and_inode() {
        let cookie = current_cookie().expect("SO_NETNS_COOKIE");
        assert_ne!(cookie, 0);
        assert_eq!(current_cookie().expect("cookie"), cookie);
        let ino = current_ino().expect("ino");
        let link = std::fs::read_link(THREAD_SELF_NETNS).expect("readlink");
        assert_eq!(parse_ns_link(link.as_os_str()), Some(ino));
    }

    #[test]
    fn run_in_netns_errors() {
        assert!(matches!(
            run_in_netns(Path::new("/nonexistent/ns"), None, || ()),
            Err(NetnsError::Gone)
        ));
        // Wrong expected inode.
        assert!(matches!(
            run_in_netns(Path::new(THREAD_SELF_NETNS), Some(1), || ()),
            Err(NetnsError::Gone)
        ));
        // Not a namespace file.
        let t = TempDir::new("notns");
        let f = t.0.join("plain");
        write_file(&f);
        assert!(matches!(
            run_in_netns(&f, None, || ()),
            Err(NetnsError::Enter { .. })
        ));
    }

    #[test]
    #[ignore = "needs root (run as root with --include-ignored; make test does)"]
    fn root_run_in_own_namespace_borrows() {
        if !is_root("root_run_in_own_namespace_borrows") {
            return;
        }
        let ino = current_ino().expect("ino");
        let data = [1, 2, 3];
        let path = PathBuf::from(format!("/proc/{}/ns/net", std::process::id()));
        let (sum, cookie) =
            run_in_netns(&path, Some(ino), || (data.iter().sum::<i32>(), current_cookie())).expect("run");
        assert_eq!(sum, 6);
        assert_eq!(cookie.expect("cookie"), current_cookie().expect("cookie"));
    }

    #[test]
    #[ignore = "needs root (run as root with --include-ignored; make test does)"]
    fn root_named_namespace_lifecycle() {
        if !is_root("root_named_namespace_lifecycle") {
            return;
        }
        let _l = root_lock();
        let watcher = RunNetnsWatcher::new(Path::new(DEFAULT_RUN_NETNS)).expect("watcher");
        let mut reg =
            NetnsRegistry::new(DEFAULT_PROC_ROOT.into(), DEFAULT_RUN_NETNS.into()).expect("registry");
        reg.refresh();
        let mut ns = NsGuard::new();
        assert!(wait_for_change(&watcher), "watcher did not report ip netns add");
        let d = reg.refresh();
        let info = d
            .created
            .iter()
            .find(|i| i.name.as_deref() == Some(ns.name.as_str()))
            .unwrap_or_else(|| panic!("{} not reported created: {d:?}", ns.name))
            .clone();
        assert_ne!(info.cookie, reg.global_cookie());
        assert_ne!(info.ino, reg.global_ino());
        assert_eq!(info.path, ns.path);
        // Cookie read independently.
        let c = run_in_netns(&ns.path, Some(info.ino), current_cookie)
            .expect("enter")
            .expect("cookie");
        assert_eq!(c, info.cookie);
        assert_eq!(
            reg.locate(info.cookie, info.ino),
            Some(Target::Netns(info.clone()))
        );
        // A fresh registry resolves it lazily from the event's cookie + inode.
        let mut reg2 =
            NetnsRegistry::new(DEFAULT_PROC_ROOT.into(), DEFAULT_RUN_NETNS.into()).expect("registry");
        assert_eq!(
            reg2.locate(info.cookie, info.ino),
            Some(Target::Netns(info.clone()))
        );

        ns.delete();
        assert!(wait_for_change(&watcher), "watcher did not report ip netns del");
        let d = reg.refresh();
        assert!(
            d.vanished.iter().any(|i| i.cookie == info.cookie),
            "not reported vanished: {d:?}"
        );
        assert!(reg.get(info.cookie).is_none());
        assert!(matches!(
            run_in_netns(&info.path, Some(info.ino), || ()),
            Err(NetnsError::Gone)
        ));
    }

    #[test]
    #[ignore = "needs root (run as root with --include-ignored; make test does)"]
    fn root_same_name_recreated_between_refreshes() {
        if !is_root("root_same_name_recreated_between_refreshes") {
            return;
        }
        let _l = root_lock();
        let mut reg =
            NetnsRegistry::new(DEFAULT_PROC_ROOT.into(), DEFAULT_RUN_NETNS.into()).expect("registry");
        reg.refresh();
        let mut ns = NsGuard::new();
        let name = ns.name.clone();
        let d = reg.refresh();
        let old = d
            .created
            .iter()
            .find(|i| i.name.as_deref() == Some(name.as_str()))
            .expect("created")
            .clone();
        // Delete and re-add under the same name: the inode is usually recycled, the
        // cookie never is.
        ns.delete();
        let st = Command::new("ip")
            .args(["netns", "add", &name])
            .status()
            .expect("ip netns add");
        assert!(st.success());
        ns.name = name.clone();
        let d = reg.refresh();
        let new = d
            .created
            .iter()
            .find(|i| i.name.as_deref() == Some(name.as_str()))
            .unwrap_or_else(|| panic!("re-created namespace not reported: {d:?}"))
            .clone();
        assert_ne!(new.cookie, old.cookie);
        assert!(d.vanished.iter().any(|i| i.cookie == old.cookie), "{d:?}");
        assert_eq!(reg.locate(old.cookie, old.ino), None);
    }

    fn wait_for_change(w: &RunNetnsWatcher) -> bool {
        let deadline = Instant::now() + Duration::from_secs(3);
        while Instant::now() < deadline {
            let mut pfd = libc::pollfd {
                fd: w.fd().as_raw_fd(),
                events: libc::POLLIN,
                revents: 0,
            };
            // SAFETY: `pfd` is a live pollfd whose fd stays open during the call.
            unsafe { libc::poll(&mut pfd, 1, 100) };
            if w.drain() {
                return true;
            }
        }
        false
    }

    #[test]
    #[ignore = "needs root (run as root with --include-ignored; make test does)"]
    fn root_many_namespaces_keep_fd_count_flat() {
        if !is_root("root_many_namespaces_keep_fd_count_flat") {
            return;
        }
        let _l = root_lock();
        let mut reg =
            NetnsRegistry::new(DEFAULT_PROC_ROOT.into(), DEFAULT_RUN_NETNS.into()).expect("registry");
        reg.refresh();
        let before = fd_count();
        let mut seen = HashSet::new();
        for i in 0..200 {
            let mut ns = NsGuard::new();
            let d = reg.refresh();
            let info = d
                .created
                .iter()
                .find(|x| x.name.as_deref() == Some(ns.name.as_str()))
                .unwrap_or_else(|| panic!("iteration {i}: {} not created", ns.name))
                .clone();
            assert!(seen.insert(info.cookie), "cookie reused");
            assert_eq!(
                reg.locate(info.cookie, info.ino),
                Some(Target::Netns(info.clone()))
            );
            ns.delete();
            let d = reg.refresh();
            assert!(d.vanished.iter().any(|x| x.cookie == info.cookie));
            assert!(reg.locate(info.cookie, info.ino).is_none());
        }
        let after = (0..5)
            .map(|_| {
                std::thread::sleep(Duration::from_millis(10));
                fd_count()
            })
            .min()
            .unwrap_or(usize::MAX);
        assert!(after <= before + 5, "fd count grew: {before} -> {after}");
    }
}
