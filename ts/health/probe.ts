/**
 * One active check: an HTTP GET on a connection of its own. Never the traffic pool, so that a
 * check measures the backend and not a pooled connection, and never takes a slot from requests.
 */
import { request } from 'node:http';
import type { Socket } from 'node:net';

export const USER_AGENT = 'gatehouse-health-check';

export type ProbeResult = { ok: true } | { ok: false; reason: string };

/**
 * GETs `url`: success is a 2xx whose body (read and discarded) ends within `timeoutMs`; anything
 * else fails with a reason. Resolves, never rejects, and only once the socket has closed, so a
 * finished probe leaves nothing open. Aborting `signal` cancels it (the result is then a failure).
 */
export function probe(url: URL, timeoutMs: number, signal: AbortSignal): Promise<ProbeResult> {
  return new Promise((resolve) => {
    let verdict: ProbeResult | undefined;
    let socket: Socket | undefined;
    let socketClosed = false;
    let requestClosed = false;
    const req = request(url, {
      method: 'GET',
      agent: false,
      signal,
      headers: { 'User-Agent': USER_AGENT, Connection: 'close' },
    });
    const timer = setTimeout(() => settle({ ok: false, reason: `timeout after ${timeoutMs}ms` }), timeoutMs);
    timer.unref();

    /** The first verdict wins; the connection goes as soon as there is one. */
    function settle(result: ProbeResult): void {
      if (verdict) return;
      verdict = result;
      clearTimeout(timer);
      req.destroy();
    }

    /** Resolves once both the request and its socket are closed (the socket may close first or last). */
    function finish(): void {
      if (requestClosed && (!socket || socketClosed)) resolve(verdict ?? { ok: false, reason: 'connection closed' });
    }

    req.on('socket', (s: Socket) => {
      socket = s;
      // A forgotten checker must not keep the process alive, not even mid-check.
      s.unref();
      s.once('close', () => {
        socketClosed = true;
        finish();
      });
    });
    req.on('response', (res) => {
      const status = res.statusCode ?? 0;
      res.on('error', (e: Error) => settle({ ok: false, reason: describe(e) }));
      res.on('end', () => settle(status >= 200 && status < 300 ? { ok: true } : { ok: false, reason: `status ${status}` }));
      // A failing status needs no body; a passing one counts once the body has arrived.
      if (status < 200 || status >= 300) settle({ ok: false, reason: `status ${status}` });
      else res.resume();
    });
    req.on('error', (e: Error) => settle({ ok: false, reason: describe(e) }));
    req.on('close', () => {
      settle({ ok: false, reason: 'connection closed before the response completed' });
      requestClosed = true;
      finish();
    });
    req.end();
  });
}

/** Node's message, plus the code when the message hides it ("socket hang up (ECONNRESET)"). */
function describe(e: Error): string {
  const code = (e as NodeJS.ErrnoException).code;
  return code && !e.message.includes(code) ? `${e.message} (${code})` : e.message;
}
