import { isIP } from 'node:net';

/**
 * Whether a listen address (HOST) or a socket address is loopback only: `localhost`, 127.0.0.0/8,
 * `::1` or an IPv4-mapped 127.x address. `0.0.0.0`, `::` and every other address are not.
 */
export function isLoopback(address: string | undefined): boolean {
  if (address === undefined) return false;
  const host = address
    .trim()
    .toLowerCase()
    .replace(/^\[(.*)\]$/, '$1');
  if (host === 'localhost') return true;
  const v4 = host.startsWith('::ffff:') ? host.slice(7) : host;
  if (isIP(v4) === 4) return v4.startsWith('127.');
  return isIP(host) === 6 && /^(0{0,4}:){2,7}0{0,3}1$/.test(host);
}
