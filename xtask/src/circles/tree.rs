//! A crate's module tree, read with `syn`, and the module dependency graph built from it.
//!
//! The tree starts at the crate root file and follows `mod` declarations as rustc does:
//! `x.rs` or `x/mod.rs` beside a `mod.rs`-like file (a crate root, a `mod.rs`, a file
//! named by `#[path]`), under `<stem>/` beside any other file; `#[path]` attributes and
//! inline `mod x { ... }` blocks included. Items under `#[cfg(test)]` (test modules, test
//! helpers) are left out: they naturally use their parent's items.
//!
//! A module depends on another when it names one of its items: through a `use` (each
//! leaf, and each glob), or a path in its code that starts with `crate::`, `self::`,
//! `super::`, a child module's name or a name it imported (macro invocations' tokens
//! included). A path is resolved as far as the tree allows: through child modules, the
//! items each module defines, and the `use` imports (so `crate::Foo` re-exported by the
//! crate root from `foo` is an edge to `foo`, not to the root). What cannot be resolved
//! (an item made by a macro, say) counts as a use of the last module reached. A path to a
//! `#[macro_export]` macro through the crate root is no edge: such macros live at the root
//! whatever module defines them. A child naming its ancestor's items is an edge like any
//! other; a parent declaring a child (`mod x;`) is not, using the child's items is.
//!
//! Code is read as tokens, not as expressions: a path is a run of identifiers joined by
//! `::`, which finds paths inside macro invocations too. Comments and string literals are
//! never paths.

use std::collections::{BTreeMap, BTreeSet};
use std::path::{Path, PathBuf};

use proc_macro2::{Delimiter, Spacing, TokenStream, TokenTree};
use quote::ToTokens;
use syn::{Attribute, ImplItem, Item, TraitItem, UseTree};

use super::graph::Graph;

/// A module's index in [`ModuleTree::modules`].
type ModId = usize;

/// The crate root's index.
const ROOT: ModId = 0;

/// How many imports a resolution may go through (re-exports of re-exports, globs), so
/// that imports naming each other cannot loop.
const MAX_DEPTH: usize = 32;

/// A crate's modules.
#[derive(Debug)]
pub(super) struct ModuleTree {
    modules: Vec<Module>,
    /// Names of the `#[macro_export]` macros (they live at the crate root).
    exported_macros: BTreeSet<String>,
    /// Problems that did not stop the reading (e.g. a module file not found).
    pub warnings: Vec<String>,
}

#[derive(Debug)]
struct Module {
    /// Its name (empty for the crate root).
    name: String,
    parent: Option<ModId>,
    /// The file it is written in (an inline module's is its parent's).
    file: PathBuf,
    children: BTreeMap<String, ModId>,
    /// The names of the items it defines (a child module is in `children` instead).
    items: BTreeSet<String>,
    /// Its `use` imports: the name each brings into scope, and the path it names.
    imports: BTreeMap<String, RawPath>,
    /// Its glob imports' paths.
    globs: Vec<RawPath>,
    /// Every path it names that may lead to another module of the crate.
    refs: Vec<RawPath>,
}

/// Where a path starts.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
enum Anchor {
    /// `crate::`.
    Crate,
    /// `self::` or `super::` (as many as written), already applied.
    Module(ModId),
    /// A plain name: looked up in the scope of the module it is written in; not found
    /// there, it is an external crate (or a local name) and no edge.
    Scope,
}

/// A path as written, before resolution.
#[derive(Clone, Debug)]
struct RawPath {
    anchor: Anchor,
    /// The segments after the anchor (`crate`, `self`, `super` removed).
    segs: Vec<String>,
    /// The path as written, for messages.
    text: String,
}

/// What a path names.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
enum Target {
    /// A module itself.
    Module(ModId),
    /// An item defined in a module.
    ItemIn(ModId),
    /// A `#[macro_export]` macro at the crate root: no edge.
    Macro,
}

/// Where a module's `mod x;` children are looked for, as rustc keeps it: a directory,
/// plus the module's own name when it is written in a non-`mod.rs` file (`a.rs` has its
/// children in `a/`).
#[derive(Clone, Debug)]
struct Location {
    dir: PathBuf,
    relative: Option<String>,
}

