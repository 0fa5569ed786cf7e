// Generates the code the project does not keep in git. Run by `postinstall`, `npm start` and
// `npm run generate` (which passes --force). Plain Node ESM: it runs before tsx is needed.
// With --build (`npm start`) it also compiles the server into dist/ when a source changed
// (`npm run build` runs that step alone, always).
//
//   node scripts/generate.mjs [--force] [--build] [--only=prisma|documents|graphiql|build]
//
// Each step skips its work when its output is already up to date (unless --force), prints one
// line when it did something, and on failure prints the tool's output and exits non-zero.
// To add a step, write an async function and call it from main() with runStep().

import { spawnSync } from 'node:child_process';
import { createHash } from 'node:crypto';
import {
  cpSync,
  existsSync,
  mkdirSync,
  readdirSync,
  readFileSync,
  rmSync,
  statSync,
  writeFileSync,
} from 'node:fs';
import { createRequire } from 'node:module';
import { dirname, join, relative } from 'node:path';
import { fileURLToPath, pathToFileURL } from 'node:url';
import { brotliCompressSync, gzipSync, constants as zlib } from 'node:zlib';

const root = fileURLToPath(new URL('..', import.meta.url));
const require = createRequire(import.meta.url);
const force = process.argv.includes('--force');

const build = process.argv.includes('--build');
const only = process.argv.find((arg) => arg.startsWith('--only='))?.slice('--only='.length);

