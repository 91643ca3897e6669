//! The committed man pages and completions are what the generator makes from the code
//! now, and they name exactly the flags, queries and tuners the code has.

use std::collections::BTreeSet;
use std::fs;
use std::path::{Path, PathBuf};

use bpftune_docgen::pages::{COMMON_QUOTES, TUNER_PAGES};

fn repo() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("..")
}

fn docs() -> PathBuf {
    repo().join("docs")
}

/// roff source → plain words: font escapes dropped, `\-` → `-`, whitespace collapsed.
fn plain(roff: &str) -> String {
    let s = roff
        .replace("\\-", "-")
        .replace("\\fB", "")
        .replace("\\fI", "")
        .replace("\\fR", "")
        .replace("\\fP", "")
        .replace("\\e", "\\")
        .replace("\\&", "")
        // Markdown sources: code spans and bold.
        .replace('`', "")
        .replace("**", "");
    s.split_whitespace().collect::<Vec<_>>().join(" ")
}

fn read(path: &Path) -> String {
    fs::read_to_string(path).unwrap_or_else(|e| panic!("cannot read {}: {e}", path.display()))
}

/// The text between `.SH NAME` and the next `.SH`.
fn section(page: &str, name: &str) -> String {
    let start = page
        .find(&format!(".SH {name}\n"))
        .unwrap_or_else(|| panic!("no section {name}"));
    let rest = &page[start + 1..];
    let end = rest.find("\n.SH ").map(|e| e + 1).unwrap_or(rest.len());
    rest[..end].to_string()
}

/// Entries of a `.TP` list: the word after each `.TP` + `.B` pair.
fn tp_entries(section: &str) -> BTreeSet<String> {
    let lines: Vec<&str> = section.lines().collect();
    lines
        .windows(2)
        .filter(|w| w[0] == ".TP")
        .filter_map(|w| w[1].strip_prefix(".B "))
        .map(|s| s.trim().to_string())
        .collect()
}

#[test]
fn committed_files_are_what_make_man_generates() {
    let tmp = tempfile::tempdir().expect("temp dir");
    let written = bpftune_docgen::write_all(tmp.path()).expect("generate");
    let mut stale = Vec::new();
    for path in &written {
        let rel = path.strip_prefix(tmp.path()).expect("under tmp");
        let committed = docs().join(rel);
        let fresh = read(path);
        match fs::read_to_string(&committed) {
            Ok(c) if c == fresh => {}
            _ => stale.push(rel.display().to_string()),
        }
    }
    assert!(
        stale.is_empty(),
        "docs/{stale:?} differ from the generator's output: run `make man` and commit"
    );
    // No page or completion file the generator no longer makes.
    let expected: BTreeSet<PathBuf> = written
        .iter()
        .map(|p| p.strip_prefix(tmp.path()).expect("under tmp").to_path_buf())
        .collect();
    for sub in ["man", "completions"] {
        for entry in fs::read_dir(docs().join(sub)).expect("docs dir") {
            let rel = Path::new(sub).join(entry.expect("entry").file_name());
            assert!(
                expected.contains(&rel),
                "docs/{} is not generated: remove it",
                rel.display()
            );
        }
    }
}

#[test]
fn main_page_names_every_flag_query_and_tuner_and_nothing_else() {
    let page = read(&docs().join("man/bpftune.8"));
    let text = plain(&page);
    let cmd = bpftune_docgen::command();
    let mut longs = BTreeSet::new();
    for arg in cmd.get_arguments() {
        if let Some(l) = arg.get_long() {
            assert!(text.contains(&format!("--{l}")), "bpftune.8 lacks --{l}");
            longs.insert(l.to_string());
        }
        if let Some(s) = arg.get_short() {
            assert!(text.contains(&format!("-{s}")), "bpftune.8 lacks -{s}");
        }
    }
    // The reverse: every --word on any page is a real flag.
    for entry in fs::read_dir(docs().join("man")).expect("man dir") {
        let path = entry.expect("entry").path();
        let t = plain(&read(&path));
        for (i, _) in t.match_indices("--") {
            let word: String = t[i + 2..]
                .chars()
                .take_while(|c| c.is_ascii_alphanumeric() || *c == '-' || *c == '_')
                .collect();
            if word.is_empty() {
                continue;
            }
            assert!(
                longs.contains(&word),
                "{} mentions --{word}, which is no flag",
                path.display()
            );
        }
    }

    let queries: BTreeSet<String> = bpftune::report::query::QUERIES
        .iter()
        .map(|(q, _)| q.to_string())
        .collect();
    assert_eq!(
        tp_entries(&section(&page, "QUERIES")),
        queries,
        "QUERIES section vs code"
    );

    let mut tuners: BTreeSet<String> = bpftune::tuners::names().into_iter().map(String::from).collect();
    // Listed as not built, with the reason (its README and tests/route_table.rs).
    tuners.insert("route_table".into());
    assert_eq!(
        tp_entries(&section(&page, "TUNERS")),
        tuners,
        "TUNERS section vs code"
    );
}

