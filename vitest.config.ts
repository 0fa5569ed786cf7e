import { defineConfig } from 'vitest/config';

export default defineConfig({
  // graphql 16 ships CommonJS (main) and ESM (module) builds; dependencies load it through Node
  // (CommonJS), so the tests must too, or the schema's types come from two "realms".
  resolve: { alias: [{ find: /^graphql$/, replacement: 'graphql/index.js' }] },
  test: {
    include: ['test/**/*.test.ts'],
    // Real servers, Postgres and Redis: allow for start-up, never for a lost event.
    testTimeout: 30_000,
    hookTimeout: 60_000,
    pool: 'forks',
    // Machines have two cores; each file starts its own servers.
    maxWorkers: 2,
    env: { NODE_ENV: 'test' },
  },
});
