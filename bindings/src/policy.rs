//! The one bridge for calling JavaScript from the engine's threads: a per-request balancing
//! policy written in TypeScript.
//!
//! The engine asks [`JsPolicy::select`]; that queues a call on the JavaScript thread through a
//! `ThreadsafeFunction` (non-blocking: a full queue fails the call instead of stalling a worker)
//! and returns a future that resolves when JavaScript answers through
//! `NativeEngine.resolvePolicy(token, url)`. The JavaScript side (ts/policy) awaits the user's
//! `select`, whether it returns a value or a Promise, and always answers, `null` on error. A
//! future dropped early (the engine's policy timeout) removes its pending entry, so nothing leaks.

use std::collections::HashMap;
use std::fmt;
use std::sync::atomic::{AtomicU32, Ordering};
use std::sync::{Mutex, OnceLock};

use gatehouse_engine::upstream::{ExternalPolicy, PolicyBackend, PolicyFuture, PolicyRequest};
use napi::bindgen_prelude::*;
use napi::threadsafe_function::{ThreadsafeFunction, ThreadsafeFunctionCallMode};
use napi_derive::napi;
use tokio::sync::oneshot;

/// One question to the JavaScript policy.
#[napi(object)]
pub struct PolicyCall {
    /// Pass back to `resolvePolicy`.
    pub token: u32,
    pub method: String,
    pub path: String,
    pub host: String,
    /// Lower-case names; repeated headers appear once per value.
    pub headers: Vec<Vec<String>>,
    pub client_ip: String,
    pub backends: Vec<PolicyBackendJs>,
}

#[napi(object)]
pub struct PolicyBackendJs {
    pub url: String,
    pub weight: u32,
    /// Requests in flight to this backend.
    pub active: f64,
}

pub type PolicyFunction = ThreadsafeFunction<PolicyCall, (), PolicyCall, Status, false>;

type Pending = Mutex<HashMap<u32, oneshot::Sender<Option<String>>>>;

fn pending() -> &'static Pending {
    static PENDING: OnceLock<Pending> = OnceLock::new();
    PENDING.get_or_init(|| Mutex::new(HashMap::new()))
}

fn next_token() -> u32 {
    static NEXT: AtomicU32 = AtomicU32::new(1);
    NEXT.fetch_add(1, Ordering::Relaxed)
}

/// Completes a pending selection. Unknown tokens (answered after the engine gave up) are ignored.
pub fn resolve(token: u32, url: Option<String>) {
    let sender = pending().lock().ok().and_then(|mut p| p.remove(&token));
    if let Some(sender) = sender {
        let _ = sender.send(url);
    }
}

/// Removes the pending entry if the engine stops waiting first.
struct PendingGuard(u32);

impl Drop for PendingGuard {
    fn drop(&mut self) {
        if let Ok(mut p) = pending().lock() {
            p.remove(&self.0);
        }
    }
}

pub struct JsPolicy {
    function: PolicyFunction,
}

impl JsPolicy {
    pub fn new(function: PolicyFunction) -> Self {
        Self { function }
    }
}

impl fmt::Debug for JsPolicy {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("JsPolicy")
    }
}

impl ExternalPolicy for JsPolicy {
    fn select(&self, request: PolicyRequest, backends: Vec<PolicyBackend>) -> PolicyFuture {
        let token = next_token();
        let (tx, rx) = oneshot::channel();
        if let Ok(mut p) = pending().lock() {
            p.insert(token, tx);
        }
        let guard = PendingGuard(token);
        let call = PolicyCall {
            token,
            method: request.method,
            path: request.path,
            host: request.host,
            headers: request
                .headers
                .into_iter()
                .map(|(n, v)| vec![n, v])
                .collect(),
            client_ip: request.client_ip,
            backends: backends
                .into_iter()
                .map(|b| PolicyBackendJs {
                    url: b.url,
                    weight: b.weight,
                    active: b.active as f64,
                })
                .collect(),
        };
        let status = self
            .function
            .call(call, ThreadsafeFunctionCallMode::NonBlocking);
        Box::pin(async move {
            let _guard = guard;
            if status != Status::Ok {
                return None;
            }
            rx.await.ok().flatten()
        })
    }
}
