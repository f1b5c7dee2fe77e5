//! Generates the Unicode tables from the Python the extension is built for (see unicode_tables.py).
use std::env;
use std::path::PathBuf;
use std::process::Command;

fn main() {
    println!("cargo:rerun-if-changed=unicode_tables.py");
    println!("cargo:rerun-if-env-changed=PYO3_PYTHON");
    let python = env::var("PYO3_PYTHON").unwrap_or_else(|_| "python3".to_owned());
    let out = PathBuf::from(env::var("OUT_DIR").expect("OUT_DIR is set by cargo")).join("unicode_tables.rs");
    let status = Command::new(&python)
        .arg("unicode_tables.py")
        .arg(&out)
        .status()
        .unwrap_or_else(|e| panic!("cannot run {python} to generate the Unicode tables: {e}"));
    assert!(status.success(), "unicode_tables.py failed under {python}");
}
