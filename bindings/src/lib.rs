//! The Node.js face of the engine: converts types and errors at the edge and nothing more.
//!
//! Starting and stopping block (binding sockets, draining connections), so they run as
//! [`AsyncTask`]s on libuv's thread pool and resolve a Promise; the JavaScript thread never waits.
//! Requests never cross this boundary: the engine runs on its own threads.

#![deny(clippy::all)]

mod heap;
mod logging;
mod policy;

use std::time::Duration;

use gatehouse_engine::{Engine, EngineConfig, EngineError};
use napi::bindgen_prelude::*;
use napi_derive::napi;

fn to_napi(e: EngineError) -> Error {
    Error::new(Status::InvalidArg, e.to_string())
}

/// A listener the engine bound: the configured address and the actual one (port 0 resolved).
#[napi(object)]
pub struct BoundListener {
    pub address: String,
    pub bound: String,
}

/// A running engine.
#[napi]
pub struct NativeEngine {
    engine: Option<Engine>,
}

impl NativeEngine {
    fn engine(&self) -> Result<&Engine> {
        self.engine
            .as_ref()
            .ok_or_else(|| Error::new(Status::GenericFailure, "the engine is stopped"))
    }
}

#[napi]
impl NativeEngine {
    /// Swaps in a new configuration (normalised JSON). On error the old one keeps running.
    #[napi]
    pub fn reload(&self, config_json: String) -> Result<()> {
        let config = EngineConfig::from_json(&config_json).map_err(|e| to_napi(e.into()))?;
        logging::set_level(&config.log.level);
        self.engine()?.reload(config).map_err(to_napi)
    }

    /// Sets backends' weights at once (`[[url, weight], …]`); the next pick uses them.
    #[napi]
    pub fn set_weights(&self, upstream: String, weights: Vec<(String, u32)>) -> Result<()> {
        self.engine()?
            .set_weights(&upstream, &weights)
            .map_err(to_napi)
    }

    /// Applies an active health check verdict.
    #[napi]
    pub fn set_backend_health(&self, upstream: String, url: String, healthy: bool) -> Result<()> {
        self.engine()?
            .set_backend_health(&upstream, &url, healthy)
            .map_err(to_napi)
    }

    /// Installs the per-request policy of an upstream configured with `balance: { module }`.
    /// The function receives a `PolicyCall` and must answer with `resolvePolicy(token, url)`.
    #[napi(ts_args_type = "upstream: string, policy: (call: PolicyCall) => void")]
    pub fn set_policy(&self, upstream: String, policy: policy::PolicyFunction) -> Result<()> {
        self.engine()?
            .set_policy(&upstream, Some(Box::new(policy::JsPolicy::new(policy))))
            .map_err(to_napi)
    }

    /// Purges the response cache: everything without `url`; one URL (`https://host/path?q` or
    /// `host/path?q`); or a path (`/path?q`) on every host. Returns how many responses went.
    #[napi]
    pub fn purge_cache(&self, url: Option<String>) -> Result<u32> {
        let removed = self
            .engine()?
            .purge_cache(url.as_deref())
            .map_err(to_napi)?;
        Ok(u32::try_from(removed).unwrap_or(u32::MAX))
    }

    /// Answers a `PolicyCall`: the chosen backend's URL, or null for round robin.
    #[napi]
    pub fn resolve_policy(&self, token: u32, url: Option<String>) {
        policy::resolve(token, url);
    }

    /// The engine's statistics as a JSON document.
    #[napi]
    pub fn stats(&self) -> Result<String> {
        Ok(self.engine()?.stats().to_string())
    }

    #[napi]
    pub fn listeners(&self) -> Result<Vec<BoundListener>> {
        Ok(self
            .engine()?
            .listeners()
            .into_iter()
            .map(|l| BoundListener {
                address: l.address,
                bound: l.local_addr.to_string(),
            })
            .collect())
    }

