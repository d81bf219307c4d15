//! The library's files import one way: the graph drawn from every `use`
//! and every `crate::`, `super::`, `self::` or child-module path in `src/`
//! (the library; the binaries stand outside it) has no circle, so a layer
//! never reaches back up to a layer above it. Test modules (`#[cfg(test)]`)
//! are left out: they may use anything. Parsed with `syn`, so a path is
//! read as the compiler reads it, grouped `use` trees and macro arguments
//! included.

use std::{
    collections::{BTreeMap, BTreeSet},
    path::{Path, PathBuf},
};

use syn::visit::Visit;

#[test]
fn no_file_of_the_library_imports_along_a_circle() {
    let src = Path::new(env!("CARGO_MANIFEST_DIR")).join("src");
    let graph = import_graph(&src);
    no_circle(&graph, "files");
}

/// The rooms of the library (its folders, and each file at its top) import
/// one way too: no two rooms reach into each other, directly or around a
/// circle, so `store/` never calls up into `watch/` while `watch/` reads
/// the store.
#[test]
fn no_room_of_the_library_imports_along_a_circle() {
    let src = Path::new(env!("CARGO_MANIFEST_DIR")).join("src");
    let room = |file: &str| {
        let first = file.split('/').next().unwrap_or(file);
        first.trim_end_matches(".rs").to_owned()
    };
    let mut rooms = Graph::new();
    for (from, edges) in import_graph(&src) {
        let entry = rooms.entry(room(&from)).or_default();
        for (to, names) in edges {
            if room(&to) != room(&from) {
                let names = names.into_iter().map(|n| format!("{n} ({from} -> {to})"));
                entry.entry(room(&to)).or_default().extend(names);
            }
        }
    }
    no_circle(&rooms, "rooms");
}

/// Fails naming every circle of `graph` (of `what`: files, rooms) and the
/// names each takes from the next.
fn no_circle(graph: &Graph, what: &str) {
    let circles: Vec<_> = circles(graph).into_iter().filter(|c| c.len() > 1).collect();
    let mut report = String::new();
    for circle in &circles {
        report.push_str(&format!("a circle of {} {what}:\n", circle.len()));
        for from in circle {
            for (to, names) in &graph[from] {
                if circle.contains(to) {
                    let names: Vec<_> = names.iter().map(String::as_str).collect();
                    report.push_str(&format!("  {from} -> {to}: {}\n", names.join(", ")));
                }
            }
        }
    }
    assert!(circles.is_empty(), "{report}");
}

/// The checker finds a circle where there is one, and none where there is
/// none, on a graph small enough to see.
#[test]
fn the_circle_finder_finds_circles() {
    let edge = |from: &str, to: &[&str]| {
        let to = to.iter().map(|t| (t.to_string(), BTreeSet::new())).collect();
        (from.to_string(), to)
    };
    let graph: Graph = [
        edge("a", &["b"]),
        edge("b", &["c"]),
        edge("c", &["a", "d"]),
        edge("d", &[]),
    ]
    .into();
    let found: Vec<_> = circles(&graph).into_iter().filter(|c| c.len() > 1).collect();
    assert_eq!(found, vec![BTreeSet::from(["a".into(), "b".into(), "c".into()])]);
    let graph: Graph = [edge("a", &["b"]), edge("b", &["c"]), edge("c", &[])].into();
    assert!(circles(&graph).into_iter().all(|c| c.len() == 1));
}

/// file -> the files it takes names from, and which names.
type Graph = BTreeMap<String, BTreeMap<String, BTreeSet<String>>>;

/// Every file of the library (`src/` but `main.rs` and `bin/`), by its
/// module path (`app::sessions`; `` for `lib.rs`).
fn modules(src: &Path) -> BTreeMap<Vec<String>, PathBuf> {
    let mut found = BTreeMap::new();
    let mut dirs = vec![src.to_path_buf()];
    while let Some(dir) = dirs.pop() {
        for entry in std::fs::read_dir(&dir).expect("src/") {
            let path = entry.expect("an entry").path();
            let rel = path.strip_prefix(src).expect("under src/");
            if rel == Path::new("bin") || rel == Path::new("main.rs") {
                continue;
            }
            if path.is_dir() {
                dirs.push(path);
            } else if path.extension().is_some_and(|e| e == "rs") {
                let mut module: Vec<String> = rel.iter().map(|p| p.to_string_lossy().into_owned()).collect();
                let file = module.pop().expect("a file name");
                let stem = file.trim_end_matches(".rs");
                if stem != "mod" && stem != "lib" {
                    module.push(stem.to_owned());
                }
                found.insert(module, path);
            }
        }
    }
    found
}

