//! The committed contract artifacts are what the pinned solcjs builds from contracts/src and
//! contracts/test: an edited contract without rebuilt artifacts fails here.

use std::path::PathBuf;
use std::process::Command;

use vain_testkit::Need;

#[test]
fn contract_artifacts_are_fresh() {
    let dir = PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("../../contracts");
    if !dir.join("node_modules/solc").exists() {
        vain_testkit::unavailable(
            Need::Contracts,
            "contract_artifacts_are_fresh",
            "contracts/node_modules missing (npm ci in contracts/)",
        );
        return;
    }
    let out = Command::new("node").arg("build.mjs").arg("--check").current_dir(&dir).output().expect("run node");
    assert!(out.status.success(), "{}{}", String::from_utf8_lossy(&out.stdout), String::from_utf8_lossy(&out.stderr));
    assert!(String::from_utf8_lossy(&out.stdout).contains("10 contract artifacts fresh"));
}

#[test]
fn every_artifact_is_bound() {
    let dir = PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("../../contracts/artifacts");
    let mut files: Vec<String> = std::fs::read_dir(&dir)
        .expect("artifacts")
        .flatten()
        .filter_map(|e| e.file_name().to_str().and_then(|n| n.strip_suffix(".json")).map(str::to_owned))
        .collect();
    files.sort();
    let mut bound: Vec<String> = vain_chain::contracts::ARTIFACTS.iter().map(|(n, _)| n.to_string()).collect();
    bound.sort();
    assert_eq!(files, bound);
}
