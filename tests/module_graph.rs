//! The module graph of src/ has no import cycles, at file level.
//!
//! An edge A -> B means file A names an item that file B defines: through a `use` or a path in
//! the code (`crate::x::Y`, `super::y::Z`, `lightunet::x::Y` from the binary). A path that ends
//! at a re-export (`pub use child::Y` in a `mod.rs`) is followed to the file that defines `Y`, so
//! a facade that re-exports its children is not a cycle as long as the children never import the
//! facade itself. Declaring a child module (`mod x;`) is not an edge. Test modules count: a
//! cycle that only tests close is still one file depending on another that depends on it.
//!
//! Cycles make a change in one file ripple through every file of the cycle and forbid reading
//! any of them alone; this test keeps src/ a DAG (ARCHITECTURE.md has the map).

use std::collections::{BTreeMap, BTreeSet, HashMap};
use std::fs;
use std::path::{Path, PathBuf};

/// One source file: its module path (`["model", "ops"]`) in its crate (`lib` or `bin`).
#[derive(Debug, Clone)]
struct ModFile {
    krate: &'static str,
    module: Vec<String>,
    path: PathBuf,
    text: String,
}

/// Source text with comments, string and char literals blanked (kept the same length, newlines
/// kept), so that scanning for paths and braces sees code only.
fn code_only(src: &str) -> String {
    let b = src.as_bytes();
    let mut out = b.to_vec();
    let mut i = 0;
    let blank = |out: &mut Vec<u8>, from: usize, to: usize| {
        for c in &mut out[from..to] {
            if *c != b'\n' {
                *c = b' ';
            }
        }
    };
    let ident = |c: u8| c.is_ascii_alphanumeric() || c == b'_';
    while i < b.len() {
        let c = b[i];
        if c == b'/' && b.get(i + 1) == Some(&b'/') {
            let end = src[i..].find('\n').map_or(b.len(), |e| i + e);
            blank(&mut out, i, end);
            i = end;
        } else if c == b'/' && b.get(i + 1) == Some(&b'*') {
            let mut depth = 0;
            let mut j = i;
            while j < b.len() {
                if b[j] == b'/' && b.get(j + 1) == Some(&b'*') {
                    depth += 1;
                    j += 2;
                } else if b[j] == b'*' && b.get(j + 1) == Some(&b'/') {
                    depth -= 1;
                    j += 2;
                    if depth == 0 {
                        break;
                    }
                } else {
                    j += 1;
                }
            }
            blank(&mut out, i, j.min(b.len()));
            i = j;
        } else if c == b'r' && (i == 0 || !ident(b[i - 1])) && matches!(b.get(i + 1), Some(b'"') | Some(b'#')) {
            // Raw string r"..." or r#"..."#.
            let mut j = i + 1;
            let mut hashes = 0;
            while b.get(j) == Some(&b'#') {
                hashes += 1;
                j += 1;
            }
            if b.get(j) != Some(&b'"') {
                i += 1;
                continue;
            }
            let close: String = std::iter::once('"').chain(std::iter::repeat_n('#', hashes)).collect();
            let end = src[j + 1..].find(&close).map_or(b.len(), |e| j + 1 + e + close.len());
            blank(&mut out, i, end);
            i = end;
        } else if c == b'"' {
            let mut j = i + 1;
            while j < b.len() && b[j] != b'"' {
                j += if b[j] == b'\\' { 2 } else { 1 };
            }
            blank(&mut out, i, (j + 1).min(b.len()));
            i = j + 1;
        } else if c == b'\'' {
            // A char literal ('x', '\n', '\u{..}') or a lifetime ('a).
            if b.get(i + 1) == Some(&b'\\') {
                let end = src[i + 2..].find('\'').map_or(b.len(), |e| i + 2 + e + 1);
                blank(&mut out, i, end);
                i = end;
            } else if let Some(ch) = src[i + 1..].chars().next() {
                let after = i + 1 + ch.len_utf8();
                if b.get(after) == Some(&b'\'') {
                    blank(&mut out, i, after + 1);
                    i = after + 1;
                } else {
                    i += 1;
                }
            } else {
                i += 1;
            }
        } else {
            i += 1;
        }
    }
    String::from_utf8_lossy(&out).into_owned()
}

