//! Templates in pipeline files: `{name}` template variables and `${VAR}` environment variables.
//!
//! Two kinds of substitution, deliberately kept apart:
//!
//! - **Template variables** are known only when a run starts: the run's `{ingest_date}` and
//!   `{ingest_ts}`, and the pipeline's own, declared with a default value in `[vars]` and set
//!   per run (`landline run --var NAME=VALUE`, an event's `vars`, `landline plan --split-by
//!   values:`). They are allowed in the source URL, query values and header values, in
//!   `[transform] add` values and in the `[sink] url`. A template is parsed once by
//!   [`Template::parse_in`] (so an unknown `{name}` is a configuration error before any
//!   request) and rendered once per run. `{{` and `}}` write literal braces.
//! - **Environment variables**, `${VAR}`, are read while the configuration is validated, in the
//!   source URL, query values and header values, so that secrets stay out of pipeline files.
//!   A missing variable is an error naming the key that used it; `$$` writes a literal `$`.
//!   The value becomes literal text of the template: braces in a secret are never read as
//!   template variables.
//!
//! Nothing here logs: header values are secrets once expanded, and a template's `Debug` and
//! `Display` show its text as expanded (the pipeline's `Debug` hides header values).

use std::collections::BTreeMap;
use std::fmt;

/// The template variables every run has.
pub const BUILTIN_VARS: [&str; 2] = ["ingest_date", "ingest_ts"];

/// The longest name of a `[vars]` variable.
pub const MAX_VAR_NAME_CHARS: usize = 64;

/// Whether `name` can be declared in `[vars]`: ASCII lower-case letters, digits and `_`,
/// starting with a letter, at most [`MAX_VAR_NAME_CHARS`], and not a built-in variable.
pub fn valid_var_name(name: &str) -> bool {
    !name.is_empty()
        && name.len() <= MAX_VAR_NAME_CHARS
        && name.starts_with(|c: char| c.is_ascii_lowercase())
        && name
            .chars()
            .all(|c| c.is_ascii_lowercase() || c.is_ascii_digit() || c == '_')
        && !BUILTIN_VARS.contains(&name)
}

/// The values of the template variables for one run.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct RunVars {
    /// Value of `{ingest_date}`.
    pub ingest_date: String,
    /// Value of `{ingest_ts}`.
    pub ingest_ts: String,
    /// Values of the pipeline's own variables (`[vars]`), every declared one.
    pub vars: BTreeMap<String, String>,
}

impl RunVars {
    /// The value of variable `name`, if the run has one.
    pub fn get(&self, name: &str) -> Option<&str> {
        match name {
            "ingest_date" => Some(&self.ingest_date),
            "ingest_ts" => Some(&self.ingest_ts),
            _ => self.vars.get(name).map(String::as_str),
        }
    }
}

/// Looks up an environment variable (normally [`std::env::var`]).
pub type EnvLookup<'a> = &'a dyn Fn(&str) -> Option<String>;

/// What a template may refer to while it is parsed.
#[derive(Clone, Copy, Default)]
pub struct Scope<'a> {
    /// The pipeline's own variables (`[vars]`), besides the [`BUILTIN_VARS`].
    pub vars: &'a [String],
    /// Looks up `${VAR}` references; `None` where `$` is an ordinary character.
    pub env: Option<EnvLookup<'a>>,
}

impl Scope<'_> {
    fn knows(&self, name: &str) -> bool {
        BUILTIN_VARS.contains(&name) || self.vars.iter().any(|v| v == name)
    }

    fn known(&self) -> String {
        BUILTIN_VARS
            .iter()
            .copied()
            .chain(self.vars.iter().map(String::as_str))
            .map(|n| format!("{{{n}}}"))
            .collect::<Vec<_>>()
            .join(", ")
    }
}

