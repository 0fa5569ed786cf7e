import { describe, expect, it } from 'vitest';
import { createAdmission, type Place } from '../src/transport/admission.ts';
import { WAIT_MS } from './support/clients.ts';

/** Resolves what `promise` resolves, or rejects after `ms` (every wait is bounded). */
function within<T>(promise: Promise<T>, ms = WAIT_MS): Promise<T> {
  let timer: NodeJS.Timeout | undefined;
  const timeout = new Promise<never>((_, reject) => {
    timer = setTimeout(() => reject(new Error(`not within ${ms} ms`)), ms);
  });
  return Promise.race([promise, timeout]).finally(() => clearTimeout(timer));
}

/** Whether `promise` has settled once pending callbacks and a macrotask turn have run. */
async function settled(promise: Promise<unknown>): Promise<boolean> {
  let done = false;
  void promise.then(
    () => {
      done = true;
    },
    () => {
      done = true;
    },
  );
  await new Promise((resolve) => setImmediate(resolve));
  return done;
}

describe('admission of operations', () => {
  it('gives at most max places at once, then places in the order they were asked for', async () => {
    const admission = createAdmission({ max: 2, holdMs: 60_000 });
    const first = admission.take();
    const second = admission.take();
    expect(first).not.toBeNull();
    expect(second).not.toBeNull();
    expect(admission.take()).toBeNull();

    const order: string[] = [];
    const third = admission.wait().then((place) => {
      order.push('third');
      return place;
    });
    const fourth = admission.wait().then((place) => {
      order.push('fourth');
      return place;
    });
    expect(admission.waiting).toBe(2);
    expect(await settled(third)).toBe(false);
    // While some wait, a newcomer does not jump the queue.
    admission.release(first as Place);
    expect(admission.take()).toBeNull();
    const place3 = await within(third);
    expect(order).toEqual(['third']);
    admission.release(second as Place);
    await within(fourth);
    expect(order).toEqual(['third', 'fourth']);
    expect(admission.running).toBe(2);
    expect(admission.waiting).toBe(0);
    // Handing a place back twice frees it once.
    admission.release(place3);
    admission.release(place3);
    expect(admission.running).toBe(1);
    expect(admission.take()).not.toBeNull();
    expect(admission.take()).toBeNull();
  });

  it('lifts the bound of a place held longer than holdMs, so the next one starts', async () => {
    const admission = createAdmission({ max: 1, holdMs: 40 });
    const stuck = admission.take();
    expect(stuck).not.toBeNull();
    const next = admission.wait();
    // The stuck operation never hands its place back; the next gets one anyway.
    const place = await within(next);
    expect(admission.lifted).toBe(1);
    expect(admission.running).toBe(1);
    // A late hand-back of the lifted place changes nothing.
    admission.release(stuck as Place);
    expect(admission.running).toBe(1);
    admission.release(place);
    expect(admission.running).toBe(0);
    expect(admission.take()).not.toBeNull();
  });

  it('serves a long queue in order without losing anyone', async () => {
    const admission = createAdmission({ max: 3, holdMs: 60_000 });
    const started: number[] = [];
    let running = 0;
    let most = 0;
    const run = async (i: number) => {
      const place = admission.take() ?? (await admission.wait());
      running += 1;
      most = Math.max(most, running);
      started.push(i);
      await new Promise((resolve) => setImmediate(resolve));
      running -= 1;
      admission.release(place);
    };
    await within(Promise.all(Array.from({ length: 3000 }, (_, i) => run(i))));
    expect(started).toEqual(Array.from({ length: 3000 }, (_, i) => i));
    expect(most).toBe(3);
    expect(admission.waiting).toBe(0);
    expect(admission.running).toBe(0);
  });
});
