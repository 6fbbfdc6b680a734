/**
 * Structured logs: one JSON object per line on stderr, in the same shape as the engine's
 * (`timestamp`, `level`, `message`, `target`, then fields), so one parser reads both.
 */

export type LogLevel = 'trace' | 'debug' | 'info' | 'warn' | 'error' | 'off';
const ORDER: Record<LogLevel, number> = { trace: 0, debug: 1, info: 2, warn: 3, error: 4, off: 5 };

export interface Logger {
  level: LogLevel;
  debug(message: string, fields?: Record<string, unknown>): void;
  info(message: string, fields?: Record<string, unknown>): void;
  warn(message: string, fields?: Record<string, unknown>): void;
  error(message: string, fields?: Record<string, unknown>): void;
}

export function createLogger(level: LogLevel = 'info', write: (line: string) => void = (l) => process.stderr.write(l)): Logger {
  const logger: Logger = {
    level,
    debug: (m, f) => emit('debug', m, f),
    info: (m, f) => emit('info', m, f),
    warn: (m, f) => emit('warn', m, f),
    error: (m, f) => emit('error', m, f),
  };
  function emit(at: LogLevel, message: string, fields?: Record<string, unknown>): void {
    if (ORDER[at] < ORDER[logger.level]) return;
    const line = { timestamp: new Date().toISOString(), level: at.toUpperCase(), message, target: 'gatehouse::control', ...fields };
    write(`${JSON.stringify(line)}\n`);
  }
  return logger;
}
