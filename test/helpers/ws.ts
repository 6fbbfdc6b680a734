/**
 * A tiny RFC 6455 WebSocket client and echo origin over raw sockets (no npm package): the opening
 * handshake by hand, and frames with 7-, 16- and 64-bit lengths, masked from the client. Both ends
 * keep every byte they received after the handshake, to check that a proxy passes them unchanged.
 */
import { createHash, randomBytes } from 'node:crypto';
import { createServer, type IncomingHttpHeaders } from 'node:http';
import { connect, type AddressInfo, type Socket } from 'node:net';
import { connect as tlsConnect, type ConnectionOptions } from 'node:tls';

export const WS_GUID = '258EAFA5-E914-47DA-95CA-C5AB0DC85B11';
export const OP = { CONTINUATION: 0x0, TEXT: 0x1, BINARY: 0x2, CLOSE: 0x8, PING: 0x9, PONG: 0xa } as const;

export const acceptFor = (key: string): string => createHash('sha1').update(key + WS_GUID).digest('base64');

export interface WsFrame {
  fin: boolean;
  opcode: number;
  payload: Buffer;
}

export function encodeFrame(opcode: number, payload: Buffer, mask: boolean): Buffer {
  const len = payload.length;
  let head: Buffer;
  if (len < 126) {
    head = Buffer.from([0x80 | opcode, (mask ? 0x80 : 0) | len]);
  } else if (len < 65536) {
    head = Buffer.alloc(4);
    head.writeUInt16BE(len, 2);
    head[1] = (mask ? 0x80 : 0) | 126;
  } else {
    head = Buffer.alloc(10);
    head.writeBigUInt64BE(BigInt(len), 2);
    head[1] = (mask ? 0x80 : 0) | 127;
  }
  head[0] = 0x80 | opcode;
  if (!mask) return Buffer.concat([head, payload]);
  const key = randomBytes(4);
  const masked = Buffer.alloc(len);
  for (let i = 0; i < len; i++) masked[i] = (payload[i] ?? 0) ^ (key[i % 4] ?? 0);
  return Buffer.concat([head, key, masked]);
}

/** Incremental frame parser: feed bytes, get whole frames. */
export class FrameDecoder {
  #buffer = Buffer.alloc(0);

  feed(chunk: Buffer): WsFrame[] {
    this.#buffer = Buffer.concat([this.#buffer, chunk]);
    const frames: WsFrame[] = [];
    for (;;) {
      const b = this.#buffer;
      if (b.length < 2) break;
      const masked = ((b[1] ?? 0) & 0x80) !== 0;
      let len = (b[1] ?? 0) & 0x7f;
      let offset = 2;
      if (len === 126) {
        if (b.length < 4) break;
        len = b.readUInt16BE(2);
        offset = 4;
      } else if (len === 127) {
        if (b.length < 10) break;
        len = Number(b.readBigUInt64BE(2));
        offset = 10;
      }
      const keyLen = masked ? 4 : 0;
      if (b.length < offset + keyLen + len) break;
      const key = b.subarray(offset, offset + keyLen);
      const payload = Buffer.from(b.subarray(offset + keyLen, offset + keyLen + len));
      if (masked) for (let i = 0; i < len; i++) payload[i] = (payload[i] ?? 0) ^ (key[i % 4] ?? 0);
      frames.push({ fin: ((b[0] ?? 0) & 0x80) !== 0, opcode: (b[0] ?? 0) & 0x0f, payload });
      this.#buffer = b.subarray(offset + keyLen + len);
    }
    return frames;
  }
}

// ---------------------------------------------------------------------------------------------
// Origin

export interface WsOriginConnection {
  url: string;
  headers: IncomingHttpHeaders;
  /** Bytes received after the handshake, as received. */
  received: Buffer[];
  /** Bytes sent after the handshake. */
  sent: Buffer[];
  socket: Socket;
  closed: boolean;
}

export interface WsOrigin {
  url: string;
  port: number;
  /** Upgrade requests seen (accepted or refused). */
  upgrades: WsOriginConnection[];
  /** Plain (non-upgrade) requests seen. */
  plain: { url: string; headers: IncomingHttpHeaders }[];
  close(): Promise<void>;
}

