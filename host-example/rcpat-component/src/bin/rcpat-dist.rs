//! `rcpat-dist DIR`: writes the component (`rcpat.wasm`) and its WIT
//! (`wit/world.wit`, `wit/deps/...`) into DIR, for people who only want the
//! files (`./dev dist` adds their SHA-256 sums).

use std::path::PathBuf;

fn main() -> std::io::Result<()> {
    let dir = PathBuf::from(std::env::args().nth(1).unwrap_or_else(|| "dist".into()));
    std::fs::create_dir_all(&dir)?;
    std::fs::write(dir.join("rcpat.wasm"), rcpat_component::WASM)?;
    for (path, text) in std::iter::once(("world.wit", rcpat_component::WIT))
        .chain(rcpat_component::WIT_DEPS.iter().copied())
    {
        let file = dir.join("wit").join(path);
        std::fs::create_dir_all(file.parent().expect("a file under wit/"))?;
        std::fs::write(file, text)?;
    }
    println!(
        "{}: rcpat.wasm ({} bytes, sha256 {}) and its WIT",
        dir.display(),
        rcpat_component::WASM.len(),
        rcpat_component::WASM_SHA256
    );
    Ok(())
}
