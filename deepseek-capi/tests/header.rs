//! include/deepseek.h is generated from this crate by cbindgen and committed: this test
//! regenerates it and fails when the committed copy is stale (`DS_BLESS=1` rewrites it).

use std::path::Path;

#[test]
fn header_is_up_to_date() {
    let crate_dir = Path::new(env!("CARGO_MANIFEST_DIR"));
    let config = cbindgen::Config::from_file(crate_dir.join("cbindgen.toml")).unwrap();
    let mut generated = Vec::new();
    cbindgen::Builder::new()
        .with_config(config)
        .with_src(crate_dir.join("src/lib.rs"))
        .generate()
        .expect("cbindgen failed on deepseek-capi/src")
        .write(&mut generated);
    let generated = String::from_utf8(generated).unwrap();
    let header = crate_dir.join("../include/deepseek.h");
    if std::env::var_os("DS_BLESS").is_some() {
        std::fs::write(&header, &generated).unwrap();
        return;
    }
    let committed = std::fs::read_to_string(&header).unwrap_or_default();
    if committed != generated {
        let (old, new): (Vec<_>, Vec<_>) =
            (committed.lines().collect(), generated.lines().collect());
        let line = (0..old.len().max(new.len()))
            .find(|&i| old.get(i) != new.get(i))
            .unwrap_or(0);
        panic!(
            "include/deepseek.h is stale: the C API changed. First difference, line {}:\n\
             committed: {:?}\ngenerated: {:?}\n\
             Regenerate it with `DS_BLESS=1 cargo test -p deepseek-capi --test header` and commit it.",
            line + 1,
            old.get(line).unwrap_or(&"<end of file>"),
            new.get(line).unwrap_or(&"<end of file>"),
        );
    }
}
