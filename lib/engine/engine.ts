/**
 * The engine behind the seed's facade (lib/cache.ts): construction and
 * wiring of the rooms, the hit path, loads and writes, invalidation, the
 * shared layer, stats and close.
 *
 * The hit path (`lookup`) reads the per-kind index `Map<id, Entry |
 * Map<userId, Entry>>`: it hashes the id it was given (and the user id only
 * when several users hold entries for that id) instead of building a
 * ~97-character key, and marks the entry used for the eviction policy.
 */
import { FST_AUTHZ_BAD_ID, FST_AUTHZ_OPTIONS, FST_AUTHZ_UNKNOWN_KIND } from '../errors.js'
import {
  DEFAULT_REFRESH_AHEAD_RATIO,
  describe,
  isPlainObject,
  resolveCacheOptions,
  type CacheOptions,
  type EngineLogger,
  type ResolvedCacheOptions
} from '../options.js'
import type { CacheLookup, CacheStats, Decision, EvictionStats, PostgresStats, InvalidationRequest, Resolver, WarmEntry } from '../types.js'
import { CachedFunctions, type CachedOptions } from './cached.js'
import { pack, unpack } from './codec.js'
import { Entry, NO_TAGS, type KindHandle, type KindState } from './entry.js'
import { TinyLfuPolicy } from './eviction.js'
import { applyPlan, planInvalidation } from './invalidation.js'
import { Kinds } from './kinds.js'
import { BATCH_CONCURRENCY, Loads, Turns, type Load, type LoadHost } from './loads.js'
import { BUDGET_SHARE, MAX_BUDGET_BYTES, Predictor, type Follower } from './predictor.js'
import { callBatchResolver, callResolver, isStringArray, validateAnswer } from './resolver-call.js'
import type { Delivery, FeedHandle, SharedHandle, SharedLayer } from './shared.js'
import { busChannel, invalidateChannel, traced, type BusMessage, type InvalidateMessage } from '../telemetry.js'
import { SAMPLE_MASK, Stats } from './stats.js'
import { Store } from './store.js'
import { Sweeper } from './sweeper.js'
import { MAX_COUNT, type FrequencySketch } from './sketch.js'

const MB = 1024 * 1024

/** Most ids one batch check takes (`getOrLoadMany`, `decisions`, `filter`); more is a 400. */
export const MAX_IDS_PER_BATCH_CHECK = 1000
/** Batch checks of a kind without `many` fan out to `one`, this many calls at a time. */
export const FAN_OUT_CONCURRENCY = 8
/** Predictions after one miss: at most this many decisions, in one `many` call per kind and `maxBatchSize` ids. */
export const PREDICTIONS_PER_MISS = 128
/** Predictions after one miss of a kind without `many`: at most this many single calls. */
export const PREDICTIONS_PER_MISS_WITHOUT_MANY = 4
/** The smallest predictor budget worth keeping (`maxSizeMb` of 8 and more): below it, predictive warming is off. */
export const MIN_PREDICTOR_BYTES = 256 * 1024

/** A predicted load to start: the id, its key for this user, and the follower that predicted it. */
interface PredictedItem { id: string, key: string, prediction: Follower }

/** Observers the Fastify layer uses for logging. */
export interface CacheObserver {
  invalidated? (request: InvalidationRequest, removed: number, origin: 'local' | 'remote'): void
  loaderFailed? (kind: string, id: string, userId: string, error: Error): void
}

/** The observer that logs what the plugin logs (the plugin with Fastify's logger, the engine with its `logger` option). */
export function loggingObserver (log: EngineLogger): CacheObserver {
  return {
    invalidated (request, removed, origin) {
      log.info({ authzInvalidation: request, removed, origin }, 'authz cache invalidated')
    },
    loaderFailed (kind, id, userId, error) {
      log.error({ kind, id, userId, err: error }, 'authz resolver failed; the check is denied with 503 and nothing is cached')
    }
  }
}

/**
 * The engine behind the seed's facade (lib/cache.ts): construction, the hit
 * path, loads, writes, invalidation, the shared layer, stats and close.
 */
export class Engine {
  readonly options: Readonly<ResolvedCacheOptions>
  /** Observers of invalidations and resolver failures (the plugin logs through them). */
  observer: CacheObserver = {}