impl ModuleTree {
    /// Read the module tree of the crate whose root file is `root_file`.
    ///
    /// # Errors
    /// When a file of the tree cannot be read or is not valid Rust.
    pub(super) fn load(root_file: &Path) -> Result<ModuleTree, String> {
        let mut tree = ModuleTree {
            modules: Vec::new(),
            exported_macros: BTreeSet::new(),
            warnings: Vec::new(),
        };
        let file = parse_file(root_file)?;
        let root = tree.add_module(String::new(), None, root_file);
        let location = Location {
            dir: root_file.parent().unwrap_or(Path::new(".")).to_owned(),
            relative: None,
        };
        tree.read_items(root, &file.items, &location)?;
        Ok(tree)
    }

    /// How many modules the tree has (test modules excluded).
    pub(super) fn len(&self) -> usize {
        self.modules.len()
    }

    /// The module dependency graph: one node per module, named by its path from the crate
    /// root (`crate` for the root itself), one edge per module whose items a module uses,
    /// labelled with the first path that does.
    pub(super) fn graph(&self) -> Graph {
        let mut graph = Graph::default();
        for m in 0..self.modules.len() {
            graph.add_node(self.display_name(m));
        }
        for (m, module) in self.modules.iter().enumerate() {
            for path in &module.refs {
                match self.resolve(m, path, 0) {
                    Some(Target::Module(to) | Target::ItemIn(to)) => {
                        graph.add_edge(m, to, &path.text);
                    }
                    Some(Target::Macro) | None => {}
                }
            }
        }
        graph
    }

    /// The file a module is written in.
    pub(super) fn file(&self, m: usize) -> &Path {
        &self.modules[m].file
    }

    /// `a::b` for module `b` in `a`; `crate` for the root.
    fn display_name(&self, m: ModId) -> String {
        let mut names = Vec::new();
        let mut at = Some(m);
        while let Some(id) = at {
            if id != ROOT {
                names.push(self.modules[id].name.as_str());
            }
            at = self.modules[id].parent;
        }
        if names.is_empty() {
            return "crate".to_owned();
        }
        names.reverse();
        names.join("::")
    }

    fn add_module(&mut self, name: String, parent: Option<ModId>, file: &Path) -> ModId {
        self.modules.push(Module {
            name,
            parent,
            file: file.to_owned(),
            children: BTreeMap::new(),
            items: BTreeSet::new(),
            imports: BTreeMap::new(),
            globs: Vec::new(),
            refs: Vec::new(),
        });
        self.modules.len() - 1
    }

    fn read_items(&mut self, m: ModId, items: &[Item], at: &Location) -> Result<(), String> {
        for item in items {
            if is_cfg_test(item_attrs(item)) {
                continue;
            }
            match item {
                Item::Mod(module) => self.read_mod(m, module, at)?,
                Item::Use(item_use) => {
                    // `use ::name` names an external crate.
                    if item_use.leading_colon.is_none() {
                        self.read_use(m, &item_use.tree, &mut Vec::new());
                    }
                }
                Item::Macro(mac) if mac.ident.is_some() => {
                    // A `macro_rules!` definition: its body is expanded elsewhere, and its
                    // name is no path (but for an exported one, at the crate root).
                    if mac.attrs.iter().any(|a| a.path().is_ident("macro_export")) {
                        let name = mac.ident.as_ref().map(ToString::to_string);
                        self.exported_macros
                            .insert(unraw(&name.unwrap_or_default()));
                    }
                }
                Item::Impl(imp) => {
                    let mut imp = imp.clone();
                    imp.items.retain(|i| !is_cfg_test(impl_item_attrs(i)));
                    self.read_tokens(m, imp.to_token_stream());
                }
                Item::Trait(tr) => {
                    self.modules[m].items.insert(unraw(&tr.ident.to_string()));
                    let mut tr = tr.clone();
                    tr.items.retain(|i| !is_cfg_test(trait_item_attrs(i)));
                    self.read_tokens(m, tr.to_token_stream());
                }
                Item::ForeignMod(foreign) => {
                    for f in &foreign.items {
                        let name = match f {
                            syn::ForeignItem::Fn(f) => Some(&f.sig.ident),
                            syn::ForeignItem::Static(s) => Some(&s.ident),
                            syn::ForeignItem::Type(t) => Some(&t.ident),
                            _ => None,
                        };
                        if let Some(name) = name {
                            self.modules[m].items.insert(unraw(&name.to_string()));
                        }
                    }
                    self.read_tokens(m, foreign.to_token_stream());
                }
                other => {
                    if let Some(name) = item_name(other) {
                        self.modules[m].items.insert(name);
                    }
                    self.read_tokens(m, other.to_token_stream());
                }
            }
        }
        Ok(())
    }

