//! Certificate selection by SNI.

use std::collections::HashMap;
use std::fmt;
use std::sync::Arc;

use arc_swap::ArcSwap;
use rustls::server::{ClientHello, ResolvesServerCert};
use rustls::sign::CertifiedKey;

use crate::certs::LoadedCert;

/// Which certificate serves which name.
#[derive(Debug, Default)]
struct Index {
    exact: HashMap<String, Arc<CertifiedKey>>,
    /// Keyed by the suffix after `*.`, e.g. `example.com` for `*.example.com`.
    wildcard: HashMap<String, Arc<CertifiedKey>>,
    default: Option<Arc<CertifiedKey>>,
}

/// The certificates of one listener, swapped whole on rotation.
pub struct CertStore {
    index: ArcSwap<Index>,
    certs: ArcSwap<Vec<LoadedCert>>,
}

impl fmt::Debug for CertStore {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("CertStore").finish_non_exhaustive()
    }
}

fn build(certs: &[LoadedCert]) -> Index {
    let mut index = Index {
        default: certs.first().map(|c| Arc::clone(&c.certified)),
        ..Index::default()
    };
    // Earlier certificates win a name they share with later ones.
    for cert in certs {
        for name in &cert.names {
            let map = match name.strip_prefix("*.") {
                Some(suffix) => (&mut index.wildcard, suffix.to_owned()),
                None => (&mut index.exact, name.clone()),
            };
            map.0
                .entry(map.1)
                .or_insert_with(|| Arc::clone(&cert.certified));
        }
    }
    index
}

impl CertStore {
    pub fn new(certs: Vec<LoadedCert>) -> Self {
        Self {
            index: ArcSwap::from_pointee(build(&certs)),
            certs: ArcSwap::from_pointee(certs),
        }
    }

    /// Replaces every certificate at once; handshakes in progress finish with the old ones.
    pub fn replace(&self, certs: Vec<LoadedCert>) {
        self.index.store(Arc::new(build(&certs)));
        self.certs.store(Arc::new(certs));
    }

    pub fn certificates(&self) -> Arc<Vec<LoadedCert>> {
        self.certs.load_full()
    }

    /// Exact name, then one-label wildcard (`*.example.com` matches `a.example.com`, not
    /// `a.b.example.com`), then the default (first) certificate.
    pub fn select(&self, server_name: Option<&str>) -> Option<Arc<CertifiedKey>> {
        let index = self.index.load();
        if let Some(name) = server_name {
            let name = name.to_ascii_lowercase();
            if let Some(c) = index.exact.get(&name) {
                return Some(Arc::clone(c));
            }
            if let Some((label, suffix)) = name.split_once('.') {
                if !label.is_empty() {
                    if let Some(c) = index.wildcard.get(suffix) {
                        return Some(Arc::clone(c));
                    }
                }
            }
        }
        index.default.clone()
    }
}

impl ResolvesServerCert for CertStore {
    fn resolve(&self, hello: ClientHello<'_>) -> Option<Arc<CertifiedKey>> {
        self.select(hello.server_name())
    }
}
