//! The engine's configuration: the normalised form the TypeScript control plane produces after
//! validating the user's file with its zod schema (durations in milliseconds, sizes in bytes,
//! paths absolute). The zod schema is the source of truth for users; this module re-checks only
//! what the engine itself depends on, and names the key path when something is off.

use std::collections::BTreeMap;
use std::time::Duration;

use serde::Deserialize;

#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct EngineConfig {
    /// Worker threads; 0 means one per CPU.
    #[serde(default)]
    pub workers: usize,
    pub listeners: Vec<ListenerConfig>,
    pub upstreams: BTreeMap<String, UpstreamConfig>,
    #[serde(default)]
    pub routes: Vec<RouteConfig>,
    #[serde(default)]
    pub limits: LimitsConfig,
    #[serde(default)]
    pub log: LogConfig,
    #[serde(default)]
    pub cache: CacheSettings,
}

/// The shared response cache (RFC 9111), in memory.
#[derive(Debug, Clone, Deserialize, PartialEq, Eq)]
#[serde(deny_unknown_fields, default)]
pub struct CacheSettings {
    pub enabled: bool,
    /// Bytes held at most (headers, bodies and per-entry overhead); least recently used go first.
    pub max_size: u64,
    /// Largest body stored; bigger responses pass through unstored.
    pub max_entry_size: u64,
}

impl Default for CacheSettings {
    fn default() -> Self {
        Self {
            enabled: false,
            max_size: 64 * 1024 * 1024,
            max_entry_size: 8 * 1024 * 1024,
        }
    }
}

#[derive(Debug, Clone, Deserialize, PartialEq)]
#[serde(deny_unknown_fields)]
pub struct ListenerConfig {
    pub address: String,
    #[serde(default)]
    pub redirect_to_https: Option<u16>,
    #[serde(default)]
    pub tls: Option<TlsListenerConfig>,
}

#[derive(Debug, Clone, Deserialize, PartialEq)]
#[serde(deny_unknown_fields)]
pub struct TlsListenerConfig {
    /// Chosen by SNI; the first is the default. Paths are absolute.
    pub certificates: Vec<CertificatePaths>,
    /// `"1.2"` or `"1.3"`.
    #[serde(default = "tls12")]
    pub min_version: String,
    #[serde(default)]
    pub cipher_suites: Option<Vec<String>>,
}

fn tls12() -> String {
    "1.2".into()
}

#[derive(Debug, Clone, Deserialize, PartialEq)]
#[serde(deny_unknown_fields)]
pub struct CertificatePaths {
    pub cert: String,
    pub key: String,
}

impl TlsListenerConfig {
    pub fn settings(&self) -> gatehouse_tls::TlsSettings {
        gatehouse_tls::TlsSettings {
            certificates: self
                .certificates
                .iter()
                .map(|c| gatehouse_tls::CertSource {
                    cert: c.cert.clone().into(),
                    key: c.key.clone().into(),
                })
                .collect(),
            min_version: if self.min_version == "1.3" {
                gatehouse_tls::TlsVersion::Tls13
            } else {
                gatehouse_tls::TlsVersion::Tls12
            },
            cipher_suites: self.cipher_suites.clone(),
        }
    }
}

#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct UpstreamConfig {
    #[serde(default)]
    pub balance: BalanceConfig,
    pub backends: Vec<BackendConfig>,
    #[serde(default)]
    pub pool: PoolSettings,
    #[serde(default)]
    pub timeouts: UpstreamTimeouts,
    #[serde(default)]
    pub retries: RetrySettings,
    #[serde(default)]
    pub passive_health: PassiveHealth,
}

#[derive(Debug, Clone, Copy, Default, Deserialize, PartialEq, Eq)]
#[serde(rename_all = "snake_case")]
pub enum BalanceConfig {
    #[default]
    RoundRobin,
    WeightedRoundRobin,
    LeastConn,
    IpHash,
    Random,
    P2cEwma,
    /// A per-request policy supplied by the embedder (a TypeScript `select`); round robin
    /// whenever it fails, times out or is not installed yet.
    External,
}

#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct BackendConfig {
    pub url: String,
    #[serde(default = "one")]
    pub weight: u32,
}

fn one() -> u32 {
    1
}

#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct PoolSettings {
    pub max_connections: u32,
    pub max_idle: u32,
    pub idle_timeout_ms: u64,
    pub connect_timeout_ms: u64,
    pub queue_timeout_ms: u64,
}

impl Default for PoolSettings {
    fn default() -> Self {
        Self {
            max_connections: 64,
            max_idle: 16,
            idle_timeout_ms: 60_000,
            connect_timeout_ms: 2_000,
            queue_timeout_ms: 1_000,
        }
    }
}

#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct UpstreamTimeouts {
    /// Time from sending the request head to receiving the response head.
    pub response_ms: u64,
    /// The longest pause while the response body arrives; 0: no limit.
    pub body_ms: u64,
    /// The longest an upgraded connection (WebSocket) may carry nothing either way; 0: no limit.
    pub tunnel_ms: u64,
}

impl Default for UpstreamTimeouts {
    fn default() -> Self {
        Self {
            response_ms: 30_000,
            body_ms: 60_000,
            tunnel_ms: 60_000,
        }
    }
}

#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct RetrySettings {
    /// Retries after the first try (idempotent requests only, each to another backend).
    pub max: u32,
    /// Retries may add at most this percentage to the upstream's request rate.
    pub budget_percent: u32,
    /// Base of the jittered exponential backoff between tries.
    pub backoff_ms: u64,
}

