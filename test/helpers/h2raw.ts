/**
 * A raw HTTP/2 client over a TCP socket, for what node:http2 will not send: frames built by hand
 * (RFC 9113 §4.1: 24-bit length, type, flags, 31-bit stream id), a minimal HPACK encoder (literal
 * fields, never indexed), and a parser for the server's frames.
 */
import { connect, type Socket } from 'node:net';

export const FRAME = {
  DATA: 0x0,
  HEADERS: 0x1,
  RST_STREAM: 0x3,
  SETTINGS: 0x4,
  PING: 0x6,
  GOAWAY: 0x7,
  WINDOW_UPDATE: 0x8,
  CONTINUATION: 0x9,
} as const;

export const FLAG = { END_STREAM: 0x1, ACK: 0x1, END_HEADERS: 0x4 } as const;

export const ERROR = { NO_ERROR: 0x0, PROTOCOL_ERROR: 0x1, CANCEL: 0x8, ENHANCE_YOUR_CALM: 0xb } as const;

export const PREFACE = Buffer.from('PRI * HTTP/2.0\r\n\r\nSM\r\n\r\n', 'latin1');

export function frame(type: number, flags: number, stream: number, payload: Buffer = Buffer.alloc(0)): Buffer {
  const head = Buffer.alloc(9);
  head.writeUIntBE(payload.length, 0, 3);
  head.writeUInt8(type, 3);
  head.writeUInt8(flags, 4);
  head.writeUInt32BE(stream & 0x7fffffff, 5);
  return Buffer.concat([head, payload]);
}

function hpackInt(value: number, prefixBits: number, firstByte: number): Buffer {
  const max = (1 << prefixBits) - 1;
  if (value < max) return Buffer.from([firstByte | value]);
  const out = [firstByte | max];
  let rest = value - max;
  while (rest >= 128) {
    out.push((rest % 128) + 128);
    rest = Math.floor(rest / 128);
  }
  out.push(rest);
  return Buffer.from(out);
}

function hpackString(s: string): Buffer {
  const bytes = Buffer.from(s, 'latin1');
  return Buffer.concat([hpackInt(bytes.length, 7, 0x00), bytes]);
}

/** One header field as "literal without indexing, new name" (RFC 7541 §6.2.2). */
export function hpackLiteral(name: string, value: string): Buffer {
  return Buffer.concat([Buffer.from([0x00]), hpackString(name), hpackString(value)]);
}

/** A header block for a request. */
export function requestBlock(authority: string, path = '/', method = 'GET', extra: [string, string][] = []): Buffer {
  const fields: [string, string][] = [[':method', method], [':scheme', 'http'], [':path', path], [':authority', authority], ...extra];
  return Buffer.concat(fields.map(([n, v]) => hpackLiteral(n, v)));
}

export const settingsFrame = (settings: [number, number][] = []): Buffer => {
  const payload = Buffer.alloc(settings.length * 6);
  settings.forEach(([id, value], i) => {
    payload.writeUInt16BE(id, i * 6);
    payload.writeUInt32BE(value, i * 6 + 2);
  });
  return frame(FRAME.SETTINGS, 0, 0, payload);
};

export const rstStream = (stream: number, code: number = ERROR.CANCEL): Buffer => {
  const payload = Buffer.alloc(4);
  payload.writeUInt32BE(code, 0);
  return frame(FRAME.RST_STREAM, 0, stream, payload);
};

export interface Frame {
  type: number;
  flags: number;
  stream: number;
  payload: Buffer;
}

export interface RawH2 {
  socket: Socket;
  frames: Frame[];
  closed: boolean;
  /** The first GOAWAY received: last stream id and error code. */
  goaway?: { lastStream: number; code: number };
  /** Writes, resolving once the data is handed to the kernel (false when the socket is gone). */
  write(data: Buffer): Promise<boolean>;
  /** Resolves when the server sent GOAWAY or closed the connection, or after `timeoutMs` (false). */
  goawayOrClose(timeoutMs: number): Promise<boolean>;
  destroy(): void;
}

/**
 * Connects, sends the preface and an empty SETTINGS frame, and from then on parses the server's
 * frames, acknowledging its SETTINGS and PINGs like a real client.
 */
export function rawH2(port: number): Promise<RawH2> {
  return new Promise((resolve, reject) => {
    const socket = connect(port, '127.0.0.1');
    let buffer = Buffer.alloc(0);
    /** Each returns true once satisfied (and is then dropped). */
    let waiters: (() => boolean)[] = [];
    const notify = () => {
      waiters = waiters.filter((w) => !w());
    };
    const client: RawH2 = {
      socket,
      frames: [],
      closed: false,
      write: (data) =>
        new Promise((res) => {
          if (client.closed || socket.destroyed) return res(false);
          socket.write(data, (err) => res(!err));
        }),
      goawayOrClose: (timeoutMs) =>
        new Promise((res) => {
          if (client.goaway || client.closed) return res(true);
          const timer = setTimeout(() => res(false), timeoutMs);
          waiters.push(() => {
            if (!client.goaway && !client.closed) return false;
            clearTimeout(timer);
            res(true);
            return true;
          });
        }),
      destroy: () => socket.destroy(),
    };
    socket.on('data', (chunk: Buffer) => {
      buffer = Buffer.concat([buffer, chunk]);
      while (buffer.length >= 9) {
        const length = buffer.readUIntBE(0, 3);
        if (buffer.length < 9 + length) break;
        const f: Frame = {
          type: buffer.readUInt8(3),
          flags: buffer.readUInt8(4),
          stream: buffer.readUInt32BE(5) & 0x7fffffff,
          payload: buffer.subarray(9, 9 + length),
        };
        buffer = buffer.subarray(9 + length);
        client.frames.push(f);
        if (f.type === FRAME.SETTINGS && !(f.flags & FLAG.ACK)) void client.write(frame(FRAME.SETTINGS, FLAG.ACK, 0));
        if (f.type === FRAME.PING && !(f.flags & FLAG.ACK)) void client.write(frame(FRAME.PING, FLAG.ACK, 0, f.payload));
        if (f.type === FRAME.GOAWAY && !client.goaway) {
          client.goaway = { lastStream: f.payload.readUInt32BE(0) & 0x7fffffff, code: f.payload.readUInt32BE(4) };
        }
      }
      notify();
    });
    socket.on('close', () => {
      client.closed = true;
      notify();
    });
    socket.on('error', () => undefined);
    socket.once('connect', () => {
      socket.write(Buffer.concat([PREFACE, settingsFrame()]));
      resolve(client);
    });
    socket.once('error', (e) => {
      if (!socket.connecting) return;
      reject(e);
    });
  });
}