/// `mod name;` declarations (not inline `mod name { .. }`), in the file's own scope.
fn declared_children(code: &str) -> Vec<String> {
    let mut out = Vec::new();
    for (pos, _) in code.match_indices("mod ") {
        if pos > 0 && (code.as_bytes()[pos - 1].is_ascii_alphanumeric() || code.as_bytes()[pos - 1] == b'_') {
            continue;
        }
        let rest = &code[pos + 4..];
        let name: String = rest.chars().take_while(|c| c.is_ascii_alphanumeric() || *c == '_').collect();
        let after = rest[name.len()..].trim_start();
        if !name.is_empty() && after.starts_with(';') {
            out.push(name);
        }
    }
    out
}

fn load_crate(krate: &'static str, root: &Path, files: &mut Vec<ModFile>) {
    let text = fs::read_to_string(root).unwrap_or_else(|e| panic!("{}: {e}", root.display()));
    let dir = root.parent().unwrap_or(Path::new(".")).to_path_buf();
    walk(krate, Vec::new(), dir, root.to_path_buf(), text, files);
}

fn walk(krate: &'static str, module: Vec<String>, child_dir: PathBuf, path: PathBuf, text: String, files: &mut Vec<ModFile>) {
    let code = code_only(&text);
    for child in declared_children(&code) {
        let flat = child_dir.join(format!("{child}.rs"));
        let nested = child_dir.join(&child).join("mod.rs");
        let (p, dir) = if flat.exists() {
            (flat, child_dir.join(&child))
        } else if nested.exists() {
            (nested, child_dir.join(&child))
        } else {
            panic!("{}: module `{child}` has no file", path.display())
        };
        let t = fs::read_to_string(&p).unwrap_or_else(|e| panic!("{}: {e}", p.display()));
        let mut m = module.clone();
        m.push(child);
        walk(krate, m, dir, p, t, files);
    }
    files.push(ModFile { krate, module, path, text: code });
}

/// Expands a `use` tree (`a::{b, c::{d as e}, f::*}`) into full paths.
fn expand_use(tree: &str) -> Vec<Vec<String>> {
    fn split_top(s: &str) -> Vec<&str> {
        let mut parts = Vec::new();
        let (mut depth, mut start) = (0, 0);
        for (i, c) in s.char_indices() {
            match c {
                '{' => depth += 1,
                '}' => depth -= 1,
                ',' if depth == 0 => {
                    parts.push(&s[start..i]);
                    start = i + 1;
                }
                _ => {}
            }
        }
        parts.push(&s[start..]);
        parts
    }
    fn go(prefix: &[String], s: &str, out: &mut Vec<Vec<String>>) {
        let s = s.trim();
        if s.is_empty() {
            return;
        }
        if let Some(open) = s.find('{') {
            let head = s[..open].trim().trim_end_matches("::");
            let inner = &s[open + 1..s.rfind('}').unwrap_or(s.len())];
            let mut p = prefix.to_vec();
            p.extend(head.split("::").map(str::trim).filter(|x| !x.is_empty()).map(String::from));
            for part in split_top(inner) {
                go(&p, part, out);
            }
        } else {
            let s = s.split(" as ").next().unwrap_or(s);
            let mut p = prefix.to_vec();
            p.extend(s.split("::").map(str::trim).filter(|x| !x.is_empty()).map(String::from));
            if p.last().is_some_and(|l| l == "self") {
                p.pop();
            }
            out.push(p);
        }
    }
    let mut out = Vec::new();
    go(&[], tree, &mut out);
    out
}

/// A path as written at some point of a file, with the number of inline modules (`mod tests {`)
/// around it (their `super` is the file's own module).
struct Written {
    path: Vec<String>,
    inline_depth: usize,
    is_pub_use: bool,
}

fn ident_char(c: u8) -> bool {
    c.is_ascii_alphanumeric() || c == b'_'
}

