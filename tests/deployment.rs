//! The deployment examples in `docs/` are true: the TOML file names every
//! option (and only real ones, with values of the right type), and the
//! systemd unit passes `systemd-analyze verify` without a warning.

use std::collections::BTreeSet;
use std::path::Path;

use crate::common::*;
use host_example::config::Options;

fn docs(file: &str) -> std::path::PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR"))
        .join("../docs")
        .join(file)
}

#[test]
fn the_example_toml_holds_every_option_and_parses_uncommented() {
    let text = std::fs::read_to_string(docs("rcpat.toml")).unwrap();
    // As shipped (all commented) it is a valid, empty configuration.
    let dir = temp_dir("docs-toml");
    let path = dir.join("rcpat.toml");
    std::fs::write(&path, &text).unwrap();
    Options::from_file(&path).unwrap();
    // Every `# key = value` line uncommented: still valid, and the keys are
    // exactly the options the command line has.
    let mut keys = BTreeSet::new();
    let uncommented: String = text
        .lines()
        .map(|l| match l.strip_prefix("# ") {
            Some(rest)
                if rest
                    .split_once(" = ")
                    .is_some_and(|(k, _)| !k.contains(' ')) =>
            {
                keys.insert(rest.split_once(" = ").unwrap().0.to_string());
                format!("{rest}\n")
            }
            _ => format!("{l}\n"),
        })
        .collect();
    std::fs::write(&path, &uncommented).unwrap();
    let parsed = Options::from_file(&path).unwrap_or_else(|e| panic!("{e}\n{uncommented}"));
    assert_eq!(parsed.listen, Some("127.0.0.1:3000".parse().unwrap()));
    assert_eq!(parsed.shutdown_timeout_secs, Some(30));
    let flags: BTreeSet<String> = <Options as clap::Args>::augment_args(clap::Command::new("t"))
        .get_arguments()
        .filter_map(|a| a.get_long().map(String::from))
        .collect();
    assert_eq!(keys, flags);
}

#[test]
fn the_systemd_unit_verifies_cleanly() {
    let unit = std::fs::read_to_string(docs("rcpat.service")).unwrap();
    for directive in [
        "DynamicUser=yes",
        "StateDirectory=rcpat",
        "ProtectSystem=strict",
        "NoNewPrivileges=yes",
        "ExecStart=/usr/local/bin/host-example serve",
    ] {
        assert!(unit.contains(directive), "the unit lacks {directive}");
    }
    let Ok(which) = std::process::Command::new("systemd-analyze")
        .arg("--version")
        .output()
    else {
        eprintln!("systemd-analyze is not installed: the unit was not verified");
        return;
    };
    assert!(which.status.success());
    // verify checks that ExecStart exists: point it at the built binary.
    let dir = temp_dir("docs-unit");
    let path = dir.join("rcpat.service");
    std::fs::write(
        &path,
        unit.replace(
            "/usr/local/bin/host-example",
            env!("CARGO_BIN_EXE_host-example"),
        ),
    )
    .unwrap();
    let out = std::process::Command::new("systemd-analyze")
        .arg("verify")
        .arg(&path)
        .output()
        .unwrap();
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(out.status.success() && stderr.trim().is_empty(), "{stderr}");
}
