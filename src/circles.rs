//! A test, not a part of paddock: the modules under `src/` form no circle.
//!
//! A file is a module. Module `a` uses module `b` when `a`'s code names a path
//! into `b` (`use crate::…`, `use super::…`, or a `crate::`, `super::` or
//! `self::` path anywhere in its code); a path is `b`'s when `b` is the longest
//! module it starts with, so `crate::server::sessions::Frame` is
//! `server::sessions`, whichever of its files defines `Frame`.
//!
//! Uses are checked level by level: at each module, its parts (its submodules,
//! each with everything below it) must use each other one way. `server::tower`
//! naming `server::sessions::views` is `tower` using `sessions`, and
//! `server::sessions::views` naming `server::tower` would be `sessions` using
//! `tower`: a circle, whichever file of `sessions` re-exports what. Two kinds of
//! naming do not count: between a module and its own parts (a `mod.rs` declares,
//! re-exports and dispatches to its parts, and they use the items it keeps for
//! all of them), and test code (`#[cfg(test)]` items and the files they declare),
//! which may use any helper (so a circle that closes only through the items a
//! `mod.rs` keeps for its parts is not seen). A circle (`monitor → f1 → endings → monitor`, or
//! `sessions ↔ tower`, the two this test was written after) means neither side
//! can be understood, changed or tested without the other.
//!
//! Read from the source text, so it needs no parser crate: comments and literals
//! are blanked, then `use` trees and paths are read from the tokens.

use std::collections::{BTreeMap, BTreeSet};
use std::path::Path;

/// A module's path below the crate root (`["server", "sessions"]`).
type Module = Vec<String>;

/// Which part of a module uses which other part of it, and the first use that
/// says so: the file (module) that names, the module it names, and the line.
type Edges = BTreeMap<Module, BTreeMap<Module, Use>>;

/// One module naming another, at a line of the first.
#[derive(Debug, Clone, PartialEq, Eq)]
struct Use {
    from: Module,
    to: Module,
    line: usize,
}

/// Every `.rs` file under `src` as its module and text. `main.rs` is the
/// binary, a crate of its own, and is left out.
fn read_tree(src: &Path) -> Vec<(Module, String)> {
    let mut found = Vec::new();
    let mut dirs = vec![src.to_path_buf()];
    while let Some(dir) = dirs.pop() {
        for entry in std::fs::read_dir(&dir).expect("src/ is readable") {
            let path = entry.expect("src/ is readable").path();
            if path.is_dir() {
                dirs.push(path);
                continue;
            }
            if path.extension().is_none_or(|e| e != "rs") {
                continue;
            }
            let rel = path.strip_prefix(src).expect("under src/");
            let mut module: Module = rel
                .with_extension("")
                .components()
                .map(|c| c.as_os_str().to_string_lossy().into_owned())
                .collect();
            match module.last().map(String::as_str) {
                Some("mod") => {
                    module.pop();
                }
                Some("lib") if module.len() == 1 => module.clear(),
                Some("main") if module.len() == 1 => continue,
                _ => {}
            }
            let text = std::fs::read_to_string(&path).expect("a source file is UTF-8");
            found.push((module, text));
        }
    }
    found
}

