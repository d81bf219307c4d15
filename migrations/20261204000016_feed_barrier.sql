-- The feed's barrier (issue 25): a row per database connection that the
-- feed reader (and a catching-up watcher) writes before it publishes what it
-- read, when synchronous standbys are configured. The write's commit waits
-- for the synchronous standby, which confirms the WAL in order, so every
-- commit the read saw is on the standby too: nothing is published that a
-- failover could lose. One row per backend, so barriers never wait on each
-- other's row locks. Additive: a replica of the previous release ignores it.
CREATE TABLE feed_barrier (
    backend integer PRIMARY KEY,
    n bigint NOT NULL DEFAULT 0
);
