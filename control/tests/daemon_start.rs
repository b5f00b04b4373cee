//! `xgwd run` refuses to start, with a message that says what to fix, when the rules file is
//! bad, an interface is missing or it lacks privileges. (Runs as root, like the rest of
//! tools/test; the unprivileged case is played by `nobody` through setpriv.)
#![allow(clippy::expect_used, reason = "test and benchmark tooling: a failed step ends the run with its message")]

use std::os::unix::fs::PermissionsExt;
use std::process::{Command, Output};

fn rules_in(dir: &std::path::Path, text: &str) -> String {
    std::fs::set_permissions(dir, std::fs::Permissions::from_mode(0o755)).expect("chmod dir");
    let p = dir.join("gw.rules");
    std::fs::write(&p, text).expect("rules");
    std::fs::set_permissions(&p, std::fs::Permissions::from_mode(0o644)).expect("chmod");
    p.to_string_lossy().into_owned()
}

const MISSING: &str = "interface lan device xgw-nope-a role inside address 10.10.0.1/24
interface wan device xgw-nope-b role outside address 198.51.100.1/24
";

fn stderr(o: &Output) -> String {
    String::from_utf8_lossy(&o.stderr).into_owned()
}

#[test]
fn missing_interfaces_are_all_named() {
    let dir = tempfile::tempdir().expect("tempdir");
    let rules = rules_in(dir.path(), MISSING);
    let o = Command::new(env!("CARGO_BIN_EXE_xgwd")).args(["run", "--rules", &rules]).output().expect("xgwd");
    assert_eq!(o.status.code(), Some(1));
    let e = stderr(&o);
    assert!(e.contains("no such network device: `xgw-nope-a` (interface lan), `xgw-nope-b` (interface wan)"), "{e}");
}

#[test]
fn a_bad_rules_file_is_refused_with_its_position() {
    let dir = tempfile::tempdir().expect("tempdir");
    let rules = rules_in(dir.path(), &format!("{MISSING}access-list x permit tpc any any\n"));
    let o = Command::new(env!("CARGO_BIN_EXE_xgwd")).args(["run", "--rules", &rules]).output().expect("xgwd");
    assert_eq!(o.status.code(), Some(1));
    let e = stderr(&o);
    assert!(e.contains("rules file refused") && e.contains("gw.rules:3:"), "{e}");
}

#[test]
fn without_privileges_it_says_which_are_missing() {
    let dir = tempfile::tempdir().expect("tempdir");
    let rules = rules_in(dir.path(), MISSING);
    let o = Command::new("setpriv")
        .args(["--reuid=65534", "--regid=65534", "--clear-groups", "--inh-caps=-all", env!("CARGO_BIN_EXE_xgwd")])
        .args(["run", "--rules", &rules])
        .output()
        .expect("setpriv");
    assert_eq!(o.status.code(), Some(1), "{}", stderr(&o));
    let e = stderr(&o);
    assert!(e.contains("missing privilege: CAP_NET_ADMIN, CAP_NET_RAW, CAP_BPF"), "{e}");
}

#[test]
fn the_settings_file_names_the_rules() {
    let dir = tempfile::tempdir().expect("tempdir");
    let rules = rules_in(dir.path(), MISSING);
    let conf = dir.path().join("xgwd.toml");
    std::fs::write(&conf, format!("rules = \"{rules}\"\nframes = 2048\n")).expect("toml");
    let o = Command::new(env!("CARGO_BIN_EXE_xgwd"))
        .args(["run", "--config", conf.to_str().expect("path")])
        .output()
        .expect("xgwd");
    assert_eq!(o.status.code(), Some(1));
    assert!(stderr(&o).contains("no such network device: `xgw-nope-a`"), "{}", stderr(&o));
    std::fs::write(&conf, "rules = 7\n").expect("toml");
    let o = Command::new(env!("CARGO_BIN_EXE_xgwd"))
        .args(["run", "--config", conf.to_str().expect("path")])
        .output()
        .expect("xgwd");
    assert_eq!(o.status.code(), Some(1));
    assert!(stderr(&o).contains("xgwd.toml") && stderr(&o).contains("line 1"), "{}", stderr(&o));
}
