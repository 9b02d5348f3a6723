/**
 * Public types shared by the engine and the Fastify layer.
 */

/** What a resolver answers for one (kind, id, user). Must be JSON-serializable. */
export interface Decision {
  /** Whether the user may touch the resource at all. */
  granted: boolean
  /** Access levels held, e.g. `['read', 'write']`. Absent means every access. */
  access?: string[]
  /** Role for team-like kinds, ranked by the `roles` option. */
  role?: string
  /** Extra invalidation tags for this entry, e.g. `['team:t1']`. */
  tags?: string[]
  /** Overrides the TTL of this one entry (jitter still applies). */
  ttlSeconds?: number
  /** Anything else is returned to the caller as is, e.g. `mediaUrls`. */
  [data: string]: unknown
}

/** What a resolver gets: everything that decides the answer, and nothing else (no request, no token). */
export interface ResolverContext {
  kind: string
  userId: string
  id: string
  /** Aborted when the load times out (`loaderTimeoutMs`). */
  signal: AbortSignal
}

/**
 * The user's existing authorization service for one kind. `null` or
 * `undefined` means "no access". Throwing, rejecting, timing out or returning
 * anything that is not a Decision denies the check (503) and is never cached.
 */
export type Resolver = (ctx: ResolverContext) => Promise<Decision | null | undefined> | Decision | null | undefined

/** What a batch resolver gets: one user, many ids of one kind (at most `maxBatchSize`). */
export interface BatchResolverContext {
  kind: string
  userId: string
  ids: string[]
  /** Aborted when the call times out (`loaderTimeoutMs`, for the whole call). */
  signal: AbortSignal
}

/** A batch answer: id -> Decision, as a `Map` or a plain object. An id left out, `null` or `undefined` means "no access". */
export type BatchAnswer = Map<string, Decision | null | undefined> | Record<string, Decision | null | undefined>

/**
 * The batch form of a resolver: many ids of one user in one backend call
 * (OpenFGA BatchCheck, SpiceDB CheckBulkPermissions, one SQL `= ANY($1)`).
 * Throwing, rejecting or timing out fails every id of the call (503); an
 * answer for one id that is not a Decision fails that id.
 */
export type BatchResolver = (ctx: BatchResolverContext) => Promise<BatchAnswer> | BatchAnswer

/**
 * A resolver as an object: `one` answers one id, `many` a batch. With only
 * `many`, single checks go through it too (a batch of one); with only `one`,
 * batch checks fan out to it, a few calls at a time.
 */
export interface ResolverPair {
  one?: Resolver
  many?: BatchResolver
}

/** A kind's resolver: a function (one id per call), or `{ one?, many? }`. */
export type ResolverSpec = Resolver | ResolverPair

/** A requirement on a decision. */
export interface Requirement {
  /** Holds when `granted` and the decision's `access` is absent or contains it. */
  access?: string
  /** Holds when `granted` and the decision's role ranks at or above it in `roles`. */
  role?: string
}

/** `{ value, hit }` as the seed's manager methods return it. */
export interface CacheLookup<T> {
  value: T | undefined
  hit: boolean
}

/**
 * An invalidation, as the engine, the admin route and the Redis bus carry it.
 * Every field present is applied; the union of what they touch is removed.
 */
export interface InvalidationRequest {
  userId?: string
  generationId?: string
  projectId?: string
  teamId?: string
  tags?: string[]
  pattern?: string
  keys?: string[]
  all?: boolean
}

/** One preloaded entry for `warm`. */
export interface WarmEntry {
  kind: string
  userId: string
  id?: string
  decision: Decision
}

/** Hits and misses of one kind. */
export interface KindStats {
  /** Lookups answered from L1. */
  hits: number
  /** Lookups L1 could not answer (absent, expired, or past the bus-outage staleness bound). */
  misses: number
  /** hits / (hits + misses), in percent, two decimals; 0 before any lookup. */
  hitRatePercent: number
}

