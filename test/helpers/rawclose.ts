/**
 * Like `raw()` from raw.ts, but its wait does not keep the process alive once the server has
 * closed (the timer is cleared), so a test file's process exits as soon as its tests are done.
 */
import { open, statuses, type RawResult } from './raw.js';

export async function exchange(port: number, parts: (string | Buffer)[], options: { waitMs?: number; pauseMs?: number } = {}): Promise<RawResult> {
  const socket = await open(port);
  const chunks: Buffer[] = [];
  let closed = false;
  let timer: NodeJS.Timeout | undefined;
  const done = new Promise<void>((resolve) => {
    socket.on('data', (c: Buffer) => chunks.push(c));
    socket.on('close', () => {
      closed = true;
      resolve();
    });
    socket.on('error', () => undefined);
    timer = setTimeout(resolve, options.waitMs ?? 2000);
  });
  for (const [i, part] of parts.entries()) {
    if (i > 0 && options.pauseMs) await new Promise((r) => setTimeout(r, options.pauseMs));
    if (!socket.destroyed) socket.write(part);
  }
  await done;
  clearTimeout(timer);
  socket.destroy();
  const text = Buffer.concat(chunks).toString('latin1');
  return { text, closed, statuses: statuses(text) };
}