/// `text` with comments and string and character literals replaced by spaces
/// (line breaks kept, so lines still count), leaving only code to read.
fn code_only(text: &str) -> String {
    let c: Vec<char> = text.chars().collect();
    let mut out = String::with_capacity(text.len());
    // Blanks c[from..to] into `out`, keeping its line breaks.
    let blank = |out: &mut String, from: usize, to: usize| {
        for ch in &c[from..to.min(c.len())] {
            out.push(if *ch == '\n' { '\n' } else { ' ' });
        }
    };
    let ident = |ch: char| ch.is_alphanumeric() || ch == '_';
    let mut i = 0;
    while i < c.len() {
        let rest = &c[i..];
        if rest.starts_with(&['/', '/']) {
            let end = (i..c.len()).find(|&j| c[j] == '\n').unwrap_or(c.len());
            blank(&mut out, i, end);
            i = end;
        } else if rest.starts_with(&['/', '*']) {
            // Block comments nest.
            let (mut depth, mut j) = (0usize, i);
            while j < c.len() {
                if c[j..].starts_with(&['/', '*']) {
                    depth += 1;
                    j += 2;
                } else if c[j..].starts_with(&['*', '/']) {
                    depth -= 1;
                    j += 2;
                    if depth == 0 {
                        break;
                    }
                } else {
                    j += 1;
                }
            }
            blank(&mut out, i, j);
            i = j;
        } else if (c[i] == 'r' || c[i] == 'b') && (i == 0 || !ident(c[i - 1])) && raw_string(rest) {
            // r"…", r#"…"#, br"…": no escapes, closed by the quote and as many #.
            let mut j = i + if c[i] == 'b' { 2 } else { 1 };
            let hashes = c[j..].iter().take_while(|&&ch| ch == '#').count();
            j += hashes + 1;
            while j < c.len()
                && !(c[j] == '"'
                    && c[j + 1..]
                        .iter()
                        .take(hashes)
                        .filter(|&&h| h == '#')
                        .count()
                        == hashes)
            {
                j += 1;
            }
            let end = (j + 1 + hashes).min(c.len());
            blank(&mut out, i, end);
            i = end;
        } else if c[i] == '"' {
            let mut j = i + 1;
            while j < c.len() && c[j] != '"' {
                j += if c[j] == '\\' { 2 } else { 1 };
            }
            blank(&mut out, i, j + 1);
            i = j + 1;
        } else if c[i] == '\'' {
            // A character literal ('x', '\n', '\u{1F3C1}'), not a lifetime ('a).
            let end = if c.get(i + 1) == Some(&'\\') {
                (i + 2..c.len()).find(|&j| c[j] == '\'').map(|j| j + 1)
            } else if c.get(i + 2) == Some(&'\'') {
                Some(i + 3)
            } else {
                None
            };
            match end {
                Some(end) => {
                    blank(&mut out, i, end);
                    i = end;
                }
                None => {
                    out.push('\'');
                    i += 1;
                }
            }
        } else {
            out.push(c[i]);
            i += 1;
        }
    }
    out
}

/// Whether `rest` starts a raw string (`r"`, `r#"`, `br"`, …).
fn raw_string(rest: &[char]) -> bool {
    let after = match rest {
        ['b', 'r', after @ ..] | ['r', after @ ..] => after,
        _ => return false,
    };
    let hashes = after.iter().take_while(|&&ch| ch == '#').count();
    after.get(hashes) == Some(&'"')
}

/// A token of code and its line.
#[derive(Debug, Clone)]
struct Token {
    text: String,
    line: usize,
}

fn tokens(code: &str) -> Vec<Token> {
    let mut out = Vec::new();
    for (n, line) in code.lines().enumerate() {
        let c: Vec<char> = line.chars().collect();
        let mut i = 0;
        while i < c.len() {
            let start = i;
            if c[i].is_whitespace() {
                i += 1;
                continue;
            } else if c[i].is_alphanumeric() || c[i] == '_' {
                while i < c.len() && (c[i].is_alphanumeric() || c[i] == '_') {
                    i += 1;
                }
            } else if c[i..].starts_with(&[':', ':']) {
                i += 2;
            } else {
                i += 1;
            }
            out.push(Token {
                text: c[start..i].iter().collect(),
                line: n + 1,
            });
        }
    }
    out
}

/// A path a file names, where, and how many inline modules deep (`super::`
/// inside `mod sse2 { … }` is still the same file).
struct Named {
    path: Vec<String>,
    line: usize,
    inline_depth: usize,
}

