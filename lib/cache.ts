/**
 * AuthzCache: the L1 authorization cache engine, the seed's facade over its
 * rooms. It knows nothing of Fastify. Where each concern lives:
 *
 *   engine/entry.ts         an entry, a kind's state, an index slot
 *   engine/store.ts         the store and its caps (quick-lru by key, the per-kind index, tags)
 *   engine/eviction.ts      the eviction policy (CLOCK over a ring of the entries)
 *   engine/loads.ts         single-flight loads and every fence ("invalidation wins")
 *   engine/resolver-call.ts the resolver call: timeout, answer checks, fail closed
 *   engine/invalidation.ts  what an invalidation touches, and removing it
 *   engine/codec.ts         compression of stored values
 *   engine/sweeper.ts       the background sweep of expired entries
 *   engine/stats.ts         counters, access-time samples, the stats snapshot
 *   engine/cached.ts        `cached(fn)`
 *   engine/shared.ts        the interface to a shared layer (Redis, lib/redis.ts)
 *
 * The hit path (`lookup`) is here: it reads the per-kind index `Map<id,
 * Entry | Map<userId, Entry>>` (hashing the id it was given, and the user id
 * only when several users hold entries for that id, instead of building a
 * ~97-character key) and marks the entry used for the eviction policy.
 */
import {
  FST_AUTHZ_BAD_ID,
  FST_AUTHZ_OPTIONS,
  FST_AUTHZ_UNKNOWN_KIND
} from './errors.js'
import { keyBuilderFor, resourceTag, userTag, uuidValidationKey, type KeyBuilder } from './keys.js'
import {
  BUILT_IN_KINDS,
  DEFAULT_REFRESH_AHEAD_RATIO,
  describe,
  isPlainObject,
  resolveCacheOptions,
  type CacheOptions,
  type ResolvedCacheOptions
} from './options.js'
import type { CacheLookup, CacheStats, Decision, InvalidationRequest, Resolver, WarmEntry } from './types.js'
import { CachedFunctions, type CachedOptions } from './engine/cached.js'
import { pack, unpack } from './engine/codec.js'
import { Entry, type KindHandle, type KindState, type Validation } from './engine/entry.js'
import { applyPlan, planInvalidation } from './engine/invalidation.js'
import { Loads, type Load, type LoadHost } from './engine/loads.js'
import { callResolver, isStringArray, validateAnswer } from './engine/resolver-call.js'
import type { SharedHandle, SharedLayer } from './engine/shared.js'
import { SAMPLE_MASK, Stats } from './engine/stats.js'
import { Store } from './engine/store.js'
import { Sweeper } from './engine/sweeper.js'

export type { CachedOptions } from './engine/cached.js'
export type { KindHandle } from './engine/entry.js'
export type { SharedHandle, SharedLayer, SharedRead } from './engine/shared.js'
export { ENTRY_OVERHEAD_BYTES } from './engine/store.js'
export { ACCESS_SAMPLE_EVERY, ACCESS_SAMPLE_WINDOW } from './engine/stats.js'

const MB = 1024 * 1024

/** Observers the Fastify layer uses for logging. */
export interface CacheObserver {
  invalidated? (request: InvalidationRequest, removed: number, origin: 'local' | 'remote'): void
  loaderFailed? (kind: string, id: string, userId: string, error: Error): void
}

export class AuthzCache {
  readonly options: Readonly<ResolvedCacheOptions>
  /** Observers of invalidations and resolver failures (the plugin logs through them). */
  observer: CacheObserver = {}

  readonly #kinds = new Map<string, KindState>()
  readonly #stats = new Stats()
  readonly #store: Store
  readonly #loads: Loads
  readonly #cached: CachedFunctions
  readonly #sweeper: Sweeper

  readonly #now: () => number
  readonly #random: () => number
  readonly #negativeTtlMs: number
  readonly #jitter: number
  readonly #compressAbove: number
  readonly #refreshRatio: number

  #busDownSince = 0
  #busMaxStaleMs = 5000
  #shared: SharedLayer | undefined
  #closed = false

