import { type ChildProcess, spawn } from 'node:child_process';
import { existsSync, readdirSync, readFileSync } from 'node:fs';
import { beforeAll, describe, expect, it } from 'vitest';
import { useInstances } from './support/instances.ts';

/**
 * Runs the `sh tested` code blocks of README.md and docs/ against a real server, so the curl
 * examples cannot rot, and checks the docs' relative links. Conventions (also stated in
 * docs/migration/README.md):
 * - a command is a line (with `\` continuations); `localhost:4000` becomes the test server and
 *   the variables below are set in its environment;
 * - `# ` lines right after a command, up to a blank line, are output it must print, in order:
 *   text before a JSON value must start the output line, the JSON is compared by shape (the
 *   listed keys, exact strings, booleans and null, any number), `<...>` matches anything;
 *   other lines must occur as they are;
 * - a command ending in `&` keeps running (its first expected line must appear before the
 *   next command starts); its other lines are checked at the end of the block.
 */

const ROOT = new URL('../', import.meta.url);

/** README.md, then every markdown file under docs/ (sorted), as paths from the repository root. */
function docFiles(): string[] {
  const found: string[] = [];
  const walk = (dir: string) => {
    for (const entry of readdirSync(new URL(dir, ROOT), { withFileTypes: true })) {
      const path = `${dir}${entry.name}`;
      if (entry.isDirectory()) walk(`${path}/`);
      else if (entry.name.endsWith('.md')) found.push(path);
    }
  };
  walk('docs/');
  return ['README.md', ...found.sort()];
}
/** Bound of each wait for a command's output. */
const STEP_MS = 10_000;

interface Step {
  command: string;
  expected: string[];
  background: boolean;
  line: number;
}

interface Block {
  file: string;
  line: number;
  steps: Step[];
}