/// The paths a file's code names, outside test code, and the files its
/// `#[cfg(test)] mod x;` declares (test code too).
fn named_paths(text: &str) -> (Vec<Named>, Vec<String>) {
    let t = tokens(&code_only(text));
    let is = |i: usize, s: &str| t.get(i).is_some_and(|tok| tok.text == s);
    let mut named = Vec::new();
    let mut test_files = Vec::new();
    // The brace depth at which each inline module opened.
    let mut inline: Vec<usize> = Vec::new();
    let mut depth = 0usize;
    let mut i = 0;
    while i < t.len() {
        if is(i, "#")
            && is(i + 1, "[")
            && is(i + 2, "cfg")
            && is(i + 3, "(")
            && is(i + 4, "test")
            && is(i + 5, ")")
            && is(i + 6, "]")
        {
            i = skip_item(&t, i + 7, &mut test_files);
            continue;
        }
        match t[i].text.as_str() {
            "{" => depth += 1,
            "}" => {
                depth = depth.saturating_sub(1);
                if inline.last() == Some(&depth) {
                    inline.pop();
                }
            }
            "mod" if t.get(i + 1).is_some_and(|n| is_ident(&n.text)) && is(i + 2, "{") => {
                inline.push(depth);
            }
            // `use<'a>` (precise capturing) is not an import.
            "use" if !is(i + 1, "<") => {
                let end = (i..t.len()).find(|&j| is(j, ";")).unwrap_or(t.len());
                for path in use_tree(&t[i + 1..end]) {
                    named.push(Named {
                        path,
                        line: t[i].line,
                        inline_depth: inline.len(),
                    });
                }
                i = end;
                continue;
            }
            "crate" | "super" | "self" if is(i + 1, "::") && !(i > 0 && is(i - 1, "::")) => {
                let mut path = vec![t[i].text.clone()];
                let mut j = i + 1;
                while is(j, "::") && t.get(j + 1).is_some_and(|n| is_ident(&n.text)) {
                    path.push(t[j + 1].text.clone());
                    j += 2;
                }
                named.push(Named {
                    path,
                    line: t[i].line,
                    inline_depth: inline.len(),
                });
                i = j;
                continue;
            }
            _ => {}
        }
        i += 1;
    }
    (named, test_files)
}

fn is_ident(s: &str) -> bool {
    s.chars()
        .next()
        .is_some_and(|c| c.is_alphabetic() || c == '_')
}

/// Skips the item starting at `i` (after its `#[cfg(test)]`): its further
/// attributes, then up to its `;` or through its `{ … }` block. A `mod x;`
/// skipped is a file of test code: its name goes to `test_files`.
fn skip_item(t: &[Token], mut i: usize, test_files: &mut Vec<String>) -> usize {
    let is = |i: usize, s: &str| t.get(i).is_some_and(|tok| tok.text == s);
    let mut nesting = 0usize;
    while i < t.len() {
        match t[i].text.as_str() {
            "(" | "[" => nesting += 1,
            ")" | "]" => nesting = nesting.saturating_sub(1),
            ";" if nesting == 0 => {
                if i >= 2 && is(i - 2, "mod") {
                    test_files.push(t[i - 1].text.clone());
                }
                return i + 1;
            }
            "{" if nesting == 0 => {
                let mut depth = 0usize;
                while i < t.len() {
                    match t[i].text.as_str() {
                        "{" => depth += 1,
                        "}" => {
                            depth -= 1;
                            if depth == 0 {
                                return i + 1;
                            }
                        }
                        _ => {}
                    }
                    i += 1;
                }
            }
            _ => {}
        }
        i += 1;
    }
    i
}

/// The paths of a `use` tree's tokens (`crate::a::{b, c::{d as e}, self}`):
/// `[crate, a, b]`, `[crate, a, c, d]`, `[crate, a]`.
fn use_tree(t: &[Token]) -> Vec<Vec<String>> {
    fn tree(t: &[Token], i: &mut usize, prefix: &[String], out: &mut Vec<Vec<String>>) {
        let mut path = prefix.to_vec();
        while *i < t.len() {
            match t[*i].text.as_str() {
                "{" => {
                    *i += 1;
                    while *i < t.len() && t[*i].text != "}" {
                        tree(t, i, &path, out);
                        if *i < t.len() && t[*i].text == "," {
                            *i += 1;
                        }
                    }
                    *i += 1;
                    return;
                }
                "::" => *i += 1,
                "," | "}" => break,
                "as" => *i += 2,
                "*" => *i += 1,
                // `self` in a group is the group's own path.
                "self" if !path.is_empty() => *i += 1,
                name => {
                    path.push(name.to_string());
                    *i += 1;
                }
            }
        }
        if !path.is_empty() {
            out.push(path);
        }
    }
    let mut out = Vec::new();
    let mut i = 0;
    tree(t, &mut i, &[], &mut out);
    out
}