    /// A `mod` item: an inline module's items, or the file of a `mod x;`.
    fn read_mod(&mut self, m: ModId, module: &syn::ItemMod, at: &Location) -> Result<(), String> {
        let name = unraw(&module.ident.to_string());
        let path_attr = path_attribute(&module.attrs);
        let parent_file = self.modules[m].file.clone();
        let base = match &at.relative {
            Some(relative) => at.dir.join(relative),
            None => at.dir.clone(),
        };
        if let Some((_, items)) = &module.content {
            let child = self.add_module(name.clone(), Some(m), &parent_file);
            self.modules[m].children.insert(name.clone(), child);
            let location = Location {
                dir: match path_attr {
                    // For an inline module, rustc takes `#[path]` as its directory.
                    Some(path) => at.dir.join(path),
                    None => base.join(&name),
                },
                relative: None,
            };
            return self.read_items(child, items, &location);
        }
        let file = match &path_attr {
            Some(path) => Some(at.dir.join(path)),
            None => [
                base.join(format!("{name}.rs")),
                base.join(&name).join("mod.rs"),
            ]
            .into_iter()
            .find(|p| p.is_file()),
        };
        let Some(file) = file.filter(|f| f.is_file()) else {
            self.warnings.push(format!(
                "{}: no file for `mod {name};`",
                parent_file.display()
            ));
            let child = self.add_module(name.clone(), Some(m), &parent_file);
            self.modules[m].children.insert(name, child);
            return Ok(());
        };
        let parsed = parse_file(&file)?;
        let child = self.add_module(name.clone(), Some(m), &file);
        self.modules[m].children.insert(name.clone(), child);
        // Files named by `#[path]` are `mod.rs`-like: their children are their siblings.
        let mod_rs = path_attr.is_some() || file.file_name().is_some_and(|f| f == "mod.rs");
        let location = Location {
            dir: file.parent().unwrap_or(Path::new(".")).to_owned(),
            relative: (!mod_rs).then_some(name),
        };
        self.read_items(child, &parsed.items, &location)
    }

    /// A `use` tree: each leaf imports a name (and is a reference), each glob is a
    /// reference and a glob import.
    fn read_use(&mut self, m: ModId, tree: &UseTree, prefix: &mut Vec<String>) {
        match tree {
            UseTree::Path(p) => {
                prefix.push(unraw(&p.ident.to_string()));
                self.read_use(m, &p.tree, prefix);
                prefix.pop();
            }
            UseTree::Name(n) => {
                let ident = unraw(&n.ident.to_string());
                let (name, path) = leaf(prefix, ident);
                self.add_import(m, name, &path);
            }
            UseTree::Rename(r) => {
                let (_, path) = leaf(prefix, unraw(&r.ident.to_string()));
                let rename = unraw(&r.rename.to_string());
                self.add_import(m, Some(rename).filter(|n| n != "_"), &path);
            }
            UseTree::Glob(_) => {
                if let Some(path) = self.anchored(m, prefix) {
                    self.modules[m].globs.push(path.clone());
                    self.modules[m].refs.push(path);
                }
            }
            UseTree::Group(g) => {
                for tree in &g.items {
                    self.read_use(m, tree, prefix);
                }
            }
        }
    }

    fn add_import(&mut self, m: ModId, name: Option<String>, path: &[String]) {
        let Some(path) = self.anchored(m, path) else {
            return;
        };
        if let Some(name) = name {
            self.modules[m]
                .imports
                .entry(name)
                .or_insert_with(|| path.clone());
        }
        self.modules[m].refs.push(path);
    }

