//! Golden tests for diagnostics: each `tests/golden/NAME.rules` is compiled and its
//! rendered diagnostics must equal `NAME.expected` exactly. `XGW_BLESS=1` rewrites the
//! expected files (review the diff before committing).

use std::path::PathBuf;

#[test]
fn diagnostics_match_the_golden_files() {
    let dir = PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("tests/golden");
    let mut names: Vec<_> = std::fs::read_dir(&dir)
        .expect("golden dir")
        .filter_map(|e| e.ok())
        .map(|e| e.path())
        .filter(|p| p.extension().is_some_and(|x| x == "rules"))
        .collect();
    names.sort();
    assert!(names.len() >= 20, "at least 20 distinct mistakes");
    let bless = std::env::var_os("XGW_BLESS").is_some();
    let mut failures = Vec::new();
    for p in names {
        let stem = p.file_stem().and_then(|s| s.to_str()).expect("name").to_string();
        let text = std::fs::read_to_string(&p).expect("read");
        let shown = format!("{stem}.rules");
        let loader = |f: &str| -> Result<String, String> { Err(format!("no such file: {f}")) };
        let out = match xgw_rules::compile(&shown, &text, &loader) {
            Ok(c) => format!("OK\n{}", xgw_rules::diag::render_all(&c.warnings)),
            Err(d) => format!("REFUSED\n{}", xgw_rules::diag::render_all(&d)),
        };
        let exp_path = dir.join(format!("{stem}.expected"));
        if bless {
            std::fs::write(&exp_path, &out).expect("write");
            continue;
        }
        let want = std::fs::read_to_string(&exp_path).unwrap_or_default();
        if want != out {
            failures.push(format!("--- {stem}: expected\n{want}\n--- got\n{out}"));
        }
    }
    assert!(failures.is_empty(), "{}", failures.join("\n"));
}
