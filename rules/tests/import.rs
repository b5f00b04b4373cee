//! `xgwctl rules import-asa` on configurations written from Cisco's command references:
//! each `import/NAME.cfg` must give exactly `NAME.rules` and `NAME.report`, and the rules
//! must compile. `XGW_BLESS=1` rewrites the expected files (review the diff).
#![allow(clippy::expect_used, reason = "test tooling: a failed step ends the run with its message")]

use std::collections::BTreeMap;

#[test]
fn every_fixture_imports_as_expected_and_compiles() {
    let dir = std::path::Path::new(env!("CARGO_MANIFEST_DIR")).join("tests/import");
    let bless = std::env::var_os("XGW_BLESS").is_some();
    let mut cfgs: Vec<_> = std::fs::read_dir(&dir)
        .expect("fixtures")
        .filter_map(|e| e.ok().map(|e| e.path()))
        .filter(|p| p.extension().is_some_and(|x| x == "cfg"))
        .collect();
    cfgs.sort();
    assert!(cfgs.len() >= 3, "a PIX 6.3, a PIX 7.x and an ASA 8.4 fixture at least");
    let mut failures = Vec::new();
    for cfg in &cfgs {
        let stem = cfg.file_stem().expect("stem").to_string_lossy().to_string();
        let text = std::fs::read_to_string(cfg).expect("read");
        let imp = xgw_rules::import::import_asa(&text, &format!("{stem}.cfg"), &BTreeMap::new());
        match xgw_rules::compile("imported.rules", &imp.rules, &|p| Err(format!("no include {p}"))) {
            Ok(c) => assert!(c.engine.ifaces.iter().any(|i| i.role == xgw_dataplane::Role::Outside)),
            Err(d) => failures.push(format!("{stem}: the rules do not compile:\n{}", xgw_rules::diag::render_all(&d))),
        }
        // every configuration line is either translated or reported: nothing vanishes
        for (file, got) in [(format!("{stem}.rules"), imp.rules.clone()), (format!("{stem}.report"), imp.report())] {
            let p = dir.join(&file);
            if bless {
                std::fs::write(&p, &got).expect("bless");
                continue;
            }
            let want = std::fs::read_to_string(&p).unwrap_or_default();
            if want != got {
                failures.push(format!("--- {file}: expected\n{want}\n--- got\n{got}"));
            }
        }
    }
    assert!(failures.is_empty(), "{}", failures.join("\n"));
}