    /// Every path in `tokens` that starts a `a::b` run (see the module doc).
    fn read_tokens(&mut self, m: ModId, tokens: TokenStream) {
        let mut flat = Vec::new();
        flatten(tokens, &mut flat);
        for segs in token_paths(&flat) {
            if let Some(path) = self.anchored(m, &segs) {
                self.modules[m].refs.push(path);
            }
        }
    }

    /// Apply a path's leading `crate`, `self` and `super`s, written in module `m`. `None`
    /// for a path that cannot name anything in the crate (`super` above the root).
    fn anchored(&self, m: ModId, segs: &[String]) -> Option<RawPath> {
        let text = segs.join("::");
        let first = segs.first()?;
        if first == "crate" {
            return Some(RawPath {
                anchor: Anchor::Crate,
                segs: segs[1..].to_vec(),
                text,
            });
        }
        let mut at = m;
        let mut i = 0;
        if first == "self" {
            i = 1;
        }
        while segs.get(i).is_some_and(|s| s == "super") {
            at = self.modules[at].parent?;
            i += 1;
        }
        let anchor = if i == 0 {
            Anchor::Scope
        } else {
            Anchor::Module(at)
        };
        Some(RawPath {
            anchor,
            segs: segs[i..].to_vec(),
            text,
        })
    }

    /// What `path`, written in module `from`, names.
    fn resolve(&self, from: ModId, path: &RawPath, depth: usize) -> Option<Target> {
        if depth > MAX_DEPTH {
            return None;
        }
        match path.anchor {
            Anchor::Crate => Some(
                self.walk(ROOT, &path.segs, depth)
                    .unwrap_or_else(Target::ItemIn),
            ),
            Anchor::Module(m) => Some(
                self.walk(m, &path.segs, depth)
                    .unwrap_or_else(Target::ItemIn),
            ),
            Anchor::Scope => match self.walk(from, &path.segs, depth) {
                Ok(target) => Some(target),
                // Resolved into the crate, then lost: a use of the last module reached.
                Err(last) if last != from => Some(Target::ItemIn(last)),
                // The first name is not in the module's scope: an external crate.
                Err(_) => None,
            },
        }
    }

    /// Follow `segs` from module `m`. `Err(last)` when a name is not found, with the last
    /// module reached.
    fn walk(&self, m: ModId, segs: &[String], depth: usize) -> Result<Target, ModId> {
        let Some((name, rest)) = segs.split_first() else {
            return Ok(Target::Module(m));
        };
        if depth > MAX_DEPTH {
            return Err(m);
        }
        let module = &self.modules[m];
        if let Some(&child) = module.children.get(name) {
            return self.walk(child, rest, depth);
        }
        if module.items.contains(name) {
            return Ok(Target::ItemIn(m));
        }
        if m == ROOT && self.exported_macros.contains(name) {
            return Ok(Target::Macro);
        }
        if let Some(import) = module.imports.get(name) {
            return match self.resolve(m, import, depth + 1) {
                Some(Target::Module(to)) => self.walk(to, rest, depth + 1),
                Some(target) => Ok(target),
                // An external crate's item.
                None => Err(m),
            };
        }
        for glob in &module.globs {
            if let Some(Target::Module(source)) = self.resolve(m, glob, depth + 1) {
                if source == m {
                    continue;
                }
                match self.walk(source, segs, depth + 1) {
                    Ok(target) => return Ok(target),
                    // Found there, lost further down.
                    Err(last) if last != source => return Err(last),
                    Err(_) => {}
                }
            }
        }
        Err(m)
    }
}

/// A `use` leaf's name and full path: `a::b::{self}` names `b`.
fn leaf(prefix: &[String], ident: String) -> (Option<String>, Vec<String>) {
    if ident == "self" {
        (prefix.last().cloned(), prefix.to_vec())
    } else {
        let mut path = prefix.to_vec();
        path.push(ident.clone());
        (Some(ident), path)
    }
}

fn parse_file(path: &Path) -> Result<syn::File, String> {
    let text = std::fs::read_to_string(path).map_err(|e| format!("{}: {e}", path.display()))?;
    syn::parse_file(&text).map_err(|e| format!("{}: {e}", path.display()))
}

fn unraw(ident: &str) -> String {
    ident.strip_prefix("r#").unwrap_or(ident).to_owned()
}

