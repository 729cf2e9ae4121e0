//! Every signing tag in the code is listed in docs/protocol.md §2, so the spec names every kind of
//! signature a vAIn node makes or checks.

use std::path::{Path, PathBuf};

fn rust_files(dir: &Path, out: &mut Vec<PathBuf>) {
    for e in std::fs::read_dir(dir).unwrap_or_else(|e| panic!("{}: {e}", dir.display())).flatten() {
        let p = e.path();
        let name = p.file_name().and_then(|n| n.to_str()).unwrap_or_default();
        if p.is_dir() && name != "target" && name != "generated" && !name.starts_with('.') {
            rust_files(&p, out);
        } else if name.ends_with(".rs") {
            out.push(p);
        }
    }
}

#[test]
fn every_signing_tag_is_in_the_protocol_spec() {
    let root = Path::new(env!("CARGO_MANIFEST_DIR")).join("..");
    let spec = std::fs::read_to_string(root.join("docs/protocol.md")).expect("protocol.md");
    let start = spec.find("## 2. Signing rule").expect("§2");
    let section = &spec[start..start + spec[start..].find("\n## 3.").expect("§3")];
    let mut files = Vec::new();
    for dir in ["schema/src", "engine", "transport/src", "kernels/src", "bench/src"] {
        rust_files(&root.join(dir), &mut files);
    }
    let mut tags = Vec::new();
    for f in &files {
        let text = std::fs::read_to_string(f).expect("source");
        for pat in ["Tag::new(\"", "Tag(\""] {
            for (at, _) in text.match_indices(pat) {
                let rest = &text[at + pat.len()..];
                let tag = &rest[..rest.find('"').expect("closing quote")];
                if tag.starts_with("vain/") && !tag.starts_with("vain/test-") {
                    tags.push((tag.to_string(), f.clone()));
                }
            }
        }
    }
    assert!(tags.len() >= 15, "found only {tags:?}");
    for (tag, file) in &tags {
        assert!(section.contains(&format!("`{tag}`")), "{tag} ({}) is not in docs/protocol.md §2", file.display());
    }
}
