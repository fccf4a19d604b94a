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

use std::collections::{BTreeMap, BTreeSet};
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
    // Adoption reads the directory and writes the store; the endpoints call
    // it (through `api::Adoption`), never the other way round.
    ("adopt", &["hyper", "crate::api", "crate::http"]),
    // The status reads the store and the writer's handle; it knows no
    // LDAP and no hyper (the operational listener serves its pages).
    (
        "status",
        &[
            "ldap3",
            "hyper",
            "crate::http",
            "crate::api",
            "crate::adopt",
            "crate::mapping",
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

/// The module a path names, resolved from inside `module` (the file's
/// module plus any inline `mod` it sits in): `crate::a::b` is absolute,
/// `self::` and `super::` are relative, and a first segment that is a
/// child module of `module` (`pub use entry::X` in a `mod.rs`) is too.
/// `None` for a path into another crate or to a local item.
fn resolve(module: &[String], path: &[String], known: &BTreeSet<String>) -> Option<Vec<String>> {
    let mut segs = path.iter().peekable();
    let mut base: Vec<String> = match segs.peek().map(|s| s.as_str()) {
        Some("crate") => {
            segs.next();
            Vec::new()
        }
        Some("self") => {
            segs.next();
            module.to_vec()
        }
        Some("super") => {
            let mut base = module.to_vec();
            while segs.peek().is_some_and(|s| *s == "super") {
                segs.next();
                base.pop()?;
            }
            base
        }
        Some(first) => {
            let mut child = module.to_vec();
            child.push(first.to_string());
            if !known.contains(&child.join("::")) {
                return None;
            }
            module.to_vec()
        }
        None => return None,
    };
    base.extend(segs.cloned());
    Some(base)
}

/// Collects, for one file, every path it names together with the inline
/// module it is named from (`mod tests { use super::*; }`).
struct ModulePaths {
    stack: Vec<String>,
    found: Vec<(Vec<String>, Vec<String>)>,
}

impl ModulePaths {
    fn use_tree(&mut self, prefix: &mut Vec<String>, tree: &syn::UseTree) {
        match tree {
            syn::UseTree::Path(p) => {
                prefix.push(p.ident.to_string());
                self.use_tree(prefix, &p.tree);
                prefix.pop();
            }
            syn::UseTree::Name(syn::UseName { ident })
            | syn::UseTree::Rename(syn::UseRename { ident, .. }) => {
                let mut path = prefix.clone();
                if ident != "self" {
                    path.push(ident.to_string());
                }
                self.found.push((self.stack.clone(), path));
            }
            syn::UseTree::Glob(_) => self.found.push((self.stack.clone(), prefix.clone())),
            syn::UseTree::Group(g) => {
                for t in &g.items {
                    self.use_tree(prefix, t);
                }
            }
        }
    }
}

impl<'ast> Visit<'ast> for ModulePaths {
    fn visit_item_mod(&mut self, item: &'ast syn::ItemMod) {
        self.stack.push(item.ident.to_string());
        syn::visit::visit_item_mod(self, item);
        self.stack.pop();
    }

    fn visit_item_use(&mut self, item: &'ast syn::ItemUse) {
        self.use_tree(&mut Vec::new(), &item.tree);
    }

    fn visit_path(&mut self, path: &'ast syn::Path) {
        let segs = path.segments.iter().map(|s| s.ident.to_string()).collect();
        self.found.push((self.stack.clone(), segs));
        syn::visit::visit_path(self, path);
    }
}

/// Which module names which: `(module, source)` pairs in, an edge
/// `a -> b` out when a path in `a` leads into `b`. A module and its own
/// ancestors are not edges: a folder's `mod.rs` re-exports its children
/// and the children use the folder's shared types, which is how Rust
/// modules are built, not a circle between parts. With `depth`, modules
/// are cut to their first `depth` segments (`store::journal` is `store`
/// at depth 1), so only edges between those parts remain.
fn module_graph(
    sources: &[(String, String)],
    depth: Option<usize>,
) -> BTreeMap<String, BTreeSet<String>> {
    let cut = |m: &str| match depth {
        Some(n) => m.split("::").take(n).collect::<Vec<_>>().join("::"),
        None => m.to_string(),
    };
    let known: BTreeSet<String> = sources.iter().map(|(m, _)| m.clone()).collect();
    let mut graph: BTreeMap<String, BTreeSet<String>> = BTreeMap::new();
    for (module, text) in sources {
        let ast = syn::parse_file(text).unwrap_or_else(|e| panic!("{module} does not parse: {e}"));
        let own: Vec<String> = module.split("::").map(str::to_string).collect();
        let mut paths = ModulePaths {
            stack: own.clone(),
            found: Vec::new(),
        };
        paths.visit_file(&ast);
        for (from, path) in &paths.found {
            let Some(target) = resolve(from, path, &known) else {
                continue;
            };
            // The longest known module the path leads into.
            let Some(to) = (1..=target.len())
                .rev()
                .map(|n| target[..n].join("::"))
                .find(|m| known.contains(m))
            else {
                continue;
            };
            let related = to == *module
                || module.starts_with(&format!("{to}::"))
                || to.starts_with(&format!("{module}::"));
            let (from, to) = (cut(module), cut(&to));
            if !related && from != to {
                graph.entry(from).or_default().insert(to);
            }
        }
    }
    graph
}

/// Every circle in `graph`, each as the path `a -> b -> ... -> a` from its
/// smallest module, found once.
fn circles(graph: &BTreeMap<String, BTreeSet<String>>) -> Vec<String> {
    fn walk(
        graph: &BTreeMap<String, BTreeSet<String>>,
        start: &str,
        at: &str,
        path: &mut Vec<String>,
        out: &mut BTreeSet<String>,
    ) {
        for next in graph.get(at).into_iter().flatten() {
            if next == start {
                out.insert(format!("{} -> {start}", path.join(" -> ")));
            } else if next.as_str() > start && !path.contains(next) {
                path.push(next.clone());
                walk(graph, start, next, path, out);
                path.pop();
            }
        }
    }
    let mut out = BTreeSet::new();
    for start in graph.keys() {
        walk(graph, start, start, &mut vec![start.clone()], &mut out);
    }
    out.into_iter().collect()
}

/// `(module, source)` for every file of a crate's `src`: `scim/filter.rs`
/// is `scim::filter`, `mapping/mod.rs` is `mapping`; the crate roots
/// (`lib.rs`, `main.rs`) are left out.
fn crate_sources(src: &Path) -> Vec<(String, String)> {
    rust_files(src)
        .into_iter()
        .filter(|f| !f.ends_with("lib.rs") && !f.ends_with("main.rs"))
        .map(|f| {
            let rel = f.strip_prefix(src).unwrap().with_extension("");
            let mut parts: Vec<String> = rel
                .components()
                .map(|c| c.as_os_str().to_string_lossy().into_owned())
                .collect();
            if parts.last().is_some_and(|p| p == "mod") {
                parts.pop();
            }
            (parts.join("::"), std::fs::read_to_string(&f).unwrap())
        })
        .collect()
}

#[test]
fn no_two_modules_of_the_core_name_each_other_in_a_circle() {
    let sources = crate_sources(&root().join("crates/core/src"));
    let graph = module_graph(&sources, None);
    assert!(
        graph.contains_key("scim::patch") && graph.contains_key("mapping::entry"),
        "the graph must have something in it: {graph:?}"
    );
    let found = circles(&graph);
    assert!(
        found.is_empty(),
        "modules of the core import each other in a circle (move what both need into a module below them):\n{}",
        found.join("\n")
    );
}

#[test]
fn the_circle_check_sees_circles() {
    // Two files that name each other (one through a grouped import, one
    // through `super::` from an inline module), a longer circle through
    // an expression path, and a child naming its parent, which is no edge.
    let sources = [
        ("scim", "pub mod a; pub mod b; pub mod c;"),
        ("scim::a", "use crate::scim::{b::B, d::D, error};"),
        ("scim::b", "mod tests { use super::super::a::A; }"),
        ("scim::c", "fn f() { crate::scim::a::g(); }"),
        ("scim::d", "use crate::scim::c;"),
        ("scim::e", "use crate::scim; fn f() -> scim::ScimError {}"),
    ]
    .map(|(m, s)| (m.to_string(), s.to_string()));
    let graph = module_graph(&sources, None);
    assert!(!graph.contains_key("scim"), "a parent is not an edge");
    assert!(!graph.contains_key("scim::e"), "a parent is not an edge");
    assert_eq!(
        circles(&graph),
        vec![
            "scim::a -> scim::b -> scim::a".to_string(),
            "scim::a -> scim::d -> scim::c -> scim::a".to_string(),
        ]
    );

    // Cut to the parts of a crate: files of one folder naming each other
    // are no circle; a file of the folder and another part are.
    let sources = [
        ("store", "mod journal; mod links;"),
        (
            "store::journal",
            "use super::links::L; use crate::api::Api;",
        ),
        ("store::links", "use super::journal::J;"),
        ("api", "use crate::store::Kind;"),
        ("adopt", "use crate::store::Kind;"),
    ]
    .map(|(m, s)| (m.to_string(), s.to_string()));
    let graph = module_graph(&sources, Some(1));
    assert_eq!(
        circles(&graph),
        vec!["api -> store -> api".to_string()],
        "{graph:?}"
    );
}

/// The same for the parts of the daemon crate (`src/<part>.rs` or
/// `src/<part>/`): `adopt` and `api` named each other once. Circles inside
/// one folder (between files of the store, of the writer) are not checked
/// here.
#[test]
fn no_two_parts_of_the_daemon_name_each_other_in_a_circle() {
    let sources = crate_sources(&root().join("src"));
    let graph = module_graph(&sources, Some(1));
    assert!(
        graph.get("api").is_some_and(|to| to.contains("store")),
        "the graph must have something in it: {graph:?}"
    );
    let found = circles(&graph);
    assert!(
        found.is_empty(),
        "parts of the daemon import each other in a circle (a trait the wiring code implements, or what both need moved below them):\n{}",
        found.join("\n")
    );
}
