//! The server's architecture invariants, checked on its source: the top-level modules of
//! `server/src` form no import circle (arrows only point down), neither do the files or folders
//! inside any one module, only `api` names tonic and only `store` names sled.
//!
//! References are read from the source text: every `crate::a::b` and `super::x` path (also inside
//! `use crate::{a, b}` groups), outside comments and outside the inline `#[cfg(test)] mod tests`
//! at the end of a file (unit tests may reach anywhere).

use std::collections::{BTreeMap, BTreeSet};
use std::path::{Path, PathBuf};

/// A module path inside the crate, e.g. `["models", "siamese", "conv"]`.
type ModPath = Vec<String>;

struct SourceFile {
    /// The file's module (a folder's `mod.rs` is the folder's module).
    module: ModPath,
    code: String,
}

fn source_files() -> Vec<SourceFile> {
    let root = Path::new(env!("CARGO_MANIFEST_DIR")).join("src");
    let mut out = Vec::new();
    let mut stack = vec![root.clone()];
    while let Some(dir) = stack.pop() {
        for entry in std::fs::read_dir(&dir).unwrap() {
            let path = entry.unwrap().path();
            if path.is_dir() {
                stack.push(path);
            } else if path.extension().is_some_and(|e| e == "rs") {
                out.push(read(&root, &path));
            }
        }
    }
    out.sort_by(|a, b| a.module.cmp(&b.module));
    out
}

fn read(root: &Path, path: &PathBuf) -> SourceFile {
    let relative = path.strip_prefix(root).unwrap().with_extension("");
    let mut module: ModPath = relative.iter().map(|c| c.to_string_lossy().into_owned()).collect();
    if module.last().is_some_and(|last| last == "mod") || module == ["lib"] || module == ["main"] {
        module.pop();
    }
    let text = std::fs::read_to_string(path).unwrap();
    // Unit tests at the end of a file may use anything.
    let text = text.split("#[cfg(test)]\nmod tests").next().unwrap();
    let code = text
        .lines()
        .map(|line| match line.find("//") {
            Some(i) => &line[..i],
            None => line,
        })
        .collect::<Vec<_>>()
        .join("\n");
    SourceFile { module, code }
}

/// Every module path `file` refers to through `crate::` or `super::`.
fn references(file: &SourceFile) -> BTreeSet<ModPath> {
    let mut out = BTreeSet::new();
    let bytes = file.code.as_bytes();
    let ident = |c: u8| c.is_ascii_alphanumeric() || c == b'_';
    let mut i = 0;
    while i < bytes.len() {
        // Inside a multi-byte character (such as '→' in a message): not the start of a path.
        if !file.code.is_char_boundary(i) {
            i += 1;
            continue;
        }
        let rest = &file.code[i..];
        let starts_word = i == 0 || !ident(bytes[i - 1]) && bytes[i - 1] != b':';
        let (base, skip) = if starts_word && rest.starts_with("crate::") {
            (Vec::new(), "crate::".len())
        } else if starts_word && rest.starts_with("super::") {
            let mut base = file.module.clone();
            base.pop();
            let mut skip = "super::".len();
            // `super::super::…`
            while file.code[i + skip..].starts_with("super::") {
                base.pop();
                skip += "super::".len();
            }
            (base, skip)
        } else {
            i += 1;
            continue;
        };
        let tail = &file.code[i + skip..];
        if let Some(group) = tail.strip_prefix('{') {
            // `crate::{a, b::c}`: each item's first segments.
            let group = &group[..group.find('}').unwrap_or(group.len())];
            for item in group.split(',') {
                let segments = path_segments(item.trim());
                if !segments.is_empty() {
                    out.insert(base.iter().cloned().chain(segments).collect());
                }
            }
        } else {
            let segments = path_segments(tail);
            if !segments.is_empty() {
                out.insert(base.into_iter().chain(segments).collect());
            }
        }
        i += skip;
    }
    out
}

/// The lowercase path segments at the start of `text`: module names, and a function's name at
/// the end (harmless: edges only compare the leading segments). A capitalised item ends it.
fn path_segments(text: &str) -> Vec<String> {
    let mut out = Vec::new();
    for segment in text.split("::") {
        let name: String = segment.chars().take_while(|c| c.is_ascii_alphanumeric() || *c == '_').collect();
        if name.is_empty() || name.starts_with(|c: char| c.is_ascii_uppercase()) || name == "self" {
            break;
        }
        let whole = name.len() == segment.trim_end().len();
        out.push(name);
        if !whole {
            break;
        }
    }
    out
}

