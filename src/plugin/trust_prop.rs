//! Property-based tests of the plugin checks (issue 13 item 3, issue 20 item 3): only
//! `<letters, digits, _>_tuner.so` names pass, any file name or mode is judged without a
//! panic with the mode rule matching its model, ACL bytes are judged as a model says, and
//! directory chains with any modes are accepted exactly by the ancestor/directory rule.

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

/// The ACL rule, written out differently: the write grants by entry kind, in order.
fn model_acl(entries: &[(u16, u16, u32)]) -> Option<AclWriter> {
    let has_mask = entries.iter().any(|e| e.0 == ACL_MASK);
    let grants: Vec<AclWriter> = entries
        .iter()
        .filter(|e| e.1 & ACL_WRITE != 0)
        .filter_map(|&(tag, _, id)| match tag {
            ACL_USER => Some(AclWriter::User(id)),
            ACL_GROUP => Some(AclWriter::Group(id)),
            ACL_MASK => Some(AclWriter::Mask),
            ACL_OTHER => Some(AclWriter::Others),
            _ => None,
        })
        .collect();
    let owning_group = !has_mask
        && entries
            .iter()
            .any(|e| e.0 == ACL_GROUP_OBJ && e.1 & ACL_WRITE != 0);
    grants
        .first()
        .copied()
        .or(owning_group.then_some(AclWriter::OwningGroup))
}

proptest! {
    #![proptest_config(ProptestConfig::with_cases(512))]

    /// Any well-formed ACL (any entries, any order, any ids and permissions) is judged
    /// as the model says: the owner's entry never counts, every other writer does.
    #[test]
    fn acl_grants_match_the_model(entries in prop::collection::vec(
        (prop::sample::select(vec![ACL_USER_OBJ, ACL_USER, ACL_GROUP_OBJ, ACL_GROUP, ACL_MASK, ACL_OTHER]),
         0u16..8, any::<u32>()),
        0..10,
    )) {
        prop_assert_eq!(acl_write_grant(&super::tests::acl(&entries)), Ok(model_acl(&entries)));
    }

    /// Any bytes: no panic, and accepted only as a version-2 header and whole entries of
    /// known tags.
    #[test]
    fn any_acl_bytes_are_judged_without_panic(bytes in prop::collection::vec(any::<u8>(), 0..64),
                                              header in any::<bool>()) {
        let mut v = bytes;
        if header && v.len() >= 4 {
            v[..4].copy_from_slice(&ACL_VERSION.to_le_bytes());
        }
        let well_formed = v.len() >= 4
            && v[..4] == ACL_VERSION.to_le_bytes()
            && (v.len() - 4) % 8 == 0
            && v[4..].chunks_exact(8).all(|e| {
                [ACL_USER_OBJ, ACL_USER, ACL_GROUP_OBJ, ACL_GROUP, ACL_MASK, ACL_OTHER]
                    .contains(&u16::from_le_bytes([e[0], e[1]]))
            });
        prop_assert_eq!(acl_write_grant(&v).is_ok(), well_formed);
    }
}

proptest! {
    #![proptest_config(ProptestConfig::with_cases(64))]

    /// `<tmp>/top/lib/ok_tuner.so` with any modes of `top` (an ancestor) and `lib` (the
    /// plugin's directory), sticky or not: accepted exactly when `lib` is not writable
    /// by group or others and `top` is not, or is sticky.
    #[test]
    fn ancestor_and_directory_modes_are_judged_by_the_rule(
        top_mode in (0u32..0o100).prop_map(|m| 0o700 | m),
        top_sticky in any::<bool>(),
        lib_mode in (0u32..0o100).prop_map(|m| 0o700 | m),
        lib_sticky in any::<bool>(),
    ) {
        // SAFETY: geteuid has no preconditions.
        let me = unsafe { libc::geteuid() };
        let n = N.fetch_add(1, Ordering::Relaxed);
        let base = std::env::temp_dir().join(format!("bpftune-trust-chain-{}-{n}", std::process::id()));
        let _ = std::fs::remove_dir_all(&base);
        let top = base.join("top");
        let lib = top.join("lib");
        std::fs::create_dir_all(&lib).expect("dirs");
        std::fs::set_permissions(&base, std::fs::Permissions::from_mode(0o755)).expect("chmod base");
        let f = lib.join("ok_tuner.so");
        std::fs::write(&f, b"x").expect("write");
        std::fs::set_permissions(&f, std::fs::Permissions::from_mode(0o644)).expect("chmod");
        let top_m = top_mode | if top_sticky { 0o1000 } else { 0 };
        let lib_m = lib_mode | if lib_sticky { 0o1000 } else { 0 };
        std::fs::set_permissions(&lib, std::fs::Permissions::from_mode(lib_m)).expect("chmod lib");
        std::fs::set_permissions(&top, std::fs::Permissions::from_mode(top_m)).expect("chmod top");
        let got = check(&f, me);
        let _ = std::fs::remove_dir_all(&base);
        let canon_top = std::fs::canonicalize(std::env::temp_dir()).expect("canonical tmp")
            .join(format!("bpftune-trust-chain-{}-{n}", std::process::id())).join("top");
        let want = if top_m & 0o022 != 0 && !top_sticky {
            Err(Refusal::AncestorMode { dir: canon_top.display().to_string(), mode: top_m })
        } else if lib_m & 0o022 != 0 {
            Err(Refusal::DirMode { dir: canon_top.join("lib").display().to_string(), mode: lib_m })
        } else {
            Ok("ok".to_string())
        };
        prop_assert_eq!(got, want);
    }
}
