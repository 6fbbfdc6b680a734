/** Structured log lines (one JSON object per line) read from a child process's stderr. */
import type { Readable } from 'node:stream';

/** One log line: `timestamp`, `level`, `message`, `target`, then fields. */
export type LogLine = Record<string, unknown> & { level?: string; message?: string };

/**
 * Collects every line of `stream` that parses as a JSON object into the returned array, as the
 * lines arrive; `onText` also sees the raw text (for error messages).
 */
export function collectLogLines(stream: Readable | null | undefined, onText: (text: string) => void = () => undefined): LogLine[] {
  const logs: LogLine[] = [];
  let partial = '';
  stream?.setEncoding('utf8').on('data', (s: string) => {
    onText(s);
    partial += s;
    const lines = partial.split('\n');
    partial = lines.pop() ?? '';
    for (const line of lines) {
      if (!line.startsWith('{')) continue;
      try {
        const parsed = JSON.parse(line) as unknown;
        if (parsed && typeof parsed === 'object') logs.push(parsed as LogLine);
      } catch {
        // not a log line
      }
    }
  });
  return logs;
}