impl Default for RetrySettings {
    fn default() -> Self {
        Self {
            max: 0,
            budget_percent: 20,
            backoff_ms: 25,
        }
    }
}

/// Outlier detection from live traffic (connect failures, resets, timeouts, 5xx).
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct PassiveHealth {
    /// Consecutive failures that eject a backend; 0 disables passive ejection.
    pub consecutive_failures: u32,
    /// First ejection time; doubles with each further ejection (up to 16×).
    pub ejection_time_ms: u64,
    /// At most this percentage of an upstream's backends is ejected at once, and never the
    /// last available one.
    pub max_ejection_percent: u32,
}

impl Default for PassiveHealth {
    fn default() -> Self {
        Self {
            consecutive_failures: 5,
            ejection_time_ms: 30_000,
            max_ejection_percent: 50,
        }
    }
}

#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct RouteConfig {
    #[serde(default)]
    pub host: Option<String>,
    #[serde(default)]
    pub path_prefix: Option<String>,
    pub upstream: String,
    /// Whether responses of this route are cached when the cache is enabled (default: yes).
    #[serde(default)]
    pub cache: Option<bool>,
}

#[derive(Debug, Clone, Deserialize, PartialEq)]
#[serde(deny_unknown_fields, default)]
pub struct LimitsConfig {
    pub max_connections: u32,
    pub header_timeout_ms: u64,
    pub max_header_size: u64,
    pub max_body_size: u64,
    pub keepalive_timeout_ms: u64,
    /// Longest pause allowed between two pieces of a request body before 408.
    pub body_timeout_ms: u64,
    /// Longest a client may leave a response unread before it is closed; 0: no limit.
    pub send_timeout_ms: u64,
}

impl Default for LimitsConfig {
    fn default() -> Self {
        Self {
            max_connections: 10_000,
            header_timeout_ms: 10_000,
            max_header_size: 16 * 1024,
            max_body_size: 10 * 1024 * 1024,
            keepalive_timeout_ms: 60_000,
            body_timeout_ms: 60_000,
            send_timeout_ms: 60_000,
        }
    }
}

impl LimitsConfig {
    pub fn header_timeout(&self) -> Duration {
        Duration::from_millis(self.header_timeout_ms)
    }
    pub fn keepalive_timeout(&self) -> Duration {
        Duration::from_millis(self.keepalive_timeout_ms)
    }
    pub fn body_timeout(&self) -> Duration {
        Duration::from_millis(self.body_timeout_ms)
    }
    pub fn send_timeout(&self) -> Option<Duration> {
        (self.send_timeout_ms > 0).then(|| Duration::from_millis(self.send_timeout_ms))
    }
}

#[derive(Debug, Clone, Deserialize, PartialEq)]
#[serde(deny_unknown_fields, default)]
pub struct LogConfig {
    pub level: String,
    /// `"stdout"`, `"off"`, or an absolute file path.
    pub access_log: String,
    pub access_format: AccessFormat,
}

impl Default for LogConfig {
    fn default() -> Self {
        Self {
            level: "info".into(),
            access_log: "stdout".into(),
            access_format: AccessFormat::Json,
        }
    }
}

#[derive(Debug, Clone, Copy, Default, Deserialize, PartialEq, Eq)]
#[serde(rename_all = "snake_case")]
pub enum AccessFormat {
    #[default]
    Json,
    Combined,
}

/// A configuration problem, with the key path it concerns.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ConfigError {
    pub path: String,
    pub message: String,
}

impl std::fmt::Display for ConfigError {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "{}: {}", self.path, self.message)
    }
}

impl std::error::Error for ConfigError {}

impl EngineConfig {
    pub fn from_json(json: &str) -> Result<Self, ConfigError> {
        serde_json::from_str(json).map_err(|e| ConfigError {
            path: "(config)".into(),
            message: e.to_string(),
        })
    }
}

/// Splits a backend URL into the `host:port` to connect to. Only `http://host[:port]` with an
/// empty or `/` path is accepted: the engine forwards the client's path unchanged.
pub fn backend_address(url: &str) -> Result<String, String> {
    let uri: http::Uri = url.parse().map_err(|e| format!("invalid URL: {e}"))?;
    if uri.scheme_str() != Some("http") {
        return Err("only http:// backends are supported".into());
    }
    let host = uri.host().ok_or("URL has no host")?;
    if !matches!(uri.path(), "" | "/") || uri.query().is_some() {
        return Err("a backend URL takes no path or query".into());
    }
    let port = uri.port_u16().unwrap_or(80);
    Ok(format!("{host}:{port}"))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn backend_addresses() {
        assert_eq!(
            backend_address("http://127.0.0.1:9001").as_deref(),
            Ok("127.0.0.1:9001")
        );
        assert_eq!(
            backend_address("http://origin/").as_deref(),
            Ok("origin:80")
        );
        assert!(backend_address("https://origin").is_err());
        assert!(backend_address("http://origin/api").is_err());
        assert!(backend_address("not a url").is_err());
    }

    #[test]
    fn minimal_json_gets_defaults() {
        let cfg = EngineConfig::from_json(
            r#"{"listeners":[{"address":"127.0.0.1:0"}],
                "upstreams":{"app":{"backends":[{"url":"http://127.0.0.1:1"}]}}}"#,
        )
        .expect("valid");
        assert_eq!(cfg.limits, LimitsConfig::default());
        assert_eq!(cfg.upstreams["app"].backends[0].weight, 1);
        let err = EngineConfig::from_json(r#"{"listeners":[],"upstreams":{},"bogus":1}"#)
            .expect_err("unknown key");
        assert!(err.message.contains("bogus"));
    }
}
