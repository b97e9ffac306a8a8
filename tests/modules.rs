//! The library's modules form a hierarchy without cycles: no module imports (through `use` or
//! a `crate::` / `super::` path) a module that imports it back, directly or through others.

use std::collections::{BTreeMap, BTreeSet};
use std::path::Path;

/// Module path (`engine::cpu`, `` for the crate root) → the text of its file, comments removed.
fn modules() -> BTreeMap<String, String> {
    fn walk(dir: &Path, prefix: &[String], out: &mut BTreeMap<String, String>) {
        for entry in std::fs::read_dir(dir).unwrap() {
            let path = entry.unwrap().path();
            let name = path.file_stem().unwrap().to_string_lossy().to_string();
            if path.is_dir() {
                if name != "bin" {
                    walk(&path, &[prefix, &[name]].concat(), out);
                }
                continue;
            }
            let module = match name.as_str() {
                "lib" | "mod" => prefix.to_vec(),
                _ => [prefix, &[name]].concat(),
            };
            let text = std::fs::read_to_string(&path).unwrap();
            let code: Vec<&str> = text.lines().map(|l| l.split("//").next().unwrap_or("")).collect();
            out.insert(module.join("::"), code.join("\n"));
        }
    }
    let mut out = BTreeMap::new();
    walk(&Path::new(env!("CARGO_MANIFEST_DIR")).join("src"), &[], &mut out);
    out
}

/// The paths a file names after `crate::`, `super::` or `self::`, resolved to module paths,
/// with `use` groups (`a::{b, c::d}`) expanded.
fn referenced_paths(module: &str, code: &str) -> Vec<Vec<String>> {
    let parent: Vec<String> = module.split("::").filter(|s| !s.is_empty()).map(String::from).collect();
    let mut paths = Vec::new();
    let text = code;
    for start in ["crate::", "super::", "self::"] {
        let mut from = 0;
        while let Some(at) = text[from..].find(start).map(|i| i + from) {
            from = at + start.len();
            let before = text[..at].chars().last().unwrap_or(' ');
            if before.is_alphanumeric() || before == '_' || (before == '$' && start == "crate::") {
                continue; // `$crate::` in a macro, or part of a longer name
            }
            let base: Vec<String> = match start {
                "crate::" => vec![],
                "super::" => parent[..parent.len().saturating_sub(1)].to_vec(),
                _ => parent.clone(),
            };
            expand(&text[from..], base, &mut paths);
        }
    }
    paths
}

/// Expands one path (`a::b::{c, d::e}`) whose leading segments are `base`.
fn expand(rest: &str, base: Vec<String>, out: &mut Vec<Vec<String>>) {
    let mut path = base;
    let mut segment = String::new();
    for (i, c) in rest.char_indices() {
        match c {
            'a'..='z' | 'A'..='Z' | '0'..='9' | '_' => segment.push(c),
            ':' if !segment.is_empty() => path.push(std::mem::take(&mut segment)),
            ':' => {}
            '{' => return expand_group(&rest[i + 1..], &path, out),
            _ => break,
        }
    }
    if !segment.is_empty() {
        path.push(segment);
    }
    out.push(path);
}

/// Expands each member of a `use` group (the text after its `{`) under `path`.
fn expand_group(group: &str, path: &[String], out: &mut Vec<Vec<String>>) {
    let (mut depth, mut member_start) = (0, 0);
    for (j, d) in group.char_indices() {
        match d {
            '{' => depth += 1,
            '}' if depth > 0 => depth -= 1,
            '}' | ',' if depth == 0 => {
                match group[member_start..j].trim() {
                    "self" => out.push(path.to_vec()),
                    "" => {}
                    member => expand(member, path.to_vec(), out),
                }
                member_start = j + 1;
                if d == '}' {
                    return;
                }
            }
            _ => {}
        }
    }
}

/// The longest prefix of `path` that is a module.
fn module_of(path: &[String], modules: &BTreeMap<String, String>) -> String {
    (0..=path.len()).rev().map(|n| path[..n].join("::")).find(|m| modules.contains_key(m)).unwrap_or_default()
}

#[test]
fn no_module_imports_a_module_that_imports_it_back() {
    let modules = modules();
    assert!(modules.contains_key("optimizer::step") && modules.contains_key("ffi::types"), "{:?}", modules.keys());
    let mut imports: BTreeMap<String, BTreeSet<String>> = BTreeMap::new();
    for (module, code) in &modules {
        let targets = imports.entry(module.clone()).or_default();
        for path in referenced_paths(module, code) {
            let target = module_of(&path, &modules);
            if &target != module {
                targets.insert(target);
            }
        }
    }
    // Depth-first search for a cycle, reporting it whole.
    fn visit(
        m: &str,
        imports: &BTreeMap<String, BTreeSet<String>>,
        stack: &mut Vec<String>,
        done: &mut BTreeSet<String>,
    ) -> Option<Vec<String>> {
        if let Some(at) = stack.iter().position(|s| s == m) {
            return Some([&stack[at..], &[m.to_string()]].concat());
        }
        if done.contains(m) {
            return None;
        }
        stack.push(m.to_string());
        for next in imports.get(m).into_iter().flatten() {
            if let Some(cycle) = visit(next, imports, stack, done) {
                return Some(cycle);
            }
        }
        stack.pop();
        done.insert(m.to_string());
        None
    }
    let mut done = BTreeSet::new();
    for module in modules.keys() {
        let cycle = visit(module, &imports, &mut Vec::new(), &mut done);
        let name = |m: &String| if m.is_empty() { "crate".to_string() } else { m.clone() };
        assert!(cycle.is_none(), "import cycle: {}", cycle.unwrap().iter().map(name).collect::<Vec<_>>().join(" -> "));
    }
    // The seam itself: the optimizer reaches the CPU engine only to create it, and the engines
    // never reach the optimizer or the C ABI.
    for engine in modules.keys().filter(|m| m.starts_with("engine")) {
        for target in &imports[engine] {
            assert!(!target.starts_with("optimizer") && !target.starts_with("ffi"), "{engine} imports {target}");
        }
    }
}
