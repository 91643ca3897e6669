//! Reads the tuner registry, the `tuners! { a, b, … }` invocation in src/tuners/mod.rs,
//! as text: build.rs derives each tuner's BPF object from it and xtask/build.rs each
//! tuner's man page, so that registering a tuner is one word in one place. Shared by
//! both build scripts (`#[path]` module) and checked against the macro by a unit test.

/// The names in the `tuners! { … }` invocation, in order.
pub fn parse(mod_rs: &str) -> Result<Vec<String>, String> {
    // The invocation starts a line; `macro_rules! tuners {` (the definition) does not
    // match because it does not start with `tuners!`.
    let start = mod_rs
        .lines()
        .scan(0usize, |pos, l| {
            let at = *pos;
            *pos += l.len() + 1;
            Some((at, l))
        })
        .find(|(_, l)| l.starts_with("tuners!"))
        .map(|(at, _)| at)
        .ok_or("no `tuners! { … }` invocation at the start of a line")?;
    let body = &mod_rs[start..];
    let open = body.find('{').ok_or("tuners! without `{`")?;
    let close = body.find('}').ok_or("tuners! without `}`")?;
    let mut names = Vec::new();
    for line in body[open + 1..close].lines() {
        let line = line.split("//").next().unwrap_or("");
        for word in line.split(',').map(str::trim).filter(|w| !w.is_empty()) {
            if !word
                .chars()
                .all(|c| c.is_ascii_lowercase() || c.is_ascii_digit() || c == '_')
            {
                return Err(format!("tuners!: {word:?} is not a folder name"));
            }
            names.push(word.to_string());
        }
    }
    if names.is_empty() {
        return Err("tuners! lists no tuner".into());
    }
    Ok(names)
}
