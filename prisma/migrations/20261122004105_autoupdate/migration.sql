-- CreateTable
CREATE TABLE "autoupdate_changes" (
    "change_id" SERIAL NOT NULL,
    "key" TEXT,
    "value" JSONB,
    "visible_to" JSONB,
    "previous" JSONB,
    "access_id" TEXT,
    "created_at" DOUBLE PRECISION,
    "payload" JSONB,
    "recorded_at" TIMESTAMP(3) NOT NULL DEFAULT CURRENT_TIMESTAMP,

    CONSTRAINT "autoupdate_changes_pkey" PRIMARY KEY ("change_id")
);

-- CreateTable
CREATE TABLE "autoupdate_data" (
    "key" TEXT NOT NULL,
    "collection" TEXT NOT NULL,
    "value" JSONB NOT NULL,
    "visible_to" JSONB,
    "change_id" INTEGER NOT NULL,

    CONSTRAINT "autoupdate_data_pkey" PRIMARY KEY ("key")
);

-- CreateIndex
CREATE INDEX "autoupdate_changes_access_id_change_id_idx" ON "autoupdate_changes"("access_id", "change_id");

-- CreateIndex
CREATE INDEX "autoupdate_changes_recorded_at_idx" ON "autoupdate_changes"("recorded_at");

-- CreateIndex
CREATE INDEX "autoupdate_data_collection_idx" ON "autoupdate_data"("collection");