/// Who uses whom among `files`, by the rules at the top.
fn edges(files: &[(Module, String)]) -> Edges {
    let mut read = Vec::new();
    let mut test_only: BTreeSet<Module> = BTreeSet::new();
    for (module, text) in files {
        let (named, test_files) = named_paths(text);
        for name in test_files {
            let mut child = module.clone();
            child.push(name);
            test_only.insert(child);
        }
        read.push((module, named));
    }
    let modules: BTreeSet<&Module> = files.iter().map(|(m, _)| m).collect();
    let mut edges = Edges::new();
    for (module, named) in read {
        // A file below a test-only file is test code too.
        if test_only.iter().any(|t| module.starts_with(t)) {
            continue;
        }
        for Named {
            path,
            line,
            inline_depth,
        } in named
        {
            let (mut base, rest): (Module, &[String]) = match path[0].as_str() {
                "crate" => (Vec::new(), &path[1..]),
                "super" | "self" => {
                    let supers = path.iter().take_while(|s| *s == "super").count();
                    let leading = path
                        .iter()
                        .take_while(|s| *s == "super" || *s == "self")
                        .count();
                    if supers <= inline_depth {
                        // Within this file's own inline modules.
                        continue;
                    }
                    let up = supers - inline_depth;
                    if up > module.len() {
                        continue;
                    }
                    (module[..module.len() - up].to_vec(), &path[leading..])
                }
                // A child module or another crate: neither counts.
                _ => continue,
            };
            base.extend(rest.iter().cloned());
            let Some(target) = (0..=base.len())
                .rev()
                .map(|n| base[..n].to_vec())
                .find(|m| modules.contains(m))
            else {
                continue;
            };
            if test_only.iter().any(|t| target.starts_with(t)) {
                continue;
            }
            // The parts of their closest common module: `server::tower` using
            // `server::sessions::views` is `tower` using `sessions`.
            let common = module
                .iter()
                .zip(&target)
                .take_while(|(a, b)| a == b)
                .count();
            if common == module.len() || common == target.len() {
                // A module naming its own part, or a part naming the module it is in.
                continue;
            }
            edges
                .entry(module[..=common].to_vec())
                .or_default()
                .entry(target[..=common].to_vec())
                .or_insert(Use {
                    from: module.clone(),
                    to: target,
                    line,
                });
        }
    }
    edges
}

/// Every circle: the strongly connected groups of more than one module
/// (Tarjan's algorithm), each with the uses that close it.
fn circles(edges: &Edges) -> Vec<Vec<Module>> {
    struct Walk<'a> {
        edges: &'a Edges,
        index: BTreeMap<&'a Module, usize>,
        low: BTreeMap<&'a Module, usize>,
        stack: Vec<&'a Module>,
        on_stack: BTreeSet<&'a Module>,
        found: Vec<Vec<Module>>,
    }
    impl<'a> Walk<'a> {
        fn visit(&mut self, v: &'a Module) {
            let n = self.index.len();
            self.index.insert(v, n);
            self.low.insert(v, n);
            self.stack.push(v);
            self.on_stack.insert(v);
            for w in self.edges.get(v).into_iter().flat_map(|e| e.keys()) {
                if !self.index.contains_key(w) {
                    self.visit(w);
                    let low = self.low[v].min(self.low[w]);
                    self.low.insert(v, low);
                } else if self.on_stack.contains(w) {
                    let low = self.low[v].min(self.index[w]);
                    self.low.insert(v, low);
                }
            }
            if self.low[v] == self.index[v] {
                let mut group = Vec::new();
                while let Some(w) = self.stack.pop() {
                    self.on_stack.remove(w);
                    group.push(w.clone());
                    if w == v {
                        break;
                    }
                }
                if group.len() > 1 {
                    group.sort();
                    self.found.push(group);
                }
            }
        }
    }
    let mut walk = Walk {
        edges,
        index: BTreeMap::new(),
        low: BTreeMap::new(),
        stack: Vec::new(),
        on_stack: BTreeSet::new(),
        found: Vec::new(),
    };
    for v in edges.keys() {
        if !walk.index.contains_key(v) {
            walk.visit(v);
        }
    }
    walk.found
}

/// `a::b`, or `crate` for the root.
fn name(m: &Module) -> String {
    if m.is_empty() {
        "crate".into()
    } else {
        m.join("::")
    }
}

