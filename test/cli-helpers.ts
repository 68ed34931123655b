// The built CLI (dist/ comes from the vitest global setup), run as a user runs it.
import { spawnSync } from 'node:child_process';
import { fileURLToPath } from 'node:url';

export const cli = fileURLToPath(new URL('../dist/cli.js', import.meta.url));
export const fixture = (name: string): string => fileURLToPath(new URL(`./fixtures/${name}`, import.meta.url));

export interface CliRun {
  status: number | null;
  stdout: string;
  stderr: string;
}

/** `vcmdq ...args` with `input` on stdin. A timeout (status null) would mean a thread kept the process alive. */
export function vcmdq(args: readonly string[], input = ''): CliRun {
  const r = spawnSync(process.execPath, [cli, ...args], { input, encoding: 'utf8', timeout: 20_000 });
  return { status: r.status, stdout: r.stdout, stderr: r.stderr };
}
