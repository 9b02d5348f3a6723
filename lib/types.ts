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

export interface KindStats {
  hits: number
  misses: number
  hitRatePercent: number
}

export interface CacheStats {
  hits: number
  misses: number
  hitRatePercent: number
  /** Mean time of a sampled synchronous cache hit, in milliseconds. */
  averageAccessTimeMs: number
  /** 99th percentile of the sampled hits kept in the window, in milliseconds. */
  p99AccessTimeMs: number
  totalEntries: number
  totalSizeMb: number
  maxEntries: number
  maxSizeMb: number
  evictions: number
  expirations: number
  invalidations: number
  loads: number
  coalesced: number
  loaderErrors: number
  loaderTimeouts: number
  byKind: Record<string, KindStats>
  performanceTargets: {
    targetAccessTimeMs: number
    targetHitRatePercent: number
    meetingAccessTimeTarget: boolean
    meetingHitRateTarget: boolean
  }
  redis?: RedisStats
}

export interface RedisStats {
  connected: boolean
  l2Hits: number
  l2Misses: number
  l2Errors: number
  published: number
  received: number
  outages: number
}