/// Why a template could not be parsed or expanded.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[non_exhaustive]
pub enum TemplateError {
    /// `{name}` names no template variable.
    #[error(
        "unknown template variable {{{name}}} (known: {known}; declare others in [vars], and write {{{{ and }}}} for literal braces)"
    )]
    UnknownVariable {
        /// The name between the braces.
        name: String,
        /// The variables that are known, as `{a}, {b}`.
        known: String,
    },
    /// A `{` without its `}`, or a lone `}`.
    #[error("unbalanced brace at byte {offset} (write {{{{ or }}}} for a literal brace)")]
    UnbalancedBrace {
        /// Byte offset of the brace.
        offset: usize,
    },
    /// `${` without its `}`, or an empty or invalid variable name.
    #[error(
        "malformed environment reference at byte {offset} (expected ${{NAME}}; write $$ for a literal $)"
    )]
    MalformedEnvRef {
        /// Byte offset of the `$`.
        offset: usize,
    },
    /// `${VAR}` names a variable that is not set (or not valid UTF-8).
    #[error("environment variable {name} is not set")]
    MissingEnv {
        /// The variable's name.
        name: String,
    },
}

#[derive(Debug, Clone, PartialEq, Eq)]
enum Piece {
    Text(String),
    Var(String),
}

/// A parsed template.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Template {
    pieces: Vec<Piece>,
}

impl Template {
    /// Parses `text` with only the built-in variables and no `${VAR}` references.
    pub fn parse(text: &str) -> Result<Self, TemplateError> {
        Self::parse_in(text, Scope::default())
    }

    /// Parses `text`: `{name}` must be a variable `scope` knows, and `${VAR}` is expanded
    /// with `scope.env` (when it has one) into literal text.
    pub fn parse_in(text: &str, scope: Scope<'_>) -> Result<Self, TemplateError> {
        let mut pieces = Vec::new();
        let mut literal = String::new();
        let mut rest = text;
        let mut offset = 0;
        while let Some(at) = rest.find(['{', '}', '$']) {
            literal.push_str(&rest[..at]);
            let here = offset + at;
            let tail = &rest[at..];
            let used = match tail.as_bytes() {
                [b'{', b'{', ..] => {
                    literal.push('{');
                    2
                }
                [b'}', b'}', ..] => {
                    literal.push('}');
                    2
                }
                [b'}', ..] => return Err(TemplateError::UnbalancedBrace { offset: here }),
                [b'{', ..] => {
                    let end = tail
                        .find('}')
                        .ok_or(TemplateError::UnbalancedBrace { offset: here })?;
                    let name = &tail[1..end];
                    if !scope.knows(name) {
                        return Err(TemplateError::UnknownVariable {
                            name: name.to_owned(),
                            known: scope.known(),
                        });
                    }
                    if !literal.is_empty() {
                        pieces.push(Piece::Text(std::mem::take(&mut literal)));
                    }
                    pieces.push(Piece::Var(name.to_owned()));
                    end + 1
                }
                _ => match scope.env {
                    // A `$`, where environment references are not read.
                    None => {
                        literal.push('$');
                        1
                    }
                    Some(env) => {
                        let (value, used) = env_ref(tail, here, env)?;
                        literal.push_str(&value);
                        used
                    }
                },
            };
            rest = &tail[used..];
            offset = here + used;
        }
        literal.push_str(rest);
        if !literal.is_empty() {
            pieces.push(Piece::Text(literal));
        }
        Ok(Template { pieces })
    }

    /// The text before the first variable (the whole text when there is none).
    pub fn literal_prefix(&self) -> &str {
        match self.pieces.first() {
            Some(Piece::Text(text)) => text,
            _ => "",
        }
    }

    /// Whether the template uses variable `name`.
    pub fn uses(&self, name: &str) -> bool {
        self.pieces
            .iter()
            .any(|p| matches!(p, Piece::Var(v) if v == name))
    }

    /// The variables the template uses, in order (a name may repeat).
    pub fn var_names(&self) -> impl Iterator<Item = &str> {
        self.pieces.iter().filter_map(|p| match p {
            Piece::Var(v) => Some(v.as_str()),
            Piece::Text(_) => None,
        })
    }

    /// Whether the template uses any variable.
    pub fn has_vars(&self) -> bool {
        self.pieces.iter().any(|p| matches!(p, Piece::Var(_)))
    }

    /// The template with the run's values put in.
    pub fn render(&self, vars: &RunVars) -> String {
        self.render_with(vars, |value, out| out.push_str(value))
    }

    /// The template with the run's values put in through `put` (which may escape them).
    /// A variable the run has no value for (which validation rules out) stays `{name}`.
    pub fn render_with(&self, vars: &RunVars, put: impl Fn(&str, &mut String)) -> String {
        let mut out = String::new();
        for piece in &self.pieces {
            match piece {
                Piece::Text(t) => out.push_str(t),
                Piece::Var(name) => match vars.get(name) {
                    Some(value) => put(value, &mut out),
                    None => {
                        out.push('{');
                        out.push_str(name);
                        out.push('}');
                    }
                },
            }
        }
        out
    }
}

