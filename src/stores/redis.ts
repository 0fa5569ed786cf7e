import type { RedisCommands } from '../pubsub/index.ts';

/*
 * What the Redis stores share: key parts and scripts. On a Redis Cluster a key's slot is the hash of its hash
 * tag (the text between the first `{` and the next `}`) when it has one, so every key a script
 * touches together carries the same tag; on one Redis the tags change nothing.
 */

const ESCAPES: Record<string, string> = { '%': '%25', ':': '%3A', '{': '%7B', '}': '%7D' };
const UNESCAPES: Record<string, string> = Object.fromEntries(
  Object.entries(ESCAPES).map(([char, escaped]) => [escaped, char]),
);

/**
 * Escapes `%`, `:`, `{` and `}`, so an encoded id never contains the key separator or a brace:
 * keys built from different ids never collide, and a tag always ends where its id does.
 */
export const encodeKeyPart = (id: string): string => id.replace(/[%:{}]/g, (c) => ESCAPES[c] ?? c);

/** The id an `encodeKeyPart` result was made from. */
export const decodeKeyPart = (part: string): string =>
  part.replace(/%25|%3A|%7B|%7D/g, (found) => UNESCAPES[found] ?? found);

/**
 * The hash tag of an id: `{<encoded id>}`. Keys with the same tag share a cluster slot. An empty
 * id gets `{%}` (no encoded id is a lone `%`), because Redis hashes a key with an empty tag `{}`
 * whole.
 */
export const hashTag = (id: string): string => `{${encodeKeyPart(id) || '%'}}`;

/** A Lua script run by EVALSHA (Redis caches it): its keys, then its arguments. */
export type Script<R> = (...keysThenArgs: (string | number)[]) => Promise<R>;

/**
 * Defines `lua` with `numberOfKeys` keys as a command of `client` once (ioredis sends EVALSHA,
 * and the script itself only when a node does not know it yet) and returns it. On a cluster the
 * command goes to the node of its first key; all its keys must share that key's slot.
 *
 * The key count is fixed per command, not passed as the first argument: with auto-pipelining a
 * Cluster client files a custom command under the node of its first argument, which must be
 * the first key (a leading key count puts it in another node's batch, and the batch fails with
 * "All keys in the pipeline should belong to the same slots allocation group").
 */
export function defineScript<R>(
  client: RedisCommands,
  name: string,
  numberOfKeys: number,
  lua: string,
): Script<R> {
  if (!(name in client)) client.defineCommand(name, { numberOfKeys, lua });
  const command = (client as unknown as Record<string, Script<R>>)[name] as Script<R>;
  return command.bind(client);
}
