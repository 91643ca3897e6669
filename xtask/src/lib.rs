//! Generates bpftune's man pages and shell completions from the clap definition
//! ([`bpftune::cli::Cli`]), the query table ([`bpftune::report::query::QUERIES`]) and the
//! built-in tuners ([`bpftune::tuners`], each with its prose in `src/tuners/<name>/page.roff`),
//! so flags, queries and tuners cannot drift from
//! the documentation. `make man` runs it; the output is committed under `docs/`.

pub mod pages;

use std::fs;
use std::path::{Path, PathBuf};

use anyhow::Context as _;
use clap::builder::PossibleValue;
use clap::CommandFactory;
use clap_complete::Shell;

use pages::{TunerPage, COMMON_OVERHEAD, MAIN_AFTER, MAIN_EXIT, MAIN_INTRO_TUNERS, TUNER_PAGES};

/// Manual section and title line fields shared by every page.
const SECTION: &str = "8";
const MANUAL: &str = "System Administration";

fn source() -> String {
    format!("bpftune {}", bpftune_version())
}

/// The Debian changelog: its entry for this version dates the man pages.
const CHANGELOG: &str = include_str!("../../packaging/debian/changelog");

/// The pages' date (`.TH` third field, YYYY-MM-DD): the date of this version's entry
/// in packaging/debian/changelog, the release's own record. Not the clock and not
/// SOURCE_DATE_EPOCH: the pages are committed and a test compares them with the
/// generator's output, so the date must come from the tree alone (the Debian package
/// takes the committed pages; dpkg would derive SOURCE_DATE_EPOCH from the same entry).
pub fn release_date() -> anyhow::Result<String> {
    changelog_date(CHANGELOG, bpftune_version())
}

/// The date of `version`'s entry (`bpftune (VERSION-N) ...`, then ` -- NAME  Day, DD Mon
/// YYYY HH:MM:SS +ZZZZ`) as YYYY-MM-DD.
pub fn changelog_date(changelog: &str, version: &str) -> anyhow::Result<String> {
    let head = format!("bpftune ({version}-");
    let mut lines = changelog.lines().skip_while(|l| !l.starts_with(&head));
    anyhow::ensure!(
        lines.next().is_some(),
        "packaging/debian/changelog has no entry for {version}: add one (it dates the man pages)"
    );
    let trailer = lines
        .find(|l| l.starts_with(" -- "))
        .with_context(|| format!("changelog entry for {version} has no ' -- ' line"))?;
    let date = trailer
        .split_once("  ")
        .map(|(_, d)| d.trim())
        .with_context(|| format!("no date in {trailer:?}"))?;
    // "Fri, 27 Nov 2026 16:00:00 +0000"
    let words: Vec<&str> = date.split_whitespace().collect();
    let [_, day, month, year, ..] = words.as_slice() else {
        anyhow::bail!("cannot read the date {date:?}");
    };
    const MONTHS: [&str; 12] = [
        "Jan", "Feb", "Mar", "Apr", "May", "Jun", "Jul", "Aug", "Sep", "Oct", "Nov", "Dec",
    ];
    let m = MONTHS
        .iter()
        .position(|x| x == month)
        .with_context(|| format!("unknown month in {date:?}"))?;
    let d: u32 = day.parse().with_context(|| format!("day in {date:?}"))?;
    let y: u32 = year.parse().with_context(|| format!("year in {date:?}"))?;
    Ok(format!("{y:04}-{:02}-{d:02}", m + 1))
}

/// The bpftune crate's version (same workspace version as this crate's).
pub fn bpftune_version() -> &'static str {
    env!("CARGO_PKG_VERSION")
}

/// One generated file, relative to the output directory.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Generated {
    pub path: PathBuf,
    pub text: String,
}

/// The CLI as documented: bpftune's own command plus the names `-q` and `-a` take, as
/// possible values. Only the docs and completions get these lists; the binary keeps
/// accepting what C bpftune accepts (query prefixes, `tcp_buffer_tuner.so` file names).
pub fn command() -> clap::Command {
    let queries: Vec<PossibleValue> = bpftune::report::query::QUERIES
        .iter()
        .map(|(name, help)| PossibleValue::new(*name).help(*help))
        .collect();
    let tuners: Vec<PossibleValue> = bpftune::tuners::names()
        .into_iter()
        .map(|name| {
            let help = page_for(name).map(|p| p.summary).unwrap_or("");
            PossibleValue::new(name).help(help)
        })
        .collect();
    bpftune::cli::Cli::command()
        .mut_arg("query", |a| a.value_parser(queries))
        .mut_arg("allow", |a| a.value_parser(tuners))
        .mut_arg("cgroup", |a| a.value_hint(clap::ValueHint::DirPath))
        .mut_arg("libdir", |a| a.value_hint(clap::ValueHint::DirPath))
}