impl fmt::Display for Template {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        for piece in &self.pieces {
            match piece {
                Piece::Text(t) => write!(f, "{}", t.replace('{', "{{").replace('}', "}}"))?,
                Piece::Var(name) => write!(f, "{{{name}}}")?,
            }
        }
        Ok(())
    }
}

/// Reads the `$` reference at the start of `tail` (at byte `offset` of its text): its
/// value, and the bytes it took.
fn env_ref(
    tail: &str,
    offset: usize,
    env: &dyn Fn(&str) -> Option<String>,
) -> Result<(String, usize), TemplateError> {
    let after = &tail[1..];
    if after.starts_with('$') {
        return Ok(("$".to_owned(), 2));
    }
    let Some(body) = after.strip_prefix('{') else {
        // A `$` not followed by `{` or `$` is an ordinary character.
        return Ok(("$".to_owned(), 1));
    };
    let end = body
        .find('}')
        .ok_or(TemplateError::MalformedEnvRef { offset })?;
    let name = &body[..end];
    let valid = !name.is_empty()
        && !name.starts_with(|c: char| c.is_ascii_digit())
        && name.chars().all(|c| c.is_ascii_alphanumeric() || c == '_');
    if !valid {
        return Err(TemplateError::MalformedEnvRef { offset });
    }
    let value = env(name).ok_or_else(|| TemplateError::MissingEnv {
        name: name.to_owned(),
    })?;
    Ok((value, end + 3))
}

