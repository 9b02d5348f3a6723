/**
 * The one interface between the engine and a layer shared by instances
 * (Redis as L2 and invalidation bus, lib/redis.ts), both ways: what the
 * engine asks of the layer, and the handle the engine gives the layer when
 * it is attached. Nothing else of the engine is the layer's business.
 */
import type { ResolvedCacheOptions } from '../options.js'
import type { InvalidationRequest, RedisStats } from '../types.js'

/** What a shared layer (Redis L2) reads for a key. */
export interface SharedRead {
  /** The stored value and its absolute expiry, when L2 has it. */
  record?: { value: unknown, expiresAt: number }
  /** An opaque fence token to hand back to `write`. */
  fence: unknown
}

/**
 * A layer shared between instances. Every method must swallow its own
 * errors (a shared-layer failure is a miss, never a failed request), except
 * `publish`, which rejects when the invalidation did not get through.
 */
export interface SharedLayer {
  /** The value of a key, valid only if no invalidation touching it came after its load started; `fresh`: the fence only, no value. */
  read (key: string, fresh: boolean): Promise<SharedRead>
  /** Writes unless an invalidation touching the key or `tags` happened since `fence` was read; true when written (or when L2 is not in use), false when refused or when the write failed (the load then stores nothing). */
  write (key: string, value: unknown, ttlMs: number, tags: string[], fence: unknown): Promise<boolean>
  /**
   * Removes what `request` touches from L2 and tells every other instance.
   * Resolves once every instance acknowledged, or after the ack timeout with
   * the count; rejects when Redis did not take it in time (it stays queued).
   */
  publish (request: InvalidationRequest): Promise<Delivery>
  /** A direct write (`set*()`): replaces the key in L2 and drops it on every other instance, in order with invalidations. */
  replace (key: string, value: unknown, ttlMs: number, tags: string[]): void
  /** Counters for the `redis` block of the stats. */
  stats? (): RedisStats
}

/** How far an invalidation got: the instances the bus reached, and how many applied it in time. */
export interface Delivery {
  acknowledged: number
  instances: number
}

/** What an attached layer may do to the engine. */
export interface SharedHandle {
  /** The engine's resolved options (clock, compression, loader timeout). */
  readonly options: Readonly<ResolvedCacheOptions>
  /** Applies an invalidation another instance published (validates it; throws on a malformed one). */
  apply (request: InvalidationRequest): number
  /** The bus went down: from now on, L1 entries older than the staleness bound are not served. */
  busDown (): void
  /** The bus is back: invalidations may have been missed, so every L1 entry stored before is dropped; answers how many. */
  busUp (): number
  /** True while any invalidation feed (this bus, the PostgreSQL LISTEN connection) is down. */
  readonly outage: boolean
  /** Detaches the layer (on close). */
  detach (): void
}

/** What an invalidation feed (PostgreSQL LISTEN) may do to the engine: report itself down and back up. */
export interface FeedHandle {
  /** The feed is down: from now on, L1 entries older than the staleness bound are not served. */
  down (): void
  /** The feed is back: every L1 entry stored before is dropped; answers how many (0 when it was not down). */
  up (): number
}
