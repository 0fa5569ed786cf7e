/**
 * A pub/sub topic whose events are `P`; built only by a `topic()` from `topicsOf`. The payload
 * type rides on the topic, so `publish` and `subscribe` check payloads against it.
 */
export type Topic<P> = string & { readonly __payload: P };

/**
 * The topic builder of an event map `M` (the app declares its events; pub/sub knows none):
 * `topic('notify')` or `topic('presence', userId)` is the event name and its keys joined with
 * ':', typed with that event's payload. The Redis backend adds REDIS_PREFIX in front.
 */
export function topicsOf<M extends object>() {
  return <K extends keyof M & string>(event: K, ...keys: (string | number)[]): Topic<M[K]> =>
    [event, ...keys].join(':') as Topic<M[K]>;
}
