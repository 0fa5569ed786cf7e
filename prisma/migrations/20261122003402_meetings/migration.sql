-- CreateTable
CREATE TABLE "meetings" (
    "id" TEXT NOT NULL,
    "applause_enabled" BOOLEAN NOT NULL DEFAULT true,
    "members_only" BOOLEAN NOT NULL DEFAULT false,
    "member_ids" TEXT[] DEFAULT ARRAY[]::TEXT[],
    "updated_at" TIMESTAMP(3) NOT NULL,

    CONSTRAINT "meetings_pkey" PRIMARY KEY ("id")
);
