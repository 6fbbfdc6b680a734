#!/usr/bin/env node
// Writes config/schema.json and the README's configuration reference from the zod schema (the
// single source of truth). `npm run build` runs this; test/docs.test.ts fails when either is stale.
import { readFileSync, writeFileSync } from 'node:fs';
import { configJsonSchema } from '../lib/config/schema.js';
import { withReference } from '../lib/config/reference.js';

const schema = { ...configJsonSchema(), title: 'gatehouse configuration' };
writeFileSync(new URL('../config/schema.json', import.meta.url), `${JSON.stringify(schema, null, 2)}\n`);

const readmeUrl = new URL('../README.md', import.meta.url);
const readme = readFileSync(readmeUrl, 'utf8');
const updated = withReference(readme, schema);
if (updated !== readme) writeFileSync(readmeUrl, updated);