/**
 * An origin that accepts WebSocket upgrades and echoes every data frame (unmasked, as a server
 * must); answers a close frame with a close frame, then ends. `/refuse` answers 400 instead of 101;
 * `/server-closes` sends a close frame right after the handshake; `/flood` sends binary frames for as
 * long as its socket takes them (not recorded in `sent`). Plain requests get 200 `plain <name>`.
 */
export async function startWsOrigin(name = 'ws'): Promise<WsOrigin> {
  const sockets = new Set<Socket>();
  const origin: WsOrigin = { url: '', port: 0, upgrades: [], plain: [], close: async () => undefined };
  const server = createServer((req, res) => {
    origin.plain.push({ url: req.url ?? '', headers: req.headers });
    req.resume();
    req.on('end', () => res.end(`plain ${name}`));
  });
  server.on('connection', (s: Socket) => {
    sockets.add(s);
    s.on('close', () => sockets.delete(s));
  });
  server.on('upgrade', (req, socket: Socket, head: Buffer) => {
    const conn: WsOriginConnection = { url: req.url ?? '', headers: req.headers, received: [], sent: [], socket, closed: false };
    origin.upgrades.push(conn);
    socket.on('error', () => undefined);
    socket.on('close', () => (conn.closed = true));
    const key = req.headers['sec-websocket-key'];
    if (req.url === '/refuse' || typeof key !== 'string' || String(req.headers.upgrade).toLowerCase() !== 'websocket') {
      socket.end('HTTP/1.1 400 Bad Request\r\nContent-Type: text/plain\r\nContent-Length: 7\r\nConnection: close\r\n\r\nrefused');
      return;
    }
    socket.write(`HTTP/1.1 101 Switching Protocols\r\nUpgrade: websocket\r\nConnection: Upgrade\r\nSec-WebSocket-Accept: ${acceptFor(key)}\r\n\r\n`);
    const send = (data: Buffer) => {
      conn.sent.push(data);
      socket.write(data);
    };
    const decoder = new FrameDecoder();
    const onData = (chunk: Buffer) => {
      conn.received.push(chunk);
      for (const f of decoder.feed(chunk)) {
        if (f.opcode === OP.CLOSE) {
          const reply = encodeFrame(OP.CLOSE, f.payload, false);
          conn.sent.push(reply);
          socket.end(reply);
        } else if (f.opcode === OP.PING) {
          send(encodeFrame(OP.PONG, f.payload, false));
        } else if (f.opcode !== OP.PONG) {
          send(encodeFrame(f.opcode, f.payload, false));
        }
      }
    };
    socket.on('data', onData);
    // The http server's sockets allow half-open connections; a WebSocket peer that stops sending is gone.
    socket.on('end', () => socket.end());
    if (head.length > 0) onData(head);
    if (req.url === '/flood') {
      const frame = encodeFrame(OP.BINARY, Buffer.alloc(60 * 1024, 7), false);
      const pump = (): void => {
        while (!socket.destroyed) {
          if (!socket.write(frame)) {
            socket.once('drain', pump);
            return;
          }
        }
      };
      pump();
    }
    if (req.url === '/server-closes') {
      const bye = encodeFrame(OP.CLOSE, Buffer.from([0x03, 0xe8, ...Buffer.from('bye')]), false);
      conn.sent.push(bye);
      socket.end(bye);
    }
  });
  await new Promise<void>((resolve) => server.listen(0, '127.0.0.1', resolve));
  origin.port = (server.address() as AddressInfo).port;
  origin.url = `http://127.0.0.1:${origin.port}`;
  origin.close = () =>
    new Promise<void>((resolve) => {
      for (const s of sockets) s.destroy();
      server.close(() => resolve());
      server.closeAllConnections();
    });
  return origin;
}

// ---------------------------------------------------------------------------------------------
// Client

export interface WsHandshake {
  socket: Socket;
  key: string;
  status: number;
  statusLine: string;
  /** Response headers, names lower-cased. */
  headers: Record<string, string>;
  /** The whole response head as received. */
  head: string;
  /** Bytes after the head (a non-101 response body, or the first frames). */
  rest: Buffer;
}

export interface WsConnectOptions {
  host?: string;
  /** Connect with TLS (wss) using these options. */
  tls?: ConnectionOptions;
  extraHeaders?: Record<string, string>;
}

