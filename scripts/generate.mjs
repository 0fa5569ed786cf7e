// Generates the code the project does not keep in git. Run by `postinstall`, `npm start` and
// `npm run generate` (which passes --force). Plain Node ESM: it runs before tsx is needed.
//
//   node scripts/generate.mjs [--force]
//
// Each step skips its work when its output is already up to date (unless --force), prints one
// line when it did something, and on failure prints the tool's output and exits non-zero.
// To add a step, write an async function and call it from main() with runStep().

import { spawnSync } from 'node:child_process';
import { existsSync, readdirSync, readFileSync, statSync, writeFileSync } from 'node:fs';
import { createRequire } from 'node:module';
import { dirname, join, relative } from 'node:path';
import { fileURLToPath } from 'node:url';

const root = fileURLToPath(new URL('..', import.meta.url));
const require = createRequire(import.meta.url);
const force = process.argv.includes('--force');

const only = process.argv.find((arg) => arg.startsWith('--only='))?.slice('--only='.length);

async function main() {
  if (!only || only === 'prisma') await runStep('prisma client', generatePrismaClient);
  if (!only || only === 'documents') await runStep('typed documents', generateTypedDocuments);
}

/** Runs one step, timing it; a thrown error ends the process with exit code 1. */
async function runStep(name, step) {
  const started = performance.now();
  try {
    const did = await step();
    if (did) console.log(`generate: ${name} (${Math.round(performance.now() - started)} ms)`);
  } catch (error) {
    console.error(`generate: ${name} FAILED`);
    console.error(error instanceof Error ? error.message : error);
    process.exit(1);
  }
}

/**
 * `prisma generate` into src/db/generated/prisma. Skipped when the client is newer than
 * prisma/schema.prisma and was made by the installed Prisma version. Returns whether it ran.
 */
async function generatePrismaClient() {
  const schema = join(root, 'prisma/schema.prisma');
  const output = join(root, 'src/db/generated/prisma');
  const client = join(output, 'client.ts');
  const stamp = join(output, '.prisma-version');
  const cliPackage = resolvePackageJson('prisma');
  const { version, bin } = JSON.parse(readFileSync(cliPackage, 'utf8'));
  const upToDate =
    existsSync(client) &&
    statSync(client).mtimeMs > statSync(schema).mtimeMs &&
    existsSync(stamp) &&
    readFileSync(stamp, 'utf8') === version;
  if (upToDate && !force) return false;

  const cli = join(dirname(cliPackage), typeof bin === 'string' ? bin : bin.prisma);
  const result = spawnSync(
    process.execPath,
    [cli, 'generate', '--schema', relative(root, schema), '--no-hints'],
    {
      cwd: root,
      encoding: 'utf8',
      timeout: 120_000,
      env: {
        ...process.env,
        // The CLI downloads its native schema engine on every command, and cannot here; generate
        // never runs it, so any existing file satisfies the check.
        PRISMA_SCHEMA_ENGINE_BINARY: process.env.PRISMA_SCHEMA_ENGINE_BINARY || process.execPath,
        CHECKPOINT_DISABLE: '1',
        PRISMA_HIDE_UPDATE_MESSAGE: '1',
      },
    },
  );
  if (result.error || result.status !== 0) {
    const reason = result.error ? String(result.error) : `exit code ${result.status}`;
    throw new Error(
      `prisma generate failed (${reason})\n${result.stdout ?? ''}${result.stderr ?? ''}`,
    );
  }
  writeFileSync(stamp, version);
  return true;
}

/**
 * The typed documents of test/operations (codegen.yml's test/generated output only, from the
 * committed schema/schema.graphql; printing that schema is `npm run codegen`'s job). Skipped when
 * the output is newer than the schema and every operation file.
 */
async function generateTypedDocuments() {
  const target = 'test/generated/graphql.ts';
  const output = join(root, target);
  const inputs = [join(root, 'schema/schema.graphql'), join(root, 'codegen.yml')];
  const operations = join(root, 'test/operations');
  if (existsSync(operations)) {
    for (const file of readdirSync(operations)) inputs.push(join(operations, file));
  }
  const newest = Math.max(...inputs.map((file) => statSync(file).mtimeMs));
  if (existsSync(output) && statSync(output).mtimeMs > newest && !force) return false;

  resolvePackageJson('@graphql-codegen/cli');
  const { generate, loadCodegenConfig } = await import('@graphql-codegen/cli');
  const { config } = await loadCodegenConfig({ configFilePath: join(root, 'codegen.yml') });
  const entry = config.generates[target];
  if (!entry) throw new Error(`codegen.yml has no output ${target}`);
  const previous = process.cwd();
  process.chdir(root);
  try {
    await generate({ ...config, silent: true, generates: { [target]: entry } }, true);
  } finally {
    process.chdir(previous);
  }
  return true;
}

function resolvePackageJson(name) {
  try {
    return require.resolve(`${name}/package.json`);
  } catch {
    throw new Error(
      `${name} is not installed. It is a devDependency: run \`npm install\` (with dev dependencies).`,
    );
  }
}

await main();