fn import_graph(src: &Path) -> Graph {
    let modules = modules(src);
    let name = |m: &[String]| modules[m].strip_prefix(src).expect("under src/").display().to_string();
    let mut graph = Graph::new();
    for (module, path) in &modules {
        let text = std::fs::read_to_string(path).expect("a source file");
        let file = syn::parse_file(&text).unwrap_or_else(|e| panic!("{}: {e}", path.display()));
        let mut paths = Paths {
            modules: modules.keys().cloned().collect(),
            aliases: BTreeMap::new(),
            module: module.clone(),
            children: file
                .items
                .iter()
                .filter_map(|item| match item {
                    syn::Item::Mod(m) if m.content.is_none() => Some(m.ident.to_string()),
                    _ => None,
                })
                .collect(),
            found: Vec::new(),
        };
        paths.visit_file(&file);
        let edges = graph.entry(name(module)).or_default();
        for path in paths.found {
            // The longest prefix that names a file's module.
            let Some(target) = (0..=path.len())
                .rev()
                .map(|n| &path[..n])
                .find(|prefix| modules.contains_key(*prefix))
            else {
                continue;
            };
            if target != module.as_slice() {
                let what = path.get(target.len()).cloned().unwrap_or_else(|| "(module)".into());
                edges.entry(name(target)).or_default().insert(what);
            }
        }
    }
    graph
}

/// The paths one file uses, resolved to absolute module paths.
struct Paths {
    /// Every file's module.
    modules: BTreeSet<Vec<String>>,
    /// Modules brought in by `use` (`use crate::store::sessions;`), by the
    /// name they are used by: an import of a module is no use of it, the
    /// paths through it are.
    aliases: BTreeMap<String, Vec<String>>,
    /// The file's module.
    module: Vec<String>,
    /// Its child modules declared `mod x;` (usable by bare name).
    children: BTreeSet<String>,
    found: Vec<Vec<String>>,
}

impl Paths {
    /// `segments` made absolute, when they start in this crate.
    fn resolve(&self, segments: &[String]) -> Option<Vec<String>> {
        let (first, rest) = segments.split_first()?;
        let mut base = match first.as_str() {
            "crate" => Vec::new(),
            "self" => self.module.clone(),
            "super" => {
                let mut parent = self.module.clone();
                parent.pop()?;
                parent
            }
            child if self.children.contains(child) => {
                let mut m = self.module.clone();
                m.push(child.to_owned());
                m
            }
            alias if self.aliases.contains_key(alias) => self.aliases[alias].clone(),
            _ => return None,
        };
        let mut rest = rest.iter().peekable();
        while rest.peek().is_some_and(|s| *s == "super") {
            base.pop()?;
            rest.next();
        }
        base.extend(rest.filter(|s| *s != "self").cloned());
        Some(base)
    }

    fn record(&mut self, segments: &[String]) {
        if let Some(path) = self.resolve(segments) {
            self.found.push(path);
        }
    }

    /// `use path as name`: an alias when it names a module, a use otherwise.
    fn import(&mut self, path: &[String], name: String) {
        match self.resolve(path) {
            Some(module) if self.modules.contains(&module) && name != "self" => {
                self.aliases.insert(name, module);
            }
            Some(module) if self.modules.contains(&module) => {
                // `use crate::store::{self}`: the last segment's name.
                if let Some(last) = module.last() {
                    self.aliases.insert(last.clone(), module);
                }
            }
            Some(used) => self.found.push(used),
            None => {}
        }
    }

    fn use_tree(&mut self, prefix: &mut Vec<String>, tree: &syn::UseTree) {
        match tree {
            syn::UseTree::Path(p) => {
                prefix.push(p.ident.to_string());
                self.use_tree(prefix, &p.tree);
                prefix.pop();
            }
            syn::UseTree::Name(n) => {
                prefix.push(n.ident.to_string());
                let path = prefix.clone();
                self.import(&path, n.ident.to_string());
                prefix.pop();
            }
            syn::UseTree::Rename(r) => {
                prefix.push(r.ident.to_string());
                let path = prefix.clone();
                self.import(&path, r.rename.to_string());
                prefix.pop();
            }
            syn::UseTree::Glob(_) => {
                let path = prefix.clone();
                self.record(&path);
            }
            syn::UseTree::Group(g) => {
                for tree in &g.items {
                    self.use_tree(prefix, tree);
                }
            }
        }
    }
}

