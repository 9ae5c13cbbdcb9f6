//! The field rules of a transform (`add`, `timestamps`, `dates`, `drop`, `rename`), checked
//! and compiled into a tree of the objects they reach into.
//!
//! **Paths.** A name without a leading `/` is a top-level key, whatever it holds (`"a/b"` is
//! the key `a/b`): the form every pipeline file used before pointers. A name with a leading
//! `/` is an RFC 6901 JSON pointer (`~1` for `/`, `~0` for `~`), `/meta/created_at` being the
//! key `created_at` of the object under the top-level key `meta`. Every reference token names
//! an object key: pointers do not index arrays (`/items/0/ts` means the key `0` of an object
//! `items`; under an array nothing is found). A path whose value, or one of whose parents, is
//! missing or not an object is left alone, except that `add` creates missing parents (see
//! below). Paths have at most [`MAX_PATH_TOKENS`] tokens.
//!
//! **One transform per field.** A path is named by at most one rule, and a path named by a
//! rule cannot be inside another path a rule names (`drop = ["/meta"]` with
//! `timestamps = ["/meta/ts"]`): both are errors when the transform is built, naming the
//! rule's key (`rename./meta/ts: …`). Rules on different fields of one object are fine.
//!
//! **Renames** keep a field in its object: the new name is a key (`"ts" = "timestamp"`), or a
//! pointer to the same object (`"/meta/ts" = "/meta/timestamp"`). The new name must not be
//! another rule's field or hold one, and two fields cannot get the same new name. A record
//! whose object already has a field of the new name is refused
//! ([`super::RecordError::RenameCollision`]): neither value is dropped silently, and a line
//! never holds a key twice.
//!
//! **Adds** replace the value in place when the object has the key, and go at the end of
//! the object otherwise. Missing parents are created (`add = { "/meta/source" = "api" }` on a
//! record without `meta` adds `"meta":{"source":"api"}`); a parent that is there but is not an
//! object (`"meta": 5`, `null`, an array) is kept as it is, and the field is not added.

use std::fmt;

use crate::pointer::JsonPointer;

use super::{MAX_ADDED_FIELDS, write_key};

/// Paths have at most this many reference tokens (objects nest that deep at most).
pub const MAX_PATH_TOKENS: usize = 32;

/// At most this many renames (they are tracked per record in a 64-bit mask).
pub const MAX_RENAMES: usize = 64;

/// What a rule does to its field.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(super) enum Action {
    /// Set to this JSON text.
    Add(String),
    /// Normalised as a timestamp.
    Timestamp,
    /// Normalised as a date.
    Date,
    /// Left out.
    Drop,
    /// Written under another key ([`Field::out_key`]).
    Rename,
    /// An object some rules reach into.
    Nested(Box<Node>),
}

/// A key of an object that a rule names, or that holds one.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(super) struct Field {
    /// The key, unescaped.
    pub(super) key: String,
    /// The key as written to the line: `"key"`, JSON-escaped (the new name for a rename).
    pub(super) out_key: Vec<u8>,
    /// The path as the rule gave it, for errors (for a [`Action::Nested`] object, its
    /// pointer).
    pub(super) name: String,
    pub(super) action: Action,
    /// For a field that must appear (an add, or an object holding one), its bit in the
    /// object's mask of those met; for a rename, its bit in the mask of renames met.
    pub(super) bit: u32,
}

impl Field {
    /// Whether the object gets this field when the record lacks it.
    pub(super) fn must_appear(&self) -> bool {
        match &self.action {
            Action::Add(_) => true,
            Action::Nested(node) => node.created.is_some(),
            _ => false,
        }
    }

    /// The JSON text of the value written when the record lacks the field.
    pub(super) fn created_value(&self) -> &[u8] {
        match &self.action {
            Action::Add(value) => value.as_bytes(),
            Action::Nested(node) => node.created.as_deref().unwrap_or(b"{}"),
            _ => b"null",
        }
    }
}