/// Every `use` path and every `crate::`/`super::`/`self::`/`lightunet::` path in the code.
fn written_paths(code: &str) -> Vec<Written> {
    let b = code.as_bytes();
    let mut out = Vec::new();
    let mut depth = 0usize;
    let mut inline: Vec<usize> = Vec::new(); // brace depth at which each inline module opened
    let mut i = 0;
    while i < b.len() {
        let c = b[i];
        if c == b'{' {
            depth += 1;
            i += 1;
            continue;
        }
        if c == b'}' {
            depth = depth.saturating_sub(1);
            if inline.last() == Some(&depth) {
                inline.pop();
            }
            i += 1;
            continue;
        }
        let word_start = i == 0 || !ident_char(b[i - 1]);
        if word_start && code[i..].starts_with("mod ") {
            let rest = &code[i + 4..];
            let name_len = rest.bytes().take_while(|&c| ident_char(c)).count();
            if name_len > 0 && rest[name_len..].trim_start().starts_with('{') {
                inline.push(depth);
            }
        }
        if word_start && code[i..].starts_with("use ") {
            let end = code[i..].find(';').map_or(b.len(), |e| i + e);
            let before = code[..i].trim_end();
            let is_pub_use = before.ends_with("pub") || before.ends_with(')') && before.rfind("pub(").is_some_and(|p| before[p..].len() < 16);
            for p in expand_use(&code[i + 4..end]) {
                out.push(Written { path: p, inline_depth: inline.len(), is_pub_use });
            }
            i = end;
            continue;
        }
        if word_start {
            for root in ["crate::", "super::", "self::", "lightunet::"] {
                if code[i..].starts_with(root) {
                    let mut j = i;
                    let mut path = Vec::new();
                    loop {
                        let seg_len = code[j..].bytes().take_while(|&c| ident_char(c)).count();
                        if seg_len == 0 {
                            break;
                        }
                        path.push(code[j..j + seg_len].to_string());
                        j += seg_len;
                        if code[j..].starts_with("::") && code[j + 2..].bytes().next().is_some_and(ident_char) {
                            j += 2;
                        } else {
                            break;
                        }
                    }
                    out.push(Written { path, inline_depth: inline.len(), is_pub_use: false });
                    i = j;
                    break;
                }
            }
        }
        i += 1;
    }
    out
}

struct Graph {
    files: Vec<ModFile>,
    /// (crate, module path) -> file index
    by_module: HashMap<(&'static str, Vec<String>), usize>,
}

impl Graph {
    /// The absolute path (crate, segments) a written path means in file `f`; `None` for paths
    /// outside the project (std, candle, ...).
    fn absolute(&self, f: usize, w: &Written) -> Option<(&'static str, Vec<String>)> {
        let file = &self.files[f];
        let mut segs = w.path.clone();
        let first = segs.first()?.clone();
        let (krate, mut base): (&'static str, Vec<String>) = match first.as_str() {
            "crate" => {
                segs.remove(0);
                (file.krate, Vec::new())
            }
            "lightunet" => {
                segs.remove(0);
                ("lib", Vec::new())
            }
            "self" => {
                segs.remove(0);
                (file.krate, file.module.clone())
            }
            "super" => {
                let mut base = file.module.clone();
                let mut inline = w.inline_depth;
                while segs.first().is_some_and(|s| s == "super") {
                    segs.remove(0);
                    if inline > 0 {
                        inline -= 1; // `super` of an inline module is this file
                    } else {
                        base.pop();
                    }
                }
                (file.krate, base)
            }
            _ => {
                // A path relative to this module: a child module's name.
                let mut m = file.module.clone();
                m.push(first.clone());
                if self.by_module.contains_key(&(file.krate, m)) {
                    (file.krate, file.module.clone())
                } else {
                    return None;
                }
            }
        };
        base.extend(segs);
        Some((krate, base))
    }