async function main() {
  if (!only || only === 'prisma') await runStep('prisma client', generatePrismaClient);
  if (!only || only === 'documents') await runStep('typed documents', generateTypedDocuments);
  if (!only || only === 'graphiql') await runStep('graphiql assets', generateGraphiQLAssets);
  if ((!only && build) || only === 'build') await runStep('compiled server (dist/)', buildServer);
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

/** Bumped when the files generateGraphiQLAssets writes change shape. */
const GRAPHIQL_FORMAT = 2;
/** URL path the GraphiQL assets are served under (src/transport/graphiql.ts serves it). */
const GRAPHIQL_PATH = '/graphiql/';

/**
 * GraphiQL's assets as separate files for src/transport/graphiql.ts, from the bundle of
 * @graphql-yoga/render-graphiql (which would otherwise inline 8.8 MB into every page): the
 * script, the style sheet, Monaco's three workers and the icon, each named by its content hash
 * and written plain, gzip (.gz) and brotli (.br) compressed, plus manifest.json. Written to
 * src/transport/generated/graphiql/. Skipped when the manifest was made from the installed
 * version in the current format.
 */
async function generateGraphiQLAssets() {
  const output = join(root, 'src/transport/generated/graphiql');
  const manifestFile = join(output, 'manifest.json');
  const packageJson = resolvePackageJson('@graphql-yoga/render-graphiql');
  const { version } = JSON.parse(readFileSync(packageJson, 'utf8'));
  const stamp = `${version}/${GRAPHIQL_FORMAT}`;
  if (existsSync(manifestFile) && !force) {
    const previous = JSON.parse(readFileSync(manifestFile, 'utf8'));
    if (previous.stamp === stamp) return false;
  }
  const bundle = await import(pathToFileURL(join(dirname(packageJson), 'esm/graphiql.js')).href);
  rmSync(output, { recursive: true, force: true });
  mkdirSync(output, { recursive: true });

  const files = {};
  /** Writes one asset (plain, .gz, .br) under its hashed name; returns its URL path. */
  const emit = (name, ext, type, content) => {
    const body = Buffer.from(content);
    const hash = createHash('sha256').update(body).digest('hex').slice(0, 16);
    const file = `${name}.${hash}.${ext}`;
    writeFileSync(join(output, file), body);
    writeFileSync(join(output, `${file}.gz`), gzipSync(body, { level: 9 }));
    const br = brotliCompressSync(body, {
      params: {
        [zlib.BROTLI_PARAM_QUALITY]: zlib.BROTLI_MAX_QUALITY,
        [zlib.BROTLI_PARAM_SIZE_HINT]: body.length,
        [zlib.BROTLI_PARAM_MODE]: type.startsWith('text/') ? zlib.BROTLI_MODE_TEXT : 0,
      },
    });
    writeFileSync(join(output, `${file}.br`), br);
    files[file] = { type, bytes: body.length };
    return `${GRAPHIQL_PATH}${file}`;
  };

  const js = 'text/javascript; charset=utf-8';
  const workers = {
    editorWorkerService: emit('editor.worker', 'js', js, bundle.editorWorkerService),
    json: emit('json.worker', 'js', js, bundle.jsonWorker),
    graphql: emit('graphql.worker', 'js', js, bundle.graphqlWorker),
  };
  // One script: Monaco's worker URLs first (read as the bundle loads), then the bundle, then the
  // render call with the options the page carries as JSON (so the page needs no inline script).
  const script = [
    `self.MonacoEnvironment={globalAPI:false,getWorkerUrl:function(_id,label){return ${JSON.stringify(workers)}[label];}};`,
    bundle.js,
    // GraphiQL does not send its headers tab over graphql-ws: there the page's `?token=` becomes
    // the connection_init payload.
    ';(function(){var o=JSON.parse(document.getElementById("graphiql-options").textContent);' +
      'if(o.subscriptionsProtocol==="WS")o.connectionParams=function(){' +
      'var t=new URLSearchParams(location.search).get("token");' +
      'return t?{authorization:"Bearer "+t}:{};};' +
      'YogaGraphiQL.renderYogaGraphiQL(document.getElementById("root"),o);})();',
  ].join('\n');
  const icon = /^data:([^;,]+);base64,(.*)$/s.exec(bundle.favicon);
  const manifest = {
    stamp,
    script: emit('graphiql', 'js', js, script),
    style: emit('graphiql', 'css', 'text/css; charset=utf-8', bundle.css),
    icon: icon ? emit('favicon', 'ico', icon[1], Buffer.from(icon[2], 'base64')) : null,
    files,
  };
  writeFileSync(manifestFile, `${JSON.stringify(manifest, null, 2)}\n`);
  return true;
}

/** Every file under `dir`, recursively. */
function filesUnder(dir) {
  return readdirSync(dir, { withFileTypes: true, recursive: true })
    .filter((entry) => entry.isFile())
    .map((entry) => join(entry.parentPath, entry.name));
}

/**
 * Compiles src/ into dist/ (tsconfig.build.json) and copies the demo page's static files and
 * GraphiQL's generated assets beside the compiled modules, as the Docker image has them:
 * `npm start` runs plain JavaScript.
 * Skipped when dist/ is newer than every source file, the tsconfigs and the lock file.
 */
async function buildServer() {
  const dist = join(root, 'dist');
  const stamp = join(dist, '.build-stamp');
  const inputs = [
    ...filesUnder(join(root, 'src')),
    join(root, 'tsconfig.json'),
    join(root, 'tsconfig.build.json'),
    join(root, 'package-lock.json'),
  ];
  const newest = Math.max(...inputs.map((file) => statSync(file).mtimeMs));
  if (existsSync(stamp) && statSync(stamp).mtimeMs > newest && !force) return false;

  // A clean build: no module of a deleted source file stays behind.
  rmSync(dist, { recursive: true, force: true });
  const tsc = join(dirname(resolvePackageJson('typescript')), 'bin/tsc');
  const result = spawnSync(process.execPath, [tsc, '-p', 'tsconfig.build.json'], {
    cwd: root,
    encoding: 'utf8',
    timeout: 300_000,
  });
  if (result.error || result.status !== 0) {
    const reason = result.error ? String(result.error) : `exit code ${result.status}`;
    throw new Error(`tsc failed (${reason})\n${result.stdout ?? ''}${result.stderr ?? ''}`);
  }
  // Files the compiled server reads beside its modules: the demo page, GraphiQL's assets.
  for (const folder of ['transport/demo', 'transport/generated/graphiql']) {
    const from = join(root, 'src', folder);
    if (existsSync(from)) cpSync(from, join(dist, folder), { recursive: true });
  }
  writeFileSync(stamp, `${new Date().toISOString()}\n`);
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
