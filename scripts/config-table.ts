// The configuration table of docs/configuration.md, generated from src/config.ts.
//   npm run -s config:table            prints it
//   npm run -s config:table -- --write  replaces it in docs/configuration.md (between the markers)
import { readFileSync, writeFileSync } from 'node:fs';
import { configTable } from '../src/config.ts';

const table = configTable();
if (process.argv.includes('--write')) {
  const path = new URL('../docs/configuration.md', import.meta.url);
  const readme = readFileSync(path, 'utf8');
  const updated = readme.replace(
    /<!-- config:start -->[\s\S]*<!-- config:end -->/,
    `<!-- config:start -->\n${table}<!-- config:end -->`,
  );
  writeFileSync(path, updated);
} else {
  process.stdout.write(table);
}
