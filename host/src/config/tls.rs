//! `[redis.tls]` (or `--redis-ca`, `--redis-cert`, `--redis-key`) made
//! usable: the PEM files read and checked once, at start-up, and turned into
//! the two forms the Redis paths take — a `rustls::ClientConfig` for the fast
//! entry reader and `redis::TlsCertificates` for redis-rs — from the same
//! bytes, so both trust the same roots and present the same identity.

use std::fmt;
use std::path::{Path, PathBuf};
use std::sync::Arc;

use rustls::pki_types::pem::PemObject;
use rustls::pki_types::{CertificateDer, PrivateKeyDer};
use rustls::{ClientConfig, RootCertStore};

use super::TlsConfig;

/// One of the files of the TLS settings.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum TlsFile {
    /// The CA certificate(s) the server's certificate must chain to.
    Ca,
    /// The client certificate (chain).
    Cert,
    /// The client certificate's private key.
    Key,
}

impl TlsFile {
    /// Its key in `[redis.tls]`.
    pub fn key(self) -> &'static str {
        match self {
            Self::Ca => "ca",
            Self::Cert => "cert",
            Self::Key => "key",
        }
    }

    /// What a usable file holds, as its PEM header says.
    fn expected(self) -> &'static str {
        match self {
            Self::Ca | Self::Cert => "certificate (-----BEGIN CERTIFICATE-----)",
            Self::Key => "private key (-----BEGIN PRIVATE KEY-----, RSA or EC)",
        }
    }
}

impl fmt::Display for TlsFile {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(match self {
            Self::Ca => "Redis CA certificate",
            Self::Cert => "Redis client certificate",
            Self::Key => "Redis client key",
        })
    }
}

/// TLS settings that cannot work, found before anything connects. Messages
/// name the file; none ever quotes a key's contents.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum TlsError {
    /// A file could not be read.
    #[error("cannot read the {file} file {}: {reason}", path.display())]
    Unreadable {
        /// Which file.
        file: TlsFile,
        /// Its path.
        path: PathBuf,
        /// The I/O error.
        reason: String,
    },
    /// A file is not well-formed PEM.
    #[error("the {file} file {} is not valid PEM: {reason}", path.display())]
    Garbled {
        /// Which file.
        file: TlsFile,
        /// Its path.
        path: PathBuf,
        /// What the PEM parser said.
        reason: String,
    },
    /// A file holds nothing of the kind it should.
    #[error("the {file} file {} holds no PEM {}", path.display(), file.expected())]
    Empty {
        /// Which file.
        file: TlsFile,
        /// Its path.
        path: PathBuf,
    },
    /// A CA certificate that is not a usable X.509 certificate.
    #[error("the {file} file {} holds a certificate that cannot be used: {reason}", path.display())]
    BadCertificate {
        /// Which file.
        file: TlsFile,
        /// Its path.
        path: PathBuf,
        /// Why.
        reason: String,
    },
    /// The client certificate and key do not make an identity.
    #[error(
        "the Redis client certificate {} and key {} cannot be used together: {reason}",
        cert.display(),
        key.display()
    )]
    Identity {
        /// The certificate file.
        cert: PathBuf,
        /// The key file.
        key: PathBuf,
        /// Why (e.g. the key is not the certificate's).
        reason: String,
    },
    /// Only one half of a client identity was given.
    #[error(
        "a Redis client certificate needs both its certificate and its key file; the {} file is missing",
        missing
    )]
    Incomplete {
        /// The half that is missing.
        missing: TlsFile,
    },
    /// No CA file was given and the system store has nothing usable.
    #[error(
        "no CA certificate could be loaded from the system store ({reason}); give the CA file that signs the Redis server's certificate"
    )]
    SystemRoots {
        /// What went wrong.
        reason: String,
    },
    /// The server name override is neither a DNS name nor an IP address.
    #[error("the Redis TLS server name {name:?} is neither a DNS name nor an IP address")]
    ServerName {
        /// The name as given.
        name: String,
    },
    /// TLS settings beside a URL that is not `rediss://`: they would be
    /// silently ignored, and the connection would be plaintext.
    #[error(
        "Redis TLS settings (CA, client certificate, server name) need a rediss:// URL, but the URL is {url}"
    )]
    PlaintextUrl {
        /// The URL, password redacted.
        url: String,
    },
}