/// The name an item defines in its module's namespace, if any.
fn item_name(item: &Item) -> Option<String> {
    let ident = match item {
        Item::Const(i) => &i.ident,
        Item::Enum(i) => &i.ident,
        Item::ExternCrate(i) => i.rename.as_ref().map_or(&i.ident, |(_, r)| r),
        Item::Fn(i) => &i.sig.ident,
        Item::Static(i) => &i.ident,
        Item::Struct(i) => &i.ident,
        Item::Trait(i) => &i.ident,
        Item::TraitAlias(i) => &i.ident,
        Item::Type(i) => &i.ident,
        Item::Union(i) => &i.ident,
        _ => return None,
    };
    Some(unraw(&ident.to_string()))
}

fn item_attrs(item: &Item) -> &[Attribute] {
    match item {
        Item::Const(i) => &i.attrs,
        Item::Enum(i) => &i.attrs,
        Item::ExternCrate(i) => &i.attrs,
        Item::Fn(i) => &i.attrs,
        Item::ForeignMod(i) => &i.attrs,
        Item::Impl(i) => &i.attrs,
        Item::Macro(i) => &i.attrs,
        Item::Mod(i) => &i.attrs,
        Item::Static(i) => &i.attrs,
        Item::Struct(i) => &i.attrs,
        Item::Trait(i) => &i.attrs,
        Item::TraitAlias(i) => &i.attrs,
        Item::Type(i) => &i.attrs,
        Item::Union(i) => &i.attrs,
        Item::Use(i) => &i.attrs,
        _ => &[],
    }
}

fn impl_item_attrs(item: &ImplItem) -> &[Attribute] {
    match item {
        ImplItem::Const(i) => &i.attrs,
        ImplItem::Fn(i) => &i.attrs,
        ImplItem::Type(i) => &i.attrs,
        ImplItem::Macro(i) => &i.attrs,
        _ => &[],
    }
}

fn trait_item_attrs(item: &TraitItem) -> &[Attribute] {
    match item {
        TraitItem::Const(i) => &i.attrs,
        TraitItem::Fn(i) => &i.attrs,
        TraitItem::Type(i) => &i.attrs,
        TraitItem::Macro(i) => &i.attrs,
        _ => &[],
    }
}

/// Whether the attributes include a `#[cfg(...)]` that only holds in test builds:
/// `cfg(test)` or `cfg(all(..., test, ...))`.
fn is_cfg_test(attrs: &[Attribute]) -> bool {
    attrs.iter().any(|attr| {
        let syn::Meta::List(list) = &attr.meta else {
            return false;
        };
        if !list.path.is_ident("cfg") {
            return false;
        }
        let cfg: String = list
            .tokens
            .to_string()
            .chars()
            .filter(|c| !c.is_whitespace())
            .collect();
        cfg == "test"
            || cfg
                .strip_prefix("all(")
                .and_then(|inner| inner.strip_suffix(')'))
                .is_some_and(|inner| inner.split(',').any(|p| p == "test"))
    })
}

/// The value of a `#[path = "..."]` attribute.
fn path_attribute(attrs: &[Attribute]) -> Option<String> {
    attrs.iter().find_map(|attr| {
        let syn::Meta::NameValue(nv) = &attr.meta else {
            return None;
        };
        if !nv.path.is_ident("path") {
            return None;
        }
        match &nv.value {
            syn::Expr::Lit(syn::ExprLit {
                lit: syn::Lit::Str(s),
                ..
            }) => Some(s.value()),
            _ => None,
        }
    })
}

/// A token, as far as finding paths needs.
#[derive(Clone, Debug, PartialEq, Eq)]
enum Tok {
    Ident(String),
    /// `::`.
    PathSep,
    Punct(char),
    /// A literal or a delimiter: what ends a path.
    Other,
}

fn flatten(tokens: TokenStream, out: &mut Vec<Tok>) {
    let mut iter = tokens.into_iter().peekable();
    while let Some(tree) = iter.next() {
        match tree {
            TokenTree::Group(group) => {
                let delimited = group.delimiter() != Delimiter::None;
                if delimited {
                    out.push(Tok::Other);
                }
                flatten(group.stream(), out);
                if delimited {
                    out.push(Tok::Other);
                }
            }
            TokenTree::Ident(ident) => out.push(Tok::Ident(unraw(&ident.to_string()))),
            TokenTree::Punct(p)
                if p.as_char() == ':'
                    && p.spacing() == Spacing::Joint
                    && matches!(iter.peek(), Some(TokenTree::Punct(q)) if q.as_char() == ':') =>
            {
                iter.next();
                out.push(Tok::PathSep);
            }
            TokenTree::Punct(p) => out.push(Tok::Punct(p.as_char())),
            TokenTree::Literal(_) => out.push(Tok::Other),
        }
    }
}

