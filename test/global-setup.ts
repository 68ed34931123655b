import { execFileSync } from 'node:child_process';
import { fileURLToPath } from 'node:url';

// Build dist/ exactly as `npm run build:js` does, so worker-based tests run
// the same bundles the package ships, never a test-only copy.
export default function setup(): void {
  const root = fileURLToPath(new URL('..', import.meta.url));
  execFileSync('npm', ['run', '-s', 'build:js'], { cwd: root, stdio: 'inherit' });
}
