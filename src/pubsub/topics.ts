import type { EventName } from './events.ts';

/** A pub/sub topic that carries events of kind K; built only by `topic()`. */
export type Topic<K extends EventName> = string & { readonly __event: K };

/**
 * The one place topics are named: `topic('notify')` or `topic('presence', userId)`: the event
 * name and its keys joined with ':'. The Redis backend adds REDIS_PREFIX in front.
 */
export function topic<K extends EventName>(event: K, ...keys: (string | number)[]): Topic<K> {
  return [event, ...keys].join(':') as Topic<K>;
}