/** `getStats()` and `GET {prefix}/stats`. Counters count since the cache was made. */
export interface CacheStats {
  /** L1 hits, all kinds. */
  hits: number
  /** L1 misses, all kinds. */
  misses: number
  /** hits / (hits + misses), in percent, two decimals. */
  hitRatePercent: number
  /** Mean time of a sampled synchronous cache hit (one hit in 16 is timed), in milliseconds. */
  averageAccessTimeMs: number
  /** 99th percentile of the sampled hits kept in the window (the last 2,048), in milliseconds. */
  p99AccessTimeMs: number
  /** Live entries. */
  totalEntries: number
  /** Accounted size of the live entries, in MiB. */
  totalSizeMb: number
  /** The `maxEntries` cap. */
  maxEntries: number
  /** The `maxSizeMb` cap. */
  maxSizeMb: number
  /** Entries removed to stay under a cap. */
  evictions: number
  /** Entries removed at the end of their TTL (on read or by the sweep). */
  expirations: number
  /** Entries removed by invalidations (local and from other instances). */
  invalidations: number
  /** Resolver loads started (L2 reads included: a load reads L2 first). */
  loads: number
  /** Callers that joined a load already running instead of starting one. */
  coalesced: number
  /** Resolver failures: threw, rejected, or answered something unacceptable (503, never cached). */
  loaderErrors: number
  /** Resolver answers later than `loaderTimeoutMs` (503, never cached). */
  loaderTimeouts: number
  /** Batch resolver calls (`many`): each answered up to `maxBatchSize` ids in one backend call. */
  batches: number
  /** Predictive warming (with `warmingEnabled`). */
  warming: WarmingStats
  /** Hits and misses per kind (kinds with a resolver, and any other kind looked up). */
  byKind: Record<string, KindStats>
  performanceTargets: {
    /** The `targetAccessTimeMs` option. */
    targetAccessTimeMs: number
    /** The `targetHitRatePercent` option. */
    targetHitRatePercent: number
    /** averageAccessTimeMs <= targetAccessTimeMs. */
    meetingAccessTimeTarget: boolean
    /** At least one lookup, and hitRatePercent >= targetHitRatePercent. */
    meetingHitRateTarget: boolean
  }
  /** The eviction policy at work (`evictionPolicy`). */
  eviction: EvictionStats
  /** With `redis` set: the shared layer's counters. */
  redis?: RedisStats
  /** With `postgres` set: the LISTEN connection's counters. */
  postgres?: PostgresStats
}

/** The `warming` block of the stats: predictive warming (with `warmingEnabled`). */
export interface WarmingStats {
  /** Decisions loaded in the background because the predictor expected them (each counts once). */
  predicted: number
  /** Predicted decisions that a check then used (the first hit on each, or a check that joined its load). */
  used: number
  /** Predicted decisions that left the cache (evicted, expired, invalidated) without any check using them. */
  wasted: number
  /** Bytes of the predictor's tables, included in `totalSizeMb`. */
  bytes: number
}

/** The `postgres` block of the stats. */
export interface PostgresStats {
  /** Whether the LISTEN connection is up (invalidations from the database are heard). */
  connected: boolean
  /** Notifications received on the channel. */
  received: number
  /** Notifications that were not a valid invalidation (each invalidated everything). */
  malformed: number
  /** Times the LISTEN connection was lost after it was up. */
  outages: number
}

/** The `eviction` block of the stats. */
export interface EvictionStats {
  /** The `evictionPolicy` option. */
  policy: 'tinylfu' | 'clock'
  /** TinyLFU: entries still in the admission window. */
  windowEntries: number
  /** TinyLFU: duels won by the window's candidate (a main-region entry was evicted instead). */
  admitted: number
  /** TinyLFU: duels lost by the candidate (it was evicted: asked for less often than the entry it would replace). */
  rejected: number
  /** TinyLFU: times the frequency sketch halved its counters (every `maxEntries` x 10 recorded accesses). */
  sketchResets: number
  /** TinyLFU: bytes of the frequency sketch, included in `totalSizeMb`. */
  sketchBytes: number
}

/** The `redis` block of the stats. */
export interface RedisStats {
  /** Whether the invalidation bus is subscribed (or, without a bus, the command client is ready). */
  connected: boolean
  /** L1 misses that Redis answered. */
  l2Hits: number
  /** L1 misses that Redis did not have. */
  l2Misses: number
  /** Redis commands that failed (counted as misses; a failed publish is also an FST_AUTHZ_BUS_FAILED). */
  l2Errors: number
  /** Invalidations published to the bus. */
  published: number
  /** Invalidation messages received from other instances. */
  received: number
  /** Times the bus was lost: its connection closed, or this instance stopped hearing its own heartbeat (a frozen Redis). */
  outages: number
  /** L2 values refused on read (an invalidation came after their load started) and L2 writes refused (one came during the load). */
  refused: number
  /** Invalidations (and direct writes) Redis has not taken yet, retried in order; while any is queued nothing is read from L2. */
  pending: number
  /** Invalidations whose acknowledgements did not all arrive within `ackTimeoutMs`. */
  ackTimeouts: number
}
