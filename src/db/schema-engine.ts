import { readFile } from 'node:fs/promises';
import { createRequire } from 'node:module';
import { PrismaPg } from '@prisma/adapter-pg';
import {
  bindMigrationAwareSqlAdapterFactory,
  ColumnTypeEnum,
  type SqlDriverAdapter,
  type SqlMigrationAwareDriverAdapterFactory,
  type SqlQuery,
  type SqlResultSet,
} from '@prisma/driver-adapter-utils';
// The wasm-bindgen "bg" module holds the JS glue without importing the .wasm file itself; the
// package's main entry does `import * as wasm from './schema_engine_bg.wasm'`, which Node 20 only
// accepts with --experimental-wasm-modules. Instantiating the module by hand avoids that flag.
import * as bindings from '@prisma/schema-engine-wasm/schema_engine_bg';
import type { Logger } from '../logger.ts';

export type { SchemaEngine } from '@prisma/schema-engine-wasm/schema_engine_bg';

type SchemaEngineInstance = bindings.SchemaEngine;

/** Schema filter used everywhere: no externally managed tables or enums. */
export const NO_FILTER: bindings.SchemaFilter = { externalTables: [], externalEnums: [] };

let initialized: Promise<void> | undefined;

/**
 * Compiles and instantiates the schema engine's WebAssembly module once per process (about
 * 0.3 s) and wires it into the wasm-bindgen glue, exactly as the package's own entry would.
 * Nothing else in the process may import `@prisma/schema-engine-wasm` (its main entry would
 * install a second instance into the same glue module).
 */
export function initSchemaEngine(): Promise<void> {
  initialized ??= (async () => {
    const require = createRequire(import.meta.url);
    const gluePath = require.resolve('@prisma/schema-engine-wasm/schema_engine_bg');
    const bytes = await readFile(gluePath.replace(/\.js$/, '.wasm'));
    // The wasm module imports every glue function from './schema_engine_bg.js'.
    const { instance } = await WebAssembly.instantiate(bytes, {
      './schema_engine_bg.js': unrefTimers(bindings as unknown as WebAssembly.ModuleImports),
    });
    // The engine reports Rust panics through this global; Prisma Client's runtime installs one
    // too. Without any, a panic would surface as a bare "unreachable" with no message.
    const registry = globalThis as {
      PRISMA_WASM_PANIC_REGISTRY?: { set_message(message: string): void };
    };
    registry.PRISMA_WASM_PANIC_REGISTRY ??= {
      set_message(message) {
        throw new Error(`schema engine panicked: ${message}`);
      },
    };
    bindings.__wbg_set_wasm(instance.exports);
    (instance.exports as { __wbindgen_start: () => void }).__wbindgen_start();
  })();
  initialized.catch(() => {
    initialized = undefined;
  });
  return initialized;
}

/**
 * The engine arms 10 s timers it never clears (there is no clearTimeout import), which kept
 * every CLI run alive for 10 s after its work was done. Unref'd, they no longer hold the
 * process open; running operations are held by their database sockets anyway.
 */
function unrefTimers(imports: WebAssembly.ModuleImports): WebAssembly.ModuleImports {
  const patched: WebAssembly.ModuleImports = { ...imports };
  for (const [name, value] of Object.entries(imports)) {
    if (name.startsWith('__wbg_setTimeout_') && typeof value === 'function') {
      patched[name] = (...args: unknown[]) => {
        const timer: unknown = value(...args);
        (timer as { unref?: () => void } | null)?.unref?.();
        return timer;
      };
    }
  }
  return patched;
}

/** What `PrismaPg` adapters look like inside; used to patch some of their methods (see below). */
interface PgAdapterInternals {
  performIO(query: unknown): Promise<{ fields: { name: string; dataTypeID: number }[] }>;
  queryRaw(query: SqlQuery): Promise<SqlResultSet>;
  onError(error: unknown): never;
  underlyingDriver(): { query(text: string): Promise<unknown> };
  executeScript(script: string): Promise<void>;
}

/** Postgres type oids: the internal one-byte `"char"` type and `text`. */
const OID_CHAR = 18;
const OID_TEXT = 25;
/** Marks `"char"` columns between the patched `performIO` and `queryRaw` of one query. */
const CHAR_MARK = '\u0000char\u0000';

/**
 * Fixes two gaps of `@prisma/adapter-pg` 7.10 when it serves the schema engine (the Prisma
 * Client never goes through here):
 * - Introspection reads catalog columns of type `"char"` (relkind, contype...), which the
 *   adapter rejects as unsupported. They are passed through as text, then reported to the engine
 *   as `Character` columns, which is what its schema describer reads.
 * - `executeScript` splits scripts on every `;`, which breaks migrations containing
 *   semicolons in function bodies, strings or comments. Sending the whole script as one
 *   simple query is what the native schema engine does.
 */
