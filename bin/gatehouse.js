#!/usr/bin/env node
// The `gatehouse` command. Plain JavaScript so it runs with `node`; the CLI lives in lib/cli.
import { main } from '../lib/cli/index.js';

const code = await main(process.argv);
process.exitCode = code;