/// The per-tuner page of a tuner (by its name in the code).
pub fn page_for(tuner: &str) -> Option<&'static TunerPage> {
    TUNER_PAGES.iter().find(|p| p.tuner == Some(tuner))
}

/// Escapes text for roff: backslashes, and a leading `.`/`'` that would read as a request.
fn roff_text(s: &str) -> String {
    let s = s.replace('\\', "\\e").replace('-', "\\-");
    if s.starts_with('.') || s.starts_with('\'') {
        format!("\\&{s}")
    } else {
        s
    }
}

fn title(name: &str, date: &str) -> String {
    format!(
        ".TH {} {SECTION} \"{date}\" \"{}\" \"{MANUAL}\"\n",
        name.to_uppercase(),
        source()
    )
}

fn see_also(exclude: &str) -> String {
    // The tuner pages alphabetically (man-pages(7)): their order in TUNER_PAGES is the
    // registry's load order, which a reader has no use for.
    let mut pages: Vec<&str> = TUNER_PAGES.iter().map(|p| p.page).collect();
    pages.sort_unstable();
    let mut refs: Vec<String> = std::iter::once("bpftune")
        .chain(pages)
        .filter(|p| *p != exclude)
        .map(|p| format!(".BR {p} (8)"))
        .collect();
    refs.extend([".BR sysctl (8)".to_string(), ".BR ip\\-netns (8)".to_string()]);
    let n = refs.len();
    let lines: Vec<String> = refs
        .into_iter()
        .enumerate()
        .map(|(i, r)| if i + 1 < n { format!("{r} ,") } else { r })
        .collect();
    format!(".SH SEE ALSO\n{}\n", lines.join("\n"))
}

/// SYNOPSIS with every flag and its value name (clap_mangen omits value names of
/// options).
fn synopsis(cmd: &clap::Command) -> String {
    let mut parts = Vec::new();
    // mut_arg moves an argument to the end of the list; the display order is the
    // declaration order in cli.rs.
    let mut args: Vec<&clap::Arg> = cmd.get_arguments().filter(|a| !a.is_hide_set()).collect();
    args.sort_by_key(|a| a.get_display_order());
    for arg in args {
        let mut names = Vec::new();
        if let Some(s) = arg.get_short() {
            names.push(format!("\\fB\\-{s}\\fR"));
        }
        if let Some(l) = arg.get_long() {
            names.push(format!("\\fB\\-\\-{}\\fR", l.replace('-', "\\-")));
        }
        let value = match arg.get_value_names() {
            Some(v) if arg.get_action().takes_values() => {
                format!(" \\fI{}\\fR", v.join(" "))
            }
            _ => String::new(),
        };
        let repeat = if matches!(arg.get_action(), clap::ArgAction::Append) {
            "..."
        } else {
            ""
        };
        parts.push(format!("[{}{value}]{repeat}", names.join("|")));
    }
    format!(".SH SYNOPSIS\n.B bpftune\n{}\n", parts.join("\n"))
}

/// bpftune(8): our title line, clap_mangen's NAME, SYNOPSIS, DESCRIPTION and OPTIONS, then the
/// query and tuner lists from the code, then the hand-written sections.
fn main_page(date: &str) -> anyhow::Result<String> {
    let cmd = command();
    let man = clap_mangen::Man::new(cmd)
        .section(SECTION)
        .source(source())
        .manual(MANUAL);
    // The title line is the tuner pages' (name in capitals, quoted date): clap_mangen's
    // left the date empty and roff then read the source as the date.
    let mut out: Vec<u8> = title("bpftune", date).into_bytes();
    man.render_name_section(&mut out)?;
    out.extend_from_slice(synopsis(&command()).as_bytes());
    man.render_description_section(&mut out)?;
    man.render_options_section(&mut out)?;
    let mut page = String::from_utf8(out).context("clap_mangen wrote non-UTF-8")?;

    page.push_str(".SH QUERIES\n");
    page.push_str(
        "\\fBbpftune \\-q\\fR \\fIQUERY\\fR sends a query to the running daemon and prints the reply. \
A query may be abbreviated to a prefix (matched in this order, as C bpftune does).\n",
    );
    for (name, help) in bpftune::report::query::QUERIES {
        page.push_str(&format!(".TP\n.B {name}\n{}\n", roff_text(help)));
    }
    page.push_str(".SH TUNERS\n");
    page.push_str(MAIN_INTRO_TUNERS);
    for name in bpftune::tuners::names() {
        let p = page_for(name)
            .with_context(|| format!("tuner {name} has no page: add src/tuners/{name}/page.roff"))?;
        page.push_str(&format!(
            ".TP\n.B {name}\n{}; see\n.BR {} (8).\n",
            roff_text(p.summary),
            p.page
        ));
    }
    page.push_str(
        ".TP\n.B route_table\nNot built: \\fBnet.ipv6.route.max_size\\fR has no effect since Linux 6.3.\n",
    );
    for p in TUNER_PAGES.iter().filter(|p| p.tuner.is_none()) {
        page.push_str(&format!(
            ".PP\nNamespaces: {}, see\n.BR {} (8).\n",
            roff_text(p.summary),
            p.page
        ));
    }
    page.push_str(MAIN_AFTER);
    page.push_str(COMMON_OVERHEAD);
    page.push_str(MAIN_EXIT);
    page.push_str(&see_also("bpftune"));
    Ok(page)
}