function patchForSchemaEngine(adapter: SqlDriverAdapter): SqlDriverAdapter {
  const internals = adapter as unknown as PgAdapterInternals;
  const performIO = internals.performIO.bind(internals);
  const queryRaw = internals.queryRaw.bind(internals);
  internals.performIO = async (query) => {
    const result = await performIO(query);
    for (const field of result.fields) {
      if (field.dataTypeID === OID_CHAR) {
        field.dataTypeID = OID_TEXT;
        field.name = CHAR_MARK + field.name;
      }
    }
    return result;
  };
  internals.queryRaw = async (query) => {
    const result = await queryRaw(query);
    result.columnNames.forEach((name, index) => {
      if (name.startsWith(CHAR_MARK)) {
        result.columnNames[index] = name.slice(CHAR_MARK.length);
        result.columnTypes[index] = ColumnTypeEnum.Character;
      }
    });
    return result;
  };
  internals.executeScript = async (script) => {
    try {
      await internals.underlyingDriver().query(script);
    } catch (error) {
      internals.onError(error);
    }
  };
  return adapter;
}

/**
 * Driver adapter factory for the schema engine: a small pg pool on `url`, and, when
 * `shadowUrl` is given, a second one used as the shadow database (adapter-pg's own shadow
 * database support ignores the database name when given a connection string).
 */
class EngineAdapterFactory implements SqlMigrationAwareDriverAdapterFactory {
  readonly provider = 'postgres';
  readonly adapterName: string;
  readonly #main: PrismaPg;
  readonly #shadow: PrismaPg | undefined;
  /** Every adapter handed to the engine; disposed by {@link disposeAll}. */
  readonly #adapters: SqlDriverAdapter[] = [];

  constructor(url: string, shadowUrl: string | undefined, logger: Logger) {
    const onPoolError = (error: Error) =>
      logger.warn({ err: error }, 'schema engine connection error');
    // Two connections at most: the engine works sequentially, and PGlite serves only 8.
    this.#main = new PrismaPg({ connectionString: url, max: 2 }, { onPoolError });
    this.#shadow =
      shadowUrl === undefined
        ? undefined
        : new PrismaPg({ connectionString: shadowUrl, max: 2 }, { onPoolError });
    this.adapterName = this.#main.adapterName;
  }

  async connect(): Promise<SqlDriverAdapter> {
    return this.#track(await this.#main.connect());
  }

  async connectToShadowDb(): Promise<SqlDriverAdapter> {
    if (this.#shadow === undefined) {
      throw new Error('this schema engine has no shadow database');
    }
    return this.#track(await this.#shadow.connect());
  }

  /** Ends every pool this factory opened (freeing the engine does not, or not in time). */
  async disposeAll(): Promise<void> {
    const adapters = this.#adapters.splice(0);
    await Promise.allSettled(adapters.map((adapter) => adapter.dispose()));
  }

  #track(adapter: SqlDriverAdapter): SqlDriverAdapter {
    this.#adapters.push(adapter);
    return patchForSchemaEngine(adapter);
  }
}

/** Options of {@link withSchemaEngine}. */
export interface SchemaEngineOptions {
  /** Database the engine works on. */
  url: string;
  /** Empty database the engine may use as its shadow database (diff from migrations). */
  shadowUrl?: string;
  /** Prisma schema text and its file name, when the operation needs the datamodel. */
  schema?: { path: string; content: string };
  logger: Logger;
}

/**
 * Runs `fn` with a schema engine connected to `url` and frees the engine (and its
 * connections) afterwards, whatever happens. Engine log lines go to `logger` at debug level.
 */
export async function withSchemaEngine<T>(
  options: SchemaEngineOptions,
  fn: (engine: SchemaEngineInstance) => Promise<T>,
): Promise<T> {
  await initSchemaEngine();
  const { logger } = options;
  const adapters = new EngineAdapterFactory(options.url, options.shadowUrl, logger);
  const factory = bindMigrationAwareSqlAdapterFactory(adapters);
  const onLog = (line: string) => logger.debug({ engine: safeJson(line) }, 'schema engine');
  const datamodels: [string, string][] | undefined = options.schema
    ? [[options.schema.path, options.schema.content]]
    : undefined;
  try {
    const engine = await bindings.SchemaEngine.new({ datamodels }, onLog, factory);
    try {
      return await fn(engine);
    } finally {
      engine.free();
    }
  } catch (error) {
    // After a Rust panic the wasm instance is unusable: the next engine gets a fresh one.
    if (error instanceof WebAssembly.RuntimeError || /panic/i.test(String(error))) {
      initialized = undefined;
    }
    throw error;
  } finally {
    await adapters.disposeAll();
  }
}

function safeJson(line: string): unknown {
  try {
    return JSON.parse(line);
  } catch {
    return line;
  }
}