impl TlsError {
    /// The `[redis.tls]` key the error is about, if it is about one.
    pub fn key(&self) -> Option<&'static str> {
        match self {
            Self::Unreadable { file, .. }
            | Self::Garbled { file, .. }
            | Self::Empty { file, .. }
            | Self::BadCertificate { file, .. } => Some(file.key()),
            Self::Identity { .. } => Some(TlsFile::Cert.key()),
            Self::Incomplete { missing } => Some(match missing {
                TlsFile::Cert => TlsFile::Key.key(),
                _ => TlsFile::Cert.key(),
            }),
            Self::ServerName { .. } => Some("server-name"),
            Self::SystemRoots { .. } | Self::PlaintextUrl { .. } => None,
        }
    }
}

/// The TLS settings read and checked: the same trust roots and client
/// identity in the forms both Redis paths take.
#[derive(Clone)]
pub struct TlsMaterial {
    /// The CA file's PEM (`None`: system roots), for redis-rs.
    ca: Option<Vec<u8>>,
    /// Client certificate and key PEM, for redis-rs.
    identity: Option<(Vec<u8>, Vec<u8>)>,
    /// For the fast entry reader.
    config: Arc<ClientConfig>,
}

impl fmt::Debug for TlsMaterial {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("TlsMaterial")
            .field("own_ca", &self.ca.is_some())
            .field("client_certificate", &self.identity.is_some())
            .finish_non_exhaustive()
    }
}

impl TlsMaterial {
    /// The rustls configuration (trust roots, client identity).
    pub fn client_config(&self) -> Arc<ClientConfig> {
        self.config.clone()
    }

    /// The same roots and identity for `redis::Client::build_with_tls`,
    /// which parses them again from the PEM bytes checked here.
    pub fn certificates(&self) -> redis::TlsCertificates {
        redis::TlsCertificates {
            client_tls: self
                .identity
                .as_ref()
                .map(|(cert, key)| redis::ClientTlsConfig {
                    client_cert: cert.clone(),
                    client_key: key.clone(),
                }),
            root_cert: self.ca.clone(),
        }
    }
}

impl TlsConfig {
    /// Reads and checks the files: every PEM parses, every CA certificate is
    /// a usable trust anchor, and the key belongs to the client certificate.
    pub fn load(&self) -> Result<TlsMaterial, TlsError> {
        use_ring_by_default();
        let (ca, roots) = match &self.ca {
            Some(path) => {
                let pem = read(TlsFile::Ca, path)?;
                let roots = ca_roots(path, &pem)?;
                (Some(pem), roots)
            }
            None => (None, system_roots()?),
        };
        let builder = ClientConfig::builder().with_root_certificates(roots);
        let (config, identity) = match (&self.cert, &self.key) {
            (None, None) => (builder.with_no_client_auth(), None),
            (Some(_), None) => {
                return Err(TlsError::Incomplete {
                    missing: TlsFile::Key,
                });
            }
            (None, Some(_)) => {
                return Err(TlsError::Incomplete {
                    missing: TlsFile::Cert,
                });
            }
            (Some(cert_path), Some(key_path)) => {
                let cert = read(TlsFile::Cert, cert_path)?;
                let key = read(TlsFile::Key, key_path)?;
                let chain = certificates(TlsFile::Cert, cert_path, &cert)?;
                let private = private_key(key_path, &key)?;
                let config = builder.with_client_auth_cert(chain, private).map_err(|e| {
                    TlsError::Identity {
                        cert: cert_path.clone(),
                        key: key_path.clone(),
                        reason: e.to_string(),
                    }
                })?;
                (config, Some((cert, key)))
            }
        };
        Ok(TlsMaterial {
            ca,
            identity,
            config: Arc::new(config),
        })
    }
}

