//! `bpftune-docgen [DIR]`: writes bpftune's man pages (`DIR/man/*.8`) and shell
//! completions (`DIR/completions/`), DIR defaulting to `docs`. Run by `make man`.
//! Not installed: the Debian package takes only the files it writes.

use std::path::PathBuf;

fn main() -> anyhow::Result<()> {
    let dir = std::env::args_os()
        .nth(1)
        .map(PathBuf::from)
        .unwrap_or_else(|| PathBuf::from("docs"));
    for path in bpftune_docgen::write_all(&dir)? {
        println!("{}", path.display());
    }
    Ok(())
}
