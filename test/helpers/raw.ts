/** Raw TCP clients, for what an HTTP library would refuse to send or would hide. */
import { connect, type Socket } from 'node:net';

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
