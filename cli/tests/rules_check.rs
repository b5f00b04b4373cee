//! `xgwctl rules check`: exit codes, human and JSON output, no daemon needed.

use std::process::Command;

fn xgwctl() -> Command {
    Command::new(env!("CARGO_BIN_EXE_xgwctl"))
}

#[test]
fn the_example_file_is_valid() {
    let ex = concat!(env!("CARGO_MANIFEST_DIR"), "/../rules/examples/gateway.rules");
    let out = xgwctl().args(["rules", "check", ex]).output().expect("run");
    assert_eq!(out.status.code(), Some(0), "{}", String::from_utf8_lossy(&out.stderr));
    assert!(String::from_utf8_lossy(&out.stderr).ends_with("valid (0 warnings)\n"));
}

#[test]
fn a_bad_file_is_refused_with_every_error() {
    let dir = tempfile::tempdir().expect("tmp");
    let f = dir.path().join("bad.rules");
    std::fs::write(&f, "interface lan device e1 role inside address 10.0.0.1/24\ninterface wan device e0 role outside address 192.0.2.1/24\naccess-list x permit tpc any any\naccess-group x in interface lna\n").expect("write");
    let out = xgwctl().args(["rules", "check"]).arg(&f).output().expect("run");
    assert_eq!(out.status.code(), Some(1));
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(err.contains("bad.rules:3:22: error: unknown protocol `tpc`"), "{err}");
    assert!(err.contains("= hint: did you mean `tcp`?"), "{err}");
    assert!(err.contains("bad.rules:4:29: error: unknown interface `lna`"), "{err}");
    assert!(err.ends_with("2 errors, 0 warnings; refused\n"), "{err}");
    let out = xgwctl().args(["rules", "check", "--error-format", "json"]).arg(&f).output().expect("run");
    assert_eq!(out.status.code(), Some(1));
    let v: serde_json::Value = serde_json::from_slice(&out.stdout).expect("json");
    assert_eq!(v.as_array().map(Vec::len), Some(2));
    assert_eq!(v[0]["line"], 3);
    assert_eq!(v[0]["col"], 22);
    assert_eq!(v[0]["severity"], "error");
}

#[test]
fn bad_command_lines_exit_2() {
    assert_eq!(xgwctl().args(["rules", "chek"]).output().expect("run").status.code(), Some(2));
    assert_eq!(xgwctl().args(["rules", "check"]).output().expect("run").status.code(), Some(2));
}

#[test]
fn an_asa_configuration_is_imported_into_a_file_that_passes_the_check() {
    let cfg = concat!(env!("CARGO_MANIFEST_DIR"), "/../rules/tests/import/pix63-pat-pptp.cfg");
    let dir = tempfile::tempdir().expect("tmp");
    let out_file = dir.path().join("pix.rules");
    let out = xgwctl()
        .args(["rules", "import-asa", cfg, "--device", "outside=enp1s0", "--device", "inside=enp2s0", "-w"])
        .arg(&out_file)
        .output()
        .expect("run");
    let err = String::from_utf8_lossy(&out.stderr);
    assert_eq!(out.status.code(), Some(0), "{err}");
    assert!(out.stdout.is_empty(), "the rules went to the file");
    let rules = std::fs::read_to_string(&out_file).expect("written");
    assert!(rules.contains("interface outside device enp1s0 role outside address 203.0.113.2/29"), "{rules}");
    assert!(rules.contains("\ninspect pptp\n") && rules.contains("forward tcp 1723 to 192.168.1.20 1723"), "{rules}");
    // the report: routes with the given device, every line left out with its number
    assert!(err.contains("ip route add default via 203.0.113.1 dev enp1s0"), "{err}");
    assert!(err.contains("line 15: fixup protocol ftp 21"), "{err}");
    assert!(!err.contains("give --device"), "both devices were given: {err}");
    let check = xgwctl().args(["rules", "check"]).arg(&out_file).output().expect("run");
    assert_eq!(check.status.code(), Some(0), "{}", String::from_utf8_lossy(&check.stderr));
    // a bad --device is a command-line error
    let bad = xgwctl().args(["rules", "import-asa", cfg, "--device", "outside"]).output().expect("run");
    assert_eq!(bad.status.code(), Some(2));
}
