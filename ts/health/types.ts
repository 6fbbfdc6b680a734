/** The health checker's vocabulary, shared by the checker, its monitors and their callers. */

export interface HealthCheckSettings {
  /** Path (and optional query) requested on the backend, e.g. "/health". */
  path: string;
  /** Between checks of one backend while healthy; the base of the backoff while unhealthy. */
  intervalMs: number;
  /** Per check, from connect to the last byte of the response body. */
  timeoutMs: number;
  /** Consecutive successes that make an unhealthy backend healthy. */
  healthyThreshold: number;
  /** Consecutive failures that make a healthy backend unhealthy. */
  unhealthyThreshold: number;
}

/** One backend to check. A URL listed in two upstreams is two targets, each with its own state. */
export interface HealthTarget {
  upstream: string;
  /** http://host:port */
  url: string;
  settings: HealthCheckSettings;
}

/** A change of verdict, reported once per change. */
export interface HealthChange {
  upstream: string;
  url: string;
  healthy: boolean;
  /** e.g. "3 consecutive failures: connect ECONNREFUSED 127.0.0.1:8081" or "2 consecutive successes". */
  reason: string;
}

/** One backend as `HealthChecker.state()` reports it (for the admin `/backends`). */
export interface BackendHealth {
  upstream: string;
  url: string;
  healthy: boolean;
  consecutiveSuccesses: number;
  consecutiveFailures: number;
  /** When the last check finished (ISO 8601); absent before the first. */
  lastCheck?: string;
  /** Why the last check failed; absent when it succeeded (or none ran yet). */
  lastError?: string;
}