/// Expands `${VAR}` references in `text` with `lookup` (normally [`std::env::var`]); braces
/// are ordinary characters here.
pub fn expand_env(
    text: &str,
    lookup: impl Fn(&str) -> Option<String>,
) -> Result<String, TemplateError> {
    let mut out = String::with_capacity(text.len());
    let mut rest = text;
    let mut offset = 0;
    while let Some(at) = rest.find('$') {
        out.push_str(&rest[..at]);
        let (value, used) = env_ref(&rest[at..], offset + at, &lookup)?;
        out.push_str(&value);
        offset += at + used;
        rest = &rest[at + used..];
    }
    out.push_str(rest);
    Ok(out)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn vars() -> RunVars {
        RunVars {
            ingest_date: "2026-11-25".into(),
            ingest_ts: "2026-11-25T02:03:04.005Z".into(),
            vars: BTreeMap::from([("region".to_owned(), "eu-west".to_owned())]),
        }
    }

    #[test]
    fn renders_run_variables() {
        let cases = [
            ("plain", "plain"),
            ("{ingest_date}", "2026-11-25"),
            (
                "s3://b/date={ingest_date}/v.jsonl.gz",
                "s3://b/date=2026-11-25/v.jsonl.gz",
            ),
            (
                "{ingest_ts}|{ingest_date}",
                "2026-11-25T02:03:04.005Z|2026-11-25",
            ),
            ("{{literal}} {ingest_date}", "{literal} 2026-11-25"),
            ("é{ingest_date}ü", "é2026-11-25ü"),
            ("", ""),
        ];
        for (text, want) in cases {
            let t = Template::parse(text).unwrap();
            assert_eq!(t.render(&vars()), want, "{text}");
            assert_eq!(Template::parse(&t.to_string()).unwrap(), t, "{text}");
        }
    }

    #[test]
    fn rejects_bad_templates() {
        let cases = [
            (
                "{nope}",
                TemplateError::UnknownVariable {
                    name: "nope".into(),
                    known: "{ingest_date}, {ingest_ts}".into(),
                },
            ),
            (
                "{}",
                TemplateError::UnknownVariable {
                    name: "".into(),
                    known: "{ingest_date}, {ingest_ts}".into(),
                },
            ),
            (
                "a{ingest_date",
                TemplateError::UnbalancedBrace { offset: 1 },
            ),
            ("a}b", TemplateError::UnbalancedBrace { offset: 1 }),
        ];
        for (text, want) in cases {
            assert_eq!(Template::parse(text).unwrap_err(), want, "{text}");
        }
    }

    #[test]
    fn tracks_variable_use() {
        let t = Template::parse("x/{ingest_date}").unwrap();
        assert!(t.uses("ingest_date"));
        assert!(!t.uses("ingest_ts"));
        assert!(t.has_vars());
        assert!(!Template::parse("x/{{y}}").unwrap().has_vars());
    }

    #[test]
    fn declared_variables_and_environment_references_together() {
        let declared = ["region".to_owned()];
        let env = |name: &str| match name {
            "TOKEN" => Some("s{ingest_date}e}cr{et".to_owned()),
            _ => None,
        };
        let scope = Scope {
            vars: &declared,
            env: Some(&env),
        };
        let t = Template::parse_in("Bearer ${TOKEN} {region}/{ingest_date} $$ $5 {{x}}", scope)
            .unwrap();
        // A secret's braces are its own text, never variables.
        assert_eq!(
            t.render(&vars()),
            "Bearer s{ingest_date}e}cr{et eu-west/2026-11-25 $ $5 {x}"
        );
        assert!(t.uses("region"));
        let encoded = t.render_with(&vars(), |v, out| out.push_str(&v.to_uppercase()));
        assert!(
            encoded.ends_with("EU-WEST/2026-11-25 $ $5 {x}"),
            "{encoded}"
        );
        // Without an environment, `$` is an ordinary character.
        let plain = Template::parse_in(
            "${TOKEN}-{region}",
            Scope {
                vars: &declared,
                env: None,
            },
        );
        assert_eq!(
            plain.unwrap_err(),
            TemplateError::UnknownVariable {
                name: "TOKEN".into(),
                known: "{ingest_date}, {ingest_ts}, {region}".into(),
            }
        );
        let plain = Template::parse_in(
            "$x-{region}",
            Scope {
                vars: &declared,
                env: None,
            },
        );
        assert_eq!(plain.unwrap().render(&vars()), "$x-eu-west");
        for (text, want) in [
            (
                "${MISSING} {region}",
                TemplateError::MissingEnv {
                    name: "MISSING".into(),
                },
            ),
            (
                "{region} ${TOKEN",
                TemplateError::MalformedEnvRef { offset: 9 },
            ),
            (
                "{other}",
                TemplateError::UnknownVariable {
                    name: "other".into(),
                    known: "{ingest_date}, {ingest_ts}, {region}".into(),
                },
            ),
        ] {
            assert_eq!(Template::parse_in(text, scope).unwrap_err(), want, "{text}");
        }
        let err = Template::parse("{x}").unwrap_err().to_string();
        assert!(
            err.contains("declare others in [vars]") && err.contains("{{"),
            "{err}"
        );
    }

    #[test]
    fn names_a_pipeline_may_declare() {
        for good in ["region", "a", "shard_2", "x".repeat(64).as_str()] {
            assert!(valid_var_name(good), "{good}");
        }
        for bad in [
            "",
            "Region",
            "2a",
            "_a",
            "a-b",
            "ingest_date",
            "ingest_ts",
            "é",
            &"x".repeat(65),
        ] {
            assert!(!valid_var_name(bad), "{bad}");
        }
    }

    #[test]
    fn expands_environment_references() {
        let env = |name: &str| match name {
            "TOKEN" => Some("s3cr3t".to_owned()),
            "EMPTY" => Some(String::new()),
            _ => None,
        };
        let cases = [
            ("Bearer ${TOKEN}", "Bearer s3cr3t"),
            ("${TOKEN}${TOKEN}", "s3cr3ts3cr3t"),
            ("a${EMPTY}b", "ab"),
            ("cost: $5 and $$ and $", "cost: $5 and $ and $"),
            ("$${TOKEN}", "${TOKEN}"),
            ("no refs", "no refs"),
        ];
        for (text, want) in cases {
            assert_eq!(expand_env(text, env).unwrap(), want, "{text}");
        }
        let errors = [
            (
                "${MISSING}",
                TemplateError::MissingEnv {
                    name: "MISSING".into(),
                },
            ),
            ("x ${TOKEN", TemplateError::MalformedEnvRef { offset: 2 }),
            ("${}", TemplateError::MalformedEnvRef { offset: 0 }),
            ("${1A}", TemplateError::MalformedEnvRef { offset: 0 }),
            ("${A-B}", TemplateError::MalformedEnvRef { offset: 0 }),
        ];
        for (text, want) in errors {
            assert_eq!(expand_env(text, env).unwrap_err(), want, "{text}");
        }
    }
}
