// Worker entries are separate esbuild bundles in dist/ (Node 20 cannot start a
// .ts worker). From the published bundle they sit beside this code; from the
// TypeScript sources (under vitest) they are the dist/ build of the same files.
export function workerUrl(file: string): URL {
  const here = import.meta.url;
  return here.endsWith('.ts') ? new URL(`../dist/${file}`, here) : new URL(`./${file}`, here);
}
