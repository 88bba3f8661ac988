//! The layering of `host/src` holds: no module imports from a layer above
//! its own, and no two modules of one layer import each other. The layers
//! are read from the table in `docs/architecture.md` (section 1), so the
//! document and the code cannot drift apart; the imports are read from the
//! source as text (`crate::…`, `super::…` climbing out of a module,
//! `streamhost::…` in the binary).

use std::collections::{BTreeMap, BTreeSet};
use std::path::{Path, PathBuf};

fn root() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).to_owned()
}

/// `module → layer rank` from the table between the layer markers of
/// `docs/architecture.md`; rank 0 is the top row.
fn layers() -> BTreeMap<String, usize> {
    let doc = std::fs::read_to_string(root().join("../docs/architecture.md"))
        .expect("docs/architecture.md");
    let table = doc
        .split("<!-- layers -->")
        .nth(1)
        .expect("docs/architecture.md has a table between <!-- layers --> markers");
    let mut out = BTreeMap::new();
    let rows = table
        .lines()
        .filter(|l| l.starts_with('|') && !l.starts_with("|---") && !l.starts_with("| layer"));
    for (rank, row) in rows.enumerate() {
        let modules = row.split('|').nth(2).expect("a modules column");
        for m in modules.split(',') {
            let m = m.trim().trim_matches('`').trim_end_matches('/');
            let m = m.strip_suffix(".rs").unwrap_or(m);
            assert!(!m.is_empty(), "an empty module name in row {row:?}");
            assert!(
                out.insert(m.to_owned(), rank).is_none(),
                "{m} is in two layers"
            );
        }
    }
    assert!(out.len() > 5, "the layer table lists too little: {out:?}");
    out
}

fn sources(dir: &Path, out: &mut Vec<PathBuf>) {
    for entry in std::fs::read_dir(dir).expect("a readable source directory") {
        let path = entry.expect("a directory entry").path();
        if path.is_dir() {
            sources(&path, out);
        } else if path.extension().is_some_and(|e| e == "rs") {
            out.push(path);
        }
    }
}

/// The module path of a source file: `runtime/http/mod.rs` → `[runtime, http]`.
fn module_path(src: &Path, file: &Path) -> Vec<String> {
    let rel = file.strip_prefix(src).expect("a file under src");
    let mut parts: Vec<String> = rel
        .iter()
        .map(|p| p.to_string_lossy().into_owned())
        .collect();
    let last = parts.pop().expect("a file name");
    let stem = last.strip_suffix(".rs").expect("a .rs file");
    if stem != "mod" {
        parts.push(stem.to_owned());
    }
    parts
}

/// Code without comments (a doc link names a module without using it) and
/// without the insides of string and character literals (a brace in a Lua
/// script or a format string is not a block, and `//` in a URL is not a
/// comment).
fn code(text: &str) -> String {
    let mut out = String::with_capacity(text.len());
    let mut chars = text.chars().peekable();
    let mut prev = ' ';
    while let Some(c) = chars.next() {
        let starts_raw = c == 'r'
            && !(prev.is_ascii_alphanumeric() || prev == '_')
            && matches!(chars.peek(), Some('#') | Some('"'));
        match c {
            '/' if chars.peek() == Some(&'/') => {
                for c in chars.by_ref() {
                    if c == '\n' {
                        out.push('\n');
                        break;
                    }
                }
            }
            '/' if chars.peek() == Some(&'*') => {
                let mut last = ' ';
                for c in chars.by_ref() {
                    if last == '*' && c == '/' {
                        break;
                    }
                    last = c;
                }
            }
            _ if starts_raw => {
                let mut hashes = 0;
                while chars.peek() == Some(&'#') {
                    chars.next();
                    hashes += 1;
                }
                if chars.peek() != Some(&'"') {
                    out.push('r');
                    out.extend(std::iter::repeat_n('#', hashes));
                    continue;
                }
                chars.next();
                let close: String = std::iter::once('"')
                    .chain(std::iter::repeat_n('#', hashes))
                    .collect();
                let mut seen = String::new();
                for c in chars.by_ref() {
                    seen.push(c);
                    if seen.ends_with(&close) {
                        break;
                    }
                }
                out.push_str("\"\"");
            }
            '"' => {
                let mut escaped = false;
                for c in chars.by_ref() {
                    match (escaped, c) {
                        (false, '\\') => escaped = true,
                        (false, '"') => break,
                        _ => escaped = false,
                    }
                }
                out.push_str("\"\"");
            }
            '\'' if chars.clone().nth(1) == Some('\'') => {
                chars.next();
                chars.next();
                out.push_str("' '");
            }
            '\'' if chars.peek() == Some(&'\\') => {
                // An escaped character literal: '\n', '\'', '\u{1F600}'.
                chars.next();
                chars.next();
                for c in chars.by_ref() {
                    if c == '\'' {
                        break;
                    }
                }
                out.push_str("' '");
            }
            c => out.push(c),
        }
        prev = c;
    }
    out
}

