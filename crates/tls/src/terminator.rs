//! The rustls server configuration of one listener, and its handshake counters.

use std::collections::BTreeMap;
use std::io;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::Arc;
use std::time::{Duration, SystemTime};

use parking_lot::Mutex;
use rustls::crypto::aws_lc_rs::{default_provider, Ticketer};
use rustls::server::ServerSessionMemoryCache;
use rustls::{HandshakeKind, ProtocolVersion, ServerConfig};
use tokio::io::{AsyncRead, AsyncWrite};
use tokio_rustls::server::TlsStream;
use tokio_rustls::TlsAcceptor;

use crate::certs::{load_certificate, CertSource, LoadedCert, TlsError, SETTINGS};
use crate::store::CertStore;

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum TlsVersion {
    Tls12,
    Tls13,
}

#[derive(Debug, Clone, PartialEq, Eq)]
pub struct TlsSettings {
    /// The first is the default certificate.
    pub certificates: Vec<CertSource>,
    pub min_version: TlsVersion,
    /// IANA names (`TLS13_AES_128_GCM_SHA256`, `TLS_ECDHE_RSA_WITH_AES_128_GCM_SHA256`…);
    /// `None` for rustls' defaults.
    pub cipher_suites: Option<Vec<String>>,
}

/// Handshake counters, shared by every TLS listener of an engine.
#[derive(Debug, Default)]
pub struct TlsStats {
    pub handshakes: AtomicU64,
    pub failures: AtomicU64,
    pub resumed: AtomicU64,
    pub tls12: AtomicU64,
    pub tls13: AtomicU64,
    failure_reasons: Mutex<BTreeMap<String, u64>>,
}

impl TlsStats {
    pub fn failure_reasons(&self) -> BTreeMap<String, u64> {
        self.failure_reasons.lock().clone()
    }

    fn fail(&self, reason: String) {
        self.failures.fetch_add(1, Ordering::Relaxed);
        *self.failure_reasons.lock().entry(reason).or_default() += 1;
    }
}

/// Terminates TLS for one listener.
pub struct Terminator {
    settings: TlsSettings,
    store: Arc<CertStore>,
    acceptor: TlsAcceptor,
    stats: Arc<TlsStats>,
}

impl std::fmt::Debug for Terminator {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Terminator")
            .field("settings", &self.settings)
            .finish_non_exhaustive()
    }
}

fn load_all(sources: &[CertSource]) -> Result<Vec<LoadedCert>, TlsError> {
    sources.iter().map(load_certificate).collect()
}

fn settings_error(message: String) -> TlsError {
    TlsError {
        file: SETTINGS.into(),
        message,
    }
}

impl Terminator {
    /// Loads every certificate and builds the configuration; any problem is an error naming the
    /// file, and nothing is half-built.
    pub fn new(settings: TlsSettings, stats: Arc<TlsStats>) -> Result<Self, TlsError> {
        let certs = load_all(&settings.certificates)?;
        if certs.is_empty() {
            return Err(settings_error(
                "at least one certificate is required".into(),
            ));
        }
        let store = Arc::new(CertStore::new(certs));
        let mut provider = default_provider();
        if let Some(names) = &settings.cipher_suites {
            let unknown: Vec<&String> = names
                .iter()
                .filter(|n| {
                    !provider
                        .cipher_suites
                        .iter()
                        .any(|s| s.suite().as_str() == Some(n.as_str()))
                })
                .collect();
            if !unknown.is_empty() {
                return Err(settings_error(format!(
                    "unknown cipher suites: {unknown:?}"
                )));
            }
            provider.cipher_suites.retain(|s| {
                s.suite()
                    .as_str()
                    .is_some_and(|n| names.iter().any(|x| x == n))
            });
        }
        let versions: &[&rustls::SupportedProtocolVersion] = match settings.min_version {
            TlsVersion::Tls12 => &[&rustls::version::TLS13, &rustls::version::TLS12],
            TlsVersion::Tls13 => &[&rustls::version::TLS13],
        };
        let mut config = ServerConfig::builder_with_provider(Arc::new(provider))
            .with_protocol_versions(versions)
            .map_err(|e| settings_error(format!("no usable cipher suite for these versions: {e}")))?
            .with_no_client_auth()
            .with_cert_resolver(Arc::clone(&store) as Arc<dyn rustls::server::ResolvesServerCert>);
        config.alpn_protocols = vec![b"h2".to_vec(), b"http/1.1".to_vec()];
        // Resumption: stateless tickets with keys rotated by rustls, plus a session cache.
        config.ticketer = Ticketer::new().map_err(|e| settings_error(format!("ticketer: {e}")))?;
        config.session_storage = ServerSessionMemoryCache::new(16 * 1024);
        Ok(Self {
            settings,
            store,
            acceptor: TlsAcceptor::from(Arc::new(config)),
            stats,
        })
    }