    /// Stops accepting, drains for up to `grace_ms`, then stops all engine threads.
    #[napi(ts_return_type = "Promise<void>")]
    pub fn shutdown(&mut self, grace_ms: u32) -> AsyncTask<ShutdownTask> {
        AsyncTask::new(ShutdownTask {
            engine: self.engine.take(),
            grace: Duration::from_millis(u64::from(grace_ms)),
        })
    }
}

pub struct StartTask {
    config: Option<EngineConfig>,
}

impl Task for StartTask {
    type Output = Engine;
    type JsValue = NativeEngine;

    fn compute(&mut self) -> Result<Engine> {
        let config = self
            .config
            .take()
            .ok_or_else(|| Error::new(Status::GenericFailure, "start task ran twice"))?;
        logging::init(&config.log.level);
        let engine = Engine::start(config).map_err(to_napi)?;
        engine.set_heap_release(heap::release);
        Ok(engine)
    }

    fn resolve(&mut self, _env: Env, engine: Engine) -> Result<NativeEngine> {
        Ok(NativeEngine {
            engine: Some(engine),
        })
    }
}

pub struct ShutdownTask {
    engine: Option<Engine>,
    grace: Duration,
}

impl Task for ShutdownTask {
    type Output = ();
    type JsValue = ();

    fn compute(&mut self) -> Result<()> {
        if let Some(engine) = self.engine.take() {
            engine.shutdown(self.grace);
        }
        Ok(())
    }

    fn resolve(&mut self, _env: Env, _output: ()) -> Result<()> {
        Ok(())
    }
}

/// Starts an engine from a normalised configuration (JSON). Resolves once every listener is
/// bound; rejects, with nothing listening, when any part of the configuration cannot be applied.
#[napi(ts_return_type = "Promise<NativeEngine>")]
pub fn start_engine(config_json: String) -> Result<AsyncTask<StartTask>> {
    let config = EngineConfig::from_json(&config_json).map_err(|e| to_napi(e.into()))?;
    Ok(AsyncTask::new(StartTask {
        config: Some(config),
    }))
}

/// Checks that a PEM certificate chain and key can serve handshakes (readable, parseable, and
/// the key matches the certificate). Returns the problem, naming the file, or null.
#[napi]
pub fn check_certificate(cert: String, key: String) -> Option<String> {
    let source = gatehouse_tls::CertSource {
        cert: cert.into(),
        key: key.into(),
    };
    gatehouse_tls::load_certificate(&source)
        .err()
        .map(|e| e.to_string())
}

/// Version of the native engine, to detect a mismatch with the JavaScript package.
#[napi]
pub fn engine_version() -> String {
    env!("CARGO_PKG_VERSION").to_owned()
}

/// How the native engine was built, for `gatehouse --version` and bug reports.
#[napi(object)]
pub struct EngineBuildInfo {
    /// The engine crate version (must equal the npm package version).
    pub version: String,
    /// The Rust target triple, e.g. `x86_64-unknown-linux-gnu`.
    pub target: String,
    /// The cargo profile: `release`, `dist` (what the npm packages ship) or `debug`.
    pub profile: String,
    /// Profile-guided optimisation: `applied` (built with a profile from a training run, as the
    /// Linux npm packages are: `npm run build:pgo`), `instrumented` (the training build, which
    /// writes profile data at exit) or `none`.
    pub pgo: String,
    /// `rustc --version` of the compiler that built it, when the build could ask.
    pub rustc: Option<String>,
}

/// Build facts recorded by `build.rs`.
#[napi]
pub fn engine_build_info() -> EngineBuildInfo {
    EngineBuildInfo {
        version: env!("CARGO_PKG_VERSION").to_owned(),
        target: env!("GATEHOUSE_BUILD_TARGET").to_owned(),
        profile: env!("GATEHOUSE_BUILD_PROFILE").to_owned(),
        pgo: env!("GATEHOUSE_BUILD_PGO").to_owned(),
        rustc: option_env!("GATEHOUSE_BUILD_RUSTC").map(str::to_owned),
    }
}
