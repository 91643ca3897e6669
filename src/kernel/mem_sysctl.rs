//! In-memory [`SysctlStore`] for unit tests of the engine and tuners (test builds only).

use std::collections::{HashMap, HashSet};
use std::io;
use std::sync::{Mutex, MutexGuard, PoisonError};

use crate::kernel::netns::NetnsError;
use crate::kernel::netns::Target;
use crate::kernel::sysctl::{SysctlError, SysctlStore};
use crate::model::tunable::SysctlValue;

/// One recorded write of [`MemSysctl`]: (namespace cookie or `None` for global, name, value).
pub type MemWrite = (Option<u64>, String, SysctlValue);

#[derive(Debug, Default)]
struct MemState {
    values: HashMap<(Option<u64>, String), SysctlValue>,
    writes: Vec<MemWrite>,
    missing: HashSet<String>,
    write_errors: HashMap<String, i32>,
    gone: HashSet<u64>,
}

/// In-memory store for unit tests of policy/daemon logic.
///
/// Values are keyed by (cookie, name) with `None` for the global namespace; a namespace
/// without its own value reads the global one (the kernel copies init_net's values into a
/// new namespace). Every successful write is recorded. Names can be made missing, writes
/// made to fail with an errno, and namespaces made gone.
#[derive(Debug, Default)]
pub struct MemSysctl {
    state: Mutex<MemState>,
}

fn target_cookie(target: &Target) -> Option<u64> {
    match target {
        Target::Global => None,
        Target::Netns(info) => Some(info.cookie),
    }
}

impl MemSysctl {
    /// An empty store.
    pub fn new() -> Self {
        Self::default()
    }

    fn lock(&self) -> MutexGuard<'_, MemState> {
        self.state.lock().unwrap_or_else(PoisonError::into_inner)
    }

    /// Sets a value without recording a write (`cookie` `None` = global namespace).
    pub fn set(&self, cookie: Option<u64>, name: &str, value: SysctlValue) {
        let mut st = self.lock();
        st.missing.remove(name);
        st.values.insert((cookie, name.to_string()), value);
    }

    /// The value stored for exactly (cookie, name), without global fallback.
    pub fn get(&self, cookie: Option<u64>, name: &str) -> Option<SysctlValue> {
        self.lock().values.get(&(cookie, name.to_string())).cloned()
    }

    /// All successful writes so far, in order.
    pub fn writes(&self) -> Vec<MemWrite> {
        self.lock().writes.clone()
    }

    /// Forgets the recorded writes.
    pub fn clear_writes(&self) {
        self.lock().writes.clear();
    }

    /// Makes `name` missing in every namespace (reads and writes give `NotFound`).
    pub fn set_missing(&self, name: &str) {
        self.lock().missing.insert(name.to_string());
    }

    /// Makes writes of `name` fail with `errno` (mapped like the real store: EINVAL →
    /// `Rejected`, EACCES/EPERM → `PermissionDenied`, ENOENT → `NotFound`).
    pub fn fail_writes(&self, name: &str, errno: i32) {
        self.lock().write_errors.insert(name.to_string(), errno);
    }

    /// Lets writes of `name` succeed again.
    pub fn clear_write_failure(&self, name: &str) {
        self.lock().write_errors.remove(name);
    }

    /// Makes every operation in namespace `cookie` fail with `NetnsError::Gone`.
    pub fn set_gone(&self, cookie: u64) {
        self.lock().gone.insert(cookie);
    }
}

