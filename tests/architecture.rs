//! The layers, checked: every `crate::…`, `super::…` and `self::…` path in `src/` is
//! resolved to the file it names, each file is placed in a layer by its path, and a
//! dependency may only point to its own layer or one below. Also no cycle between the
//! units (a top-level module, or one feature module) of one layer. docs/ARCHITECTURE.md
//! ("Layers") says why each layer is where it is.
//!
//!   entry → transport → features → shared → infra
//!
//! A failure names the rule, the file and the path it used.

use std::{
    collections::{BTreeMap, BTreeSet},
    path::{Path, PathBuf},
};

#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord)]
enum Layer {
    /// Starts and stops everything: may use anything.
    Entry,
    /// Protocols: the server, the middleware, the REST and gRPC adapters, the routes of
    /// probes, docs and metrics, the registration of modules.
    Transport,
    /// The feature modules' services and repositories: the RealWorld domain.
    Features,
    /// What features share: identity, idempotency's store, pagination, validation, the
    /// operations table, readiness, the app state, leased jobs.
    Shared,
    /// What everything stands on: configuration, the database, the read cache, errors,
    /// the request's context, telemetry, metrics' recorder, entities, generated protos.
    Infra,
}

/// First match wins; `*` is one path segment, a trailing `**` any number.
const LAYERS: &[(&str, Layer)] = &[
    ("main.rs", Layer::Entry),
    ("lib.rs", Layer::Entry),
    ("cli.rs", Layer::Entry),
    ("lifecycle.rs", Layer::Entry),
    ("server/**", Layer::Transport),
    ("connection.rs", Layer::Transport),
    ("middleware/**", Layer::Transport),
    ("probes.rs", Layer::Transport),
    ("docs.rs", Layer::Transport),
    ("rest.rs", Layer::Transport),
    ("grpc.rs", Layer::Transport),
    ("metrics/scrape.rs", Layer::Transport),
    ("idempotency/mod.rs", Layer::Transport),
    ("modules/mod.rs", Layer::Transport),
    ("modules/legacy/**", Layer::Transport),
    ("modules/*/mod.rs", Layer::Transport),
    ("modules/*/rest.rs", Layer::Transport),
    ("modules/*/grpc.rs", Layer::Transport),
    ("modules/*/rest/**", Layer::Transport),
    ("modules/*/grpc/**", Layer::Transport),
    ("modules/**", Layer::Features),
    ("auth/**", Layer::Shared),
    ("idempotency/**", Layer::Shared),
    ("pagination.rs", Layer::Shared),
    ("validation.rs", Layer::Shared),
    ("values.rs", Layer::Shared),
    ("operations.rs", Layer::Shared),
    ("readiness.rs", Layer::Shared),
    ("state.rs", Layer::Shared),
    ("jobs.rs", Layer::Shared),
    ("db/**", Layer::Infra),
    ("config/**", Layer::Infra),
    ("cache/**", Layer::Infra),
    ("error/**", Layer::Infra),
    ("context.rs", Layer::Infra),
    ("telemetry/**", Layer::Infra),
    ("metrics/**", Layer::Infra),
    ("entities/**", Layer::Infra),
    ("proto.rs", Layer::Infra),
    ("proto/**", Layer::Infra),
];

/// Edges that break the rules today and are known; each must still exist (so the list
/// only shrinks), as `file -> file`.
const KNOWN_VIOLATIONS: &[&str] = &[];

fn matches(pattern: &str, file: &str) -> bool {
    let (pattern, file): (Vec<&str>, Vec<&str>) =
        (pattern.split('/').collect(), file.split('/').collect());
    if pattern.last() == Some(&"**") {
        let prefix = &pattern[..pattern.len() - 1];
        return file.len() > prefix.len()
            && prefix.iter().zip(&file).all(|(p, f)| *p == "*" || p == f);
    }
    pattern.len() == file.len() && pattern.iter().zip(&file).all(|(p, f)| *p == "*" || p == f)
}

