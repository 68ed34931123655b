#!/usr/bin/env node
// vcmdq command-line entry: a table of subcommands, each a module function
// that takes its arguments and returns the exit status.
import { benchMain, gateMain } from '../bench/cli.ts';
import { UsageError, decodeMain, encodeMain } from './cli/codec-cmds.ts';
import { REPLAY_HELP, replayMain } from './cli/replay.ts';

type Subcommand = (args: string[]) => number | Promise<number>;

const SUBCOMMANDS: Record<string, { readonly run: Subcommand; readonly help: string }> = {
  decode: { run: decodeMain, help: 'decode [<w0> <w1>]   print a command as JSON (no words: one "w0 w1" per stdin line)' },
  encode: { run: encodeMain, help: "encode '<json>'      print the two words of a command object" },
  bench: { run: benchMain, help: 'bench [--quick] [--scenario NAME] [--json FILE] [--svg FILE]   trap vs doorbell, side by side' },
  replay: { run: replayMain, help: REPLAY_HELP },
  gate: { run: gateMain, help: 'gate --baseline FILE [--update-baseline]   perf regression gate on in-run ratios' },
};

function usage(): string {
  return ['usage: vcmdq <command> [args]', ...Object.values(SUBCOMMANDS).map((s) => `  ${s.help}`)].join('\n');
}

async function main(argv: string[]): Promise<number> {
  const [sub, ...args] = argv;
  if (sub === undefined || sub === '--help' || sub === '-h') {
    process.stderr.write(`${usage()}\n`);
    return sub === undefined ? 2 : 0;
  }
  const entry = Object.hasOwn(SUBCOMMANDS, sub) ? SUBCOMMANDS[sub] : undefined;
  if (entry === undefined) {
    process.stderr.write(`vcmdq: unknown command ${sub}\n${usage()}\n`);
    return 2;
  }
  try {
    return await entry.run(args);
  } catch (e) {
    if (e instanceof UsageError) {
      process.stderr.write(`vcmdq ${sub}: ${e.message}\n`);
      return 2;
    }
    throw e;
  }
}

process.exitCode = await main(process.argv.slice(2));
