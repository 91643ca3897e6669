//! Property-based tests of the state file (issue 13 item 3): what bpftune writes it
//! reads back identically after a restart, and any bytes found in `originals.json` are
//! either a valid record or moved aside, never a panic.

use proptest::prelude::*;
use std::os::unix::fs::PermissionsExt;
use std::sync::atomic::{AtomicUsize, Ordering};

use super::*;

static N: AtomicUsize = AtomicUsize::new(0);

/// A fresh private directory per case (cases run in one process, in parallel threads).
struct Dir(PathBuf);
impl Dir {
    fn new() -> Dir {
        let n = N.fetch_add(1, Ordering::Relaxed);
        let d = std::env::temp_dir().join(format!("bpftune-state-prop-{}-{n}", std::process::id()));
        let _ = fs::remove_dir_all(&d);
        fs::create_dir_all(&d).expect("temp dir");
        Dir(d)
    }
}
impl Drop for Dir {
    fn drop(&mut self) {
        let _ = fs::remove_dir_all(&self.0);
    }
}

fn value() -> impl Strategy<Value = SysctlValue> {
    prop_oneof![
        prop::collection::vec(any::<i64>(), 1..=3).prop_map(SysctlValue::Ints),
        any::<String>().prop_map(SysctlValue::Str),
    ]
}

/// (sysctl, cookie, live, new) writes, over few names and cookies so entries repeat.
fn writes() -> impl Strategy<Value = Vec<(String, u64, SysctlValue, SysctlValue)>> {
    prop::collection::vec(
        (
            prop::sample::select(vec![
                "net.ipv4.tcp_rmem",
                "net.core.rmem_max",
                "net.ipv4.tcp_congestion_control",
            ])
            .prop_map(str::to_string)
            .boxed()
            .prop_union(any::<String>().boxed()),
            0u64..4,
            value(),
            value(),
        ),
        0..12,
    )
}

proptest! {
    #![proptest_config(ProptestConfig::with_cases(64))]

    /// Round trip through the file, against a model: the first live value seen per
    /// (cookie, sysctl) is the original, the last two writes are last/previous written.
    #[test]
    fn written_state_reads_back_identically(ops in writes()) {
        let d = Dir::new();
        let (mut store, _) = StateStore::open(&d.0, "boot-a");
        let mut model: Vec<Entry> = Vec::new();
        for (name, cookie, live, new) in &ops {
            let orig = store.before_write(name, *cookie, 7, *cookie == 0, live, new).expect("persist");
            match model.iter_mut().find(|e| e.netns_cookie == *cookie && e.sysctl == *name) {
                Some(e) => {
                    prop_assert_eq!(&orig, &e.original);
                    e.previous_written = Some(std::mem::replace(&mut e.last_written, new.clone()));
                }
                None => {
                    prop_assert_eq!(&orig, live);
                    model.push(Entry {
                        sysctl: name.clone(), netns_cookie: *cookie, netns_ino: 7, global: *cookie == 0,
                        original: live.clone(), last_written: new.clone(), previous_written: None,
                    });
                }
            }
        }
        prop_assert_eq!(store.entries(), &model[..]);
        let (again, inherited) = StateStore::open(&d.0, "boot-a");
        prop_assert_eq!(again.entries(), &model[..]);
        prop_assert_eq!(inherited.map(|i| i.0), (!model.is_empty()).then_some(model.len()));
        // Another boot's record is never used.
        let (other, inherited) = StateStore::open(&d.0, "boot-b");
        prop_assert!(other.entries().is_empty() && inherited.is_none());
    }

    /// Arbitrary bytes, or a valid file cut or bit-flipped anywhere: open() never
    /// panics; what it does not accept is moved aside and the new record is empty.
    #[test]
    fn any_file_content_is_accepted_or_moved_aside(
        ops in writes(),
        junk in prop::collection::vec(any::<u8>(), 0..300),
        mode in 0u8..3,
        at in any::<prop::sample::Index>(),
        bit in 0u8..8,
    ) {
        let d = Dir::new();
        let path = d.0.join("originals.json");
        let (mut store, _) = StateStore::open(&d.0, "boot");
        for (name, cookie, live, new) in &ops {
            store.before_write(name, *cookie, 7, false, live, new).expect("persist");
        }
        let good = fs::read(&path).unwrap_or_default();
        let bytes = match (mode, good.is_empty()) {
            (0, _) | (_, true) => junk,
            (1, false) => good[..at.index(good.len())].to_vec(),
            _ => {
                let mut b = good.clone();
                let i = at.index(b.len());
                b[i] ^= 1 << bit;
                b
            }
        };
        fs::write(&path, &bytes).expect("write");
        fs::set_permissions(&path, fs::Permissions::from_mode(0o600)).expect("chmod");
        let (store, _) = StateStore::open(&d.0, "boot");
        let aside = d.0.join("originals.json.rejected");
        if aside.exists() {
            prop_assert!(store.entries().is_empty());
            prop_assert!(!path.exists());
            prop_assert_eq!(fs::read(&aside).expect("aside"), bytes);
        } else {
            // Accepted: it parsed as a record (an unmodified prefix or a harmless flip).
            prop_assert!(serde_json::from_slice::<serde_json::Value>(&bytes).is_ok());
        }
    }
}
