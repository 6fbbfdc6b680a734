/** The contract of a TypeScript balancing policy module (`balance: { module: FILE }`). */

/** What `select` learns about a request. Header names are lower case; repeated ones are joined with ", ". */
export interface PolicyRequest {
  method: string;
  path: string;
  host: string;
  headers: Record<string, string>;
  clientIp: string;
}

/** A backend that may be chosen (healthy, not already tried by this request). */
export interface PolicyBackend {
  url: string;
  weight: number;
  /** Requests in flight to it. */
  active: number;
}

/** What `tune` sees: the upstream's backends and their counters. */
export interface UpstreamSnapshot {
  upstream: string;
  backends: {
    url: string;
    weight: number;
    healthy: boolean;
    active: number;
    requests: number;
    failures: number;
    /** Peak-EWMA of response latency, decaying toward 0 while the backend answers nothing (as `p2c_ewma` weighs it); 0 before the first response. */
    latencyEwmaMs: number;
  }[];
}

export type SelectResult = PolicyBackend | string | null | undefined;

export interface BalancingPolicy {
  /**
   * Picks the backend for one request: one of `backends`, or its `url`. `null`/`undefined`, a
   * throw or anything else falls back to round robin for that request (and is logged).
   * Runs on the JavaScript thread for every request of the upstream: keep it fast.
   */
  select?(request: PolicyRequest, backends: PolicyBackend[]): SelectResult | Promise<SelectResult>;
  /**
   * Returns new weights `{ [url]: weight }` from a stats snapshot, applied atomically. Runs every
   * `tuneInterval`; costs nothing per request.
   */
  tune?(snapshot: UpstreamSnapshot): Record<string, number> | Promise<Record<string, number>>;
  /** How often `tune` runs: `"10s"`, or milliseconds. Overrides the config's `tune_interval`. */
  tuneInterval?: string | number;
}

/** Identity helper that types a policy module's default export. */
export function definePolicy<P extends BalancingPolicy>(policy: P): P {
  return policy;
}