/// The circles found, one line per use that closes one, for the failure message.
fn report(edges: &Edges, found: &[Vec<Module>]) -> String {
    let mut out = String::new();
    for group in found {
        let names: Vec<String> = group.iter().map(name).collect();
        out.push_str(&format!("circle: {}\n", names.join(", ")));
        for a in group {
            for (b, u) in edges.get(a).into_iter().flatten() {
                if group.contains(b) {
                    out.push_str(&format!(
                        "  {} uses {}: {} names {} (line {})\n",
                        name(a),
                        name(b),
                        name(&u.from),
                        name(&u.to),
                        u.line
                    ));
                }
            }
        }
    }
    out
}

#[test]
fn the_modules_of_src_form_no_circle() {
    let src = Path::new(env!("CARGO_MANIFEST_DIR")).join("src");
    let files = read_tree(&src);
    assert!(files.len() > 50, "src/ read: {} files", files.len());
    let edges = edges(&files);
    // The reader finds uses where they are: it is not passing by reading nothing.
    let uses = |a: &str, b: &str| {
        let (a, b): (Module, Module) = (
            a.split("::").map(String::from).collect(),
            b.split("::").map(String::from).collect(),
        );
        edges.get(&a).is_some_and(|e| e.contains_key(&b))
    };
    assert!(uses("server::tower", "server::sessions"));
    assert!(uses("cmd::f1", "cmd::monitoring"));
    let found = circles(&edges);
    assert!(
        found.is_empty(),
        "modules in a circle (a file is a module; see src/circles.rs for what counts):\n{}",
        report(&edges, &found)
    );
}

#[test]
fn circles_are_found_through_use_trees_paths_and_re_exports_but_not_comments_tests_or_parts() {
    let m = |s: &str| -> Module {
        if s.is_empty() {
            Vec::new()
        } else {
            s.split("::").map(String::from).collect()
        }
    };
    let tree = |files: &[(&str, &str)]| -> Vec<(Module, String)> {
        files.iter().map(|(p, t)| (m(p), t.to_string())).collect()
    };
    // a → b through a use tree, b → c through a path in code, c → a through super.
    let circle = tree(&[
        ("", "pub mod a; pub mod b; pub mod c;"),
        ("a", "use crate::{x, b::{Thing as Other, self}};"),
        ("b", "fn f() { crate::c::g(); }"),
        ("c", "use super::a::Item;"),
    ]);
    let e = edges(&circle);
    assert_eq!(circles(&e), vec![vec![m("a"), m("b"), m("c")]], "{e:?}");
    assert!(report(&e, &circles(&e)).contains("c uses a: c names a (line 1)"));
    // Through a re-export: x uses p's facade, and the part of p that the facade
    // exports uses x.
    let reexported = tree(&[
        ("", "pub mod p; pub mod x;"),
        ("p", "mod c; pub use c::Thing;"),
        ("p::c", "use crate::x::Y; pub struct Thing;"),
        ("x", "use crate::p::Thing;"),
    ]);
    let e = edges(&reexported);
    assert_eq!(circles(&e), vec![vec![m("p"), m("x")]], "{e:?}");
    assert!(report(&e, &circles(&e)).contains("p uses x: p::c names x (line 1)"));
    // The same names in comments, strings and test code, or a parent's use of
    // its own child: no circle.
    let quiet = tree(&[
        ("", "pub mod a; pub mod b;"),
        (
            "a",
            "mod inner; use inner::X; // crate::b::Y\nuse crate::b::Z;",
        ),
        (
            "a::inner",
            "use crate::a::W; fn s() -> &'static str { \"crate::b\" }",
        ),
        (
            "b",
            "const Q: char = '\"'; /* crate::a */ fn f() {}\n#[cfg(test)]\nmod tests { use crate::a::T; }\n#[cfg(test)] mod helpers;",
        ),
        ("b::helpers", "use crate::a::H;"),
    ]);
    let e = edges(&quiet);
    assert!(circles(&e).is_empty(), "{e:?}");
    assert!(e[&m("a")].contains_key(&m("b")), "{e:?}");
    // `super` inside an inline module is its own file.
    let inline = tree(&[
        ("", "pub mod a; pub mod b;"),
        ("a", "use crate::b::X;"),
        ("b", "mod sse2 { use super::Thing; fn f() { super::g(); } }"),
    ]);
    assert!(circles(&edges(&inline)).is_empty());
}