/// The runs `a::b::c` in the tokens that start a path: an identifier followed by `::`
/// and not preceded by `::` (a later segment), `$` (`$crate`, a macro variable) or `.`
/// (a method's turbofish).
fn token_paths(toks: &[Tok]) -> Vec<Vec<String>> {
    let mut paths = Vec::new();
    for (i, tok) in toks.iter().enumerate() {
        let Tok::Ident(first) = tok else {
            continue;
        };
        if toks.get(i + 1) != Some(&Tok::PathSep) {
            continue;
        }
        if i > 0 && matches!(toks[i - 1], Tok::PathSep | Tok::Punct('$' | '.' | '\'')) {
            continue;
        }
        let mut segs = vec![first.clone()];
        let mut j = i + 1;
        while toks.get(j) == Some(&Tok::PathSep) {
            let Some(Tok::Ident(seg)) = toks.get(j + 1) else {
                break;
            };
            segs.push(seg.clone());
            j += 2;
        }
        paths.push(segs);
    }
    paths
}

#[cfg(test)]
mod tests {
    use super::*;

    /// A crate written into a fresh temporary directory, removed when dropped.
    struct TempCrate {
        dir: PathBuf,
    }

    impl TempCrate {
        fn new(tag: &str, files: &[(&str, &str)]) -> TempCrate {
            let dir =
                std::env::temp_dir().join(format!("xtask-circles-{tag}-{}", std::process::id()));
            let _ = std::fs::remove_dir_all(&dir);
            for (rel, text) in files {
                let path = dir.join(rel);
                std::fs::create_dir_all(path.parent().unwrap()).unwrap();
                std::fs::write(path, text).unwrap();
            }
            TempCrate { dir }
        }

        fn tree(&self) -> ModuleTree {
            ModuleTree::load(&self.dir.join("src/lib.rs")).unwrap()
        }
    }

    impl Drop for TempCrate {
        fn drop(&mut self) {
            let _ = std::fs::remove_dir_all(&self.dir);
        }
    }

    fn circles(tree: &ModuleTree) -> Vec<Vec<String>> {
        let graph = tree.graph();
        graph
            .circles()
            .into_iter()
            .map(|c| c.into_iter().map(|n| graph.name(n).to_owned()).collect())
            .collect()
    }

    fn edges(tree: &ModuleTree) -> Vec<String> {
        let graph = tree.graph();
        (0..graph.node_count())
            .flat_map(|n| {
                let graph = &graph;
                graph
                    .successors(n)
                    .map(move |(to, _)| format!("{} -> {}", graph.name(n), graph.name(to)))
            })
            .collect()
    }

    #[test]
    fn finds_a_circle_through_files_and_re_exports() {
        let krate = TempCrate::new(
            "cycle",
            &[
                (
                    "src/lib.rs",
                    "//! A crate.\nmod a;\nmod b;\nmod c;\npub use a::Alpha;\n\
                     #[macro_export]\nmacro_rules! m { () => {}; }\n",
                ),
                // a -> b through a `use`.
                ("src/a.rs", "use crate::b::Beta;\npub struct Alpha(Beta);\n"),
                // b -> a through the root's re-export, inside a macro invocation.
                (
                    "src/b.rs",
                    "pub struct Beta;\nfn f() { let _ = format!(\"{:?}\", \
                     std::mem::size_of::<crate::Alpha>()); }\n",
                ),
                // c uses the root's exported macro and b, but nothing uses c.
                (
                    "src/c.rs",
                    "crate::m!();\nfn g() -> super::b::Beta { super::b::Beta }\n",
                ),
            ],
        );
        let tree = krate.tree();
        assert!(tree.warnings.is_empty(), "{:?}", tree.warnings);
        assert_eq!(tree.len(), 4);
        assert_eq!(circles(&tree), [vec!["a", "b"]]);
        assert_eq!(
            edges(&tree),
            ["crate -> a", "a -> b", "b -> a", "c -> b"],
            "the macro at the root is no edge"
        );
        let graph = tree.graph();
        let label = graph.successors(2).next().unwrap().1.to_owned();
        assert_eq!(label, "crate::Alpha");
    }

