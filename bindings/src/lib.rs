//! The Node.js face of the engine: converts types and errors at the edge and nothing more.
//!
//! Starting and stopping block (binding sockets, draining connections), so they run as
//! [`AsyncTask`]s on libuv's thread pool and resolve a Promise; the JavaScript thread never waits.
//! Requests never cross this boundary: the engine runs on its own threads.

#![deny(clippy::all)]

mod logging;

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
        Engine::start(config).map_err(to_napi)
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

/// Version of the native engine, to detect a mismatch with the JavaScript package.
#[napi]
pub fn engine_version() -> String {
    env!("CARGO_PKG_VERSION").to_owned()
}
