//! The registry of known namespaces: cookie → location, cheap rescans, event-driven
//! lookups with a negative cache.

use std::collections::{HashMap, HashSet};
use std::path::{Path, PathBuf};
use std::time::{Duration, Instant};

use super::enter::{current_cookie, current_ino, run_in_netns};
use super::scan::{scan_locations, still_points_to, LocKey, Location};
use super::{NetnsError, NetnsInfo, Target};

/// A miss (unknown cookie, stale location) triggers at most one targeted rescan per period.
pub(crate) const MISS_RESCAN_INTERVAL: Duration = Duration::from_millis(200);
/// A cookie that missed is not looked up again for this long.
const MISS_HOLD: Duration = Duration::from_secs(2);
/// Bound on the negative cache.
const MAX_MISS_CACHE: usize = 1024;
/// Locations tried (entered) per inode before giving up on it for this scan.
const MAX_ENTER_TRIES: usize = 3;
/// Locations remembered per namespace as identity witnesses between scans.
const MAX_WITNESSES: usize = 32;

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

/// The default [`CookieReader`]: enter the namespace and ask a socket (or, where
/// namespaces are identified by inode, read the inode from inside). Entering is what
/// proves the location holds a namespace: `ip netns add` creates the /run/netns file
/// before it bind-mounts the namespace on it, and the inode of that placeholder must not
/// be taken for one.
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
    pub(crate) scans: u64,
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
    /// Number of namespaces currently known (diagnostics: the sizes log line).
    pub fn known_len(&self) -> usize {
        self.known.len()
    }

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