fn is_test_only(attrs: &[syn::Attribute]) -> bool {
    attrs.iter().any(|a| {
        a.path().is_ident("cfg")
            && a.meta
                .require_list()
                .is_ok_and(|l| l.tokens.to_string().trim() == "test")
    })
}

impl<'ast> Visit<'ast> for Paths {
    fn visit_item_mod(&mut self, m: &'ast syn::ItemMod) {
        // A test module may use anything. The one other inline module,
        // `grpc::pb`, holds only the generated code, whose paths are read
        // as its file's (it names the codec, under grpc/ too).
        if !is_test_only(&m.attrs) {
            syn::visit::visit_item_mod(self, m);
        }
    }

    fn visit_item_fn(&mut self, f: &'ast syn::ItemFn) {
        if !is_test_only(&f.attrs) {
            syn::visit::visit_item_fn(self, f);
        }
    }

    fn visit_item_use(&mut self, u: &'ast syn::ItemUse) {
        if !is_test_only(&u.attrs) {
            self.use_tree(&mut Vec::new(), &u.tree);
        }
    }

    /// `pub(crate)`, `pub(super)`: who may see an item, not what it uses.
    fn visit_visibility(&mut self, _: &'ast syn::Visibility) {}

    fn visit_path(&mut self, p: &'ast syn::Path) {
        let segments: Vec<String> = p.segments.iter().map(|s| s.ident.to_string()).collect();
        // One segment is a local name (`feed`, `pool`), not a module's.
        if segments.len() > 1 {
            self.record(&segments);
        }
        syn::visit::visit_path(self, p);
    }

    /// Macro arguments are tokens, not paths: read `a :: b :: c` runs.
    fn visit_macro(&mut self, m: &'ast syn::Macro) {
        fn walk(paths: &mut Paths, tokens: proc_macro2::TokenStream) {
            let mut run: Vec<String> = Vec::new();
            let mut colons = 0;
            for token in tokens {
                match token {
                    proc_macro2::TokenTree::Ident(i) if run.is_empty() || colons == 2 => {
                        run.push(i.to_string());
                        colons = 0;
                    }
                    proc_macro2::TokenTree::Punct(p) if p.as_char() == ':' && !run.is_empty() && colons < 2 => {
                        colons += 1;
                    }
                    other => {
                        if run.len() > 1 {
                            paths.record(&run);
                        }
                        run.clear();
                        colons = 0;
                        if let proc_macro2::TokenTree::Ident(i) = other {
                            run.push(i.to_string());
                        } else if let proc_macro2::TokenTree::Group(g) = other {
                            walk(paths, g.stream());
                        }
                    }
                }
            }
            if run.len() > 1 {
                paths.record(&run);
            }
        }
        walk(self, m.tokens.clone());
        syn::visit::visit_macro(self, m);
    }
}

/// The strongly connected components of `graph` (Tarjan's algorithm): a
/// component of more than one file is a circle.
fn circles(graph: &Graph) -> Vec<BTreeSet<String>> {
    struct State<'g> {
        graph: &'g Graph,
        index: BTreeMap<&'g str, usize>,
        low: BTreeMap<&'g str, usize>,
        stack: Vec<&'g str>,
        on_stack: BTreeSet<&'g str>,
        found: Vec<BTreeSet<String>>,
    }
    fn connect<'g>(s: &mut State<'g>, v: &'g str) {
        let i = s.index.len();
        s.index.insert(v, i);
        s.low.insert(v, i);
        s.stack.push(v);
        s.on_stack.insert(v);
        for w in s.graph.get(v).into_iter().flat_map(|e| e.keys()) {
            let w = w.as_str();
            if !s.index.contains_key(w) {
                connect(s, w);
                let low = s.low[v].min(s.low[w]);
                s.low.insert(v, low);
            } else if s.on_stack.contains(w) {
                let low = s.low[v].min(s.index[w]);
                s.low.insert(v, low);
            }
        }
        if s.low[v] == s.index[v] {
            let mut component = BTreeSet::new();
            while let Some(w) = s.stack.pop() {
                s.on_stack.remove(w);
                component.insert(w.to_owned());
                if w == v {
                    break;
                }
            }
            s.found.push(component);
        }
    }
    let mut state = State {
        graph,
        index: BTreeMap::new(),
        low: BTreeMap::new(),
        stack: Vec::new(),
        on_stack: BTreeSet::new(),
        found: Vec::new(),
    };
    for v in graph.keys() {
        if !state.index.contains_key(v.as_str()) {
            connect(&mut state, v);
        }
    }
    state.found
}
