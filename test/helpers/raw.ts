/** Raw TCP clients and origins, for what an HTTP library would refuse to send or would hide. */
import type { ExecutionContext } from 'ava';
import { connect, createServer, type Socket } from 'node:net';

export interface RawResult {
  /** Everything the server sent, as latin1 text. */
  text: string;
  /** True when the server closed the connection (rather than the timeout ending the read). */
  closed: boolean;
  /** The status codes of every response in `text`, in order. */
  statuses: number[];
}

export function statuses(text: string): number[] {
  return [...text.matchAll(/HTTP\/1\.[01] (\d{3})/g)].map((m) => Number(m[1]));
}

/** Opens a connection to 127.0.0.1:port. */
export function open(port: number): Promise<Socket> {
  return new Promise((resolve, reject) => {
    const socket = connect(port, '127.0.0.1', () => resolve(socket));
    socket.once('error', reject);
  });
}

/**
 * Sends `data` (string parts are written in order, with `pauseMs` between them) and reads until
 * the server closes or `waitMs` passes without the connection closing.
 */
export async function raw(port: number, data: string | Buffer | (string | Buffer)[], options: { waitMs?: number; pauseMs?: number } = {}): Promise<RawResult> {
  const socket = await open(port);
  const chunks: Buffer[] = [];
  let closed = false;
  const done = new Promise<void>((resolve) => {
    socket.on('data', (c: Buffer) => chunks.push(c));
    socket.on('close', () => {
      closed = true;
      resolve();
    });
    socket.on('error', () => undefined);
  });
  const parts = Array.isArray(data) ? data : [data];
  for (const [i, part] of parts.entries()) {
    if (i > 0 && options.pauseMs) await new Promise((r) => setTimeout(r, options.pauseMs));
    if (!socket.destroyed) socket.write(part);
  }
  await Promise.race([done, new Promise((r) => setTimeout(r, options.waitMs ?? 2000))]);
  socket.destroy();
  const text = Buffer.concat(chunks).toString('latin1');
  return { text, closed, statuses: statuses(text) };
}

/** A raw client connection (TCP, or TLS from `tls.connect`) held open across a test's steps. */
export class RawConn {
  closed = false;
  private readonly chunks: Buffer[] = [];

  private constructor(private readonly socket: Socket) {
    socket.on('data', (c: Buffer) => this.chunks.push(c));
    socket.on('close', () => {
      this.closed = true;
    });
    socket.on('error', () => undefined);
  }

  /** A new TCP connection to 127.0.0.1:port, destroyed when the test ends. */
  static async open(t: ExecutionContext, port: number): Promise<RawConn> {
    return RawConn.wrap(t, await open(port));
  }

  /** An already connected socket, destroyed when the test ends. */
  static wrap(t: ExecutionContext, socket: Socket): RawConn {
    const conn = new RawConn(socket);
    t.teardown(() => conn.destroy());
    return conn;
  }

  get text(): string {
    return Buffer.concat(this.chunks).toString('latin1');
  }

  write(data: string | Buffer): void {
    if (!this.socket.destroyed) this.socket.write(data);
  }

  /** Waits until `cond` holds; false when `ms` pass first. */
  async until(cond: () => boolean, ms: number): Promise<boolean> {
    const deadline = Date.now() + ms;
    while (!cond()) {
      if (Date.now() >= deadline) return false;
      await new Promise((r) => setTimeout(r, 10));
    }
    return true;
  }

  destroy(): void {
    this.socket.destroy();
  }
}

/** A raw TCP origin, for what an HTTP server library would never send. */
export interface RawOrigin {
  /** `http://127.0.0.1:PORT`. */
  url: string;
  /** Connections accepted so far. */
  connections: number;
}

/**
 * Listens on a free port and hands each accepted socket to `onSocket`; every socket is destroyed
 * and the server closed when the test ends.
 */
export async function rawOrigin(t: ExecutionContext, onSocket: (socket: Socket) => void): Promise<RawOrigin> {
  const origin: RawOrigin = { url: '', connections: 0 };
  const sockets = new Set<Socket>();
  const server = createServer((socket) => {
    origin.connections += 1;
    sockets.add(socket);
    socket.on('close', () => sockets.delete(socket));
    socket.on('error', () => undefined);
    onSocket(socket);
  });
  await new Promise<void>((resolve) => server.listen(0, '127.0.0.1', resolve));
  const address = server.address();
  origin.url = `http://127.0.0.1:${typeof address === 'object' && address ? address.port : 0}`;
  t.teardown(
    () =>
      new Promise<void>((resolve) => {
        for (const s of sockets) s.destroy();
        server.close(() => resolve());
      }),
  );
  return origin;
}
