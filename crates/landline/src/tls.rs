//! Extra trusted certificate authorities, for APIs and stores behind a private CA.
//!
//! Certificate verification is always on: the source and the store trust the system's roots,
//! plus the certificates of a CA bundle when one is configured (`[source] ca_bundle`,
//! `[sink] ca_bundle`, or the AWS convention `AWS_CA_BUNDLE` for S3). There is deliberately no
//! setting that turns verification off.

use std::path::{Path, PathBuf};

/// Makes rustls's ring provider the process's default, once; every TLS client (the source's,
/// the stores') is built after this. landline's HTTP clients are built without a provider of
/// their own (reqwest's `rustls-no-provider`, object_store's `ring`), which keeps aws-lc-rs,
/// a long C build, out of the tree. An application that installed a provider first keeps it.
pub fn crypto() {
    static ONCE: std::sync::Once = std::sync::Once::new();
    ONCE.call_once(|| {
        let _ = rustls::crypto::ring::default_provider().install_default();
    });
}

/// A PEM bundle of CA certificates, read and checked when the pipeline is validated.
#[derive(Clone, PartialEq, Eq)]
pub struct CaBundle {
    path: PathBuf,
    pem: Vec<u8>,
    certificates: usize,
}

impl std::fmt::Debug for CaBundle {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("CaBundle")
            .field("path", &self.path)
            .field("certificates", &self.certificates)
            .finish()
    }
}

/// Why a CA bundle could not be used.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum CaBundleError {
    /// The file could not be read.
    #[error("reading CA bundle {path}: {source}")]
    Read {
        /// The file.
        path: PathBuf,
        /// The I/O error.
        #[source]
        source: std::io::Error,
    },
    /// The file holds no usable PEM certificate.
    #[error("CA bundle {path}: {reason}")]
    Invalid {
        /// The file.
        path: PathBuf,
        /// What is wrong.
        reason: String,
    },
}

impl CaBundle {
    /// Reads `path` and checks that it holds at least one PEM certificate.
    pub fn load(path: impl AsRef<Path>) -> Result<CaBundle, CaBundleError> {
        let path = path.as_ref().to_path_buf();
        let pem = std::fs::read(&path).map_err(|source| CaBundleError::Read {
            path: path.clone(),
            source,
        })?;
        CaBundle::from_pem(path, pem)
    }

    /// A bundle from PEM text already in memory; `path` names it in messages.
    pub fn from_pem(path: PathBuf, pem: Vec<u8>) -> Result<CaBundle, CaBundleError> {
        let invalid = |reason: String| CaBundleError::Invalid {
            path: path.clone(),
            reason,
        };
        let certificates = reqwest::Certificate::from_pem_bundle(&pem)
            .map_err(|e| invalid(format!("not a PEM certificate bundle: {e}")))?
            .len();
        if certificates == 0 {
            return Err(invalid(
                "holds no PEM certificate (expected -----BEGIN CERTIFICATE----- blocks)".into(),
            ));
        }
        Ok(CaBundle {
            path,
            pem,
            certificates,
        })
    }

    /// The file it was read from.
    pub fn path(&self) -> &Path {
        &self.path
    }

    /// How many certificates it holds.
    pub fn len(&self) -> usize {
        self.certificates
    }

    /// Always false: an empty bundle is refused by [`CaBundle::load`].
    pub fn is_empty(&self) -> bool {
        self.certificates == 0
    }

    /// The certificates, for the source's HTTP client.
    pub(crate) fn reqwest_certificates(&self) -> Result<Vec<reqwest::Certificate>, CaBundleError> {
        reqwest::Certificate::from_pem_bundle(&self.pem).map_err(|e| CaBundleError::Invalid {
            path: self.path.clone(),
            reason: e.to_string(),
        })
    }

    /// The certificates, for the object store's HTTP client.
    pub(crate) fn store_certificates(
        &self,
    ) -> Result<Vec<object_store::Certificate>, CaBundleError> {
        object_store::Certificate::from_pem_bundle(&self.pem).map_err(|e| CaBundleError::Invalid {
            path: self.path.clone(),
            reason: e.to_string(),
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn refuses_missing_empty_and_garbage_bundles() {
        let dir = tempfile::tempdir().unwrap();
        let missing = dir.path().join("missing.pem");
        let err = CaBundle::load(&missing).unwrap_err();
        assert!(err.to_string().contains("missing.pem"), "{err}");

        let empty = dir.path().join("empty.pem");
        std::fs::write(&empty, "").unwrap();
        let err = CaBundle::load(&empty).unwrap_err();
        assert!(
            err.to_string().contains("holds no PEM certificate"),
            "{err}"
        );

        let garbage = dir.path().join("garbage.pem");
        std::fs::write(
            &garbage,
            "-----BEGIN CERTIFICATE-----\nnot base64!\n-----END CERTIFICATE-----\n",
        )
        .unwrap();
        assert!(CaBundle::load(&garbage).is_err());
    }
}
