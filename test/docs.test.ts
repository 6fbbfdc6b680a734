/** The README's configuration reference is generated from the schema; it must not go stale. */
import test from 'ava';
import { readFileSync } from 'node:fs';
import { configJsonSchema } from '../ts/index.js';
import { withReference } from '../ts/config/reference.js';

const readme = readFileSync(new URL('../README.md', import.meta.url), 'utf8');

test('the README configuration reference matches the schema (run `npm run schema` when this fails)', (t) => {
  const schema = { ...configJsonSchema(), title: 'gatehouse configuration' };
  t.is(readme, withReference(readme, schema));
});

test('every top-level config key is documented in the README reference', (t) => {
  const keys = Object.keys((configJsonSchema() as { properties: Record<string, unknown> }).properties);
  for (const key of keys) t.regex(readme, new RegExp(`\\| \`${key}[.\\[\`]`), key);
});

test('the README quick start is the two commands', (t) => {
  t.regex(readme, /npm install && npm start/);
  t.regex(readme, /npm test/);
});
