import { readdir, readFile } from 'node:fs/promises';
import { setTimeout as sleep } from 'node:timers/promises';

/** Kernel clock ticks per second (`getconf CLK_TCK`); 100 on every Linux build we run on. */
const CLOCK_TICKS_PER_SECOND = 100;

/** Reads a /proc file of a server; a missing one means the server died. */
async function procFile(pid: number, name: string): Promise<string> {
  try {
    return await readFile(`/proc/${pid}/${name}`, 'utf8');
  } catch (error) {
    if ((error as NodeJS.ErrnoException).code === 'ENOENT') {
      throw new Error(`server process ${pid} has exited`);
    }
    throw error;
  }
}

/** CPU time from /proc/<pid>/stat (utime + stime), in clock ticks of 10 ms. */
async function cpuSecondsFromStat(pid: number): Promise<number> {
  const stat = await procFile(pid, 'stat');
  // The command name (field 2) may contain spaces; fields after its closing paren are fixed.
  const fields = stat.slice(stat.lastIndexOf(')') + 2).split(' ');
  // After the name: state is field 3, so utime (14) and stime (15) sit at offsets 11 and 12.
  const utime = Number(fields[11]);
  const stime = Number(fields[12]);
  if (!Number.isFinite(utime) || !Number.isFinite(stime)) {
    throw new Error(`Cannot read the CPU time of process ${pid}`);
  }
  return (utime + stime) / CLOCK_TICKS_PER_SECOND;
}

/**
 * CPU time of a process's threads in nanoseconds, summed from /proc/<pid>/task/<tid>/schedstat
 * (its first field is the time the thread ran); null where the kernel keeps no schedstat. A
 * thread that has exited is not counted, which for node (a fixed pool of threads) loses nothing.
 */
async function cpuNanosFromSchedstat(pid: number): Promise<number | null> {
  let tids: string[];
  try {
    tids = await readdir(`/proc/${pid}/task`);
  } catch (error) {
    if ((error as NodeJS.ErrnoException).code === 'ENOENT') {
      throw new Error(`server process ${pid} has exited`);
    }
    throw error;
  }
  let total = 0;
  for (const tid of tids) {
    let line: string;
    try {
      line = await readFile(`/proc/${pid}/task/${tid}/schedstat`, 'utf8');
    } catch (error) {
      const code = (error as NodeJS.ErrnoException).code;
      if (code === 'ENOENT' && tid !== String(pid)) continue; // the thread has just exited
      if (code === 'ENOENT') return null;
      throw error;
    }
    const ran = Number(line.split(' ')[0]);
    if (!Number.isFinite(ran)) return null;
    total += ran;
  }
  return total;
}

/**
 * CPU time (user + system) a process has used so far, in seconds: to the nanosecond from the
 * threads' schedstat where the kernel has it (a storm of a few thousand calls uses well under a
 * second, where 10 ms clock ticks would be too coarse), else from /proc/<pid>/stat.
 */
export async function cpuSeconds(pid: number): Promise<number> {
  const nanos = await cpuNanosFromSchedstat(pid);
  return nanos === null ? cpuSecondsFromStat(pid) : nanos / 1e9;
}

/**
 * Write-type system calls a process has made so far (`syscw` of /proc/<pid>/io): a server that
 * coalesces several events into one write per socket makes fewer of them per delivery.
 */
export async function writeSyscalls(pid: number): Promise<number> {
  const io = await procFile(pid, 'io');
  const match = /^syscw:\s+(\d+)$/m.exec(io);
  if (!match?.[1]) throw new Error(`Cannot read the write calls of process ${pid}`);
  return Number(match[1]);
}

/** Total CPU seconds of several processes. */
export async function totalCpuSeconds(pids: readonly number[]): Promise<number> {
  const all = await Promise.all(pids.map(cpuSeconds));
  return all.reduce((a, b) => a + b, 0);
}

/** Resident set size of a process in bytes, from /proc/<pid>/status (VmRSS). */
export async function rssBytes(pid: number): Promise<number> {
  const status = await procFile(pid, 'status');
  const match = /^VmRSS:\s+(\d+)\s+kB$/m.exec(status);
  if (!match?.[1]) throw new Error(`Cannot read the RSS of process ${pid}`);
  return Number(match[1]) * 1024;
}

/**
 * Waits until the processes are (nearly) idle: two consecutive 100 ms samples with at most 11 ms
 * of CPU per process each, so the work of the previous phase (closing sockets, GC) is not billed
 * to the next one. Gives up silently after `maxMs`; returns whether they went idle.
 */
export async function waitIdle(pids: readonly number[], maxMs = 3_000): Promise<boolean> {
  const deadline = performance.now() + maxMs;
  let quiet = 0;
  let last = await totalCpuSeconds(pids);
  while (performance.now() < deadline) {
    await sleep(100);
    const now = await totalCpuSeconds(pids);
    quiet = now - last <= 0.011 * pids.length ? quiet + 1 : 0;
    last = now;
    if (quiet >= 2) return true;
  }
  return false;
}
