-- CreateTable
CREATE TABLE "chat_messages" (
    "id" BIGSERIAL NOT NULL,
    "from_id" TEXT NOT NULL,
    "to_id" TEXT NOT NULL,
    "pair_key" TEXT NOT NULL,
    "text" TEXT,
    "image_path" TEXT,
    "created_at" TIMESTAMP(3) NOT NULL DEFAULT CURRENT_TIMESTAMP,

    CONSTRAINT "chat_messages_pkey" PRIMARY KEY ("id")
);

-- CreateTable
CREATE TABLE "ws_tokens" (
    "token" TEXT NOT NULL,
    "user_id" TEXT NOT NULL,
    "group" TEXT,
    "viewer_expires_at" TIMESTAMP(3),
    "expires_at" TIMESTAMP(3) NOT NULL,

    CONSTRAINT "ws_tokens_pkey" PRIMARY KEY ("token")
);

-- CreateIndex
CREATE INDEX "chat_messages_pair_key_id_idx" ON "chat_messages"("pair_key", "id");

-- CreateIndex
CREATE INDEX "ws_tokens_expires_at_idx" ON "ws_tokens"("expires_at");

-- CreateIndex
CREATE INDEX "users_group_idx" ON "users"("group");
