//! Reading certificate chains and keys from PEM files.

use std::fmt;
use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::time::{Duration, SystemTime, UNIX_EPOCH};

use rustls::crypto::aws_lc_rs::sign::any_supported_type;
use rustls::sign::CertifiedKey;
use rustls_pki_types::pem::PemObject;
use rustls_pki_types::{CertificateDer, PrivateKeyDer};
use x509_parser::extensions::GeneralName;

/// Where one certificate comes from.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct CertSource {
    pub cert: PathBuf,
    pub key: PathBuf,
}

/// A certificate that can serve handshakes, with what the proxy needs to know about it.
#[derive(Debug, Clone)]
pub struct LoadedCert {
    pub certified: Arc<CertifiedKey>,
    /// Lower-case DNS names from the subject alternative names (or the CN when there are none),
    /// wildcards as `*.example.com`.
    pub names: Vec<String>,
    pub not_after: SystemTime,
    pub source: CertSource,
    /// Modification times of the two files when they were read, to notice rotation.
    pub modified: (Option<SystemTime>, Option<SystemTime>),
}

/// A certificate or key that cannot be used, naming the file and why.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct TlsError {
    pub file: PathBuf,
    pub message: String,
}

impl fmt::Display for TlsError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        if self.file.as_os_str() == SETTINGS {
            return f.write_str(&self.message);
        }
        write!(f, "{}: {}", self.file.display(), self.message)
    }
}

impl std::error::Error for TlsError {}

/// What `TlsError::file` holds for a problem with the settings rather than a file.
pub(crate) const SETTINGS: &str = "(tls settings)";

impl TlsError {
    /// The configuration key the problem concerns, below the listener's `tls`: the cipher
    /// suites, or (for a file problem) the certificates.
    pub fn setting(&self) -> &'static str {
        if self.file.as_os_str() == SETTINGS && self.message.contains("cipher suite") {
            "cipher_suites"
        } else {
            "certificates"
        }
    }
}

fn err(file: &Path, message: impl Into<String>) -> TlsError {
    TlsError {
        file: file.to_owned(),
        message: message.into(),
    }
}

fn modified(path: &Path) -> Option<SystemTime> {
    std::fs::metadata(path).and_then(|m| m.modified()).ok()
}

/// Loads a PEM chain (leaf first) and its private key, and checks that they belong together.
pub fn load_certificate(source: &CertSource) -> Result<LoadedCert, TlsError> {
    let modified = (modified(&source.cert), modified(&source.key));
    let chain: Vec<CertificateDer<'static>> = CertificateDer::pem_file_iter(&source.cert)
        .map_err(|e| err(&source.cert, format!("cannot read certificate: {e}")))?
        .collect::<Result<_, _>>()
        .map_err(|e| err(&source.cert, format!("invalid PEM: {e}")))?;
    let Some(leaf) = chain.first() else {
        return Err(err(&source.cert, "no certificate in the file"));
    };
    let key = PrivateKeyDer::from_pem_file(&source.key)
        .map_err(|e| err(&source.key, format!("cannot read private key: {e}")))?;
    let signing_key = any_supported_type(&key)
        .map_err(|e| err(&source.key, format!("unsupported private key: {e}")))?;
    let (names, not_after) = describe(leaf).map_err(|m| err(&source.cert, m))?;
    let certified = CertifiedKey::new(chain, signing_key);
    certified.keys_match().map_err(|_| {
        err(
            &source.key,
            format!(
                "the key does not match the certificate {}",
                source.cert.display()
            ),
        )
    })?;
    Ok(LoadedCert {
        certified: Arc::new(certified),
        names,
        not_after,
        source: source.clone(),
        modified,
    })
}

/// The DNS names and expiry of a leaf certificate.
fn describe(leaf: &CertificateDer<'_>) -> Result<(Vec<String>, SystemTime), String> {
    let (_, cert) = x509_parser::parse_x509_certificate(leaf.as_ref())
        .map_err(|e| format!("cannot parse certificate: {e}"))?;
    let mut names: Vec<String> = Vec::new();
    if let Ok(Some(san)) = cert.subject_alternative_name() {
        for name in &san.value.general_names {
            if let GeneralName::DNSName(dns) = name {
                names.push(dns.to_ascii_lowercase());
            }
        }
    }
    if names.is_empty() {
        names.extend(
            cert.subject()
                .iter_common_name()
                .filter_map(|cn| cn.as_str().ok())
                .map(str::to_ascii_lowercase),
        );
    }
    let secs = cert.validity().not_after.timestamp();
    let not_after = UNIX_EPOCH + Duration::from_secs(u64::try_from(secs).unwrap_or(0));
    Ok((names, not_after))
}

impl LoadedCert {
    /// Whether either file changed since it was read.
    pub fn files_changed(&self) -> bool {
        (modified(&self.source.cert), modified(&self.source.key)) != self.modified
    }
}
