//! The architecture invariants that a crate boundary cannot hold alone
//! (ARCHITECTURE.md, "Architecture invariants").
//!
//! The pure core is its own crate (`crates/core`): it cannot import tokio,
//! hyper, ldap3 or sled without naming them in its Cargo.toml, so the first
//! test reads that file's dependency tables. What a dependency list cannot
//! show — `std::fs`, `std::net`, `std::process`, `std::env` — and what one
//! module of the daemon crate may not know of another are checked by
//! parsing every source file with `syn` and collecting every path it names:
//! `use` trees expanded (`use crate::{scim, store}` names both), paths in
//! types and expressions, fully qualified or not. Comments and string
//! literals are not code and are not read. Paths inside macro invocations
//! (`format!`, `json!`) are token streams and are not seen; none of the
//! forbidden modules is reachable through one in this code base.

use std::collections::BTreeSet;
use std::path::{Path, PathBuf};

use syn::visit::Visit;

fn root() -> PathBuf {
    PathBuf::from(env!("CARGO_MANIFEST_DIR"))
}

/// Every `.rs` file under `path` (a file, or a folder walked recursively).
fn rust_files(path: &Path) -> Vec<PathBuf> {
    let mut out = Vec::new();
    if path.is_file() {
        out.push(path.to_path_buf());
    } else if path.is_dir() {
        let mut entries: Vec<_> = std::fs::read_dir(path)
            .unwrap()
            .map(|e| e.unwrap().path())
            .collect();
        entries.sort();
        for p in entries {
            if p.is_dir() {
                out.extend(rust_files(&p));
            } else if p.extension().is_some_and(|e| e == "rs") {
                out.push(p);
            }
        }
    }
    out
}

/// Collects every path a file names, as `a::b::c` strings.
#[derive(Default)]
struct Paths {
    found: BTreeSet<String>,
}

impl Paths {
    fn use_tree(&mut self, prefix: &str, tree: &syn::UseTree) {
        let join = |name: &str| {
            if prefix.is_empty() {
                name.to_string()
            } else {
                format!("{prefix}::{name}")
            }
        };
        match tree {
            syn::UseTree::Path(p) => self.use_tree(&join(&p.ident.to_string()), &p.tree),
            syn::UseTree::Name(n) => {
                self.found.insert(join(&n.ident.to_string()));
            }
            syn::UseTree::Rename(r) => {
                self.found.insert(join(&r.ident.to_string()));
            }
            syn::UseTree::Glob(_) => {
                self.found.insert(join("*"));
            }
            syn::UseTree::Group(g) => {
                for t in &g.items {
                    self.use_tree(prefix, t);
                }
            }
        }
    }
}

impl<'ast> Visit<'ast> for Paths {
    fn visit_item_use(&mut self, item: &'ast syn::ItemUse) {
        self.use_tree("", &item.tree);
    }

    fn visit_path(&mut self, path: &'ast syn::Path) {
        let text = path
            .segments
            .iter()
            .map(|s| s.ident.to_string())
            .collect::<Vec<_>>()
            .join("::");
        self.found.insert(text);
        syn::visit::visit_path(self, path);
    }
}

/// `(file, path)` for every path in `files` that starts with a forbidden
/// prefix (a whole segment: `std::env` forbids `std::env::var`, not
/// `std::envelope`).
fn violations(files: &[PathBuf], forbidden: &[&str]) -> Vec<String> {
    let mut out = Vec::new();
    for file in files {
        let text = std::fs::read_to_string(file).unwrap();
        let ast = syn::parse_file(&text)
            .unwrap_or_else(|e| panic!("{} does not parse: {e}", file.display()));
        let mut paths = Paths::default();
        paths.visit_file(&ast);
        for p in &paths.found {
            for f in forbidden {
                if p == f || p.starts_with(&format!("{f}::")) {
                    out.push(format!(
                        "{}: names {p}",
                        file.strip_prefix(root()).unwrap_or(file).display()
                    ));
                }
            }
        }
    }
    out
}

const IO_CRATES: &[&str] = &[
    "tokio",
    "hyper",
    "hyper-util",
    "ldap3",
    "sled",
    "rustls",
    "tokio-rustls",
];