    pub fn settings(&self) -> &TlsSettings {
        &self.settings
    }

    /// Counts a handshake the caller gave up on (the client was too slow).
    pub fn count_timeout(&self) {
        self.stats.fail("timeout".into());
    }

    /// Completes a handshake, counting it.
    pub async fn accept<IO>(&self, io: IO) -> io::Result<TlsStream<IO>>
    where
        IO: AsyncRead + AsyncWrite + Unpin,
    {
        match self.acceptor.accept(io).await {
            Ok(stream) => {
                let (_, conn) = stream.get_ref();
                self.stats.handshakes.fetch_add(1, Ordering::Relaxed);
                match conn.protocol_version() {
                    Some(ProtocolVersion::TLSv1_3) => &self.stats.tls13,
                    _ => &self.stats.tls12,
                }
                .fetch_add(1, Ordering::Relaxed);
                if conn.handshake_kind() == Some(HandshakeKind::Resumed) {
                    self.stats.resumed.fetch_add(1, Ordering::Relaxed);
                }
                Ok(stream)
            }
            Err(e) => {
                self.stats.fail(failure_reason(&e));
                Err(e)
            }
        }
    }

    /// Re-reads every certificate file. On any error the current certificates keep serving.
    pub fn reload_certificates(&self) -> Result<(), TlsError> {
        let certs = load_all(&self.settings.certificates)?;
        self.store.replace(certs);
        Ok(())
    }

    /// Reloads when a certificate or key file changed since it was read. `None` when nothing
    /// changed; `Some(Err)` when the new files are unusable (the old ones keep serving, and the
    /// same broken files are not retried until they change again).
    pub fn rotate_if_changed(&self) -> Option<Result<(), TlsError>> {
        let current = self.store.certificates();
        if !current.iter().any(LoadedCert::files_changed) {
            return None;
        }
        let result = self.reload_certificates();
        if result.is_err() {
            // Remember the new modification times so a broken file is reported once.
            let refreshed: Vec<LoadedCert> = current
                .iter()
                .map(|c| LoadedCert {
                    modified: (
                        std::fs::metadata(&c.source.cert)
                            .and_then(|m| m.modified())
                            .ok(),
                        std::fs::metadata(&c.source.key)
                            .and_then(|m| m.modified())
                            .ok(),
                    ),
                    ..c.clone()
                })
                .collect();
            self.store.replace(refreshed);
        }
        Some(result)
    }

    /// Certificates expiring before `now + within`: (names, expiry).
    pub fn expiring(&self, now: SystemTime, within: Duration) -> Vec<(Vec<String>, SystemTime)> {
        self.store
            .certificates()
            .iter()
            .filter(|c| c.not_after <= now + within)
            .map(|c| (c.names.clone(), c.not_after))
            .collect()
    }

    /// Every certificate: (names, expiry, certificate file).
    pub fn certificates(&self) -> Vec<(Vec<String>, SystemTime, String)> {
        self.store
            .certificates()
            .iter()
            .map(|c| {
                (
                    c.names.clone(),
                    c.not_after,
                    c.source.cert.display().to_string(),
                )
            })
            .collect()
    }
}