/// The graph's circles, if any, as one example path each (depth-first search).
fn find_cycle(edges: &BTreeMap<String, BTreeSet<String>>) -> Option<Vec<String>> {
    fn visit(
        node: &str,
        edges: &BTreeMap<String, BTreeSet<String>>,
        state: &mut BTreeMap<String, u8>,
        stack: &mut Vec<String>,
    ) -> Option<Vec<String>> {
        state.insert(node.to_string(), 1);
        stack.push(node.to_string());
        for next in edges.get(node).into_iter().flatten() {
            match state.get(next.as_str()).copied().unwrap_or(0) {
                1 => {
                    let from = stack.iter().position(|n| n == next).unwrap();
                    let mut cycle = stack[from..].to_vec();
                    cycle.push(next.clone());
                    return Some(cycle);
                }
                0 => {
                    if let Some(cycle) = visit(next, edges, state, stack) {
                        return Some(cycle);
                    }
                }
                _ => {}
            }
        }
        stack.pop();
        state.insert(node.to_string(), 2);
        None
    }
    let mut state = BTreeMap::new();
    for node in edges.keys() {
        if state.get(node.as_str()).copied().unwrap_or(0) == 0 {
            if let Some(cycle) = visit(node, edges, &mut state, &mut Vec::new()) {
                return Some(cycle);
            }
        }
    }
    None
}

/// Edges between the children of `parent` (files or folders directly inside it): a file under
/// child `a` that refers into child `b`.
fn child_edges(files: &[SourceFile], parent: &[String]) -> BTreeMap<String, BTreeSet<String>> {
    let mut edges: BTreeMap<String, BTreeSet<String>> = BTreeMap::new();
    for file in files {
        if file.module.len() <= parent.len() || !file.module.starts_with(parent) {
            continue;
        }
        let from = &file.module[parent.len()];
        edges.entry(from.clone()).or_default();
        for target in references(file) {
            if target.len() > parent.len() && target.starts_with(parent) && &target[parent.len()] != from {
                edges.entry(from.clone()).or_default().insert(target[parent.len()].clone());
            }
        }
    }
    edges
}

#[test]
fn top_level_modules_and_each_modules_parts_have_no_import_circle() {
    let files = source_files();
    assert!(files.len() > 40, "read the sources ({} files)", files.len());
    let parents: BTreeSet<ModPath> =
        files.iter().flat_map(|f| (0..f.module.len()).map(|n| f.module[..n].to_vec())).collect();
    let mut report = Vec::new();
    for parent in &parents {
        let edges = child_edges(&files, parent);
        if parent.is_empty() {
            // Printed for the record (ARCHITECTURE.md shows the same map).
            for (from, to) in &edges {
                println!("{from} -> {}", to.iter().cloned().collect::<Vec<_>>().join(", "));
            }
        }
        if let Some(cycle) = find_cycle(&edges) {
            let place = if parent.is_empty() { "server/src".to_string() } else { parent.join("/") };
            report.push(format!("{place}: {}", cycle.join(" -> ")));
        }
    }
    assert!(report.is_empty(), "import circles:\n{}", report.join("\n"));

    // The map must be the layered one: lower modules never name the ones built on them.
    let edges = child_edges(&files, &[]);
    for low in ["store", "vectors", "dataset", "jobs", "auth"] {
        for high in ["models", "training", "ranking", "proposal", "labeling", "workflows", "api", "state"] {
            assert!(!edges[low].contains(high), "{low} refers to {high}, which is built on it");
        }
    }
    // The networks' own code (weights format, face finding) sits under everything that uses it.
    for low in ["tfjs", "faces"] {
        for high in ["store", "dataset", "models", "training", "ranking", "proposal", "labeling", "api", "state"] {
            assert!(!edges[low].contains(high), "{low} refers to {high}, which is built on it");
        }
    }
    for domain in ["models", "ranking", "proposal"] {
        assert!(!edges[domain].contains("training"), "{domain} refers to training (models know no training)");
    }
}

#[test]
fn only_api_names_tonic_and_only_store_names_sled() {
    let names = |code: &str, krate: &str| {
        code.match_indices(krate).any(|(i, _)| {
            let before = code[..i].chars().last();
            let after = &code[i + krate.len()..];
            before.is_none_or(|c| !(c.is_ascii_alphanumeric() || c == '_'))
                && (after.starts_with("::") || after.starts_with("_"))
        })
    };
    for file in source_files() {
        let top = file.module.first().map(String::as_str).unwrap_or("lib");
        if top != "api" {
            assert!(!names(&file.code, "tonic"), "{} names tonic; only api may", file.module.join("/"));
        }
        if top != "store" {
            assert!(!names(&file.code, "sled"), "{} names sled; only store may", file.module.join("/"));
        }
    }
}

#[test]
fn the_reference_reader_sees_paths_groups_and_super() {
    let file = SourceFile {
        module: vec!["models".into(), "siamese".into(), "conv".into()],
        code: "use crate::{dataset, store::Store};\nuse super::storage::values;\nlet x = crate::vectors::euclidean(a, b);\nuse super::super::descriptor::DIM;".into(),
    };
    let found: Vec<String> = references(&file).into_iter().map(|p| p.join("::")).collect();
    assert_eq!(
        found,
        // Lowercase items (functions) look like modules to the reader; only the prefixes matter.
        ["dataset", "models::descriptor", "models::siamese::storage::values", "store", "vectors::euclidean"],
        "{found:?}"
    );
}