/// redis-rs builds its rustls configuration with the process-wide default
/// crypto provider. Making ring that default (unless one was chosen
/// already) keeps both Redis paths on the same provider, and keeps
/// `ClientConfig::builder()` from panicking should a second provider ever
/// be compiled in.
fn use_ring_by_default() {
    // An error only says a default is installed already.
    let _ = rustls::crypto::ring::default_provider().install_default();
}

fn read(file: TlsFile, path: &Path) -> Result<Vec<u8>, TlsError> {
    std::fs::read(path).map_err(|e| TlsError::Unreadable {
        file,
        path: path.to_owned(),
        reason: e.to_string(),
    })
}

/// Every certificate of a PEM file, in order; at least one.
fn certificates(
    file: TlsFile,
    path: &Path,
    pem: &[u8],
) -> Result<Vec<CertificateDer<'static>>, TlsError> {
    let certs = CertificateDer::pem_slice_iter(pem)
        .collect::<Result<Vec<_>, _>>()
        .map_err(|e| TlsError::Garbled {
            file,
            path: path.to_owned(),
            reason: e.to_string(),
        })?;
    if certs.is_empty() {
        return Err(TlsError::Empty {
            file,
            path: path.to_owned(),
        });
    }
    Ok(certs)
}

fn ca_roots(path: &Path, pem: &[u8]) -> Result<RootCertStore, TlsError> {
    let mut roots = RootCertStore::empty();
    for cert in certificates(TlsFile::Ca, path, pem)? {
        roots.add(cert).map_err(|e| TlsError::BadCertificate {
            file: TlsFile::Ca,
            path: path.to_owned(),
            reason: e.to_string(),
        })?;
    }
    Ok(roots)
}

fn private_key(path: &Path, pem: &[u8]) -> Result<PrivateKeyDer<'static>, TlsError> {
    PrivateKeyDer::from_pem_slice(pem).map_err(|e| match e {
        rustls::pki_types::pem::Error::NoItemsFound => TlsError::Empty {
            file: TlsFile::Key,
            path: path.to_owned(),
        },
        other => TlsError::Garbled {
            file: TlsFile::Key,
            path: path.to_owned(),
            reason: other.to_string(),
        },
    })
}

/// The operating system's store, as redis-rs reads it (it fails on any
/// error loading it, so this does too — at start-up rather than at every
/// connection attempt).
fn system_roots() -> Result<RootCertStore, TlsError> {
    let found = rustls_native_certs::load_native_certs();
    if let Some(e) = found.errors.first() {
        return Err(TlsError::SystemRoots {
            reason: e.to_string(),
        });
    }
    let mut roots = RootCertStore::empty();
    roots.add_parsable_certificates(found.certs);
    if roots.is_empty() {
        return Err(TlsError::SystemRoots {
            reason: "it holds none".into(),
        });
    }
    Ok(roots)
}

#[cfg(test)]
mod tests {
    use super::*;

    /// A CA and a client certificate it signed, with keys, as PEM.
    struct Pki {
        ca: String,
        cert: String,
        key: String,
        other_key: String,
    }

    fn pki() -> Pki {
        let ca_key = rcgen::KeyPair::generate().unwrap();
        let mut ca_params = rcgen::CertificateParams::new(Vec::<String>::new()).unwrap();
        ca_params.is_ca = rcgen::IsCa::Ca(rcgen::BasicConstraints::Unconstrained);
        let ca = ca_params.self_signed(&ca_key).unwrap();
        let issuer = rcgen::Issuer::new(ca_params, ca_key);
        let key = rcgen::KeyPair::generate().unwrap();
        let cert = rcgen::CertificateParams::new(vec!["client".to_owned()])
            .unwrap()
            .signed_by(&key, &issuer)
            .unwrap();
        Pki {
            ca: ca.pem(),
            cert: cert.pem(),
            key: key.serialize_pem(),
            other_key: rcgen::KeyPair::generate().unwrap().serialize_pem(),
        }
    }