fn layer_of(file: &str) -> Layer {
    LAYERS
        .iter()
        .find(|(pattern, _)| matches(pattern, file))
        .map(|(_, layer)| *layer)
        .unwrap_or_else(|| panic!("{file} is in no layer: add it to LAYERS"))
}

/// The unit cycles are looked for between: a top-level module, or one feature module.
fn unit_of(file: &str) -> String {
    let segments: Vec<&str> = file.trim_end_matches(".rs").split('/').collect();
    match segments.as_slice() {
        ["modules", name, ..] if *name != "mod" => format!("modules::{name}"),
        [first, ..] => first.to_string(),
        [] => String::new(),
    }
}

fn sources(dir: &Path, root: &Path, out: &mut Vec<String>) {
    for entry in std::fs::read_dir(dir).expect("src") {
        let path = entry.expect("entry").path();
        if path.is_dir() {
            sources(&path, root, out);
        } else if path.extension().is_some_and(|e| e == "rs") {
            let relative = path.strip_prefix(root).expect("under src");
            out.push(relative.to_string_lossy().replace('\\', "/"));
        }
    }
}

/// The module path of a file: `modules/articles/rest.rs` → `[modules, articles, rest]`.
fn module_of(file: &str) -> Vec<String> {
    let mut segments: Vec<String> = file
        .trim_end_matches(".rs")
        .split('/')
        .map(String::from)
        .collect();
    if matches!(
        segments.last().map(String::as_str),
        Some("mod" | "lib" | "main")
    ) {
        segments.pop();
    }
    segments
}

/// The code a layer check reads: comments and unit-test modules removed (tests may
/// reach anywhere; inside them `super` means the file itself).
fn code(text: &str) -> String {
    let text = text.split("#[cfg(test)]").next().unwrap_or_default();
    let mut code = text
        .lines()
        .map(|line| match line.find("//") {
            Some(at) => &line[..at],
            None => line,
        })
        .collect::<Vec<_>>()
        .join("\n");
    // `pub(in crate::a::b)` names where an item is visible, not something it uses.
    while let Some(at) = code.find("pub(in ") {
        let end = code[at..].find(')').map_or(code.len(), |e| at + e + 1);
        code.replace_range(at..end, "pub");
    }
    code
}

/// Expands a use tree (`a::{b, c::{d}}`) into its paths.
fn expand(tree: &str, prefix: &str, out: &mut Vec<String>) {
    let tree = tree.trim();
    if let Some(open) = tree.find('{') {
        let head = tree[..open].trim().trim_end_matches("::");
        let inner = &tree[open + 1..tree.rfind('}').unwrap_or(tree.len())];
        let prefix = join(prefix, head);
        let mut depth = 0;
        let mut start = 0;
        for (i, c) in inner.char_indices() {
            match c {
                '{' => depth += 1,
                '}' => depth -= 1,
                ',' if depth == 0 => {
                    expand(&inner[start..i], &prefix, out);
                    start = i + 1;
                }
                _ => {}
            }
        }
        expand(&inner[start..], &prefix, out);
    } else if !tree.is_empty() && tree != "self" {
        // `a::{self}` only brings the name `a` in; what the file then reaches through it
        // (`a::repo::…`) is not followed, a known blind spot.
        let path = tree.split(" as ").next().unwrap_or(tree).trim();
        out.push(join(prefix, path));
    }
}

fn join(prefix: &str, path: &str) -> String {
    match (prefix.is_empty(), path.is_empty()) {
        (true, _) => path.to_string(),
        (_, true) => prefix.to_string(),
        _ => format!("{prefix}::{path}"),
    }
}