#[test]
fn the_core_crate_depends_on_no_io_crate() {
    let manifest = std::fs::read_to_string(root().join("crates/core/Cargo.toml")).unwrap();
    let doc: toml::Table = manifest.parse().unwrap();
    let mut named = Vec::new();
    for table in ["dependencies", "dev-dependencies", "build-dependencies"] {
        if let Some(deps) = doc.get(table).and_then(|t| t.as_table()) {
            named.extend(deps.keys().cloned());
        }
    }
    assert!(
        named.iter().any(|d| d == "serde_json"),
        "read the wrong file?"
    );
    let bad: Vec<_> = named
        .iter()
        .filter(|d| IO_CRATES.contains(&d.as_str()))
        .collect();
    assert!(bad.is_empty(), "the pure core depends on {bad:?}");
}

#[test]
fn the_core_crate_does_no_io() {
    let files = rust_files(&root().join("crates/core/src"));
    assert!(files.len() > 10, "the scan must have something to look at");
    let bad = violations(
        &files,
        &[
            "std::fs",
            "std::net",
            "std::process",
            "std::env",
            "std::thread",
        ],
    );
    assert!(
        bad.is_empty(),
        "the pure core reaches for I/O:\n{}",
        bad.join("\n")
    );
}

/// What each part of the daemon crate must not know (ARCHITECTURE.md).
/// A module is `src/<name>.rs` or the folder `src/<name>/`.
const RULES: &[(&str, &[&str])] = &[
    // The edge knows HTTP only.
    (
        "http",
        &[
            "ldap3",
            "sled",
            "crate::store",
            "crate::ldap",
            "crate::writer",
            "crate::mapping",
            "crate::model",
            "crate::adopt",
        ],
    ),
    // Metrics know no HTTP, LDAP or store.
    (
        "metrics",
        &[
            "hyper",
            "ldap3",
            "sled",
            "crate::http",
            "crate::store",
            "crate::ldap",
            "crate::writer",
        ],
    ),
    // The SCIM endpoints know no hyper and no LDAP.
    (
        "api",
        &[
            "hyper",
            "ldap3",
            "crate::http",
            "crate::ldap",
            "crate::writer",
            "crate::adopt",
        ],
    ),
    // The store knows SCIM JSON and journal entries, never LDAP, HTTP or
    // the mapping.
    (
        "store",
        &[
            "ldap3",
            "hyper",
            "crate::ldap",
            "crate::writer",
            "crate::mapping",
            "crate::model",
            "crate::http",
            "crate::api",
        ],
    ),
];

#[test]
fn each_part_of_the_daemon_knows_only_what_it_may() {
    let mut bad = Vec::new();
    for (module, forbidden) in RULES {
        let file = root().join("src").join(format!("{module}.rs"));
        let dir = root().join("src").join(module);
        let files = if file.exists() {
            rust_files(&file)
        } else {
            rust_files(&dir)
        };
        assert!(!files.is_empty(), "no source for module {module}");
        bad.extend(violations(&files, forbidden));
    }
    assert!(bad.is_empty(), "layering broken:\n{}", bad.join("\n"));
}

#[test]
fn the_path_collector_sees_grouped_imports_and_inline_paths() {
    // The checker itself must not be blind: grouped and nested imports,
    // renames, globs and paths in expressions are all seen; comments and
    // strings are not code.
    let src = r#"
        use crate::{scim, store::{Kind, self}};
        use std::env as e;
        use crate::model::*;
        fn f() { let _ = crate::ldap::Directory::new(); std::fs::read("x"); }
        // crate::http::Edge in a comment
        const S: &str = "crate::api::Api";
    "#;
    let ast = syn::parse_file(src).unwrap();
    let mut p = Paths::default();
    p.visit_file(&ast);
    for want in [
        "crate::scim",
        "crate::store::Kind",
        "crate::store::self",
        "std::env",
        "crate::model::*",
        "crate::ldap::Directory::new",
        "std::fs::read",
    ] {
        assert!(p.found.contains(want), "missed {want}: {:?}", p.found);
    }
    assert!(!p.found.iter().any(|x| x.starts_with("crate::http")));
    assert!(!p.found.iter().any(|x| x.starts_with("crate::api")));
}
