//! Property-based tests of the plugin name and file checks (issue 13 item 3): only
//! `<letters, digits, _>_tuner.so` names pass, and any file name or mode is judged
//! without a panic, with the mode rule matching its model.

use proptest::prelude::*;
use std::os::unix::fs::PermissionsExt as _;
use std::sync::atomic::{AtomicUsize, Ordering};

use super::*;

static N: AtomicUsize = AtomicUsize::new(0);

fn model_name(f: &str) -> Option<&str> {
    let stem = f.strip_suffix("_tuner.so")?;
    (!stem.is_empty() && stem.chars().all(|c| c.is_ascii_alphanumeric() || c == '_')).then_some(stem)
}

proptest! {
    #![proptest_config(ProptestConfig::with_cases(512))]

    #[test]
    fn names_match_the_model(f in prop_oneof![
        any::<String>(),
        "[a-zA-Z0-9_.~-]{0,12}_tuner\\.so[.~a-z-]{0,6}",
        any::<String>().prop_map(|s| format!("{s}_tuner.so")),
    ]) {
        prop_assert_eq!(tuner_name(&f), model_name(&f));
    }

    /// A real file of any name and mode: accepted exactly when the name is valid and
    /// neither group nor others may write it (the directory is 0755 and ours).
    #[test]
    fn files_are_judged_by_name_and_mode(
        stem in prop_oneof!["[a-z0-9_]{1,10}", "[a-z0-9_.~ -]{1,10}"],
        suffix in prop::sample::select(vec!["_tuner.so", "_tuner.so~", "_tuner.so.dpkg-new", ".so"]),
        mode in 0u32..0o1000,
    ) {
        // SAFETY: geteuid has no preconditions.
        let me = unsafe { libc::geteuid() };
        let n = N.fetch_add(1, Ordering::Relaxed);
        let dir = std::env::temp_dir().join(format!("bpftune-trust-prop-{}-{n}", std::process::id()));
        let _ = std::fs::remove_dir_all(&dir);
        std::fs::create_dir_all(&dir).expect("dir");
        std::fs::set_permissions(&dir, std::fs::Permissions::from_mode(0o755)).expect("chmod dir");
        let name = format!("{stem}{suffix}");
        let f = dir.join(&name);
        std::fs::write(&f, b"x").expect("write");
        std::fs::set_permissions(&f, std::fs::Permissions::from_mode(mode)).expect("chmod");
        let got = check(&f, me);
        let _ = std::fs::remove_dir_all(&dir);
        let want = match model_name(&name) {
            None => Err(Refusal::Name),
            Some(_) if mode & 0o022 != 0 => Err(Refusal::FileMode(mode)),
            Some(s) => Ok(s.to_string()),
        };
        prop_assert_eq!(got, want);
    }
}