/// An object reached by the rules: the record, or an object nested in it.
#[derive(Debug, Clone, PartialEq, Eq, Default)]
pub(super) struct Node {
    /// The keys named, in the order of the rules.
    pub(super) fields: Vec<Field>,
    /// The object's pointer (`""` for the record).
    pub(super) path: String,
    /// The object's JSON text when the record lacks it: its adds (`None`: it has none).
    pub(super) created: Option<Vec<u8>>,
}

impl Node {
    /// The field of `key`, if a rule names it or reaches through it.
    #[inline]
    pub(super) fn find(&self, key: &str) -> Option<&Field> {
        self.fields.iter().find(|f| f.key == key)
    }
}

/// A rule as given: which list it is in, its path's text, and what it does.
struct Rule {
    list: &'static str,
    name: String,
    tokens: Vec<String>,
    action: Action,
    /// For a rename, the new key.
    new_key: Option<String>,
}

impl Rule {
    fn key(&self) -> String {
        format!("{}.{}", self.list, self.name)
    }
}

/// A rule that cannot be applied: `key` is the rule's key in `[transform]` (`rename./meta/ts`).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct RuleError {
    /// The rule's key: its list and path, as `timestamps./meta/created_at`.
    pub key: String,
    /// What is wrong.
    pub message: String,
}

impl fmt::Display for RuleError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{}: {}", self.key, self.message)
    }
}

/// The tokens of a path: a top-level key, or a JSON pointer when it starts with `/`.
pub fn parse_path(text: &str) -> Result<Vec<String>, String> {
    let tokens = if text.starts_with('/') {
        JsonPointer::parse(text)
            .map_err(|e| e.to_string())?
            .tokens()
            .to_vec()
    } else {
        vec![text.to_owned()]
    };
    if tokens.len() > MAX_PATH_TOKENS {
        return Err(format!(
            "a path has at most {MAX_PATH_TOKENS} levels, this one has {}",
            tokens.len()
        ));
    }
    Ok(tokens)
}

/// A pointer's text for `tokens`, escaped.
fn pointer_text(tokens: &[String]) -> String {
    tokens
        .iter()
        .map(|t| format!("/{}", t.replace('~', "~0").replace('/', "~1")))
        .collect()
}

/// The rules, by list.
pub(super) struct RuleLists<'a> {
    pub(super) add: &'a [(String, String)],
    pub(super) timestamps: &'a [String],
    pub(super) dates: &'a [String],
    pub(super) drop: &'a [String],
    pub(super) rename: &'a [(String, String)],
}

/// Checks the rules and compiles them into the record's [`Node`].
pub(super) fn compile(lists: &RuleLists<'_>) -> Result<Node, RuleError> {
    let mut rules = Vec::new();
    let mut push = |list: &'static str, name: &str, action: Action, new_key: Option<String>| {
        let tokens = parse_path(name).map_err(|message| RuleError {
            key: format!("{list}.{name}"),
            message,
        })?;
        rules.push(Rule {
            list,
            name: name.to_owned(),
            tokens,
            action,
            new_key,
        });
        Ok::<(), RuleError>(())
    };
    for (name, value) in lists.add {
        push("add", name, Action::Add(value.clone()), None)?;
    }
    for name in lists.timestamps {
        push("timestamps", name, Action::Timestamp, None)?;
    }
    for name in lists.dates {
        push("dates", name, Action::Date, None)?;
    }
    for name in lists.drop {
        push("drop", name, Action::Drop, None)?;
    }
    for (name, new) in lists.rename {
        push("rename", name, Action::Rename, Some(new.clone()))?;
    }
    if lists.rename.len() > MAX_RENAMES {
        return Err(RuleError {
            key: "rename".to_owned(),
            message: format!(
                "at most {MAX_RENAMES} renames are supported, got {}",
                lists.rename.len()
            ),
        });
    }
    check(&mut rules)?;
    let mut root = Node::default();
    for rule in rules {
        insert(&mut root, rule);
    }
    number(&mut root);
    Ok(root)
}

