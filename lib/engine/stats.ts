/**
 * Counters and access-time samples, and the stats snapshot built from them
 * (`getStats()`, the admin route, Prometheus). Hits and misses live on each
 * kind's state, where the hit path already is.
 */
import type { ResolvedCacheOptions } from '../options.js'
import type { CacheStats, EvictionStats, RedisStats } from '../types.js'
import type { KindState } from './entry.js'

/** One hit in this many is timed for `averageAccessTimeMs` / `p99AccessTimeMs` (a power of two). */
export const ACCESS_SAMPLE_EVERY = 16
/** How many timed hits the p99 window keeps. */
export const ACCESS_SAMPLE_WINDOW = 2048
/** `(++accesses & SAMPLE_MASK) === 0` picks the hits to time. */
export const SAMPLE_MASK = ACCESS_SAMPLE_EVERY - 1

const MB = 1024 * 1024

function percentile (samples: Float64Array, count: number, p: number): number {
  if (count === 0) return 0
  const sorted = samples.slice(0, count).sort()
  return sorted[Math.min(count - 1, Math.ceil((p / 100) * count) - 1)]
}

function round (value: number, digits: number): number {
  const f = 10 ** digits
  return Math.round(value * f) / f
}

function rate (hits: number, misses: number): number {
  return hits + misses === 0 ? 0 : round((hits / (hits + misses)) * 100, 2)
}

/** The engine's counters. Plain fields: the hit path and the loads bump them directly. */
export class Stats {
  /** Lookups, hits and misses alike (drives the sampling). */
  accesses = 0
  /** Entries removed to stay under `maxEntries` / `maxSizeMb`. */
  evictions = 0
  /** Entries removed at the end of their TTL (on read or by the sweep). */
  expirations = 0
  /** Entries removed by invalidations. */
  invalidations = 0
  /** Resolver loads started. */
  loads = 0
  /** Callers that joined a load already running. */
  coalesced = 0
  /** Resolver failures: threw, rejected, or answered something unacceptable. */
  loaderErrors = 0
  /** Resolver answers later than `loaderTimeoutMs`. */
  loaderTimeouts = 0
  /** Batch resolver calls. */
  batches = 0
  /** Predictive warming: decisions loaded because they were predicted, used by a check, left unused. */
  predicted = 0
  predictionsUsed = 0
  predictionsWasted = 0

  readonly #samples = new Float64Array(ACCESS_SAMPLE_WINDOW)
  #sampleCount = 0
  #sampleNext = 0
  #sampleSum = 0
  #sampleTotal = 0

  /** Records one timed hit, in milliseconds. */
  sample (ms: number): void {
    this.#samples[this.#sampleNext] = ms
    this.#sampleNext = (this.#sampleNext + 1) % ACCESS_SAMPLE_WINDOW
    if (this.#sampleCount < ACCESS_SAMPLE_WINDOW) this.#sampleCount++
    this.#sampleSum += ms
    this.#sampleTotal++
  }

  /** The SPEC stats object. */
  snapshot (kinds: Iterable<KindState>, entries: number, bytes: number, o: Readonly<ResolvedCacheOptions>, eviction: EvictionStats, redis: RedisStats | undefined, warmingBytes: number): CacheStats {
    let hits = 0
    let misses = 0
    const byKind: CacheStats['byKind'] = {}
    for (const state of kinds) {
      hits += state.hits
      misses += state.misses
      if (state.resolver !== undefined || state.hits + state.misses > 0) {
        byKind[state.name] = { hits: state.hits, misses: state.misses, hitRatePercent: rate(state.hits, state.misses) }
      }
    }
    const averageAccessTimeMs = this.#sampleTotal === 0 ? 0 : this.#sampleSum / this.#sampleTotal
    const hitRatePercent = rate(hits, misses)
    const stats: CacheStats = {
      hits,
      misses,
      hitRatePercent,
      averageAccessTimeMs: round(averageAccessTimeMs, 6),
      p99AccessTimeMs: round(percentile(this.#samples, this.#sampleCount, 99), 6),
      totalEntries: entries,
      totalSizeMb: round(bytes / MB, 6),
      maxEntries: o.maxEntries,
      maxSizeMb: o.maxSizeMb,
      evictions: this.evictions,
      expirations: this.expirations,
      invalidations: this.invalidations,
      loads: this.loads,
      coalesced: this.coalesced,
      loaderErrors: this.loaderErrors,
      loaderTimeouts: this.loaderTimeouts,
      batches: this.batches,
      warming: { predicted: this.predicted, used: this.predictionsUsed, wasted: this.predictionsWasted, bytes: warmingBytes },
      byKind,
      eviction,
      performanceTargets: {
        targetAccessTimeMs: o.targetAccessTimeMs,
        targetHitRatePercent: o.targetHitRatePercent,
        meetingAccessTimeTarget: averageAccessTimeMs <= o.targetAccessTimeMs,
        meetingHitRateTarget: hits + misses > 0 && hitRatePercent >= o.targetHitRatePercent
      }
    }
    if (redis !== undefined) stats.redis = redis
    return stats
  }
}