  constructor (options: CacheOptions = {}) {
    const o = resolveCacheOptions(options)
    this.options = Object.freeze(o)
    this.#now = o.now
    this.#random = o.random
    this.#negativeTtlMs = o.negativeTtlSeconds * 1000
    this.#jitter = o.ttlJitterPercent / 100
    this.#compressAbove = o.compressionEnabled ? o.compressionThresholdBytes : Infinity
    this.#refreshRatio = o.warmingEnabled ? DEFAULT_REFRESH_AHEAD_RATIO : Infinity
    const kinds = this.#kinds
    this.#store = new Store({ [Symbol.iterator]: () => kinds.values() }, o.maxEntries, Math.floor(o.maxSizeMb * MB), this.#stats)
    this.#loads = new Loads(this.#stats, this.#loadHost())
    this.#cached = new CachedFunctions({
      options: this.options,
      kinds,
      addKind: (name, resolver, validation, keyOf, baseTags, grantTtlSeconds, fixedTtlSeconds) => this.#addKind(name, resolver, validation, keyOf, baseTags, grantTtlSeconds, fixedTtlSeconds),
      lookup: (kind, id, userId) => this.lookup(kind, id, userId),
      join: (kind, id, userId, call) => this.#loads.join(kind, id, userId, false, call)
    })
    for (const kind of BUILT_IN_KINDS) this.#addKind(kind, o.resolvers[kind])
    for (const [kind, resolver] of Object.entries(o.resolvers)) {
      if (!this.#kinds.has(kind)) this.#addKind(kind, resolver)
    }
    const store = this.#store
    this.#sweeper = new Sweeper({ now: o.now, entries: () => store.entries(), expire: (entry) => store.remove(entry, 'expire') }, o.cleanupIntervalSeconds)
  }

  #loadHost (): LoadHost {
    const cache = this
    const timeoutMs = this.options.loaderTimeoutMs
    return {
      get shared () { return cache.#shared },
      now: this.#now,
      call: (load, call) => callResolver(load.kind, timeoutMs, this.#stats, call, (error) => this.#failed(load, error)),
      accept: (kind, raw) => validateAnswer(kind.validation, raw),
      tagsOf: (baseTags, value) => this.#tagsOf(baseTags, value),
      ttlFor: (kind, value) => this.#ttlFor(kind, value, undefined),
      store: (load, value, json, ttlMs, tags) => this.#write(load.kind, load.id, load.userId, load.key, value, json, ttlMs, tags)
    }
  }

  #addKind (name: string, resolver: Resolver | undefined, validation?: Validation, keyOf?: KeyBuilder, baseTags?: KindState['baseTags'], grantTtlSeconds?: number, fixedTtlSeconds?: number): KindState {
    const state: KindState = {
      name,
      index: new Map(),
      keyOf: keyOf ?? keyBuilderFor(name),
      baseTags: baseTags ?? (name === 'profile'
        ? (_id, userId) => [userTag(userId), resourceTag(name, userId)]
        : (id, userId) => [userTag(userId), resourceTag(name, id)]),
      grantTtlMs: (grantTtlSeconds ?? this.options.authTtlSeconds) * 1000,
      fixedTtlMs: fixedTtlSeconds === undefined ? undefined : fixedTtlSeconds * 1000,
      validation: validation ?? (name === 'profile' ? 'profile' : 'decision'),
      resolver,
      hits: 0,
      misses: 0
    }
    this.#kinds.set(name, state)
    return state
  }

  /** The kinds that have a resolver (built-in and custom). */
  get kinds (): string[] {
    const names: string[] = []
    for (const state of this.#kinds.values()) if (state.resolver !== undefined) names.push(state.name)
    return names
  }

  /** True when `kind` has a resolver. */
  hasKind (kind: string): boolean {
    return this.#kinds.get(kind)?.resolver !== undefined
  }

  /** The handle of a kind with a resolver, for callers that look it up once (route checks). */
  kind (kind: string): KindHandle {
    const state = this.#kinds.get(kind)
    if (state?.resolver === undefined) throw new FST_AUTHZ_UNKNOWN_KIND(JSON.stringify(kind))
    return state
  }

  #state (kind: string | KindHandle): KindState {
    if (typeof kind !== 'string') return kind as KindState
    const state = this.#kinds.get(kind)
    if (state === undefined) throw new FST_AUTHZ_UNKNOWN_KIND(JSON.stringify(kind))
    return state
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
    const state = typeof kind === 'string' ? this.#state(kind) : kind as KindState
    const stats = this.#stats
    const sampled = (++stats.accesses & SAMPLE_MASK) === 0
    const start = sampled ? performance.now() : 0
    const slot = state.index.get(id)
    if (slot !== undefined) {
      const entry = slot instanceof Entry ? (slot.userId === userId ? slot : undefined) : slot.get(userId)
      if (entry !== undefined) {
        const now = this.#now()
        if (entry.expiresAt > now && (this.#busDownSince === 0 || now - entry.storedAt <= this.#busMaxStaleMs)) {
          // Recency is a bit on the entry (read anyway for its expiry), not a list move: see engine/eviction.ts.
          if (!entry.used) entry.used = true
          state.hits++
          if (entry.refreshAt <= now) this.#refresh(entry)
          const value = entry.packed === undefined ? entry.value : unpack(entry.packed)
          if (sampled) stats.sample(performance.now() - start)
          return value
        }
        if (entry.expiresAt <= now) this.#store.remove(entry, 'expire')
      }
    }
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
    const state = this.#state(kind)
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
    return this.#loads.join(state, id, userId, fresh, (signal) => fn({ kind: state.name, userId, id, signal }))
  }

  #failed (load: Load, error: Error): void {
    try {
      this.observer.loaderFailed?.(load.kind.name, load.id, load.userId, error)
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

  // ----------------------------------------------------------------- writes

  /** Stores `value`, the frozen copy `validateAnswer` made (callers share it: none can change what others see), and its `json`. */
  #write (state: KindState, id: string, userId: string, key: string, value: unknown, json: string, ttlMs: number, tags: string[]): void {
    if (this.#closed || !(ttlMs > 0)) return
    let stored: unknown = value
    let packed: Buffer | undefined
    let size = Buffer.byteLength(json)
    if (size > this.#compressAbove) {
      packed = pack(json)
      size = packed.length
      stored = undefined
    }
    const now = this.#now()
    this.#store.insert(state, id, userId, key, stored, packed, size, tags, now, ttlMs,
      this.#refreshRatio === Infinity ? Infinity : now + ttlMs * this.#refreshRatio)
  }

  /**
   * Stores a value directly (the seed's `set*` methods, warming). The value
   * is validated like a resolver's answer; an invalidation wins over nothing
   * here because there is no load to fence.
   */
  set (kind: KindHandle | string, userId: string, id: string | undefined, value: Decision | null, options?: { ttlSeconds?: number }): void {
    const state = this.#state(kind)
    this.checkId('userId', userId)
    const resourceId = state.name === 'profile' ? userId : this.checkId(`${state.name} id`, id)
    this.#put(state, resourceId, userId, state.keyOf(resourceId, userId), value, options?.ttlSeconds)
  }

  #put (state: KindState, id: string, userId: string, key: string, raw: unknown, ttlSeconds: number | undefined): void {
    const accepted = validateAnswer(state.validation, raw)
    if (accepted instanceof Error) throw new FST_AUTHZ_OPTIONS('value', accepted.message, { cause: accepted })
    const { value, json } = accepted
    if (json === undefined) throw new FST_AUTHZ_OPTIONS('value', 'must not be undefined')
    if (ttlSeconds !== undefined && !(typeof ttlSeconds === 'number' && ttlSeconds > 0 && Number.isFinite(ttlSeconds))) {
      throw new FST_AUTHZ_OPTIONS('ttlSeconds', `must be a positive number, got ${describe(ttlSeconds)}`)
    }
    const tags = this.#tagsOf(state.baseTags(id, userId), value)
    // A direct write is an answer given now: it replaces what a load in flight would store.
    this.#loads.fenceKey(key)
    this.#write(state, id, userId, key, value, json, this.#ttlFor(state, value, ttlSeconds === undefined ? undefined : ttlSeconds * 1000), tags)
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

  // ---------------------------------------------- the seed's manager methods

  #lookupResult<T> (kind: string, id: string, userId: string): CacheLookup<T> {
    const state = this.#state(kind)
    this.checkId('userId', userId)
    this.checkId(`${kind} id`, id)
    const value = this.lookup(state, id, userId) as T | undefined
    return { value, hit: value !== undefined }
  }

  getUserProfile<T = Decision> (userId: string): CacheLookup<T> {
    return this.#lookupResult<T>('profile', userId, userId)
  }

  setUserProfile (userId: string, profile: Record<string, unknown> | null, options?: { ttlSeconds?: number }): void {
    this.set('profile', userId, userId, profile as Decision | null, options)
  }

  getGenerationAccess (generationId: string, userId: string): CacheLookup<Decision> {
    return this.#lookupResult('generation', generationId, userId)
  }

  setGenerationAccess (generationId: string, userId: string, decision: Decision | null, options?: { ttlSeconds?: number }): void {
    this.set('generation', userId, generationId, decision, options)
  }

  getProjectAccess (projectId: string, userId: string): CacheLookup<Decision> {
    return this.#lookupResult('project', projectId, userId)
  }

  setProjectAccess (projectId: string, userId: string, decision: Decision | null, options?: { ttlSeconds?: number }): void {
    this.set('project', userId, projectId, decision, options)
  }

  getTeamRole (teamId: string, userId: string): CacheLookup<Decision> {
    return this.#lookupResult('team', teamId, userId)
  }

  setTeamRole (teamId: string, userId: string, decision: Decision | null, options?: { ttlSeconds?: number }): void {
    this.set('team', userId, teamId, decision, options)
  }

  #uuidState (): KindState {
    return this.#kinds.get('uuid') ?? this.#addKind('uuid', undefined, 'any',
      (uuid, context) => uuidValidationKey(uuid, context),
      (uuid, context) => [resourceTag('uuid', uuid), resourceTag('context', context)],
      this.options.uuidValidationTtlSeconds)
  }

  getUuidValidation<T = unknown> (uuid: string, context: string): CacheLookup<T> {
    this.checkId('uuid', uuid)
    this.checkId('context', context)
    const value = this.lookup(this.#uuidState(), uuid, context) as T | undefined
    return { value, hit: value !== undefined }
  }

  setUuidValidation (uuid: string, context: string, result: unknown, options?: { ttlSeconds?: number }): void {
    this.checkId('uuid', uuid)
    this.checkId('context', context)
    if (result === undefined) throw new FST_AUTHZ_OPTIONS('result', 'must not be undefined')
    const state = this.#uuidState()
    this.#put(state, uuid, context, state.keyOf(uuid, context), result, options?.ttlSeconds)
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

  /** Removes every entry of the user (all kinds) here; also published when a shared layer is attached. */
  invalidateUserData (userId: string): number {
    return this.#local({ userId })
  }

  /** Removes every entry of the generation (all users). */
  invalidateGenerationData (generationId: string): number {
    return this.#local({ generationId })
  }

  invalidateProjectData (projectId: string): number {
    return this.#local({ projectId })
  }

  invalidateTeamData (teamId: string): number {
    return this.#local({ teamId })
  }

  /** Removes entries whose key matches; `*` matches any run of characters. Cost: one pass over the keys. */
  invalidateByPattern (pattern: string): number {
    return this.#local({ pattern })
  }

  /** Removes entries carrying any of the tags. Cost: proportional to what is removed. */
  invalidateByTags (tags: string[]): number {
    return this.#local({ tags })
  }

  /** Removes entries by exact key. */
  invalidateKeys (keys: string[]): number {
    return this.#local({ keys })
  }

  /** Removes everything. */
  clear (): number {
    return this.#local({ all: true })
  }

  /** Invalidates the user here and on every instance (awaits the shared layer). */
  async invalidateUserAuthorizationCache (userId: string): Promise<number> {
    return this.invalidate({ userId })
  }

  /** Invalidates the generation here and on every instance (awaits the shared layer). */
  async invalidateGenerationAuthorizationCache (generationId: string): Promise<number> {
    return this.invalidate({ generationId })
  }

  /**
   * Applies an invalidation here and, when a shared layer is attached, in
   * L2 and on every other instance before resolving. Returns how many local
   * entries were removed.
   */
  async invalidate (request: InvalidationRequest, options?: { silent?: boolean }): Promise<number> {
    const removed = this.apply(request, 'local', options?.silent === true)
    if (this.#shared !== undefined) await this.#shared.publish(request)
    return removed
  }

  #local (request: InvalidationRequest): number {
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
    if (options.busOutageMaxStalenessSeconds !== undefined) this.#busMaxStaleMs = options.busOutageMaxStalenessSeconds * 1000
    return {
      options: this.options,
      apply: (request) => this.apply(request, 'remote'),
      busDown: () => { if (this.#busDownSince === 0) this.#busDownSince = this.#now() || 1 },
      busUp: () => {
        if (this.#busDownSince === 0) return 0
        this.#busDownSince = 0
        return this.apply({ all: true }, 'remote')
      },
      detach: () => { if (this.#shared === layer) this.#shared = undefined }
    }
  }

  /** True while the invalidation bus is down (L1 entries older than the staleness bound are not served). */
  get busIsDown (): boolean {
    return this.#busDownSince !== 0
  }

  getStats (): CacheStats {
    return this.#stats.snapshot(this.#kinds.values(), this.#store.count, this.#store.bytes, this.options, this.#shared?.stats?.())
  }

  /** Stops the sweep timer and empties the cache. Loads in flight finish but store nothing. */
  close (): void {
    if (this.#closed) return
    this.#closed = true
    this.#sweeper.stop()
    this.#loads.fenceAll(this.#loads.next())
    this.#store.clear()
  }
}
