//! Values that must never reach a log, an error or a checkpoint: [`Secret`] (an expanded
//! header value) and [`EnvVars`] (the environment a run configures its object store from,
//! credentials included). Their `Debug` shows no value, so a struct that holds them can derive
//! `Debug` without leaking.

use std::fmt;

/// A secret string: its `Debug` is `Secret(..)`, and it has no `Display`; [`Secret::expose`]
/// is the one way to the value, for the code that sends it.
#[derive(Clone, PartialEq, Eq)]
pub struct Secret(String);

impl Secret {
    /// Wraps `value`.
    pub fn new(value: impl Into<String>) -> Self {
        Secret(value.into())
    }

    /// The value, to be sent (never logged).
    pub fn expose(&self) -> &str {
        &self.0
    }
}

impl fmt::Debug for Secret {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("Secret(..)")
    }
}

/// Environment variables as name and value (normally `std::env::vars().collect()`): its
/// `Debug` lists the names only.
#[derive(Clone, Default, PartialEq, Eq)]
pub struct EnvVars(Vec<(String, String)>);

impl EnvVars {
    /// The value of `name`, if set.
    pub fn get(&self, name: &str) -> Option<&str> {
        self.0
            .iter()
            .find(|(k, _)| k == name)
            .map(|(_, v)| v.as_str())
    }

    /// The variables, in order.
    pub fn iter(&self) -> impl Iterator<Item = (&str, &str)> {
        self.0.iter().map(|(k, v)| (k.as_str(), v.as_str()))
    }

    /// The variables as owned pairs, for the object store's builders.
    pub fn to_pairs(&self) -> Vec<(String, String)> {
        self.0.clone()
    }
}

impl FromIterator<(String, String)> for EnvVars {
    fn from_iter<I: IntoIterator<Item = (String, String)>>(iter: I) -> Self {
        EnvVars(iter.into_iter().collect())
    }
}

impl From<Vec<(String, String)>> for EnvVars {
    fn from(pairs: Vec<(String, String)>) -> Self {
        EnvVars(pairs)
    }
}

impl IntoIterator for EnvVars {
    type Item = (String, String);
    type IntoIter = std::vec::IntoIter<(String, String)>;

    fn into_iter(self) -> Self::IntoIter {
        self.0.into_iter()
    }
}

impl fmt::Debug for EnvVars {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_tuple("EnvVars")
            .field(&self.0.iter().map(|(k, _)| k.as_str()).collect::<Vec<_>>())
            .finish()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn debug_shows_no_value() {
        let secret = Secret::new("hunter2");
        assert_eq!(format!("{secret:?}"), "Secret(..)");
        assert_eq!(secret.expose(), "hunter2");
        let env: EnvVars = [("AWS_SECRET_ACCESS_KEY".to_owned(), "hunter2".to_owned())]
            .into_iter()
            .collect();
        let shown = format!("{env:?}");
        assert_eq!(shown, r#"EnvVars(["AWS_SECRET_ACCESS_KEY"])"#);
        assert_eq!(env.get("AWS_SECRET_ACCESS_KEY"), Some("hunter2"));
        assert_eq!(env.get("NOPE"), None);
        #[derive(Debug)]
        #[allow(dead_code)]
        struct Holder {
            header: Secret,
            env: EnvVars,
        }
        let holder = format!(
            "{:?}",
            Holder {
                header: secret,
                env
            }
        );
        assert!(!holder.contains("hunter2"), "{holder}");
    }
}
