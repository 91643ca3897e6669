//! Namespace scans, registry and watcher: fixture trees (no root) and real namespaces (root).

use super::registry::MISS_RESCAN_INTERVAL;
use super::scan::*;
use super::*;
use std::collections::{HashMap, HashSet};
use std::ffi::OsStr;
use std::os::fd::AsRawFd;
use std::os::unix::fs::symlink;
use std::os::unix::fs::MetadataExt;
use std::path::Path;
use std::process::Command;
use std::sync::atomic::{AtomicU32, Ordering};
use std::sync::Mutex;
use std::sync::{Arc, MutexGuard};
use std::time::{Duration, Instant};

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

// The tests that need root: real namespaces, their cookies and the /run/netns watcher.
mod root;
