//! The source tree keeps the layout rules of the README's Architecture section: no import cycle
//! between the folders of `src/`, nor between the files of one folder; sources and sinks never
//! use `http`; `domain` uses nothing but `error`, and `telemetry` nothing at all; no source file
//! (worker or development tools) is over 400 lines. Test modules are left out of the graph.

use std::collections::{BTreeMap, BTreeSet};
use std::path::{Path, PathBuf};

const MAX_LINES: usize = 400;

fn repo_root() -> PathBuf {
    PathBuf::from(env!("CARGO_MANIFEST_DIR"))
}

fn rust_files(directory: &Path) -> Vec<PathBuf> {
    let mut files = Vec::new();
    for entry in std::fs::read_dir(directory).unwrap() {
        let path = entry.unwrap().path();
        if path.is_dir() {
            files.extend(rust_files(&path));
        } else if path.extension().is_some_and(|extension| extension == "rs") {
            files.push(path);
        }
    }
    files.sort();
    files
}

/// The code of a file without its `#[cfg(test)]` module.
fn code(path: &Path) -> String {
    let text = std::fs::read_to_string(path).unwrap();
    text.split("#[cfg(test)]").next().unwrap().to_owned()
}

/// The first path segment after each `prefix` (`crate::` or `super::`), and inside a following
/// `{...}`, the first segment of each path.
fn segments_after(text: &str, prefix: &str) -> BTreeSet<String> {
    let identifier = |rest: &str| rest.chars().take_while(|c| c.is_alphanumeric() || *c == '_').collect::<String>();
    let mut found = BTreeSet::new();
    for (index, _) in text.match_indices(prefix) {
        let rest = &text[index + prefix.len()..];
        if let Some(list) = rest.strip_prefix('{') {
            let list = &list[..list.find('}').unwrap_or(list.len())];
            found.extend(list.split(',').map(|path| identifier(path.trim())).filter(|name| !name.is_empty()));
        } else {
            found.insert(identifier(rest));
        }
    }
    found
}

fn has_cycle(graph: &BTreeMap<String, BTreeSet<String>>) -> Option<Vec<String>> {
    fn visit(
        node: &str,
        graph: &BTreeMap<String, BTreeSet<String>>,
        path: &mut Vec<String>,
        done: &mut BTreeSet<String>,
    ) -> Option<Vec<String>> {
        if let Some(start) = path.iter().position(|step| step == node) {
            let mut cycle = path[start..].to_vec();
            cycle.push(node.to_owned());
            return Some(cycle);
        }
        if !done.insert(node.to_owned()) {
            return None;
        }
        path.push(node.to_owned());
        for next in graph.get(node).into_iter().flatten() {
            if let Some(cycle) = visit(next, graph, path, done) {
                return Some(cycle);
            }
        }
        path.pop();
        None
    }
    let mut done = BTreeSet::new();
    graph.keys().find_map(|node| visit(node, graph, &mut Vec::new(), &mut done))
}

/// Folder (or top-level module) → the other folders it uses.
fn folder_graph(src: &Path) -> BTreeMap<String, BTreeSet<String>> {
    let mut graph: BTreeMap<String, BTreeSet<String>> = BTreeMap::new();
    for file in rust_files(src) {
        let relative = file.strip_prefix(src).unwrap();
        let top =
            relative.components().next().unwrap().as_os_str().to_string_lossy().trim_end_matches(".rs").to_owned();
        if top == "lib" || top == "main" {
            continue;
        }
        let used = segments_after(&code(&file), "crate::");
        graph.entry(top.clone()).or_default().extend(used.into_iter().filter(|folder| *folder != top));
    }
    graph
}

/// No cycle between folders, and the layering rules hold.
#[test]
fn folders_depend_one_way() {
    let graph = folder_graph(&repo_root().join("src"));
    assert_eq!(has_cycle(&graph), None, "{graph:#?}");
    for (folder, forbidden) in [("sources", "http"), ("sinks", "http"), ("monitor", "app"), ("model", "app")] {
        assert!(!graph[folder].contains(forbidden), "{folder} uses {forbidden}: {graph:#?}");
    }
    assert_eq!(graph["domain"], BTreeSet::from(["error".to_owned()]), "domain is the bottom layer");
    assert!(graph["telemetry"].is_empty(), "telemetry depends on nothing: {:?}", graph["telemetry"]);
}

/// No cycle between the files of one folder (`super::sibling` uses; the folder's `mod.rs`, which
/// declares its files, is left out).
#[test]
fn files_of_a_folder_depend_one_way() {
    let src = repo_root().join("src");
    let mut folders: BTreeMap<PathBuf, Vec<PathBuf>> = BTreeMap::new();
    for file in rust_files(&src) {
        folders.entry(file.parent().unwrap().to_owned()).or_default().push(file);
    }
    for (folder, files) in folders {
        let siblings: BTreeSet<String> = files
            .iter()
            .map(|file| file.file_stem().unwrap().to_string_lossy().into_owned())
            .filter(|stem| stem != "mod")
            .chain(std::fs::read_dir(&folder).unwrap().filter_map(|entry| {
                let path = entry.ok()?.path();
                path.is_dir().then(|| path.file_name().unwrap().to_string_lossy().into_owned())
            }))
            .collect();
        let mut graph: BTreeMap<String, BTreeSet<String>> = BTreeMap::new();
        for file in &files {
            let stem = file.file_stem().unwrap().to_string_lossy().into_owned();
            if stem == "mod" {
                continue;
            }
            let used = segments_after(&code(file), "super::");
            graph
                .entry(stem.clone())
                .or_default()
                .extend(used.into_iter().filter(|name| *name != stem && siblings.contains(name)));
        }
        assert_eq!(has_cycle(&graph), None, "{}: {graph:#?}", folder.display());
    }
}

/// Every source file of the worker and of the development tools stays at or under 400 lines.
#[test]
fn source_files_stay_small() {
    let root = repo_root();
    let long: Vec<(String, usize)> = [root.join("src"), root.join("devtools/src")]
        .iter()
        .flat_map(|directory| rust_files(directory))
        .map(|file| {
            let lines = std::fs::read_to_string(&file).unwrap().lines().count();
            (file.strip_prefix(&root).unwrap().display().to_string(), lines)
        })
        .filter(|(_, lines)| *lines > MAX_LINES)
        .collect();
    assert!(long.is_empty(), "over {MAX_LINES} lines: {long:?}");
}
