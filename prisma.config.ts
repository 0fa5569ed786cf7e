// Read by the Prisma CLI (`prisma generate`, run through scripts/generate.mjs). Migrations are not
// run by the CLI here (its native engine cannot be downloaded): see src/db/migrate.ts and
// `npm run db:migrate` / `npm run db:migration -- <name>`.
import { defineConfig } from 'prisma/config';

// biome-ignore lint/style/noDefaultExport: the Prisma CLI loads the default export.
export default defineConfig({
  schema: 'prisma/schema.prisma',
  migrations: { path: 'prisma/migrations' },
});
