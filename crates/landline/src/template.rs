//! Templates in pipeline files: `{name}` run variables and `${VAR}` environment variables.
//!
//! Two kinds of substitution, deliberately kept apart:
//!
//! - **Run variables**, `{ingest_date}` and `{ingest_ts}`, are known only when a run starts.
//!   They are allowed in `[transform] add` values and the `[sink] url`; a template is parsed
//!   once by [`Template::parse`] (so an unknown `{name}` is a configuration error before any
//!   request) and rendered once per run. `{{` and `}}` write literal braces.
//! - **Environment variables**, `${VAR}`, are read while the configuration is validated, in the
//!   source URL, query values and header values, so that secrets stay out of pipeline files.
//!   A missing variable is an error naming the key that used it; `$$` writes a literal `$`.
//!
//! Nothing here logs: header values are secrets once expanded.

use std::fmt;

/// A variable that a run supplies to templates.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum RunVar {
    /// The run's UTC date, `YYYY-MM-DD` (overridable with `--ingest-date`).
    IngestDate,
    /// The run's start as RFC 3339 UTC with milliseconds, `YYYY-MM-DDTHH:MM:SS.sssZ`.
    IngestTs,
}

impl RunVar {
    /// Every run variable, with the name used in templates.
    pub const ALL: [(&'static str, RunVar); 2] = [
        ("ingest_date", RunVar::IngestDate),
        ("ingest_ts", RunVar::IngestTs),
    ];
}

/// The values of the run variables for one run.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct RunVars {
    /// Value of `{ingest_date}`.
    pub ingest_date: String,
    /// Value of `{ingest_ts}`.
    pub ingest_ts: String,
}

impl RunVars {
    fn get(&self, var: RunVar) -> &str {
        match var {
            RunVar::IngestDate => &self.ingest_date,
            RunVar::IngestTs => &self.ingest_ts,
        }
    }
}

/// Why a template could not be parsed or expanded.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[non_exhaustive]
pub enum TemplateError {
    /// `{name}` names no run variable.
    #[error("unknown template variable {{{name}}} (known: {{ingest_date}}, {{ingest_ts}})")]
    UnknownVariable {
        /// The name between the braces.
        name: String,
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
    Var(RunVar),
}

/// A parsed `{run variable}` template.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Template {
    pieces: Vec<Piece>,
}

impl Template {
    /// Parses `text`; unknown variables and unbalanced braces are errors.
    pub fn parse(text: &str) -> Result<Self, TemplateError> {
        let mut pieces = Vec::new();
        let mut literal = String::new();
        let mut rest = text.char_indices().peekable();
        while let Some((offset, c)) = rest.next() {
            match c {
                '{' if rest.peek().map(|&(_, c)| c) == Some('{') => {
                    rest.next();
                    literal.push('{');
                }
                '}' if rest.peek().map(|&(_, c)| c) == Some('}') => {
                    rest.next();
                    literal.push('}');
                }
                '{' => {
                    let tail = &text[offset + 1..];
                    let end = tail
                        .find('}')
                        .ok_or(TemplateError::UnbalancedBrace { offset })?;
                    let name = &tail[..end];
                    let var = RunVar::ALL
                        .iter()
                        .find(|(n, _)| *n == name)
                        .map(|&(_, v)| v)
                        .ok_or_else(|| TemplateError::UnknownVariable {
                            name: name.to_owned(),
                        })?;
                    if !literal.is_empty() {
                        pieces.push(Piece::Text(std::mem::take(&mut literal)));
                    }
                    pieces.push(Piece::Var(var));
                    // Skip the name and the closing brace.
                    for _ in 0..name.chars().count() + 1 {
                        rest.next();
                    }
                }
                '}' => return Err(TemplateError::UnbalancedBrace { offset }),
                c => literal.push(c),
            }
        }
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

    /// Whether the template uses `var`.
    pub fn uses(&self, var: RunVar) -> bool {
        self.pieces.contains(&Piece::Var(var))
    }

    /// The template with the run's values put in.
    pub fn render(&self, vars: &RunVars) -> String {
        let mut out = String::new();
        for piece in &self.pieces {
            match piece {
                Piece::Text(t) => out.push_str(t),
                Piece::Var(v) => out.push_str(vars.get(*v)),
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
                Piece::Var(v) => {
                    let name = RunVar::ALL
                        .iter()
                        .find(|(_, x)| x == v)
                        .map_or("?", |(n, _)| n);
                    write!(f, "{{{name}}}")?;
                }
            }
        }
        Ok(())
    }
}

/// Expands `${VAR}` references in `text` with `lookup` (normally [`std::env::var`]).
pub fn expand_env(
    text: &str,
    lookup: impl Fn(&str) -> Option<String>,
) -> Result<String, TemplateError> {
    let mut out = String::with_capacity(text.len());
    let mut rest = text;
    let mut base = 0;
    while let Some(dollar) = rest.find('$') {
        out.push_str(&rest[..dollar]);
        let after = &rest[dollar + 1..];
        let offset = base + dollar;
        if let Some(tail) = after.strip_prefix('$') {
            out.push('$');
            base += dollar + 2;
            rest = tail;
        } else if let Some(tail) = after.strip_prefix('{') {
            let end = tail
                .find('}')
                .ok_or(TemplateError::MalformedEnvRef { offset })?;
            let name = &tail[..end];
            let valid = !name.is_empty()
                && !name.starts_with(|c: char| c.is_ascii_digit())
                && name.chars().all(|c| c.is_ascii_alphanumeric() || c == '_');
            if !valid {
                return Err(TemplateError::MalformedEnvRef { offset });
            }
            let value = lookup(name).ok_or_else(|| TemplateError::MissingEnv {
                name: name.to_owned(),
            })?;
            out.push_str(&value);
            base += dollar + 2 + end + 1;
            rest = &tail[end + 1..];
        } else {
            // A `$` not followed by `{` or `$` is an ordinary character.
            out.push('$');
            base += dollar + 1;
            rest = after;
        }
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
                },
            ),
            ("{}", TemplateError::UnknownVariable { name: "".into() }),
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
        assert!(t.uses(RunVar::IngestDate));
        assert!(!t.uses(RunVar::IngestTs));
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
