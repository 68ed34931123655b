#!/usr/bin/env node
// vcmdq command-line entry: dispatches to the subcommands.
const sub = process.argv[2];
process.stderr.write(`vcmdq: unknown command ${sub ?? '(none)'}\n`);
process.exitCode = 2;