fn tuner_page(p: &TunerPage, date: &str) -> String {
    let mut page = title(p.page, date);
    page.push_str(&format!(".SH NAME\n{} \\- {}\n", p.page, roff_text(p.summary)));
    page.push_str(".SH SYNOPSIS\n");
    match p.tuner {
        Some(t) => page.push_str(&format!(
            ".B bpftune\n[\\fIOPTIONS\\fR]\n.br\n.B bpftune \\-a {t}\n(this tuner only)\n"
        )),
        None => page.push_str(".B bpftune\n[\\fIOPTIONS\\fR]\n"),
    }
    page.push_str(".SH DESCRIPTION\n");
    page.push_str(p.description);
    page.push_str(".SH WHAT IT WATCHES\n");
    page.push_str(p.watches);
    page.push_str(".SH WHAT IT CHANGES AND WHY\n");
    page.push_str(p.changes);
    if let Some(t) = p
        .tuner
        .and_then(|t| bpftune::tuners::all().into_iter().find(|x| x.name() == t))
    {
        let names: Vec<String> = t
            .tunables()
            .iter()
            .map(|d| format!("\\fB{}\\fR", d.name))
            .collect();
        page.push_str(&format!(
            ".PP\nTunables (\\fBbpftune \\-q tunables\\fR): {}.\n",
            names.join(", ")
        ));
    }
    page.push_str(".PP\nEvery change is recorded first in \\fI/var/lib/bpftune/originals.json\\fR and\nrestored by \\fB\\-R\\fR or \\fB\\-\\-rollback\\-now\\fR unless someone else changed it since.\n");
    page.push_str(".SH LIMITS\n");
    page.push_str(p.limits);
    page.push_str(".SH OVERHEAD\n");
    page.push_str(p.overhead);
    page.push_str(COMMON_OVERHEAD);
    page.push_str(&see_also(p.page));
    page
}

fn completions() -> anyhow::Result<Vec<Generated>> {
    let mut out = Vec::new();
    for (shell, file) in [
        (Shell::Bash, "bpftune.bash"),
        (Shell::Zsh, "_bpftune"),
        (Shell::Fish, "bpftune.fish"),
    ] {
        let mut cmd = command();
        let mut buf: Vec<u8> = Vec::new();
        clap_complete::generate(shell, &mut cmd, "bpftune", &mut buf);
        out.push(Generated {
            path: Path::new("completions").join(file),
            text: String::from_utf8(buf).context("completion is not UTF-8")?,
        });
    }
    Ok(out)
}

/// Every generated file, paths relative to the docs directory.
pub fn generate() -> anyhow::Result<Vec<Generated>> {
    let date = release_date()?;
    let mut out = vec![Generated {
        path: Path::new("man").join("bpftune.8"),
        text: main_page(&date)?,
    }];
    for p in TUNER_PAGES {
        out.push(Generated {
            path: Path::new("man").join(format!("{}.8", p.page)),
            text: tuner_page(p, &date),
        });
    }
    out.extend(completions()?);
    Ok(out)
}

/// Writes every generated file under `dir` (creating `man/` and `completions/`).
pub fn write_all(dir: &Path) -> anyhow::Result<Vec<PathBuf>> {
    let mut written = Vec::new();
    for g in generate()? {
        let path = dir.join(&g.path);
        if let Some(parent) = path.parent() {
            fs::create_dir_all(parent).with_context(|| format!("cannot create {}", parent.display()))?;
        }
        fs::write(&path, &g.text).with_context(|| format!("cannot write {}", path.display()))?;
        written.push(path);
    }
    Ok(written)
}
