/** `url` with its password (if any) replaced by `***`, for log lines and error messages. */
export function redactUrl(url: string): string {
  try {
    const parsed = new URL(url);
    if (parsed.password !== '') parsed.password = '***';
    return parsed.toString();
  } catch {
    // Not a URL we can parse: show nothing of it rather than risk a secret.
    return '<unparseable database url>';
  }
}

/** `url` pointing at database `name` on the same server, with the same credentials. */
export function withDatabase(url: string, name: string): string {
  const parsed = new URL(url);
  parsed.pathname = `/${encodeURIComponent(name)}`;
  return parsed.toString();
}
