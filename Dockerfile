# syntax=docker/dockerfile:1

# --- build: install everything, generate the Prisma client, compile TypeScript
FROM node:20-bookworm-slim AS build
WORKDIR /app
COPY package.json package-lock.json ./
COPY scripts ./scripts
COPY prisma ./prisma
COPY prisma.config.ts codegen.yml tsconfig.json tsconfig.build.json ./
RUN npm ci --ignore-scripts --no-audit --no-fund
COPY src ./src
RUN node scripts/generate.mjs --force --only=prisma \
  && node scripts/generate.mjs --only=graphiql && npm run build

# --- runtime dependencies only, without install scripts (nothing to compile or download)
FROM node:20-bookworm-slim AS deps
WORKDIR /app
COPY package.json package-lock.json ./
RUN npm ci --omit=dev --ignore-scripts --no-audit --no-fund

# --- runtime: compiled code, production dependencies, migrations
FROM node:20-bookworm-slim
ENV NODE_ENV=production PORT=4000 DATA_DIR=/data
WORKDIR /app
COPY --from=deps /app/node_modules ./node_modules
# Holds the /demo page's files and GraphiQL's assets too, beside the compiled modules
# (`npm run build` copies them).
COPY --from=build /app/dist ./dist
COPY package.json ./
COPY prisma ./prisma
RUN mkdir -p /data && chown node:node /data
USER node
EXPOSE 4000
# Migrations run at start-up (with an advisory lock, so several replicas may start at once).
CMD ["node", "dist/main.js"]