    /// The file that defines what `path` names: the longest module prefix, then through its
    /// re-exports.
    fn target(&self, krate: &'static str, path: &[String], hops: usize) -> Option<usize> {
        let mut k = path.len();
        let m = loop {
            if let Some(&m) = self.by_module.get(&(krate, path[..k].to_vec())) {
                break m;
            }
            if k == 0 {
                return None;
            }
            k -= 1;
        };
        if k < path.len() && hops < 8 {
            let item = &path[k];
            // Follow `pub use x::item` in that module.
            for w in written_paths(&self.files[m].text) {
                if w.is_pub_use && w.inline_depth == 0 && w.path.last() == Some(item) {
                    if let Some((kr, abs)) = self.absolute(m, &w) {
                        if let Some(t) = self.target(kr, &abs, hops + 1) {
                            return Some(t);
                        }
                    }
                }
            }
        }
        Some(m)
    }
}

/// Strongly connected components of more than one file (Tarjan).
fn cycles(n: usize, edges: &[BTreeSet<usize>]) -> Vec<Vec<usize>> {
    struct St<'a> {
        edges: &'a [BTreeSet<usize>],
        index: Vec<Option<usize>>,
        low: Vec<usize>,
        on: Vec<bool>,
        stack: Vec<usize>,
        next: usize,
        out: Vec<Vec<usize>>,
    }
    fn visit(s: &mut St, v: usize) {
        s.index[v] = Some(s.next);
        s.low[v] = s.next;
        s.next += 1;
        s.stack.push(v);
        s.on[v] = true;
        for &w in s.edges[v].clone().iter() {
            match s.index[w] {
                None => {
                    visit(s, w);
                    s.low[v] = s.low[v].min(s.low[w]);
                }
                Some(iw) if s.on[w] => s.low[v] = s.low[v].min(iw),
                _ => {}
            }
        }
        if Some(s.low[v]) == s.index[v] {
            let mut comp = Vec::new();
            while let Some(w) = s.stack.pop() {
                s.on[w] = false;
                comp.push(w);
                if w == v {
                    break;
                }
            }
            if comp.len() > 1 {
                s.out.push(comp);
            }
        }
    }
    let mut s = St { edges, index: vec![None; n], low: vec![0; n], on: vec![false; n], stack: Vec::new(), next: 0, out: Vec::new() };
    for v in 0..n {
        if s.index[v].is_none() {
            visit(&mut s, v);
        }
    }
    s.out
}

fn graph_of(src: &Path) -> (Graph, Vec<BTreeSet<usize>>) {
    let mut files = Vec::new();
    load_crate("lib", &src.join("lib.rs"), &mut files);
    if src.join("main.rs").exists() {
        load_crate("bin", &src.join("main.rs"), &mut files);
    }
    let by_module = files.iter().enumerate().map(|(i, f)| ((f.krate, f.module.clone()), i)).collect();
    let g = Graph { files, by_module };
    let edges = (0..g.files.len())
        .map(|f| {
            written_paths(&g.files[f].text)
                .iter()
                .filter_map(|w| g.absolute(f, w))
                .filter_map(|(k, abs)| g.target(k, &abs, 0))
                .filter(|&t| t != f)
                .collect()
        })
        .collect();
    (g, edges)
}

fn describe(g: &Graph, edges: &[BTreeSet<usize>], comp: &[usize], root: &Path) -> String {
    let set: BTreeSet<usize> = comp.iter().copied().collect();
    let name = |i: usize| g.files[i].path.strip_prefix(root).unwrap_or(&g.files[i].path).display().to_string();
    let mut lines: BTreeMap<String, Vec<String>> = BTreeMap::new();
    for &a in comp {
        for &b in edges[a].iter().filter(|b| set.contains(b)) {
            lines.entry(name(a)).or_default().push(name(b));
        }
    }
    lines.iter().map(|(a, bs)| format!("    {a} -> {}", bs.join(", "))).collect::<Vec<_>>().join("\n")
}

#[test]
fn src_has_no_import_cycles() {
    let root = Path::new(env!("CARGO_MANIFEST_DIR"));
    let (g, edges) = graph_of(&root.join("src"));
    assert!(g.files.len() > 20, "found only {} files: the walk is broken", g.files.len());
    let found = cycles(g.files.len(), &edges);
    let report: Vec<String> = found.iter().map(|c| describe(&g, &edges, c, root)).collect();
    assert!(found.is_empty(), "{} import cycle(s) in src/:\n{}", found.len(), report.join("\n  --\n"));
}