    #[test]
    fn finds_no_circle_in_layers() {
        let krate = TempCrate::new(
            "dag",
            &[
                (
                    "src/lib.rs",
                    "mod top;\nmod bottom;\npub use top::run;\npub fn helper() {}\n",
                ),
                (
                    "src/top.rs",
                    "mod mid;\nuse self::mid::Mid;\npub fn run() -> Mid { mid::make() }\n",
                ),
                (
                    "src/top/mid.rs",
                    "use crate::bottom::*;\npub struct Mid(Base);\n\
                     pub fn make() -> Mid { Mid(Base) }\n\
                     #[cfg(test)]\nmod tests { use super::super::*; }\n",
                ),
                (
                    "src/bottom.rs",
                    "pub struct Base;\n// crate::top::run() in a comment is no path\n\
                     const S: &str = \"crate::top::run\";\n\
                     #[cfg(test)]\nfn test_only() { crate::top::run(); }\n\
                     impl Base { #[cfg(test)] fn t() { crate::top::run(); } }\n",
                ),
            ],
        );
        let tree = krate.tree();
        assert!(circles(&tree).is_empty(), "{:?}", edges(&tree));
        assert_eq!(
            edges(&tree),
            ["crate -> top", "top -> top::mid", "top::mid -> bottom"]
        );
    }

    #[test]
    fn a_child_using_its_parent_closes_a_circle() {
        let krate = TempCrate::new(
            "parent",
            &[
                (
                    "src/lib.rs",
                    "mod outer {\n    pub fn p() { inner::q() }\n    \
                     pub mod inner { pub fn q() {} pub fn r() { super::p() } }\n}\n\
                     pub fn top() { outer::p() }\n",
                ),
                ("src/unused.rs", "pub fn never() { crate::top() }\n"),
            ],
        );
        let tree = krate.tree();
        assert_eq!(circles(&tree), [vec!["outer", "outer::inner"]]);
    }

    #[test]
    fn follows_path_attributes_and_nested_files() {
        let krate = TempCrate::new(
            "paths",
            &[
                (
                    "src/lib.rs",
                    "#[path = \"elsewhere/x_impl.rs\"]\nmod x;\nmod y { mod z; }\n",
                ),
                // A `#[path]` file's children are its siblings.
                ("src/elsewhere/x_impl.rs", "mod sib;\n"),
                ("src/elsewhere/sib.rs", "pub fn s() { crate::y::z::zz() }\n"),
                ("src/y/z.rs", "pub fn zz() { crate::x::sib::s() }\n"),
            ],
        );
        let tree = krate.tree();
        assert!(tree.warnings.is_empty(), "{:?}", tree.warnings);
        assert_eq!(circles(&tree), [vec!["x::sib", "y::z"]]);
        assert!(tree.file(1).ends_with("elsewhere/x_impl.rs"));
    }

    #[test]
    fn tokens_make_paths() {
        let tokens: TokenStream = "a::b::<T>(); x.y::<u8>(); $crate::q; ::std::x; \
                                   crate::c::d!(e::f); 'l: loop {}"
            .parse()
            .unwrap();
        let mut flat = Vec::new();
        flatten(tokens, &mut flat);
        let got: Vec<String> = token_paths(&flat).iter().map(|p| p.join("::")).collect();
        assert_eq!(got, ["a::b", "crate::c::d", "e::f"]);
        let cfg = |s: &str| {
            let file: syn::File = syn::parse_str(&format!("{s} fn f() {{}}")).unwrap();
            is_cfg_test(item_attrs(&file.items[0]))
        };
        assert!(cfg("#[cfg(test)]"));
        assert!(cfg("#[cfg(all(test, unix))]"));
        assert!(!cfg("#[cfg(not(test))]"));
        assert!(!cfg("#[cfg(any(test, fuzzing))]"));
    }
}
