import { readFileSync } from 'node:fs';
import { fileURLToPath } from 'node:url';
import { beforeAll, describe, expect, it } from 'vitest';
import { parseDocument } from 'yaml';
import { type Config, loadConfig } from '../src/config.ts';
import { adaptCaddyfile } from './support/caddy.ts';

// No Docker engine runs these files here: they are read as data and checked against the
// Caddyfile as Caddy itself reads it (`caddy adapt`) and against the server's configuration.

interface Service {
  build?: unknown;
  image?: string;
  command?: string | string[];
  environment?: Record<string, string>;
  depends_on?: Record<string, { condition: string }>;
  ports?: string[];
  volumes?: string[];
}

const root = fileURLToPath(new URL('..', import.meta.url));

/** A compose file's services, parsed with merge keys (`<<: *anchor`) as compose reads them. */
function services(file: string): Record<string, Service> {
  const document = parseDocument(readFileSync(`${root}${file}`, 'utf8'), { merge: true });
  expect([...document.errors, ...document.warnings].map(String)).toEqual([]);
  return (document.toJS() as { services: Record<string, Service> }).services;
}

/** Compose's `${NAME:-default}` and `${NAME:?message}` in `value`, with `vars` set. */
function interpolate(value: string, vars: Record<string, string>): string {
  return value.replace(/\$\{(\w+)(?::([-?])([^}]*))?\}/g, (_match, name: string, op, arg) => {
    const set = vars[name];
    if (set !== undefined) return set;
    if (op === '-') return String(arg);
    throw new Error(`${name} is not set: ${arg}`);
  });
}

/** The image's own environment: the `ENV` line of the Dockerfile (NODE_ENV, PORT, DATA_DIR). */
function imageEnv(): Record<string, string> {
  const line = readFileSync(`${root}Dockerfile`, 'utf8').match(/^ENV (.+)$/m)?.[1] ?? '';
  return Object.fromEntries(line.split(/\s+/).map((pair) => pair.split('=') as [string, string]));
}

/**
 * The server configuration of an instance: the image's environment with the compose file's on
 * top (interpolated with a token key set), validated by the server's own loadConfig.
 */
function configOf(service: Service): Config {
  const env = Object.fromEntries(
    Object.entries(service.environment ?? {}).map(([name, value]) => [
      name,
      interpolate(String(value), { SWITCHBOARD_TOKEN_KEY: 'compose-test-key-0123456789abcdef' }),
    ]),
  );
  return loadConfig({ ...imageEnv(), ...env });
}

/** host:port of every upstream of every reverse_proxy in an adapted Caddy config. */
function upstreamsOf(config: unknown): string[][] {
  const servers = (config as { apps: { http: { servers: Record<string, unknown> } } }).apps.http
    .servers;
  const lists: string[][] = [];
  const visit = (node: unknown) => {
    if (Array.isArray(node)) return node.forEach(visit);
    if (typeof node !== 'object' || node === null) return;
    const record = node as Record<string, unknown>;
    if (record['handler'] === 'reverse_proxy') {
      lists.push((record['upstreams'] as { dial: string }[]).map((u) => u.dial));
    }
    Object.values(record).forEach(visit);
  };
  visit(servers);
  return lists;
}

describe('docker-compose.yml and docker-compose.cluster.yml with deploy/Caddyfile', () => {
  let upstreams: string[];
  let listen: string[];

  beforeAll(async () => {
    const config = await adaptCaddyfile();
    const lists = upstreamsOf(config);
    // Both proxies of the Caddyfile (with and without retries) name the same instances.
    expect(lists).toHaveLength(2);
    expect(lists[1]).toEqual(lists[0]);
    upstreams = lists[0] ?? [];
    listen = Object.values(
      (config as { apps: { http: { servers: Record<string, { listen: string[] }> } } }).apps.http
        .servers,
    ).flatMap((server) => server.listen);
  });

  for (const file of ['docker-compose.yml', 'docker-compose.cluster.yml']) {
    describe(file, () => {
      const all = () => services(file);

      it("runs every default upstream of the Caddyfile as an instance on the Caddyfile's port", () => {
        expect(upstreams).toEqual([
          'switchboard-1:4000',
          'switchboard-2:4000',
          'switchboard-3:4000',
        ]);
        const found = all();
        for (const upstream of upstreams) {
          const [name, port] = upstream.split(':') as [string, string];
          const instance = found[name];
          expect([upstream, instance?.build]).toEqual([upstream, '.']);
          expect([upstream, configOf(instance as Service).PORT]).toEqual([upstream, Number(port)]);
        }
      });

      it('mounts the Caddyfile in the proxy, publishes its port and waits for every instance', () => {
        const proxy = all()['proxy'];
        expect(proxy?.volumes).toContain('./deploy/Caddyfile:/etc/caddy/Caddyfile:ro');
        expect(listen).toEqual([':8080']);
        expect(proxy?.ports).toEqual(['8080:8080']);
        for (const upstream of upstreams) {
          expect(proxy?.depends_on?.[upstream.split(':')[0] as string]).toEqual({
            condition: 'service_healthy',
          });
        }
      });

      it('depends only on services it defines', () => {
        const found = all();
        for (const [name, service] of Object.entries(found)) {
          for (const dependency of Object.keys(service.depends_on ?? {})) {
            expect([name, dependency in found]).toEqual([name, true]);
          }
        }
      });
    });
  }

  it('docker-compose.yml: every instance uses the one Redis', () => {
    const found = services('docker-compose.yml');
    for (const upstream of upstreams) {
      const config = configOf(found[upstream.split(':')[0] as string] as Service);
      expect([config.REDIS_URL, config.REDIS_CLUSTER_NODES]).toEqual([
        'redis://redis:6379',
        undefined,
      ]);
    }
    expect(found['redis']?.image).toMatch(/^redis:7/);
  });

  it('docker-compose.cluster.yml: six cluster nodes, formed with a replica per master, seed every instance', () => {
    const found = services('docker-compose.cluster.yml');
    const nodes = Object.entries(found).filter(([, s]) =>
      (Array.isArray(s.command) ? s.command : []).includes('--cluster-enabled'),
    );
    expect(nodes.map(([name]) => name)).toEqual([
      'redis-1',
      'redis-2',
      'redis-3',
      'redis-4',
      'redis-5',
      'redis-6',
    ]);
    for (const [name, node] of nodes) {
      const args = node.command as string[];
      const value = (flag: string) => args[args.indexOf(flag) + 1];
      expect([name, value('--cluster-enabled'), value('--cluster-announce-hostname')]).toEqual([
        name,
        'yes',
        name,
      ]);
      expect(node.image).toMatch(/^redis:7/);
    }

    // The one-shot creation: all six nodes, one replica per master (so three masters).
    const create = found['redis-cluster'];
    const script = [create?.command ?? []].flat().join('\n');
    expect(script).toContain(
      `redis-cli --cluster create ${nodes.map(([name]) => `${name}:6379`).join(' ')} --cluster-replicas 1 --cluster-yes`,
    );
    for (const [name] of nodes) {
      expect(create?.depends_on?.[name]).toEqual({ condition: 'service_healthy' });
    }

    for (const upstream of upstreams) {
      const instance = found[upstream.split(':')[0] as string] as Service;
      const config = configOf(instance);
      expect(config.REDIS_URL).toBeUndefined();
      expect(config.REDIS_CLUSTER_NODES).toEqual(
        nodes.map(([name]) => ({ host: name, port: 6379 })),
      );
      expect(instance.depends_on?.['redis-cluster']).toEqual({
        condition: 'service_completed_successfully',
      });
    }
  });
});