/// The top-level modules of the library (model, pipeline, train, checkpoint, ...) form a DAG too:
/// a folder may not depend on a module that depends back on any file of the folder.
#[test]
fn top_level_modules_are_layered() {
    let root = Path::new(env!("CARGO_MANIFEST_DIR"));
    let (g, edges) = graph_of(&root.join("src"));
    let top = |i: usize| g.files[i].module.first().cloned().unwrap_or_default();
    let names: Vec<String> =
        (0..g.files.len()).filter(|&i| g.files[i].krate == "lib").map(top).collect::<BTreeSet<_>>().into_iter().collect();
    let at = |n: &String| names.iter().position(|x| x == n).unwrap_or(0);
    let mut top_edges = vec![BTreeSet::new(); names.len()];
    for (a, bs) in edges.iter().enumerate() {
        if g.files[a].krate != "lib" {
            continue;
        }
        for &b in bs {
            let (ta, tb) = (at(&top(a)), at(&top(b)));
            // The crate root (lib.rs, named "") declares everything: not a layer.
            if ta != tb && !names[ta].is_empty() && !names[tb].is_empty() {
                top_edges[ta].insert(tb);
            }
        }
    }
    let found = cycles(names.len(), &top_edges);
    let report: Vec<String> = found
        .iter()
        .map(|c| c.iter().map(|&i| format!("{} -> {:?}", names[i], top_edges[i].iter().map(|&j| &names[j]).collect::<Vec<_>>())).collect::<Vec<_>>().join("; "))
        .collect();
    assert!(found.is_empty(), "top-level modules in a cycle: {}", report.join(" | "));
    // The layering, for ARCHITECTURE.md: `cargo test --test module_graph -- --nocapture`.
    for (i, deps) in top_edges.iter().enumerate().filter(|(i, _)| !names[*i].is_empty()) {
        let deps: Vec<&str> = deps.iter().map(|&j| names[j].as_str()).filter(|d| *d != "error").collect();
        println!("{:<14} -> {}", names[i], deps.join(", "));
    }
}

/// The checker itself finds a cycle through a facade, follows re-exports, and ignores paths in
/// comments and strings.
#[test]
fn checker_sees_cycles_and_reexports() {
    let dir = std::env::temp_dir().join(format!("lightunet-modgraph-{}", std::process::id()));
    let _ = fs::remove_dir_all(&dir);
    let write = |rel: &str, text: &str| {
        let p = dir.join(rel);
        fs::create_dir_all(p.parent().unwrap()).unwrap();
        fs::write(p, text).unwrap();
    };
    // ops/mod.rs re-exports kernel::run and defines a helper that kernel.rs imports: a cycle.
    write("lib.rs", "pub mod ops;\npub mod user;\n");
    write("ops/mod.rs", "mod kernel;\npub use kernel::run;\npub fn helper() {}\n");
    write("ops/kernel.rs", "use super::helper;\npub fn run() { helper() }\n");
    // user.rs goes through the facade to kernel.rs: an edge to kernel, not to ops/mod.rs.
    write("user.rs", "// crate::ops::helper in a comment is no edge\nconst S: &str = \"crate::ops::helper\";\npub fn f() { crate::ops::run() }\n");
    let (g, edges) = graph_of(&dir);
    let idx = |m: &str| g.files.iter().position(|f| f.module.join("::") == m).unwrap();
    let (ops, kernel, user) = (idx("ops"), idx("ops::kernel"), idx("user"));
    assert!(edges[user].contains(&kernel) && !edges[user].contains(&ops), "{:?}", edges[user]);
    let c = cycles(g.files.len(), &edges);
    assert_eq!(c.len(), 1);
    assert_eq!(c[0].iter().copied().collect::<BTreeSet<_>>(), [ops, kernel].into_iter().collect());
    // With the helper in a leaf module the cycle is gone.
    write("ops/mod.rs", "mod kernel;\nmod buf;\npub use kernel::run;\n");
    write("ops/buf.rs", "pub fn helper() {}\n");
    write("ops/kernel.rs", "use super::buf::helper;\npub fn run() { helper() }\n#[cfg(test)]\nmod tests { use super::*; }\n");
    let (g, edges) = graph_of(&dir);
    assert!(cycles(g.files.len(), &edges).is_empty());
    let _ = fs::remove_dir_all(&dir);
}