/// For each byte of `code`, how many inline modules (`mod name { … }`,
/// such as `mod tests`) enclose it: `super` there names a module nearer
/// than the file's parent.
fn inline_depths(code: &str) -> Vec<usize> {
    let bytes = code.as_bytes();
    let mut depths = Vec::with_capacity(bytes.len());
    let (mut braces, mut open): (usize, Vec<usize>) = (0, Vec::new());
    let mut pending_mod = false;
    for (i, &b) in bytes.iter().enumerate() {
        if code[i..].starts_with("mod ")
            && (i == 0 || !(bytes[i - 1].is_ascii_alphanumeric() || bytes[i - 1] == b'_'))
        {
            pending_mod = true;
        }
        match b {
            b'{' => {
                braces += 1;
                if pending_mod {
                    open.push(braces);
                    pending_mod = false;
                }
            }
            b'}' => {
                if open.last() == Some(&braces) {
                    open.pop();
                }
                braces = braces.saturating_sub(1);
            }
            b';' => pending_mod = false,
            _ => {}
        }
        depths.push(open.len());
    }
    depths
}

fn ident_at(s: &str) -> String {
    s.chars()
        .take_while(|c| c.is_ascii_alphanumeric() || *c == '_')
        .collect()
}

/// The first module name of each path that starts at the crate root: after
/// `crate::` (or `streamhost::` in the binary), inside `crate::{…}` groups,
/// and where a chain of `super::` climbs to the root from `here`.
fn roots_used(text: &str, here: &[String], binary: bool) -> BTreeSet<String> {
    let text = code(text);
    let mut found = BTreeSet::new();
    let mut prefixes = vec!["crate::"];
    if binary {
        prefixes.push("streamhost::");
    }
    for prefix in prefixes {
        for (i, _) in text.match_indices(prefix) {
            let before = text[..i].chars().last();
            if before.is_some_and(|c| c.is_ascii_alphanumeric() || c == '_') {
                continue;
            }
            let rest = &text[i + prefix.len()..];
            if let Some(group) = rest.strip_prefix('{') {
                let mut depth = 1;
                let mut item = String::new();
                for c in group.chars() {
                    match c {
                        '{' => depth += 1,
                        '}' => depth -= 1,
                        _ => {}
                    }
                    if depth == 0 {
                        break;
                    }
                    if depth == 1 && c == ',' {
                        found.insert(ident_at(item.trim()));
                        item.clear();
                    } else {
                        item.push(c);
                    }
                }
                found.insert(ident_at(item.trim()));
            } else {
                found.insert(ident_at(rest));
            }
        }
    }
    let inline = inline_depths(&text);
    for (i, _) in text.match_indices("super::") {
        let before = text[..i].chars().last();
        if before.is_some_and(|c| c.is_ascii_alphanumeric() || c == '_' || c == ':') {
            continue;
        }
        let mut depth = 0;
        let mut rest = &text[i..];
        while let Some(r) = rest.strip_prefix("super::") {
            depth += 1;
            rest = r;
        }
        if depth >= here.len() + inline[i] {
            found.insert(ident_at(rest));
        }
    }
    found.remove("");
    found
}

#[test]
fn no_module_imports_from_its_own_layer_or_one_above() {
    let layers = layers();
    let src = root().join("src");
    let mut files = Vec::new();
    sources(&src, &mut files);
    files.sort();
    let mut broken = Vec::new();
    for file in &files {
        let here = module_path(&src, file);
        let Some(top) = here.first().filter(|_| !file.ends_with("src/lib.rs")) else {
            continue; // lib.rs declares the modules
        };
        let rel = file.strip_prefix(&src).expect("under src").display();
        let Some(&own) = layers.get(top) else {
            broken.push(format!(
                "{rel}: module `{top}` is in no layer of docs/architecture.md"
            ));
            continue;
        };
        let text = std::fs::read_to_string(file).expect("a readable source file");
        for used in roots_used(&text, &here, top == "main") {
            if used == *top {
                continue;
            }
            match layers.get(&used) {
                None => broken.push(format!("{rel}: uses `{used}`, which is in no layer")),
                Some(&theirs) if theirs <= own => broken.push(format!(
                    "{rel}: `{top}` uses `{used}`, {}",
                    if theirs == own {
                        "a module of its own layer"
                    } else {
                        "a module of a layer above it"
                    }
                )),
                Some(_) => {}
            }
        }
    }
    assert!(
        broken.is_empty(),
        "the layering of docs/architecture.md is broken:\n{}",
        broken.join("\n")
    );
}

#[test]
fn the_import_reader_sees_every_form_of_path() {
    let here = vec!["runtime".to_owned(), "reader".to_owned()];
    let text = "use crate::stream::{a, b};\nuse crate::{config::X, outcome::{Y, Z}};\n\
                // crate::cli in a comment\nlet x = super::super::ops::f();\nuse super::job::Job;\n\
                let y = mycrate::nope::f();";
    let found = roots_used(text, &here, false);
    let want: BTreeSet<String> = ["stream", "config", "outcome", "ops"]
        .iter()
        .map(|s| s.to_string())
        .collect();
    assert_eq!(found, want);
    let main = roots_used("use streamhost::cli::{self, Action};", &[], true);
    assert!(main.contains("cli"));
    let tests = "mod tests {\n    use super::super::probe::X;\n    let s = \"{ super::super::cli } http://x\";\n    let c = '\\'';\n    let b = '{';\n}\nuse super::super::ops::Y;";
    let http_health = vec!["http".to_owned(), "health".to_owned()];
    assert_eq!(
        roots_used(tests, &http_health, false),
        BTreeSet::from(["ops".to_owned()]),
        "inside `mod tests` of http/health.rs, super::super is http; after it, the crate"
    );
    assert_eq!(
        module_path(Path::new("/s"), Path::new("/s/runtime/http/mod.rs")),
        ["runtime", "http"]
    );
}
