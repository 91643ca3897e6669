//! Property-based test of the event dispatch path (issue 13 item 3): a ring-buffer
//! record with any tuner id, scenario, tunable index, namespace, flags and values goes
//! through `dispatch` and every built-in tuner's `handle` (over the real engine and an
//! in-memory sysctl store) without a panic, and nothing outside the tuners' own
//! tunables is ever written.

use std::path::PathBuf;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::{Arc, Mutex};

use proptest::prelude::*;

use super::dispatch;
use crate::engine::{Engine, Namespaces};
use crate::kernel::mem_sysctl::MemSysctl;
use crate::kernel::netns::{NetnsInfo, Target};
use crate::kernel::sysctl::{SysctlError, SysctlStore};
use crate::model::event::{Event, MAX_VALUES};
use crate::model::tunable::{Rate, SysctlValue};
use crate::record::ledger::{Ledger, TunerMeta};
use crate::record::originals::StateStore;
use crate::tuner::{MemoryFacts, Ns, Tuner, TunerState};

const NS_COOKIE: u64 = 42;
static N: AtomicUsize = AtomicUsize::new(0);

/// The global namespace (cookie 1) and one other (42); any other cookie has vanished.
struct FakeNs;
impl Namespaces for FakeNs {
    fn global_cookie(&self) -> u64 {
        1
    }
    fn locate(&mut self, cookie: u64, ino: u64) -> Option<Target> {
        (cookie == NS_COOKIE).then(|| {
            Target::Netns(NetnsInfo {
                cookie,
                ino,
                path: PathBuf::from("/nonexistent"),
                name: Some("fuzz".into()),
            })
        })
    }
}

struct Shared(Arc<MemSysctl>);
impl SysctlStore for Shared {
    fn read(&self, t: &Target, n: &str, s: bool, k: u8) -> Result<SysctlValue, SysctlError> {
        self.0.read(t, n, s, k)
    }
    fn write(&self, t: &Target, n: &str, v: &SysctlValue) -> Result<(), SysctlError> {
        self.0.write(t, n, v)
    }
}

fn ns() -> impl Strategy<Value = Ns> {
    prop_oneof![
        Just(Ns::Global),
        Just(Ns::Netns {
            cookie: NS_COOKIE,
            ino: 7
        }),
        (any::<u64>(), any::<u64>()).prop_map(|(cookie, ino)| Ns::Netns { cookie, ino }),
    ]
}

fn small_or_any_u32(small: u32) -> impl Strategy<Value = u32> {
    prop_oneof![0..small, any::<u32>()]
}

fn value_i64() -> impl Strategy<Value = i64> {
    prop_oneof![
        0i64..1 << 24,
        any::<i64>(),
        Just(i64::MAX),
        Just(i64::MIN),
        Just(-1)
    ]
}

fn event() -> impl Strategy<Value = Event> {
    (
        (
            small_or_any_u32(10),
            small_or_any_u32(12),
            small_or_any_u32(12),
            any::<u32>(),
        ),
        ns(),
        any::<i32>(),
        any::<u64>(),
        // Often the live values (so a tuner's premise holds and it may act), else anything.
        prop_oneof![
            Just([4096i64, 131072, 6291456]),
            prop::array::uniform3(value_i64())
        ],
        prop_oneof![
            Just([4096i64, 131072, 7864320]),
            prop::array::uniform3(value_i64())
        ],
        any::<[u64; 4]>(),
        prop_oneof![
            Just(String::new()),
            "[ -~]{0,63}",
            Just("net/ipv4/tcp_rmem".to_string())
        ],
    )
        .prop_map(
            |((tuner_id, scenario_id, tunable_id, flags), ns, pid, ts_ns, old, new, aux, text)| Event {
                tuner_id,
                scenario_id,
                ns,
                pid,
                ts_ns,
                tunable_id,
                flags,
                old,
                new,
                aux,
                text,
            },
        )
}

proptest! {
    #![proptest_config(ProptestConfig::with_cases(96))]

    #[test]
    fn any_event_dispatches_without_panic(events in prop::collection::vec(event(), 1..24)) {
        let tuners: Vec<Box<dyn Tuner>> = crate::tuners::all();
        let mem = Arc::new(MemSysctl::new());
        let mut names = Vec::new();
        for t in &tuners {
            for d in t.tunables() {
                names.push(d.name);
                let v = if d.string {
                    SysctlValue::Str("cubic".into())
                } else {
                    let base = [4096i64, 131072, 6291456];
                    SysctlValue::Ints(base[..usize::from(d.num_values).min(MAX_VALUES)].to_vec())
                };
                mem.set(None, d.name, v.clone());
                mem.set(Some(NS_COOKIE), d.name, v);
            }
        }
        let dir = std::env::temp_dir()
            .join(format!("bpftune-dispatch-prop-{}-{}", std::process::id(), N.fetch_add(1, Ordering::Relaxed)));
        let _ = std::fs::remove_dir_all(&dir);
        let (store, _) = StateStore::open(&dir, "boot");
        let mut engine = Engine::new(
            Rate::DEFAULT,
            Box::new(Shared(mem.clone())),
            Box::new(FakeNs),
            Arc::new(Mutex::new(Ledger::default())),
            store,
            MemoryFacts { free_buffer_pages: 1_000_000, page_size: 4096 },
        );
        for t in &tuners {
            engine.add_tuner(TunerMeta {
                name: t.name(),
                state: TunerState::Active,
                tunables: t.tunables(),
                scenarios: t.scenarios(),
            });
        }
        let mut slots: Vec<Option<Box<dyn Tuner>>> = tuners.into_iter().map(Some).collect();
        for ev in &events {
            dispatch(ev, &mut slots, &mut engine);
        }
        let _ = std::fs::remove_dir_all(&dir);
        // Every event reached its tuner (counted before delivery), out-of-range ids none.
        for id in 0..slots.len() {
            let want = events.iter().filter(|e| e.tuner_id as usize == id).count() as u64;
            prop_assert_eq!(engine.stats().received(id), want, "tuner {}", id);
        }
        for w in mem.writes() {
            prop_assert!(names.contains(&w.1.as_str()), "wrote {:?}, not a tuner's tunable", w);
        }
    }
}