/// Refuses paths named twice or inside one another, and renames that cannot be done; works
/// out each rename's new key.
fn check(rules: &mut [Rule]) -> Result<(), RuleError> {
    for j in 0..rules.len() {
        for i in 0..j {
            let (a, b) = (&rules[i], &rules[j]);
            let error = |inner: &Rule, message: String| RuleError {
                key: inner.key(),
                message,
            };
            if a.tokens == b.tokens {
                return Err(error(
                    b,
                    format!(
                        "{:?} is also in transform.{} (as {:?}): a field takes one transform",
                        b.name, a.list, a.name
                    ),
                ));
            }
            let (outer, inner) = if a.tokens.starts_with(&b.tokens) {
                (b, a)
            } else if b.tokens.starts_with(&a.tokens) {
                (a, b)
            } else {
                continue;
            };
            return Err(error(
                inner,
                format!(
                    "{:?} is inside {:?}, which transform.{} already transforms: a field inside \
                     a transformed one cannot be transformed too",
                    inner.name, outer.name, outer.list
                ),
            ));
        }
    }
    // New names: in the same object, not another rule's field, not taken twice.
    let mut targets: Vec<(Vec<String>, usize)> = Vec::new();
    for j in 0..rules.len() {
        let Some(new) = rules[j].new_key.clone() else {
            continue;
        };
        let rule = &rules[j];
        let error = |message: String| RuleError {
            key: rule.key(),
            message,
        };
        let parent = &rule.tokens[..rule.tokens.len() - 1];
        let key = if new.starts_with('/') {
            let tokens = parse_path(&new).map_err(|e| error(format!("the new name: {e}")))?;
            if tokens.len() != rule.tokens.len() || tokens[..parent.len()] != *parent {
                return Err(error(format!(
                    "the new name {new:?} is not in the same object: a rename keeps a field in \
                     its object; give the new key alone, or a pointer to {:?}",
                    format!("{}/…", pointer_text(parent))
                )));
            }
            tokens[parent.len()].clone()
        } else {
            new.clone()
        };
        let mut target = parent.to_vec();
        target.push(key.clone());
        if target == rule.tokens {
            return Err(error(format!(
                "the new name {new:?} is the field's own name"
            )));
        }
        if let Some(other) = rules
            .iter()
            .find(|r| r.tokens.starts_with(&target) || target.starts_with(&r.tokens))
        {
            return Err(error(format!(
                "the new name {new:?} is a field transform.{} names ({:?})",
                other.list, other.name
            )));
        }
        if let Some((_, i)) = targets.iter().find(|(t, _)| *t == target) {
            return Err(error(format!(
                "the new name {new:?} is also the new name of {:?}",
                rules[*i].name
            )));
        }
        targets.push((target, j));
        rules[j].new_key = Some(key);
    }
    Ok(())
}

/// Adds `rule` to the tree under `root`.
fn insert(root: &mut Node, rule: Rule) {
    let (last, parents) = rule
        .tokens
        .split_last()
        .unwrap_or_else(|| unreachable!("a path has a token"));
    let mut node = root;
    for (depth, token) in parents.iter().enumerate() {
        let at = match node.fields.iter().position(|f| f.key == *token) {
            Some(at) => at,
            None => {
                let path = pointer_text(&parents[..=depth]);
                node.fields.push(Field {
                    key: token.clone(),
                    out_key: key_text(token),
                    name: path.clone(),
                    action: Action::Nested(Box::new(Node {
                        path,
                        ..Node::default()
                    })),
                    bit: 0,
                });
                node.fields.len() - 1
            }
        };
        node = match &mut node.fields[at].action {
            Action::Nested(child) => child,
            // The checks refuse a path inside another.
            _ => unreachable!("a rule's path is not inside another's"),
        };
    }
    let out_key = key_text(rule.new_key.as_deref().unwrap_or(last));
    node.fields.push(Field {
        key: last.clone(),
        out_key,
        name: rule.name,
        action: rule.action,
        bit: 0,
    });
}