/// A short, stable reason for the failure counters.
fn failure_reason(e: &io::Error) -> String {
    if let Some(tls) = e
        .get_ref()
        .and_then(|inner| inner.downcast_ref::<rustls::Error>())
    {
        return match tls {
            rustls::Error::PeerIncompatible(_) => "incompatible".into(),
            rustls::Error::NoCertificatesPresented => "no_certificate".into(),
            rustls::Error::InvalidMessage(_) => "invalid_message".into(),
            rustls::Error::AlertReceived(alert) => format!("alert_{alert:?}").to_ascii_lowercase(),
            rustls::Error::PeerMisbehaved(_) => "peer_misbehaved".into(),
            _ => "other".into(),
        };
    }
    match e.kind() {
        io::ErrorKind::UnexpectedEof => "eof".into(),
        io::ErrorKind::TimedOut => "timeout".into(),
        _ => "io".into(),
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use rcgen::{CertificateParams, KeyPair};
    use std::path::Path;

    fn write_cert(dir: &Path, name: &str, sans: &[&str]) -> CertSource {
        let key = KeyPair::generate().expect("key");
        let params = CertificateParams::new(sans.iter().map(|s| s.to_string()).collect::<Vec<_>>())
            .expect("params");
        let cert = params.self_signed(&key).expect("cert");
        let source = CertSource {
            cert: dir.join(format!("{name}.pem")),
            key: dir.join(format!("{name}.key")),
        };
        std::fs::write(&source.cert, cert.pem()).expect("write cert");
        std::fs::write(&source.key, key.serialize_pem()).expect("write key");
        source
    }

    fn temp_dir(tag: &str) -> std::path::PathBuf {
        let dir = std::env::temp_dir().join(format!("gatehouse-tls-{tag}-{}", std::process::id()));
        let _ = std::fs::remove_dir_all(&dir);
        std::fs::create_dir_all(&dir).expect("dir");
        dir
    }

    #[test]
    fn sni_picks_exact_then_wildcard_then_default() {
        let dir = temp_dir("sni");
        let a = write_cert(&dir, "a", &["a.example.com"]);
        let wild = write_cert(&dir, "w", &["*.example.com"]);
        let certs = vec![
            load_certificate(&a).expect("a"),
            load_certificate(&wild).expect("w"),
        ];
        let (ca, cw) = (
            Arc::clone(&certs[0].certified),
            Arc::clone(&certs[1].certified),
        );
        let store = CertStore::new(certs);
        let pick = |n: Option<&str>| store.select(n).expect("a certificate");
        assert!(Arc::ptr_eq(&pick(Some("a.example.com")), &ca));
        assert!(Arc::ptr_eq(&pick(Some("B.Example.com")), &cw));
        assert!(
            Arc::ptr_eq(&pick(Some("x.b.example.com")), &ca),
            "one label only: default"
        );
        assert!(Arc::ptr_eq(&pick(None), &ca), "no SNI: default");
    }

    #[test]
    fn a_mismatched_key_names_the_key_file() {
        let dir = temp_dir("mismatch");
        let a = write_cert(&dir, "a", &["a.test"]);
        let b = write_cert(&dir, "b", &["b.test"]);
        let wrong = CertSource {
            cert: a.cert.clone(),
            key: b.key.clone(),
        };
        let e = load_certificate(&wrong).expect_err("mismatch");
        assert_eq!(e.file, b.key);
        assert!(e.message.contains("does not match"), "{}", e.message);
        let missing = CertSource {
            cert: dir.join("nope.pem"),
            key: a.key,
        };
        assert_eq!(
            load_certificate(&missing).expect_err("missing").file,
            dir.join("nope.pem")
        );
    }

    #[test]
    fn a_broken_rotation_keeps_the_old_certificate() {
        let dir = temp_dir("rotate");
        let a = write_cert(&dir, "a", &["a.test"]);
        let settings = TlsSettings {
            certificates: vec![a.clone()],
            min_version: TlsVersion::Tls12,
            cipher_suites: None,
        };
        let t = Terminator::new(settings, Arc::default()).expect("terminator");
        let before = t.store.select(Some("a.test")).expect("cert");
        assert!(t.rotate_if_changed().is_none());
        std::thread::sleep(Duration::from_millis(20));
        std::fs::write(&a.cert, "garbage").expect("write");
        assert!(matches!(t.rotate_if_changed(), Some(Err(_))));
        assert!(Arc::ptr_eq(
            &before,
            &t.store.select(Some("a.test")).expect("cert")
        ));
        assert!(
            t.rotate_if_changed().is_none(),
            "a broken file is reported once"
        );
        std::thread::sleep(Duration::from_millis(20));
        let fresh = write_cert(&dir, "a", &["a.test"]);
        assert_eq!(fresh, a);
        assert!(matches!(t.rotate_if_changed(), Some(Ok(()))));
        assert!(!Arc::ptr_eq(
            &before,
            &t.store.select(Some("a.test")).expect("cert")
        ));
    }

    #[test]
    fn unknown_cipher_suites_are_refused() {
        let dir = temp_dir("suites");
        let a = write_cert(&dir, "a", &["a.test"]);
        let settings = TlsSettings {
            certificates: vec![a],
            min_version: TlsVersion::Tls13,
            cipher_suites: Some(vec!["TLS13_NOPE".into()]),
        };
        assert!(Terminator::new(settings, Arc::default()).is_err());
    }
}
