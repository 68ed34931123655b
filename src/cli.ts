#!/usr/bin/env node
// vcmdq command-line entry: a table of subcommands, each a module function
// that takes its arguments and returns the exit status. The dispatcher owns
// the contract every subcommand shares: `--help`/`-h` anywhere (and `vcmdq
// help [cmd]`) prints that subcommand's usage on stdout with status 0; every
// error is one line on stderr, status 2 for a usage mistake and 1 for a
// failure, never a stack trace.
import { BENCH_USAGE, GATE_USAGE, benchMain, gateMain } from '../bench/cli.ts';
import { SIM_USAGE, simMain } from '../bench/sim-cli.ts';
import { DECODE_USAGE, ENCODE_USAGE, decodeMain, encodeMain } from './cli/codec-cmds.ts';
import { REPLAY_USAGE, replayMain } from './cli/replay.ts';
import { UsageError, isParseArgsError } from './cli/usage.ts';

type Subcommand = (args: string[]) => number | Promise<number>;

const SUBCOMMANDS: Record<string, { readonly run: Subcommand; readonly usage: string }> = {
  decode: { run: decodeMain, usage: DECODE_USAGE },
  encode: { run: encodeMain, usage: ENCODE_USAGE },
  replay: { run: replayMain, usage: REPLAY_USAGE },
  bench: { run: benchMain, usage: BENCH_USAGE },
  gate: { run: gateMain, usage: GATE_USAGE },
  sim: { run: simMain, usage: SIM_USAGE },
};

const NAMES = Object.keys(SUBCOMMANDS).join(', ');

/** The first line of each subcommand's usage, under one heading. */
function overview(): string {
  const lines = Object.values(SUBCOMMANDS).map((s) => `  ${s.usage.split('\n')[0]!.replace(/^usage: /, '')}`);
  return ['usage: vcmdq <command> [args]   (vcmdq help <command>, or <command> --help, for its options)', ...lines].join('\n');
}

function lookup(name: string): (typeof SUBCOMMANDS)[string] {
  if (!Object.hasOwn(SUBCOMMANDS, name)) throw new UsageError(`unknown command ${name} (commands: ${NAMES}; see vcmdq help)`);
  return SUBCOMMANDS[name]!;
}

/** Arguments up to a `--` ask for help. */
function wantsHelp(args: readonly string[]): boolean {
  for (const a of args) {
    if (a === '--') return false;
    if (a === '--help' || a === '-h') return true;
  }
  return false;
}

async function run(argv: readonly string[]): Promise<number> {
  const [sub, ...args] = argv;
  if (sub === undefined) throw new UsageError(`no command (commands: ${NAMES}; see vcmdq help)`);
  if (sub === '--help' || sub === '-h' || sub === 'help') {
    if (args.length > 1) throw new UsageError('help takes at most one command');
    process.stdout.write(`${args[0] === undefined ? overview() : lookup(args[0]).usage}\n`);
    return 0;
  }
  const entry = lookup(sub);
  if (wantsHelp(args)) {
    process.stdout.write(`${entry.usage}\n`);
    return 0;
  }
  return entry.run(args);
}

/** The exit status of `vcmdq ...argv`; errors become one line on stderr. */
async function main(argv: readonly string[]): Promise<number> {
  try {
    return await run(argv);
  } catch (e) {
    const usage = e instanceof UsageError || isParseArgsError(e);
    const what = argv[0] !== undefined && Object.hasOwn(SUBCOMMANDS, argv[0]) ? `vcmdq ${argv[0]}` : 'vcmdq';
    const message = e instanceof Error ? `${e.name === 'Error' || usage ? '' : `${e.name}: `}${e.message}` : String(e);
    process.stderr.write(`${what}: ${message.split('\n')[0]}\n`);
    return usage ? 2 : 1;
  }
}

process.exitCode = await main(process.argv.slice(2));