/// Every path a file names that starts at `crate`, `super` or `self`.
fn paths_in(code: &str) -> Vec<String> {
    let mut paths = Vec::new();
    let mut rest = code;
    while let Some(at) = rest.find("use ") {
        let before = rest[..at].chars().last();
        rest = &rest[at + 4..];
        if before.is_some_and(|c| c.is_alphanumeric() || c == '_') {
            continue;
        }
        let end = rest.find(';').unwrap_or(rest.len());
        let tree: String = rest[..end].split_whitespace().collect::<Vec<_>>().join(" ");
        if ["crate::", "super::", "self::"]
            .iter()
            .any(|root| tree.starts_with(root))
        {
            expand(&tree, "", &mut paths);
        }
    }
    // Paths written out in the code (`crate::db::pool_usage(…)`).
    for root in ["crate::", "super::"] {
        let mut rest = code;
        while let Some(at) = rest.find(root) {
            let before = rest[..at].chars().last();
            let tail = &rest[at..];
            let len = tail
                .find(|c: char| !(c.is_alphanumeric() || c == '_' || c == ':'))
                .unwrap_or(tail.len());
            let path = tail[..len].trim_end_matches(':');
            // `use crate::a::{…}` is the use tree's business, read above.
            if !tail[len..].starts_with('{')
                && !before.is_some_and(|c| c.is_alphanumeric() || c == '_' || c == ':')
            {
                paths.push(path.to_string());
            }
            rest = &rest[at + root.len()..];
        }
    }
    paths
}

/// The file a path leads into: the longest prefix of it that is a module file.
fn resolve(path: &str, from: &[String], files: &BTreeSet<String>) -> Option<String> {
    let mut segments: Vec<String> = Vec::new();
    for (i, segment) in path.split("::").enumerate() {
        match (i, segment) {
            (0, "crate") => {}
            (0, "self") => segments = from.to_vec(),
            (_, "super") => {
                if segments.is_empty() && i == 0 {
                    segments = from.to_vec();
                }
                segments.pop();
            }
            (_, "{") | (_, "*") | (_, "self") => {}
            _ => segments.push(segment.to_string()),
        }
    }
    (1..=segments.len()).rev().find_map(|n| {
        let prefix = segments[..n].join("/");
        [format!("{prefix}.rs"), format!("{prefix}/mod.rs")]
            .into_iter()
            .find(|file| files.contains(file))
    })
}

#[test]
fn dependencies_point_down_and_units_form_no_cycle() {
    let root = PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("src");
    let mut files = Vec::new();
    sources(&root, &root, &mut files);
    let known: BTreeSet<String> = files.iter().cloned().collect();
    assert!(known.len() > 50, "read {} files from {root:?}", known.len());

    let mut edges: BTreeSet<(String, String, String)> = BTreeSet::new();
    for file in &files {
        let text = std::fs::read_to_string(root.join(file)).expect("source");
        let from = module_of(file);
        for path in paths_in(&code(&text)) {
            if let Some(target) = resolve(&path, &from, &known)
                && target != *file
            {
                edges.insert((file.clone(), target, path));
            }
        }
    }
    // The parser must see what is there: a few edges every reader can check by eye.
    for (from, to) in [
        ("server/stack.rs", "middleware/guard.rs"),
        ("modules/articles/service.rs", "state.rs"),
        ("modules/articles/rest.rs", "modules/articles/service.rs"),
        ("db/work.rs", "cache/mod.rs"),
        ("error/rest.rs", "context.rs"),
    ] {
        assert!(
            edges.iter().any(|(f, t, _)| f == from && t == to),
            "the parser missed {from} -> {to}"
        );
    }

    // Error rendering is handed the request's ids (`error::quote_ids`, by `observe`); it
    // may know the protocol it renders for, never look the ids up.
    let looked_up: Vec<_> = edges
        .iter()
        .filter(|(from, to, path)| {
            from.starts_with("error/") && to == "context.rs" && !path.ends_with("Protocol")
        })
        .collect();
    assert!(
        looked_up.is_empty(),
        "error rendering takes the request's ids as arguments, not from `context`: {looked_up:?}"
    );

    let mut broken = Vec::new();
    let mut seen_known = BTreeSet::new();
    for (from, to, path) in &edges {
        let (source, target) = (layer_of(from), layer_of(to));
        if target < source {
            let edge = format!("{from} -> {to}");
            if KNOWN_VIOLATIONS.contains(&edge.as_str()) {
                seen_known.insert(edge);
                continue;
            }
            broken.push(format!(
                "{from} ({source:?}) uses `{path}` in {to} ({target:?}): a layer may use only its own or those below"
            ));
        }
    }
    let gone: Vec<&&str> = KNOWN_VIOLATIONS
        .iter()
        .filter(|v| !seen_known.contains(**v))
        .collect();
    assert!(
        gone.is_empty(),
        "fixed, so take them off KNOWN_VIOLATIONS: {gone:?}"
    );

    // Cycles between the units of a layer (between layers, the rule above already
    // forbids the way back).
    let mut graph: BTreeMap<String, BTreeSet<String>> = BTreeMap::new();
    for (from, to, _) in &edges {
        let (a, b) = (unit_of(from), unit_of(to));
        if a != b && layer_of(from) == layer_of(to) {
            graph.entry(a).or_default().insert(b);
        }
    }
    for cycle in cycles(&graph) {
        broken.push(format!(
            "units depend on each other in a cycle: {}",
            cycle.join(" -> ")
        ));
    }
    assert!(broken.is_empty(), "{}", broken.join("\n"));
}

