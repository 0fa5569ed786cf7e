import { type ChildProcess, spawn } from 'node:child_process';
import { once } from 'node:events';
import { createInterface } from 'node:readline';
import { fileURLToPath } from 'node:url';

/** The repository root: every server runs from there (Prisma migrations, tsx). */
export const REPO_ROOT = fileURLToPath(new URL('..', import.meta.url));

/** A server process under test. */
export interface ChildServer {
  name: string;
  pid: number;
  /** http://127.0.0.1:<port> */
  url: string;
  /** Log lines at warn level or above that the process printed after it was ready. */
  readonly warnings: string[];
  /** SIGTERM, then SIGKILL after `graceMs`; resolves once the process is gone. */
  stop(graceMs?: number): Promise<void>;
}

export interface SpawnOptions {
  name: string;
  /** CPU the process is pinned to (taskset -c). */
  core: number;
  /** Arguments after `node`. */
  args: string[];
  env: NodeJS.ProcessEnv;
  /** Returns the server's base URL when a stdout line says it is listening. */
  readyUrl(line: string): string | null;
  readyTimeoutMs?: number;
}

/** Every child still running, killed with SIGKILL if the harness exits without stopping it. */
const live = new Set<ChildProcess>();
process.once('exit', () => {
  for (const child of live) child.kill('SIGKILL');
});

function warningOf(line: string): string | null {
  try {
    const parsed = JSON.parse(line) as { level?: unknown };
    return typeof parsed.level === 'number' && parsed.level >= 40 ? line : null;
  } catch {
    return line.trim() === '' ? null : line;
  }
}

/**
 * Node flags for every server the bench starts, from BENCH_NODE_FLAGS (space-separated): to
 * profile them, `BENCH_NODE_FLAGS="--cpu-prof --cpu-prof-dir=prof"` (NODE_OPTIONS refuses it).
 */
const NODE_FLAGS = (process.env['BENCH_NODE_FLAGS'] ?? '').split(' ').filter(Boolean);

/**
 * Starts `node <args>` pinned to one core with taskset (which execs node, so the pid is the
 * server's own) and waits, bounded, for the line that carries its URL.
 */
export async function spawnPinned(options: SpawnOptions): Promise<ChildServer> {
  const node = [process.execPath, ...NODE_FLAGS, ...options.args];
  const child = spawn('taskset', ['-c', String(options.core), ...node], {
    cwd: REPO_ROOT,
    env: options.env,
    // stdin is a pipe the reference servers watch: they exit when the harness goes away.
    stdio: ['pipe', 'pipe', 'pipe'],
  });
  live.add(child);
  const exited = once(child, 'exit').then(() => live.delete(child));
  const stderr: string[] = [];
  const warnings: string[] = [];
  createInterface({ input: child.stderr }).on('line', (line) => {
    stderr.push(line);
    if (stderr.length > 40) stderr.shift();
  });

  const stop = async (graceMs = 5_000) => {
    if (child.exitCode !== null || child.signalCode !== null) return;
    child.kill('SIGTERM');
    const timer = setTimeout(() => child.kill('SIGKILL'), graceMs);
    await exited;
    clearTimeout(timer);
  };

  const timeoutMs = options.readyTimeoutMs ?? 60_000;
  let ready = false;
  try {
    const url = await new Promise<string>((resolve, reject) => {
      const timer = setTimeout(
        () => reject(new Error(`${options.name} did not start within ${timeoutMs} ms`)),
        timeoutMs,
      );
      createInterface({ input: child.stdout }).on('line', (line) => {
        if (ready) {
          const warning = warningOf(line);
          if (warning !== null && warnings.length < 100) warnings.push(warning);
          return;
        }
        const found = options.readyUrl(line);
        if (found !== null) {
          ready = true;
          clearTimeout(timer);
          resolve(found);
        }
      });
      child.once('exit', (code, signal) => {
        clearTimeout(timer);
        reject(new Error(`${options.name} exited (${signal ?? code}) before it was ready`));
      });
      child.once('error', (error) => {
        clearTimeout(timer);
        reject(error);
      });
    });
    if (child.pid === undefined) throw new Error(`${options.name} has no pid`);
    return { name: options.name, pid: child.pid, url, warnings, stop };
  } catch (error) {
    await stop(1_000);
    const tail = stderr.length > 0 ? `\n${stderr.join('\n')}` : '';
    throw new Error(`${(error as Error).message}${tail}`, { cause: error });
  }
}
