-- CreateTable
CREATE TABLE "presence_pings" (
    "user_id" TEXT NOT NULL,
    "status" TEXT NOT NULL,
    "status_code" TEXT NOT NULL,
    "time" TIMESTAMP(3) NOT NULL,
    "visible_status" TEXT,
    "visible_status_code" TEXT,
    "visible_time" TIMESTAMP(3),

    CONSTRAINT "presence_pings_pkey" PRIMARY KEY ("user_id")
);
