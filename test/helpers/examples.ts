/** What examples/embed.ts prints, line by line, as patterns (ports vary). */
export const embedOutput: RegExp[] = [
  /^listening: http:\/\/127\.0\.0\.1:\d+$/,
  /^equal weights: a=2 b=2$/,
  /^a weighs 3: a=6 b=2$/,
  /^health: b healthy=false$/,
  /^b is down: a=4$/,
  /^health: b healthy=true$/,
  /^reloaded to b only: b=2$/,
  /^refused: ERR_GATEHOUSE_CONFIG upstreams\.app\.backends\[0\]\.url$/,
  /^requests: 18$/,
  /^closed$/,
];

/** Checks `stdout` against `embedOutput`; the problems, or an empty list. */
export function embedOutputProblems(stdout: string): string[] {
  const lines = stdout.trim().split('\n');
  const problems = embedOutput.flatMap((pattern, i) => (pattern.test(lines[i] ?? '') ? [] : [`line ${i + 1}: ${JSON.stringify(lines[i])} does not match ${String(pattern)}`]));
  if (lines.length !== embedOutput.length) problems.push(`${lines.length} lines, expected ${embedOutput.length}`);
  return problems;
}