impl SysctlStore for MemSysctl {
    fn read(
        &self,
        target: &Target,
        name: &str,
        is_string: bool,
        num_values: u8,
    ) -> Result<SysctlValue, SysctlError> {
        let st = self.lock();
        let cookie = target_cookie(target);
        if cookie.is_some_and(|c| st.gone.contains(&c)) {
            return Err(NetnsError::Gone.into());
        }
        if st.missing.contains(name) {
            return Err(SysctlError::NotFound(name.to_string()));
        }
        let value = st
            .values
            .get(&(cookie, name.to_string()))
            .or_else(|| st.values.get(&(None, name.to_string())))
            .ok_or_else(|| SysctlError::NotFound(name.to_string()))?;
        // Same shape checks as reading the real file.
        SysctlValue::parse(&value.to_proc_text(), is_string, num_values).map_err(|source| {
            SysctlError::Parse {
                name: name.to_string(),
                source,
            }
        })
    }

    fn write(&self, target: &Target, name: &str, value: &SysctlValue) -> Result<(), SysctlError> {
        let mut st = self.lock();
        let cookie = target_cookie(target);
        if cookie.is_some_and(|c| st.gone.contains(&c)) {
            return Err(NetnsError::Gone.into());
        }
        if st.missing.contains(name) {
            return Err(SysctlError::NotFound(name.to_string()));
        }
        if let Some(&errno) = st.write_errors.get(name) {
            return Err(SysctlError::from_io(
                name,
                Some(&value.to_string()),
                io::Error::from_raw_os_error(errno),
            ));
        }
        st.values.insert((cookie, name.to_string()), value.clone());
        st.writes.push((cookie, name.to_string(), value.clone()));
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::kernel::netns::NetnsInfo;

    #[test]
    fn mem_store() {
        let m = MemSysctl::new();
        let ns = Target::Netns(NetnsInfo {
            cookie: 5,
            ino: 4026532005,
            path: "/run/netns/x".into(),
            name: Some("x".into()),
        });
        let rmem = SysctlValue::Ints(vec![4096, 131072, 6291456]);
        m.set(None, "net.ipv4.tcp_rmem", rmem.clone());
        // A namespace inherits the global value until written.
        assert_eq!(m.read(&ns, "net.ipv4.tcp_rmem", false, 3).expect("read"), rmem);
        let big = SysctlValue::Ints(vec![4096, 131072, 8388608]);
        m.write(&ns, "net.ipv4.tcp_rmem", &big).expect("write");
        assert_eq!(m.read(&ns, "net.ipv4.tcp_rmem", false, 3).expect("read"), big);
        assert_eq!(
            m.read(&Target::Global, "net.ipv4.tcp_rmem", false, 3)
                .expect("read"),
            rmem
        );
        assert_eq!(
            m.writes(),
            vec![(Some(5), "net.ipv4.tcp_rmem".to_string(), big.clone())]
        );
        assert!(matches!(
            m.read(&Target::Global, "net.ipv4.tcp_rmem", false, 1),
            Err(SysctlError::Parse { .. })
        ));
        assert!(matches!(
            m.read(&Target::Global, "net.core.somaxconn", false, 1),
            Err(SysctlError::NotFound(_))
        ));
        m.set_missing("net.ipv4.tcp_rmem");
        assert!(matches!(
            m.write(&Target::Global, "net.ipv4.tcp_rmem", &rmem),
            Err(SysctlError::NotFound(_))
        ));
        m.set(None, "net.ipv4.tcp_rmem", rmem.clone());
        m.fail_writes("net.ipv4.tcp_rmem", libc::EINVAL);
        assert!(matches!(
            m.write(&Target::Global, "net.ipv4.tcp_rmem", &big),
            Err(SysctlError::Rejected { .. })
        ));
        m.clear_write_failure("net.ipv4.tcp_rmem");
        m.set_gone(5);
        assert!(m
            .write(&ns, "net.ipv4.tcp_rmem", &big)
            .expect_err("gone")
            .is_gone());
        assert_eq!(m.writes().len(), 1);
        m.clear_writes();
        m.write(&Target::Global, "net.ipv4.tcp_rmem", &big)
            .expect("write");
        assert_eq!(m.get(None, "net.ipv4.tcp_rmem"), Some(big));
        assert_eq!(m.writes().len(), 1);
    }
}
