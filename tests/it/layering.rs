//! The SCIM core and the mapping must stay pure (ARCHITECTURE.md): no I/O
//! crates, no file or network access. A single crate cannot make the
//! compiler enforce that, so this test reads their sources.

use std::path::Path;

const FORBIDDEN: &[&str] = &[
    "tokio",
    "hyper",
    "ldap3",
    "sled",
    "std::fs",
    "std::net",
    "std::process",
    "crate::store",
    "crate::ldap",
    "crate::http",
    "crate::api",
];

fn check_dir(dir: &Path, problems: &mut Vec<String>) {
    for entry in std::fs::read_dir(dir).unwrap() {
        let path = entry.unwrap().path();
        if path.is_dir() {
            check_dir(&path, problems);
            continue;
        }
        if path.extension().and_then(|e| e.to_str()) != Some("rs") {
            continue;
        }
        let text = std::fs::read_to_string(&path).unwrap();
        for (n, line) in text.lines().enumerate() {
            let code = line.split("//").next().unwrap_or_default();
            for word in FORBIDDEN {
                let used = code.contains(&format!("{word}::"))
                    || code.contains(&format!("use {word}"))
                    || code.contains(&format!("{word};"));
                if used {
                    problems.push(format!("{}:{}: uses {word}", path.display(), n + 1));
                }
            }
        }
    }
}

#[test]
fn scim_core_and_mapping_do_no_io() {
    let root = Path::new(env!("CARGO_MANIFEST_DIR")).join("src");
    let mut problems = Vec::new();
    check_dir(&root.join("scim"), &mut problems);
    check_dir(&root.join("mapping"), &mut problems);
    assert!(
        problems.is_empty(),
        "the pure core reaches for I/O:\n{}",
        problems.join("\n")
    );
    // The scan must have something to look at.
    assert!(root.join("scim/filter.rs").exists() && root.join("mapping/mod.rs").exists());
}