  readonly #kinds: Kinds
  readonly #stats = new Stats()
  readonly #store: Store
  readonly #loads: Loads
  readonly #cached: CachedFunctions
  readonly #sweeper: Sweeper
  /** The TinyLFU frequency sketch (undefined under `evictionPolicy: 'clock'`): every lookup is recorded in it. */
  readonly #sketch: FrequencySketch | undefined
  /** Predictive warming's table (with `warmingEnabled`). */
  readonly #predictor: Predictor | undefined
  /** True while a batch check looks up its ids. */
  #inBatch = false

  readonly #now: () => number
  readonly #random: () => number
  readonly #negativeTtlMs: number
  readonly #jitter: number
  readonly #compressAbove: number
  readonly #refreshRatio: number

  #busDownSince = 0
  /** Invalidation feeds that are down: the Redis bus (`'redis'`), the PostgreSQL LISTEN connection (`'postgres'`). */
  readonly #feedsDown = new Set<string>()
  /** The PostgreSQL feed's counters, for the stats. */
  #feedStats: (() => PostgresStats) | undefined
  #busMaxStaleMs = 5000
  #shared: SharedLayer | undefined
  #closed = false

  constructor (options: CacheOptions = {}) {
    const o = resolveCacheOptions(options)
    this.options = Object.freeze(o)
    if (o.logger !== undefined) this.observer = loggingObserver(o.logger)
    this.#now = o.now
    this.#random = o.random
    this.#negativeTtlMs = o.negativeTtlSeconds * 1000
    this.#jitter = o.ttlJitterPercent / 100
    this.#compressAbove = o.compressionEnabled ? o.compressionThresholdBytes : Infinity
    this.#refreshRatio = o.warmingEnabled ? DEFAULT_REFRESH_AHEAD_RATIO : Infinity
    const kinds = this.#kinds = new Kinds(this.options)
    const maxBytes = Math.floor(o.maxSizeMb * MB)
    const predictorBytes = Math.min(MAX_BUDGET_BYTES, Math.floor(maxBytes * BUDGET_SHARE))
    // The predictor's budget is taken from maxSizeMb, as the sketch's is.
    this.#predictor = o.warmingEnabled && predictorBytes >= MIN_PREDICTOR_BYTES ? new Predictor(predictorBytes) : undefined
    this.#store = new Store(kinds, o.maxEntries, maxBytes - (this.#predictor?.budget ?? 0), this.#stats, o.evictionPolicy, o.random)
    this.#sketch = this.#store.policy.sketch
    this.#loads = new Loads(this.#stats, this.#loadHost())
    this.#cached = new CachedFunctions({
      options: this.options,
      kinds,
      lookup: (kind, id, userId) => this.lookup(kind, id, userId),
      join: (kind, id, userId, call) => this.#loads.join(kind, id, userId, false, call)
    })
    const store = this.#store
    this.#sweeper = new Sweeper({ now: o.now, entries: () => store.entries(), expire: (entry) => store.remove(entry, 'expire') }, o.cleanupIntervalSeconds)
  }

  #loadHost (): LoadHost {
    const cache = this
    const timeoutMs = this.options.loaderTimeoutMs
    return {
      get shared () { return cache.#shared },
      get closed () { return cache.#closed },
      now: this.#now,
      call: (load, call) => traced(() => ({ cache, kind: load.kind.name, userId: load.userId, ids: [load.id], batch: false }),
        () => callResolver(load.kind, timeoutMs, this.#stats, call, (error) => this.#failed(load, error))),
      callMany: (loads, call) => {
        // The answers are read by these ids: the resolver and the subscribers get copies, so changing theirs moves nothing.
        const ids = loads.map((load) => load.id)
        // A failure of the whole call names the batch; one id's bad answer names that id.
        return traced(() => ({ cache, kind: loads[0].kind.name, userId: loads[0].userId, ids: ids.slice(), batch: true }),
          () => callBatchResolver(loads[0].kind, ids, timeoutMs, this.#stats, (signal) => call(ids.slice(), signal),
            (error, index) => index === undefined ? this.#failed(loads[0], error, ids.length) : this.#failed(loads[index], error)))
      },
      accept: (kind, raw) => validateAnswer(kind.validation, raw),
      tagsOf: (baseTags, value) => this.#tagsOf(baseTags, value),
      ttlFor: (kind, value) => this.#ttlFor(kind, value, undefined),
      store: (load, value, json, ttlMs) => this.#write(load.kind, load.id, load.userId, value, json, ttlMs, load.startedAt, load.prediction)
    }
  }

  /** The kinds that have a resolver (built-in and custom). */
  get kinds (): string[] {
    return this.#kinds.names
  }

  /** True when `kind` has a resolver. */
  hasKind (kind: string): boolean {
    return this.#kinds.has(kind)
  }

  /** The handle of a kind with a resolver, for callers that look it up once (route checks). */
  kind (kind: string): KindHandle {
    return this.#kinds.handle(kind)
  }

  protected state (kind: string | KindHandle): KindState {
    return this.#kinds.state(kind)
  }

  /** Throws FST_AUTHZ_BAD_ID unless `id` is a non-empty string no longer than `maxIdLength`. */
  checkId (what: string, id: unknown): string {
    if (typeof id !== 'string' || id.length === 0 || id.length > this.options.maxIdLength) {
      throw new FST_AUTHZ_BAD_ID(what, typeof id === 'string' && id.length > 0
        ? `longer than ${this.options.maxIdLength} characters`
        : `expected a non-empty string, got ${describe(id)}`)
    }
    return id
  }

  // ---------------------------------------------------------------- hit path

  /**
   * The synchronous hit path: the cached value of (kind, id, user), or
   * `undefined` on a miss. Counts the hit or the miss. Ids are not validated
   * here (callers that take ids from outside use `checkId` first).
   */
  lookup (kind: KindHandle | string, id: string, userId: string): unknown {
    const state = typeof kind === 'string' ? this.state(kind) : kind as KindState
    const stats = this.#stats
    const sampled = (++stats.accesses & SAMPLE_MASK) === 0
    const start = sampled ? performance.now() : 0
    const slot = state.index.get(id)
    if (slot !== undefined) {
      const entry = slot instanceof Entry ? (slot.userId === userId ? slot : undefined) : slot.get(userId)
      if (entry !== undefined) {
        const now = this.#now()
        if (entry.expiresAt > now && (this.#busDownSince === 0 || now - entry.storedAt <= this.#busMaxStaleMs)) {
          // The policy's record of the hit, kept on the entry: the eviction hand takes it into the sketch (engine/eviction.ts).
          if (entry.hits < MAX_COUNT) entry.hits++
          state.hits++
          if (entry.prediction !== undefined) this.#predictionUsed(entry)
          if (entry.refreshAt <= now) this.#refresh(entry)
          const value = entry.packed === undefined ? entry.value : unpack(entry.packed)
          if (sampled) stats.sample(performance.now() - start)
          return value
        }
        if (entry.expiresAt <= now) this.#store.remove(entry, 'expire')
      }
    }
    // A miss counts in the sketch too: how often a key is asked for decides whether it earns a place.
    if (this.#sketch !== undefined) this.#sketch.increment(this.#store.policy.hashOf(state, id, userId))
    state.misses++
    return undefined
  }

  // ------------------------------------------------------------------ loads

  /**
   * The cached decision, or one resolver call shared by every concurrent
   * miss on the key. Rejects with FST_AUTHZ_RESOLVER_FAILED /
   * FST_AUTHZ_RESOLVER_TIMEOUT (never cached) when the resolver fails.
   * `fresh` skips the cache, reloads and stores the result.
   */
  async getOrLoad (kind: KindHandle | string, userId: string, id: string | undefined, options?: { fresh?: boolean, resolver?: Resolver }): Promise<Decision> {
    const state = this.state(kind)
    this.checkId('userId', userId)
    const resourceId = state.name === 'profile' ? userId : this.checkId(`${state.name} id`, id)
    if (options?.fresh !== true) {
      const hit = this.lookup(state, resourceId, userId)
      if (hit !== undefined) return hit as Decision
    }
    return this.load(state, resourceId, userId, options?.fresh === true, options?.resolver) as Promise<Decision>
  }

  /**
   * The miss path (after `lookup` answered `undefined`): joins the load in
   * flight for the key or starts one. Ids must already be valid.
   */
  load (kind: KindHandle, id: string, userId: string, fresh = false, resolver?: Resolver): Promise<unknown> {
    const state = kind as KindState
    const fn = resolver ?? state.resolver
    if (fn === undefined) return Promise.reject(new FST_AUTHZ_UNKNOWN_KIND(JSON.stringify(state.name)))
    const loaded = this.#loads.join(state, id, userId, fresh, (signal) => fn({ kind: state.name, userId, id, signal }))
    if (this.#predictor !== undefined && resolver === undefined && state.name !== 'profile') this.#predict(state, id, userId)
    return loaded
  }

  /**
   * The decisions of many ids of one kind for one user, in a Map in the
   * order of `ids` (repeated ids once): hits from the cache, the misses in
   * one batch call per `maxBatchSize` ids through the kind's `many` (or
   * `FAN_OUT_CONCURRENCY` calls at a time to `one`). Concurrent single and
   * batch loads of a key share one load, and each id is fenced on its own.
   * Every id is checked before anything is looked up. Rejects with 503 when
   * the call for any id failed (the ids answered are still stored).
   */
  async getOrLoadMany (kind: KindHandle | string, userId: string, ids: readonly string[]): Promise<Map<string, Decision>> {
    const state = this.state(kind)
    if (state.resolver === undefined) throw new FST_AUTHZ_UNKNOWN_KIND(JSON.stringify(state.name))
    this.checkId('userId', userId)
    if (state.name === 'profile') throw new FST_AUTHZ_BAD_ID('profile', 'a profile has no ids to batch: use profile()')
    if (!Array.isArray(ids)) throw new FST_AUTHZ_BAD_ID(`${state.name} ids`, `expected an array of ids, got ${describe(ids)}`)
    // Every id of a check is in flight at once, and each invalidation looks at every load in flight: a check is bounded.
    if (ids.length > MAX_IDS_PER_BATCH_CHECK) throw new FST_AUTHZ_BAD_ID(`${state.name} ids`, `at most ${MAX_IDS_PER_BATCH_CHECK} ids per batch check, got ${ids.length}`)
    // Each id is read once, checked, and that copy is used: an array whose items change between reads cannot slip one past the check.
    const list: string[] = new Array(ids.length)
    for (let i = 0; i < list.length; i++) list[i] = this.checkId(`${state.name} id`, ids[i])
    const found = new Map<string, unknown>()
    const missing: string[] = []
    // A batch's hits on predicted entries do not move the user's place in the predictor (see #predictionUsed).
    this.#inBatch = true
    try {
      for (const id of list) {
        if (found.has(id)) continue
        const hit = this.lookup(state, id, userId)
        found.set(id, hit)
        if (hit === undefined) missing.push(id)
      }
    } finally {
      this.#inBatch = false
    }
    if (missing.length > 0) {
      const values = await this.loadMany(state, userId, missing)
      for (let i = 0; i < missing.length; i++) found.set(missing[i], values[i])
    }
    return found as Map<string, Decision>
  }

  /**
   * The batch miss path (after `lookup` missed every id): the values of
   * `ids` (distinct, valid), in order.
   */
  loadMany (kind: KindHandle, userId: string, ids: string[]): Promise<unknown[]> {
    const state = kind as KindState
    if (this.#predictor !== undefined && state.name !== 'profile') {
      const now = this.#now()
      for (const id of ids) this.#predictor.missed(state, id, userId, now, true, 0)
    }
    const many = state.many
    if (many === undefined) return this.#fanOut(state, userId, ids)
    return this.#loads.joinMany(state, userId, ids, (batch, signal) => many({ kind: state.name, userId, ids: batch, signal }), this.options.maxBatchSize)
  }

  /** A batch check of a kind without `many`: single loads, `FAN_OUT_CONCURRENCY` at a time; stops starting more after a failure. */
  async #fanOut (state: KindState, userId: string, ids: string[]): Promise<unknown[]> {
    const values: unknown[] = new Array(ids.length)
    let next = 0
    let failed = false
    const worker = async (): Promise<void> => {
      while (next < ids.length && !failed) {
        const i = next++
        const id = ids[i]
        const one = state.resolver as Resolver
        try {
          // Not load(): the batch was learned as a batch, and its ids set off no predictions of their own.
          values[i] = await this.#loads.join(state, id, userId, false, (signal) => one({ kind: state.name, userId, id, signal }))
        } catch (error) {
          failed = true
          throw error
        }
      }
    }
    await Promise.all(Array.from({ length: Math.min(FAN_OUT_CONCURRENCY, ids.length) }, worker))
    return values
  }

  /**
   * After a check of `userId` missed (kind, id): learns from the miss, and
   * loads what usually follows it for this user in the background, fenced
   * like any load; what is cached or loading already is skipped. Failures
   * are counted, never thrown.
   */
  #predict (state: KindState, id: string, userId: string, learn = true): void {
    const predictor = this.#predictor as Predictor
    const followers = learn
      ? predictor.missed(state, id, userId, this.#now(), false, PREDICTIONS_PER_MISS)
      : predictor.followersOf(state, id, PREDICTIONS_PER_MISS)
    if (followers.length === 0 || this.#closed) return
    // The user's tokens bound what all predictions cost: PREDICTIONS_PER_MISS per real miss, chains included.
    const tokens = predictor.tokens(userId)
    let budget = tokens
    let singles = 0
    const byKind = new Map<KindState, PredictedItem[]>()
    for (const follower of followers) {
      if (budget === 0) break
      const kind = follower.kind
      // A profile's id is its user: it is never predicted (nor learned), so no user's load carries another's id.
      if (kind.resolver === undefined || kind.name === 'profile' || kind.index.entry(follower.id, userId) !== undefined) continue
      const key = kind.keyOf(follower.id, userId)
      if (this.#loads.has(key)) continue
      if (kind.many !== undefined) {
        let items = byKind.get(kind)
        if (items === undefined) byKind.set(kind, items = [])
        items.push({ id: follower.id, key, prediction: follower })
        budget--
      } else if (singles < PREDICTIONS_PER_MISS_WITHOUT_MANY) {
        singles++
        budget--
        const resolver = kind.resolver
        const load = this.#loads.start(kind, follower.id, userId, key,
          (signal) => resolver({ kind: kind.name, userId, id: follower.id, signal }), false, follower)
        load.promise.catch(() => {})
      }
    }
    predictor.spend(userId, tokens - budget)
    // One batch call per kind and maxBatchSize ids, BATCH_CONCURRENCY calls at a time across them.
    const turns = new Turns(BATCH_CONCURRENCY)
    for (const [kind, items] of byKind) {
      const many = kind.many as NonNullable<KindState['many']>
      const call = (ids: string[], signal: AbortSignal): unknown => many({ kind: kind.name, userId, ids, signal })
      for (let from = 0; from < items.length; from += this.options.maxBatchSize) {
        for (const load of this.#loads.startMany(kind, userId, items.slice(from, from + this.options.maxBatchSize), call, turns)) load.promise.catch(() => {})
      }
    }
  }

  /**
   * The first hit on a predicted entry: the prediction was used. Outside a
   * batch check, what follows this entry is predicted in turn (a chain of
   * pages costs one miss, not one a page); nothing is learned from a hit.
   */
  #predictionUsed (entry: Entry): void {
    Predictor.used(entry.prediction as Follower)
    entry.prediction = undefined
    this.#stats.predictionsUsed++
    // After the hit returns: a hit never waits on the predictions it sets off.
    if (!this.#inBatch && entry.kind.resolver !== undefined && this.#predictor !== undefined) {
      const { kind, id, userId } = entry
      setImmediate(() => { if (!this.#closed) this.#predict(kind, id, userId, false) })
    }
  }

  #failed (load: Load, error: Error, batch = 1): void {
    try {
      this.observer.loaderFailed?.(load.kind.name, batch === 1 ? load.id : `${load.id} and ${batch - 1} more ids of one batch`, load.userId, error)
    } catch {
      // An observer (a logger choking on what a resolver threw) must not turn the 503 into another error.
    }
  }

  #tagsOf (baseTags: string[], value: unknown): string[] {
    const extra = (value as Decision | null)?.tags
    return isStringArray(extra) && extra.length > 0 ? [...new Set([...baseTags, ...extra])] : baseTags
  }

  #ttlFor (state: KindState, value: unknown, ttlMs: number | undefined): number {
    let base = ttlMs ?? state.fixedTtlMs
    if (base === undefined) {
      const decision = value as Decision | null
      const own = decision?.ttlSeconds
      base = typeof own === 'number' && own > 0 && Number.isFinite(own)
        ? own * 1000
        : decision !== null && typeof decision === 'object' && decision.granted === false ? this.#negativeTtlMs : state.grantTtlMs
    }
    // Jitter only ever shortens: a TTL is a staleness promise.
    return base * (1 - this.#random() * this.#jitter)
  }

  #refresh (entry: Entry): void {
    const state = entry.kind
    if (state.resolver === undefined || this.#loads.has(entry.key) || this.#closed) return
    const resolver = state.resolver
    const load = this.#loads.start(state, entry.id, entry.userId, entry.key,
      (signal) => resolver({ kind: state.name, userId: entry.userId, id: entry.id, signal }))
    // A failed refresh leaves the entry to expire as it would have; the failure is counted and observed.
    load.promise.catch(() => {})
  }

  /** The uuid-validation kind, made on first use. */
  protected uuidState (): KindState {
    return this.#kinds.uuid()
  }

  /** `{ value, hit }` of the seed's getters, ids checked. */
  protected lookupResult<T> (kind: string, id: string, userId: string): CacheLookup<T> {
    const state = this.state(kind)
    this.checkId('userId', userId)
    this.checkId(`${kind} id`, id)
    const value = this.lookup(state, id, userId) as T | undefined
    return { value, hit: value !== undefined }
  }

  // ----------------------------------------------------------------- writes

  /**
   * The tags an entry keeps itself: those the index (`{kind}:{id}`) and the
   * user lists (`user:{userId}`) do not cover. None for most entries.
   */
  #ownTags (state: KindState, id: string, userId: string, value: unknown): readonly string[] {
    const extra = (value as Decision | null)?.tags
    const hasExtra = isStringArray(extra) && extra.length > 0
    if (!hasExtra && state.userTagged) return NO_TAGS
    const covered = new Set([`${state.tagPrefix}:${id}`])
    if (state.userTagged) covered.add(`user:${userId}`)
    const own = new Set<string>()
    for (const tag of state.baseTags(id, userId)) if (!covered.has(tag)) own.add(tag)
    if (hasExtra) for (const tag of extra) if (!covered.has(tag)) own.add(tag)
    return own.size === 0 ? NO_TAGS : [...own]
  }

  /** Stores `value`, the frozen copy `validateAnswer` made (callers share it: none can change what others see), and its `json`. */
  #write (state: KindState, id: string, userId: string, value: unknown, json: string, ttlMs: number, answeredSince?: number, prediction?: Follower): void {
    if (this.#closed || !(ttlMs > 0)) return
    let stored: unknown = value
    let packed: Buffer | undefined
    const size = Buffer.byteLength(json)
    if (size > this.#compressAbove) {
      packed = pack(json)
      stored = undefined
    }
    const now = this.#now()
    // A denial (or no profile) lives negativeTtlSeconds: the eviction policy keeps it from crowding out grants.
    const denied = state.validation !== 'any' && (value === null || (value as Decision).granted === false)
    this.#store.insert(state, id, userId, stored, packed, size, this.#ownTags(state, id, userId, value), now, ttlMs,
      this.#refreshRatio === Infinity ? Infinity : now + ttlMs * this.#refreshRatio, answeredSince ?? now, denied, prediction)
  }

  /**
   * Stores a value directly (the seed's `set*` methods, warming). The value
   * is validated like a resolver's answer; an invalidation wins over nothing
   * here because there is no load to fence.
   */
  set (kind: KindHandle | string, userId: string, id: string | undefined, value: Decision | null, options?: { ttlSeconds?: number }): void {
    const state = this.state(kind)
    this.checkId('userId', userId)
    const resourceId = state.name === 'profile' ? userId : this.checkId(`${state.name} id`, id)
    this.put(state, resourceId, userId, state.keyOf(resourceId, userId), value, options?.ttlSeconds)
  }

  protected put (state: KindState, id: string, userId: string, key: string, raw: unknown, ttlSeconds: number | undefined): void {
    const accepted = validateAnswer(state.validation, raw)
    if (accepted instanceof Error) throw new FST_AUTHZ_OPTIONS('value', accepted.message, { cause: accepted })
    const { value, json } = accepted
    if (json === undefined) throw new FST_AUTHZ_OPTIONS('value', 'must not be undefined')
    if (ttlSeconds !== undefined && !(typeof ttlSeconds === 'number' && ttlSeconds > 0 && Number.isFinite(ttlSeconds))) {
      throw new FST_AUTHZ_OPTIONS('ttlSeconds', `must be a positive number, got ${describe(ttlSeconds)}`)
    }
    // A direct write is an answer given now: it replaces what a load in flight would store, here and (with Redis) everywhere.
    this.#loads.fenceKey(key)
    const ttlMs = this.#ttlFor(state, value, ttlSeconds === undefined ? undefined : ttlSeconds * 1000)
    this.#write(state, id, userId, value, json, ttlMs)
    if (this.#shared !== undefined && !this.#closed) this.#shared.replace(key, value, ttlMs, this.#tagsOf(state.baseTags(id, userId), value))
  }

  /**
   * Preloads entries (the `warm` option at startup, or any time). Returns
   * how many were stored.
   */
  async warm (entries: Iterable<WarmEntry> | AsyncIterable<WarmEntry>): Promise<number> {
    let stored = 0
    for await (const entry of entries) {
      if (!isPlainObject(entry)) throw new FST_AUTHZ_OPTIONS('warm', `entries must be objects, got ${describe(entry)}`)
      this.set(entry.kind, entry.userId, entry.id, entry.decision)
      stored++
    }
    return stored
  }

  /**
   * Wraps an async function in the cache: one call per distinct arguments
   * at a time, results kept for `ttlSeconds`, failures never cached, and
   * invalidations fence calls in flight like any load (engine/cached.ts).
   */
  cached<A extends unknown[], R> (fn: (...args: A) => R | Promise<R>, options: CachedOptions = {}): (...args: A) => Promise<Awaited<R>> {
    return this.#cached.wrap(fn, options)
  }

  // ----------------------------------------------------------- invalidation

  /**
   * Applies an invalidation here and, when a shared layer is attached, in
   * L2 and on every other instance before resolving. Returns how many local
   * entries were removed.
   */
  async invalidate (request: InvalidationRequest, options?: { silent?: boolean }): Promise<number> {
    return (await this.invalidateEverywhere(request, options)).invalidated
  }

  /**
   * `invalidate`, answering how far it got: entries removed here, and with a
   * bus, the instances it reached and how many acknowledged within
   * `ackTimeoutMs` (this one included). Rejects with FST_AUTHZ_BUS_FAILED
   * when Redis did not take it in time; it was applied here and stays queued.
   */
  async invalidateEverywhere (request: InvalidationRequest, options?: { silent?: boolean }): Promise<{ invalidated: number, acknowledged: number, instances: number }> {
    const invalidated = this.apply(request, 'local', options?.silent === true)
    if (this.#shared === undefined) return { invalidated, acknowledged: 1, instances: 1 }
    const started = performance.now()
    let delivery: Delivery
    try {
      delivery = await this.#shared.publish(request)
    } catch (error) {
      if (busChannel.hasSubscribers) busChannel.publish({ cache: this, event: 'publish-failed', request, error } satisfies BusMessage)
      throw error
    }
    if (busChannel.hasSubscribers) busChannel.publish({ cache: this, event: 'published', request, ...delivery, durationMs: performance.now() - started } satisfies BusMessage)
    return { invalidated, ...delivery }
  }

  /** Applies here, and publishes in the background (the synchronous invalidation methods). */
  protected local (request: InvalidationRequest): number {
    const removed = this.apply(request, 'local')
    if (this.#shared !== undefined) this.#shared.publish(request).catch(() => {})
    return removed
  }

  /**
   * Applies an invalidation to this instance only (what the bus calls for a
   * message from another instance). Validates the request, fences loads in
   * flight that it touches, and returns how many entries it removed.
   */
  apply (request: InvalidationRequest, origin: 'local' | 'remote' = 'local', silent = false): number {
    const removed = applyPlan(planInvalidation(request), this.#store, this.#loads)
    this.#stats.invalidations += removed
    if (!silent) this.observer.invalidated?.(request, removed, origin)
    if (invalidateChannel.hasSubscribers) invalidateChannel.publish({ cache: this, request, removed, origin } satisfies InvalidateMessage)
    return removed
  }

  /** Every live key (for tests and diagnostics; one pass over the cache). */
  keys (): string[] {
    const keys: string[] = []
    for (const entry of this.#store.entries()) keys.push(entry.key)
    return keys
  }

  // ----------------------------------------------------------- maintenance

  /**
   * Removes every expired entry now and answers how many. O(n) in the
   * entries held and synchronous (it blocks for as long as it runs): the
   * background sweep does the same in steps of at most a few milliseconds.
   */
  sweep (): number {
    return this.#sweeper.sweepNow()
  }

  /**
   * Attaches the shared layer (Redis): loads read it before calling a
   * resolver and write what they load to it; invalidations are published.
   * Answers the handle through which the layer drives this engine.
   */
  attachShared (layer: SharedLayer, options: { busOutageMaxStalenessSeconds?: number } = {}): SharedHandle {
    this.#shared = layer
    const engine = this
    if (options.busOutageMaxStalenessSeconds !== undefined) this.#busMaxStaleMs = options.busOutageMaxStalenessSeconds * 1000
    return {
      options: this.options,
      apply: (request) => this.apply(request, 'remote'),
      busDown: () => this.#feedDown('redis'),
      busUp: () => this.#feedUp('redis'),
      get outage () { return engine.busIsDown },
      detach: () => { if (this.#shared === layer) this.#shared = undefined }
    }
  }

  /**
   * An invalidation feed besides the Redis bus (PostgreSQL LISTEN,
   * lib/postgres.ts). While any feed is down, no L1 entry older than the
   * staleness bound is served; when one comes back, every L1 entry stored
   * before is dropped (it may have missed invalidations), even if another
   * feed is still down.
   */
  attachFeed (name: string, stats?: () => PostgresStats): FeedHandle {
    if (stats !== undefined) this.#feedStats = stats
    return {
      down: () => this.#feedDown(name),
      up: () => this.#feedUp(name)
    }
  }

  #feedDown (name: string): void {
    if (busChannel.hasSubscribers && !this.#feedsDown.has(name)) busChannel.publish({ cache: this, event: 'down', feed: name } satisfies BusMessage)
    this.#feedsDown.add(name)
    if (this.#busDownSince === 0) this.#busDownSince = this.#now() || 1
  }

  #feedUp (name: string): number {
    if (!this.#feedsDown.delete(name)) return 0
    if (busChannel.hasSubscribers) busChannel.publish({ cache: this, event: 'up', feed: name } satisfies BusMessage)
    if (this.#feedsDown.size === 0) this.#busDownSince = 0
    return this.apply({ all: true }, 'remote')
  }

  /** True when a shared layer (Redis) is attached. */
  get hasSharedLayer (): boolean {
    return this.#shared !== undefined
  }

  /** True while an invalidation feed (the Redis bus, the PostgreSQL LISTEN connection) is down: L1 entries older than the staleness bound are not served. */
  get busIsDown (): boolean {
    return this.#busDownSince !== 0
  }

  getStats (): CacheStats {
    const policy = this.#store.policy
    const eviction: EvictionStats = policy instanceof TinyLfuPolicy
      ? { policy: 'tinylfu', windowEntries: policy.windowCount, admitted: policy.admitted, rejected: policy.rejected, sketchResets: policy.sketch.resets, sketchBytes: policy.bytes }
      : { policy: 'clock', windowEntries: 0, admitted: 0, rejected: 0, sketchResets: 0, sketchBytes: 0 }
    const warmingBytes = this.#predictor?.bytes ?? 0
    const stats = this.#stats.snapshot(this.#kinds, this.#store.count, this.#store.bytes + warmingBytes, this.options, eviction, this.#shared?.stats?.(), warmingBytes)
    if (this.#feedStats !== undefined) stats.postgres = this.#feedStats()
    return stats
  }

  /** Stops the sweep timer and empties the cache. Loads in flight finish but store nothing. */
  close (): void {
    if (this.#closed) return
    this.#closed = true
    this.#sweeper.stop()
    this.#loads.fenceAll(this.#loads.next())
    this.#store.clear()
    this.#predictor?.clear()
  }
}