/** Sends the opening handshake and reads the response head. */
export function wsHandshake(port: number, path: string, options: WsConnectOptions = {}): Promise<WsHandshake> {
  return new Promise((resolve, reject) => {
    const key = randomBytes(16).toString('base64');
    const socket: Socket = options.tls ? tlsConnect({ host: '127.0.0.1', port, ...options.tls }) : connect(port, '127.0.0.1');
    let buffer = Buffer.alloc(0);
    const onData = (chunk: Buffer) => {
      buffer = Buffer.concat([buffer, chunk]);
      const end = buffer.indexOf('\r\n\r\n');
      if (end < 0) return;
      socket.removeListener('data', onData);
      socket.pause();
      const head = buffer.subarray(0, end).toString('latin1');
      const [statusLine = '', ...lines] = head.split('\r\n');
      const headers: Record<string, string> = {};
      for (const line of lines) {
        const i = line.indexOf(':');
        if (i > 0) headers[line.slice(0, i).trim().toLowerCase()] = line.slice(i + 1).trim();
      }
      resolve({ socket, key, status: Number(statusLine.split(' ')[1]), statusLine, headers, head, rest: buffer.subarray(end + 4) });
    };
    socket.on('data', onData);
    socket.once('error', reject);
    const lines = [
      `GET ${path} HTTP/1.1`,
      `Host: ${options.host ?? 'ws.test'}`,
      'Upgrade: websocket',
      'Connection: Upgrade',
      `Sec-WebSocket-Key: ${key}`,
      'Sec-WebSocket-Version: 13',
      ...Object.entries(options.extraHeaders ?? {}).map(([n, v]) => `${n}: ${v}`),
    ];
    const request = `${lines.join('\r\n')}\r\n\r\n`;
    if (options.tls) socket.once('secureConnect', () => socket.write(request));
    else socket.write(request);
  });
}

/** A connected WebSocket client over an upgraded socket. */
export class WsClient {
  readonly socket: Socket;
  /** Bytes received after the handshake. */
  readonly received: Buffer[] = [];
  /** Bytes sent after the handshake. */
  readonly sent: Buffer[] = [];
  ended = false;
  #decoder = new FrameDecoder();
  #frames: WsFrame[] = [];
  #waiters: (() => void)[] = [];

  constructor(handshake: WsHandshake) {
    this.socket = handshake.socket;
    this.socket.on('error', () => undefined);
    const onData = (chunk: Buffer) => {
      this.received.push(chunk);
      this.#frames.push(...this.#decoder.feed(chunk));
      this.#wake();
    };
    this.socket.on('end', () => {
      this.ended = true;
      this.#wake();
    });
    this.socket.on('close', () => {
      this.ended = true;
      this.#wake();
    });
    this.socket.on('data', onData);
    if (handshake.rest.length > 0) onData(handshake.rest);
    this.socket.resume();
  }

  #wake(): void {
    this.#waiters.splice(0).forEach((w) => w());
  }

  send(opcode: number, payload: Buffer | string): void {
    const data = encodeFrame(opcode, typeof payload === 'string' ? Buffer.from(payload) : payload, true);
    this.sent.push(data);
    this.socket.write(data);
  }

  /** The next whole frame; rejects when the connection ends first or after `timeoutMs`. */
  next(timeoutMs = 5000): Promise<WsFrame> {
    return new Promise((resolve, reject) => {
      const deadline = setTimeout(() => reject(new Error('timed out waiting for a WebSocket frame')), timeoutMs);
      const check = () => {
        const f = this.#frames.shift();
        if (f) {
          clearTimeout(deadline);
          resolve(f);
        } else if (this.ended) {
          clearTimeout(deadline);
          reject(new Error('the connection ended'));
        } else {
          this.#waiters.push(check);
        }
      };
      check();
    });
  }

  /** Resolves when the server has ended the connection (or after `timeoutMs`, false). */
  waitEnd(timeoutMs = 5000): Promise<boolean> {
    return new Promise((resolve) => {
      const deadline = setTimeout(() => resolve(false), timeoutMs);
      const check = () => {
        if (this.ended) {
          clearTimeout(deadline);
          resolve(true);
        } else this.#waiters.push(check);
      };
      check();
    });
  }
}