/// Numbers the fields' bits and works out the objects created for adds, deepest first.
fn number(node: &mut Node) {
    let (mut must, mut renames) = (0, 0);
    for field in &mut node.fields {
        if let Action::Nested(child) = &mut field.action {
            number(child);
        }
        if field.must_appear() {
            field.bit = must;
            must += 1;
        } else if field.action == Action::Rename {
            field.bit = renames;
            renames += 1;
        }
    }
    debug_assert!(must as usize <= MAX_ADDED_FIELDS && renames as usize <= MAX_RENAMES);
    if must > 0 {
        let mut created = vec![b'{'];
        for field in node.fields.iter().filter(|f| f.must_appear()) {
            if created.len() > 1 {
                created.push(b',');
            }
            created.extend_from_slice(&field.out_key);
            created.push(b':');
            created.extend_from_slice(field.created_value());
        }
        created.push(b'}');
        node.created = Some(created);
    }
}

fn key_text(key: &str) -> Vec<u8> {
    let mut out = Vec::new();
    write_key(&mut out, key);
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    fn compiled(
        add: &[&str],
        timestamps: &[&str],
        dates: &[&str],
        drop: &[&str],
        rename: &[(&str, &str)],
    ) -> Result<Node, RuleError> {
        let own = |v: &[&str]| v.iter().map(|s| (*s).to_owned()).collect::<Vec<_>>();
        let add: Vec<_> = add
            .iter()
            .map(|k| ((*k).to_owned(), "1".to_owned()))
            .collect();
        let rename: Vec<_> = rename
            .iter()
            .map(|(a, b)| ((*a).to_owned(), (*b).to_owned()))
            .collect();
        compile(&RuleLists {
            add: &add,
            timestamps: &own(timestamps),
            dates: &own(dates),
            drop: &own(drop),
            rename: &rename,
        })
    }

    #[test]
    fn paths_are_keys_or_pointers() {
        assert_eq!(parse_path("created_at").unwrap(), ["created_at"]);
        assert_eq!(parse_path("a/b").unwrap(), ["a/b"]);
        assert_eq!(parse_path("").unwrap(), [""]);
        assert_eq!(
            parse_path("/meta/created_at").unwrap(),
            ["meta", "created_at"]
        );
        assert_eq!(parse_path("/a~1b/c~0d").unwrap(), ["a/b", "c~d"]);
        assert_eq!(parse_path("/items/0/ts").unwrap(), ["items", "0", "ts"]);
        assert!(
            parse_path("/a~2")
                .unwrap_err()
                .contains("'~' not followed by 0 or 1")
        );
        let deep = "/a".repeat(MAX_PATH_TOKENS + 1);
        assert_eq!(
            parse_path(&deep).unwrap_err(),
            "a path has at most 32 levels, this one has 33"
        );
        assert_eq!(
            pointer_text(&["a/b".to_owned(), "c~d".to_owned()]),
            "/a~1b/c~0d"
        );
    }

    #[test]
    fn compiles_a_tree_along_the_paths() {
        let root = compiled(
            &["/m/src"],
            &["/m/ts", "ts"],
            &[],
            &["/m/n/x"],
            &[("/m/a", "b")],
        )
        .unwrap();
        let keys: Vec<_> = root.fields.iter().map(|f| f.key.as_str()).collect();
        assert_eq!(keys, ["m", "ts"]);
        let Action::Nested(m) = &root.fields[0].action else {
            panic!("m is an object")
        };
        assert_eq!(m.path, "/m");
        assert_eq!(m.created.as_deref(), Some(&br#"{"src":1}"#[..]));
        let keys: Vec<_> = m.fields.iter().map(|f| f.key.as_str()).collect();
        assert_eq!(keys, ["src", "ts", "n", "a"]);
        assert_eq!(m.fields[3].out_key, br#""b""#);
        let Action::Nested(n) = &m.fields[2].action else {
            panic!("n is an object")
        };
        assert_eq!((n.path.as_str(), n.created.is_none()), ("/m/n", true));
        assert!(root.fields[0].must_appear() && !root.fields[1].must_appear());
    }

    #[test]
    fn conflicting_rules_are_refused_naming_the_rule() {
        #[rustfmt::skip]
        let cases: Vec<(Result<Node, RuleError>, &str)> = vec![
            (compiled(&[], &["ts"], &[], &["/ts"], &[]),
             r#"drop./ts: "/ts" is also in transform.timestamps (as "ts"): a field takes one transform"#),
            (compiled(&[], &["a"], &["a"], &[], &[]),
             r#"dates.a: "a" is also in transform.timestamps (as "a"): a field takes one transform"#),
            (compiled(&[], &[], &[], &["x"], &[("x", "y")]),
             r#"rename.x: "x" is also in transform.drop (as "x"): a field takes one transform"#),
            (compiled(&[], &["/meta/ts"], &[], &["/meta"], &[]),
             r#"timestamps./meta/ts: "/meta/ts" is inside "/meta", which transform.drop already transforms: a field inside a transformed one cannot be transformed too"#),
            (compiled(&["/meta"], &[], &[], &["/meta/x"], &[]),
             r#"drop./meta/x: "/meta/x" is inside "/meta", which transform.add already transforms: a field inside a transformed one cannot be transformed too"#),
            (compiled(&[], &[], &[], &[], &[("/meta/ts", "/other/ts")]),
             r#"rename./meta/ts: the new name "/other/ts" is not in the same object: a rename keeps a field in its object; give the new key alone, or a pointer to "/meta/…""#),
            (compiled(&[], &[], &[], &[], &[("/meta/ts", "/ts")]),
             r#"rename./meta/ts: the new name "/ts" is not in the same object: a rename keeps a field in its object; give the new key alone, or a pointer to "/meta/…""#),
            (compiled(&["new"], &[], &[], &[], &[("old", "new")]),
             r#"rename.old: the new name "new" is a field transform.add names ("new")"#),
            (compiled(&["/n/x"], &[], &[], &[], &[("old", "n")]),
             r#"rename.old: the new name "n" is a field transform.add names ("/n/x")"#),
            (compiled(&[], &[], &[], &[], &[("a", "c"), ("b", "c")]),
             r#"rename.b: the new name "c" is also the new name of "a""#),
            (compiled(&[], &[], &[], &[], &[("a", "b"), ("b", "c")]),
             r#"rename.a: the new name "b" is a field transform.rename names ("b")"#),
            (compiled(&[], &[], &[], &[], &[("/m/a", "/m/a")]),
             r#"rename./m/a: the new name "/m/a" is the field's own name"#),
            (compiled(&[], &[], &[], &[], &[("/m/a", "/m/b~2")]),
             r#"rename./m/a: the new name: JSON pointer "/m/b~2" has a '~' not followed by 0 or 1"#),
            (compiled(&[], &["/a~"], &[], &[], &[]),
             r#"timestamps./a~: JSON pointer "/a~" has a '~' not followed by 0 or 1"#),
        ];
        for (result, want) in cases {
            assert_eq!(result.unwrap_err().to_string(), want);
        }
        // Rules on different fields of one object are fine, and so are keys with slashes.
        compiled(
            &["/m/a"],
            &["/m/b"],
            &["/m/c"],
            &["/m/d"],
            &[("/m/e", "f"), ("a/b", "c")],
        )
        .unwrap();
    }
}