    fn write(dir: &Path, name: &str, text: &str) -> PathBuf {
        let path = dir.join(name);
        std::fs::write(&path, text).unwrap();
        path
    }

    #[test]
    fn loads_a_ca_and_a_client_identity() {
        let dir = tempfile::tempdir().unwrap();
        let p = pki();
        let tls = TlsConfig {
            ca: Some(write(dir.path(), "ca.pem", &p.ca)),
            cert: Some(write(dir.path(), "client.pem", &p.cert)),
            key: Some(write(dir.path(), "client.key", &p.key)),
            server_name: None,
        };
        let material = tls.load().unwrap();
        assert!(
            material
                .client_config()
                .client_auth_cert_resolver
                .has_certs()
        );
        let certs = material.certificates();
        assert_eq!(certs.root_cert.as_deref(), Some(p.ca.as_bytes()));
        let client = certs.client_tls.expect("a client identity");
        assert_eq!(client.client_key, p.key.as_bytes());
        let shown = format!("{material:?}");
        assert!(!shown.contains("PRIVATE KEY"), "{shown}");
    }

    #[test]
    fn refusals_name_the_file_and_its_key() {
        let dir = tempfile::tempdir().unwrap();
        let p = pki();
        let ca = write(dir.path(), "ca.pem", &p.ca);
        let cert = write(dir.path(), "client.pem", &p.cert);
        let key = write(dir.path(), "client.key", &p.key);
        let garbled = write(
            dir.path(),
            "garbled.pem",
            "-----BEGIN CERTIFICATE-----\nnot base64 at all!\n-----END CERTIFICATE-----\n",
        );
        let text = write(dir.path(), "notes.txt", "just some text\n");
        let not_der = write(
            dir.path(),
            "not-der.pem",
            "-----BEGIN CERTIFICATE-----\naGVsbG8gd29ybGQ=\n-----END CERTIFICATE-----\n",
        );
        let other_key = write(dir.path(), "other.key", &p.other_key);
        let missing = dir.path().join("missing.pem");
        let with = |ca: &Path, cert: Option<&Path>, key: Option<&Path>| TlsConfig {
            ca: Some(ca.to_owned()),
            cert: cert.map(Path::to_owned),
            key: key.map(Path::to_owned),
            server_name: None,
        };
        let cases = [
            (
                with(&missing, None, None),
                "ca",
                "cannot read the Redis CA certificate file",
                &missing,
            ),
            (
                with(&garbled, None, None),
                "ca",
                "is not valid PEM",
                &garbled,
            ),
            (
                with(&text, None, None),
                "ca",
                "holds no PEM certificate",
                &text,
            ),
            (with(&not_der, None, None), "ca", "cannot be used", &not_der),
            (
                with(&ca, Some(&cert), Some(&missing)),
                "key",
                "Redis client key file",
                &missing,
            ),
            (
                with(&ca, Some(&cert), Some(&cert)),
                "key",
                "holds no PEM private key",
                &cert,
            ),
            (
                with(&ca, Some(&text), Some(&key)),
                "cert",
                "holds no PEM certificate",
                &text,
            ),
            (
                with(&ca, Some(&cert), Some(&other_key)),
                "cert",
                "cannot be used together",
                &other_key,
            ),
            // Pointing at the half that is there: the missing one has no line.
            (
                with(&ca, Some(&cert), None),
                "cert",
                "the Redis client key file is missing",
                &cert,
            ),
            (
                with(&ca, None, Some(&key)),
                "key",
                "the Redis client certificate file is missing",
                &key,
            ),
        ];
        for (tls, key, says, names) in cases {
            let err = tls.load().unwrap_err();
            let message = err.to_string();
            assert!(message.contains(says), "{message}");
            assert_eq!(err.key(), Some(key), "{message}");
            if !matches!(err, TlsError::Incomplete { .. }) {
                assert!(message.contains(&names.display().to_string()), "{message}");
            }
            for secret in [&p.key, &p.other_key] {
                let body = secret.lines().nth(1).expect("a PEM body");
                assert!(!message.contains(body), "{message}");
            }
        }
    }
}