/// Each cycle once, as the path that closes it (depth-first from every unit).
fn cycles(graph: &BTreeMap<String, BTreeSet<String>>) -> Vec<Vec<String>> {
    fn walk(
        graph: &BTreeMap<String, BTreeSet<String>>,
        path: &mut Vec<String>,
        found: &mut BTreeSet<Vec<String>>,
    ) {
        let Some(last) = path.last().cloned() else {
            return;
        };
        for next in graph.get(&last).into_iter().flatten() {
            if let Some(at) = path.iter().position(|unit| unit == next) {
                let mut cycle = path[at..].to_vec();
                // One rotation per cycle: start at its smallest unit.
                let start = cycle
                    .iter()
                    .enumerate()
                    .min_by_key(|(_, unit)| unit.as_str())
                    .map_or(0, |(i, _)| i);
                cycle.rotate_left(start);
                cycle.push(cycle[0].clone());
                found.insert(cycle);
            } else if path.len() < 12 {
                path.push(next.clone());
                walk(graph, path, found);
                path.pop();
            }
        }
    }
    let mut found = BTreeSet::new();
    for unit in graph.keys() {
        walk(graph, &mut vec![unit.clone()], &mut found);
    }
    found.into_iter().collect()
}

#[test]
fn the_checker_catches_an_upward_edge_and_a_cycle() {
    assert!(layer_of("db/work.rs") > layer_of("middleware/timeout.rs"));
    assert_eq!(layer_of("modules/articles/rest.rs"), Layer::Transport);
    assert_eq!(layer_of("modules/articles/reads.rs"), Layer::Features);
    let files: BTreeSet<String> = ["db/work.rs", "middleware/mod.rs", "middleware/shed.rs"]
        .into_iter()
        .map(String::from)
        .collect();
    let mut paths = Vec::new();
    expand(
        "crate::{middleware::{shed::Place, layer_fn, self}, db}",
        "",
        &mut paths,
    );
    let resolved: Vec<Option<String>> = paths
        .iter()
        .map(|p| resolve(p, &module_of("db/work.rs"), &files))
        .collect();
    assert_eq!(
        resolved,
        [
            Some("middleware/shed.rs".to_string()),
            Some("middleware/mod.rs".to_string()),
            None
        ]
    );
    let graph: BTreeMap<String, BTreeSet<String>> = [
        ("auth", vec!["cache"]),
        ("cache", vec!["error"]),
        ("error", vec!["auth"]),
    ]
    .into_iter()
    .map(|(a, bs)| (a.to_string(), bs.into_iter().map(String::from).collect()))
    .collect();
    assert_eq!(
        cycles(&graph),
        [["auth", "cache", "error", "auth"]
            .map(String::from)
            .to_vec()]
    );
}