#[test]
fn every_tuner_has_a_page_and_every_page_a_tuner() {
    let names = bpftune::tuners::names();
    for name in &names {
        let p = bpftune_docgen::page_for(name).unwrap_or_else(|| panic!("tuner {name} has no page"));
        let page = read(&docs().join(format!("man/{}.8", p.page)));
        let text = plain(&page);
        for s in [
            "NAME",
            "DESCRIPTION",
            "WHAT IT WATCHES",
            "WHAT IT CHANGES AND WHY",
            "LIMITS",
            "OVERHEAD",
        ] {
            assert!(page.contains(&format!(".SH {s}\n")), "{} lacks {s}", p.page);
        }
        assert!(
            text.contains(&format!("bpftune -a {name}")),
            "{} lacks its -a line",
            p.page
        );
        assert!(
            plain(&section(&page, "OVERHEAD")).contains("MiB"),
            "{}: OVERHEAD has no measured figures",
            p.page
        );
    }
    for p in TUNER_PAGES {
        if let Some(t) = p.tuner {
            assert!(
                names.contains(&t),
                "page {} is for {t}, which is no tuner",
                p.page
            );
        }
    }
}

#[test]
fn quoted_figures_are_in_their_sources() {
    let quotes = TUNER_PAGES
        .iter()
        .flat_map(|p| p.quotes.iter().map(move |q| (p.page, q)))
        .chain(COMMON_QUOTES.iter().map(|q| ("bpftune", q)));
    for (page, q) in quotes {
        let source = plain(&read(&repo().join(q.source)));
        let text = plain(&read(&docs().join(format!("man/{page}.8"))));
        let quote = plain(q.text);
        assert!(
            source.contains(&quote),
            "{} no longer says {quote:?} (quoted in {page}(8))",
            q.source
        );
        assert!(
            text.contains(&quote),
            "{page}(8) does not show its quote {quote:?}"
        );
    }
}

#[test]
fn completions_offer_flags_queries_and_tuners() {
    for file in ["bpftune.bash", "_bpftune", "bpftune.fish"] {
        let text = read(&docs().join("completions").join(file));
        for arg in bpftune_docgen::command().get_arguments() {
            if let Some(l) = arg.get_long() {
                assert!(text.contains(l), "{file} lacks --{l}");
            }
        }
        for (q, _) in bpftune::report::query::QUERIES {
            assert!(text.contains(q), "{file} lacks query {q}");
        }
        for t in bpftune::tuners::names() {
            assert!(text.contains(t), "{file} lacks tuner {t}");
        }
    }
}

/// Every page's `.TH` line: title in capitals, section 8, the date of this version's
/// changelog entry, "bpftune VERSION", the manual name (an empty date once put the
/// version in the date slot).
#[test]
fn title_lines_carry_title_date_source_and_manual() {
    let date = bpftune_docgen::release_date().expect("release date");
    assert_eq!(date.len(), 10, "{date}");
    let version = bpftune_docgen::bpftune_version();
    for entry in fs::read_dir(docs().join("man")).expect("man dir") {
        let path = entry.expect("entry").path();
        let page = read(&path);
        let th = page
            .lines()
            .find(|l| l.starts_with(".TH "))
            .unwrap_or_else(|| panic!("{} has no .TH line", path.display()));
        let stem = path.file_stem().expect("stem").to_string_lossy().to_uppercase();
        assert_eq!(
            th,
            format!(".TH {stem} 8 \"{date}\" \"bpftune {version}\" \"System Administration\""),
            "{}",
            path.display()
        );
    }
}

#[test]
fn changelog_date_reads_the_entry_of_the_version() {
    let log = "bpftune (0.6.0-1) unstable; urgency=medium\n\n  * b\n\n -- A <a@b>  Tue, 01 Dec 2026 10:00:00 +0000\n\nbpftune (0.5.0-1) unstable; urgency=medium\n\n  * a\n\n -- A <a@b>  Fri, 27 Nov 2026 16:00:00 +0000\n";
    assert_eq!(
        bpftune_docgen::changelog_date(log, "0.5.0").expect("0.5.0 entry"),
        "2026-11-27"
    );
    assert_eq!(
        bpftune_docgen::changelog_date(log, "0.6.0").expect("0.6.0 entry"),
        "2026-12-01"
    );
    assert!(bpftune_docgen::changelog_date(log, "0.7.0").is_err());
}