function extractBlocks(file: string, markdown: string): Block[] {
  const lines = markdown.split('\n');
  const blocks: Block[] = [];
  for (let i = 0; i < lines.length; i++) {
    if (lines[i]?.trim() !== '```sh tested') continue;
    const block: Block = { file, line: i + 1, steps: [] };
    let step: Step | null = null;
    let pending: string[] = [];
    for (i += 1; i < lines.length && lines[i]?.trim() !== '```'; i++) {
      const line = lines[i] as string;
      if (pending.length === 0 && line.trim() === '') step = null;
      else if (pending.length === 0 && line.startsWith('#')) {
        step?.expected.push(line.replace(/^# ?/, ''));
      } else {
        pending.push(line.replace(/\\$/, ''));
        if (line.endsWith('\\')) continue;
        const command = pending.join(' ').trim();
        pending = [];
        step = {
          command: command.replace(/&$/, '').trim(),
          expected: [],
          background: command.endsWith('&'),
          line: i + 1,
        };
        block.steps.push(step);
      }
    }
    blocks.push(block);
  }
  return blocks;
}

const PLACEHOLDER = /<[^<>]*>/g;

/** A regex for text with `<...>` placeholders. */
function patternOf(text: string): RegExp {
  const parts = text.split(PLACEHOLDER).map((p) => p.replace(/[.*+?^${}()|[\]\\]/g, '\\$&'));
  return new RegExp(parts.join('.*'));
}

/** Whether `actual` has the shape of `expected` (see the file comment). */
function sameShape(expected: unknown, actual: unknown): boolean {
  if (typeof expected === 'string') {
    if (PLACEHOLDER.test(expected)) {
      PLACEHOLDER.lastIndex = 0;
      return (
        (typeof actual === 'string' || typeof actual === 'number') &&
        new RegExp(`^${patternOf(expected).source}$`).test(String(actual))
      );
    }
    return actual === expected;
  }
  if (typeof expected === 'number') return typeof actual === 'number';
  if (expected === null || typeof expected === 'boolean') return actual === expected;
  if (Array.isArray(expected)) {
    return (
      Array.isArray(actual) &&
      actual.length >= expected.length &&
      expected.every((item, i) => sameShape(item, actual[i]))
    );
  }
  if (typeof expected !== 'object' || typeof actual !== 'object' || actual === null) return false;
  return Object.entries(expected as Record<string, unknown>).every(
    ([key, value]) => key in actual && sameShape(value, (actual as Record<string, unknown>)[key]),
  );
}

/** A matcher for one expected output line. */
function matcherOf(expected: string): (line: string) => boolean {
  const start = expected.search(/[{[]/);
  if (start >= 0) {
    const prefix = expected.slice(0, start);
    // Bare placeholders (`"n":<n>`) become strings so the expectation parses as JSON.
    const json = expected.slice(start).replace(/([:[,]\s*)(<[^<>"]*>)/g, '$1"$2"');
    let shape: unknown;
    try {
      shape = JSON.parse(json);
    } catch {
      shape = undefined;
    }
    if (shape !== undefined) {
      return (line) => {
        if (!line.startsWith(prefix)) return false;
        try {
          return sameShape(shape, JSON.parse(line.slice(prefix.length)));
        } catch {
          return false;
        }
      };
    }
  }
  const pattern = patternOf(expected);
  return (line) => pattern.test(line);
}

/** A running command: its output lines and a bounded wait for its expectations. */
class Run {
  readonly lines: string[] = [];
  #partial = '';
  #matched = 0;
  #exit: number | null = null;
  #listeners: (() => void)[] = [];
  readonly #child: ChildProcess;
  readonly #matchers: ((line: string) => boolean)[];

  constructor(
    readonly step: Step,
    env: NodeJS.ProcessEnv,
  ) {
    this.#matchers = step.expected.map(matcherOf);
    this.#child = spawn('bash', ['-c', step.command], { env, stdio: ['ignore', 'pipe', 'pipe'] });
    const onData = (chunk: Buffer) => {
      const text = this.#partial + chunk.toString('utf8');
      const parts = text.split('\n');
      this.#partial = parts.pop() ?? '';
      for (const line of parts) this.#take(line.replace(/\r$/, ''));
      this.#notify();
    };
    this.#child.stdout?.on('data', onData);
    this.#child.stderr?.on('data', (chunk: Buffer) => this.lines.push(`stderr: ${chunk}`));
    this.#child.on('exit', (code) => {
      if (this.#partial) this.#take(this.#partial);
      this.#partial = '';
      this.#exit = code ?? -1;
      this.#notify();
    });
  }

  #take(line: string): void {
    this.lines.push(line);
    if (this.#matched < this.#matchers.length && this.#matchers[this.#matched]?.(line)) {
      this.#matched += 1;
    }
  }

  #notify(): void {
    for (const listener of this.#listeners.splice(0)) listener();
  }

  /** Waits until `count` expected lines matched (or, with none expected, the command exited). */
  async wait(count: number): Promise<void> {
    const done = () =>
      count === 0 ? this.#exit !== null : this.#matched >= count || this.#exit !== null;
    const deadline = Date.now() + STEP_MS;
    while (!done() && Date.now() < deadline) {
      await new Promise<void>((resolve) => {
        const timer = setTimeout(resolve, Math.max(0, deadline - Date.now()));
        this.#listeners.push(() => {
          clearTimeout(timer);
          resolve();
        });
      });
    }
    const where = `line ${this.step.line}: ${this.step.command}`;
    if (count === 0) {
      if (this.#exit !== 0)
        throw new Error(`${where}\nexited ${this.#exit}:\n${this.lines.join('\n')}`);
      return;
    }
    if (this.#matched < count) {
      throw new Error(
        `${where}\nexpected:\n  ${this.step.expected[this.#matched]}\noutput:\n  ${this.lines.join('\n  ')}`,
      );
    }
  }

  stop(): void {
    if (this.#exit === null) this.#child.kill('SIGTERM');
  }
}

const files = docFiles();
const texts = new Map(files.map((file) => [file, readFileSync(new URL(file, ROOT), 'utf8')]));
const blocks = files.flatMap((file) => extractBlocks(file, texts.get(file) ?? ''));

/** GitHub's anchor of a heading: lower case, punctuation dropped, spaces as hyphens. */
const anchorOf = (heading: string) =>
  heading
    .trim()
    .toLowerCase()
    .replace(/[^\p{L}\p{N} _-]/gu, '')
    .replace(/ /g, '-');

/** The anchors of a markdown file's headings (outside code blocks). */
function anchorsOf(markdown: string): Set<string> {
  const anchors = new Set<string>();
  let fenced = false;
  for (const line of markdown.split('\n')) {
    if (line.startsWith('```')) fenced = !fenced;
    const heading = fenced ? null : /^#{1,6} (.*)$/.exec(line);
    if (heading) anchors.add(anchorOf(heading[1] as string));
  }
  return anchors;
}

describe('the docs', () => {
  it('link only to files and headings that exist', () => {
    const broken: string[] = [];
    for (const [file, text] of texts) {
      const prose = text.replace(/```[\s\S]*?```/g, '');
      for (const [, target] of prose.matchAll(/\]\(([^)\s]+)\)/g)) {
        if (!target || /^[a-z]+:/.test(target)) continue;
        const [path = '', anchor] = target.split('#');
        const resolved = path === '' ? new URL(file, ROOT) : new URL(path, new URL(file, ROOT));
        if (!existsSync(resolved)) {
          broken.push(`${file}: ${target}`);
          continue;
        }
        if (anchor && resolved.pathname.endsWith('.md')) {
          const anchors = anchorsOf(readFileSync(resolved, 'utf8'));
          if (!anchors.has(anchor)) broken.push(`${file}: ${target} (no such heading)`);
        }
      }
    }
    expect(broken).toEqual([]);
  });

  it('keep the README short and link every document under docs/', () => {
    const readme = texts.get('README.md') ?? '';
    expect(readme.split('\n').length).toBeLessThan(200);
    for (const file of files.filter((f) => f.startsWith('docs/') && !f.includes('/migration/'))) {
      expect(readme, file).toContain(`](${file})`);
    }
  });

  it('mark every curl example in docs/ as tested', () => {
    for (const [file, text] of texts) {
      if (!file.startsWith('docs/')) continue;
      for (const [block, info] of text.matchAll(/```([^\n]*)\n[\s\S]*?```/g)) {
        if (/^\s*curl /m.test(block)) expect(`${file}: ${info}`).toBe(`${file}: sh tested`);
      }
    }
  });
});

describe('curl examples of README.md and docs/ (sh tested blocks)', () => {
  const { a } = useInstances(
    {
      NOTIFIER_SECRET: 'readme-notifier-secret',
      CHATTER_SERVICE_SECRET: 'readme-chatter-secret',
      // Applause in the examples stays counted while the block runs.
      APPLAUSE_WINDOW_S: '120',
      // The heartbeat examples follow a user without a token.
      ANONYMOUS_CONNECTIONS: '20',
      // docs/migration/heartbeat.md shows a ping through a trusted gateway.
      TRUST_USER_CLAIM_HEADER: 'true',
    },
    1,
  );
  let env: NodeJS.ProcessEnv = {};

  beforeAll(async () => {
    const [token, token2, token5, service] = await Promise.all([
      a.token('1', { group: 'team-1', ttlSeconds: 600 }),
      a.token('2', { group: 'team-1', ttlSeconds: 600 }),
      a.token('5', { ttlSeconds: 600 }),
      a.token('importer', { service: true, ttlSeconds: 600 }),
    ]);
    env = {
      PATH: process.env['PATH'],
      TOKEN: token,
      TOKEN_2: token2,
      TOKEN_5: token5,
      SERVICE_TOKEN: service,
      NOTIFIER_SECRET: 'readme-notifier-secret',
      CHATTER_SERVICE_SECRET: 'readme-chatter-secret',
    };
  });

  it('has tested examples for every migration guide', () => {
    for (const [guide, prefix] of [
      ['icc', '/system/icc/'],
      ['os3', '/system/autoupdate'],
      ['chatter', '/chatter/'],
      ['notifier', '/notifier/'],
      ['heartbeat', '/heartbeat/'],
    ]) {
      const commands = blocks
        .filter((b) => b.file === `docs/migration/${guide}.md`)
        .flatMap((b) => b.steps.map((s) => s.command))
        .join('\n');
      expect(commands, guide).toContain(prefix);
    }
    for (const block of blocks) {
      for (const step of block.steps) {
        expect(step.command, `${block.file} line ${step.line}`).toMatch(/^curl /);
      }
    }
  });

  for (const block of blocks) {
    const first = block.steps[0]?.command.split('\n')[0] ?? '';
    it(`${block.file} line ${block.line}: ${first.slice(0, 70)}`, async () => {
      const host = new URL(a.url).host;
      const background: Run[] = [];
      try {
        for (const step of block.steps) {
          const command = step.command.replaceAll('localhost:4000', host);
          const run = new Run({ ...step, command }, env);
          if (step.background) {
            background.push(run);
            await run.wait(Math.min(1, step.expected.length));
          } else {
            try {
              await run.wait(step.expected.length);
            } finally {
              run.stop();
            }
          }
        }
        for (const run of background) await run.wait(run.step.expected.length);
      } finally {
        for (const run of background) run.stop();
      }
    });
  }
});
