//! Root tests of namespace entry, the registry and the /run/netns watcher on real
//! namespaces (`#[ignore]`d; `make test` runs them as root).

use super::*;

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
    let mut reg = NetnsRegistry::new(DEFAULT_PROC_ROOT.into(), DEFAULT_RUN_NETNS.into()).expect("registry");
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
    let mut reg2 = NetnsRegistry::new(DEFAULT_PROC_ROOT.into(), DEFAULT_RUN_NETNS.into()).expect("registry");
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
    let mut reg = NetnsRegistry::new(DEFAULT_PROC_ROOT.into(), DEFAULT_RUN_NETNS.into()).expect("registry");
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
    let mut reg = NetnsRegistry::new(DEFAULT_PROC_ROOT.into(), DEFAULT_RUN_NETNS.into()).expect("registry");
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

/// RELIABILITY.md item 2: no `/run/netns` (a host that never ran `ip netns add`).
/// Namespaces held only by processes are still found, the watcher waits on the parent
/// without a complaint, and a directory created later is picked up with its names.
#[test]
#[ignore = "needs root (run as root with --include-ignored; make test does)"]
fn root_missing_run_netns_is_watched_until_it_appears() {
    if !is_root("root_missing_run_netns_is_watched_until_it_appears") {
        return;
    }
    let _l = root_lock();
    let tmp = TempDir::new("no-run-netns");
    let dir = tmp.0.join("netns");
    let watcher = RunNetnsWatcher::new(&dir).expect("watcher without its directory");
    let mut reg = NetnsRegistry::new(DEFAULT_PROC_ROOT.into(), dir.clone()).expect("registry");
    reg.refresh();
    // A namespace no file names: only a process holds it.
    let mut child = Command::new("unshare")
        .args(["-n", "sleep", "30"])
        .spawn()
        .expect("unshare -n sleep");
    struct Kill<'a>(&'a mut std::process::Child);
    impl Drop for Kill<'_> {
        fn drop(&mut self) {
            let _ = self.0.kill();
            let _ = self.0.wait();
        }
    }
    let pid = child.id();
    let _k = Kill(&mut child);
    let own = file_ino(Path::new("/proc/self/ns/net"));
    let link = PathBuf::from(format!("/proc/{pid}/ns/net"));
    let deadline = Instant::now() + Duration::from_secs(5);
    while std::fs::metadata(&link).map(|m| m.ino()).unwrap_or(own) == own {
        assert!(Instant::now() < deadline, "unshare -n did not take effect");
        std::thread::sleep(Duration::from_millis(20));
    }
    let ino = file_ino(&link);
    let d = reg.refresh();
    let held = d
        .created
        .iter()
        .find(|i| i.ino == ino)
        .unwrap_or_else(|| {
            panic!(
                "process-held namespace not found without {}: {d:?}",
                dir.display()
            )
        })
        .clone();
    assert_eq!(held.name, None);
    assert!(!watcher.drain(), "nothing changed in the missing directory");

    // The directory appears, then a name in it (what `ip netns add` does).
    std::fs::create_dir(&dir).expect("mkdir netns");
    assert!(
        wait_for_change(&watcher),
        "watcher did not report the directory appearing"
    );
    let name = dir.join("late");
    std::fs::write(&name, b"").expect("create mount point");
    let st = Command::new("mount")
        .args(["--bind"])
        .arg(&link)
        .arg(&name)
        .status()
        .expect("mount --bind");
    assert!(st.success(), "mount --bind {} {}", link.display(), name.display());
    struct Umount(PathBuf);
    impl Drop for Umount {
        fn drop(&mut self) {
            let _ = Command::new("umount").arg(&self.0).status();
        }
    }
    let _u = Umount(name.clone());
    assert!(wait_for_change(&watcher), "watcher did not report the new name");
    reg.refresh();
    let named = reg.get(held.cookie).expect("still known");
    assert_eq!(named.name.as_deref(), Some("late"), "{named:?}");
}
