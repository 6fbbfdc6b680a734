#!/usr/bin/env node
// Writes config/schema.json from the zod schema (the single source of truth). `npm run build`
// runs this; a test fails when the committed file is stale.
import { writeFileSync } from 'node:fs';
import { configJsonSchema } from '../lib/config/schema.js';

const schema = { ...configJsonSchema(), title: 'gatehouse configuration' };
writeFileSync(new URL('../config/schema.json', import.meta.url), `${JSON.stringify(schema, null, 2)}\n`);
