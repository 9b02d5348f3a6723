/**
 * AuthzCache: the L1 authorization cache engine. It knows nothing of Fastify.
 *
 * Layout. Entries live in a quick-lru keyed by their SPEC key (the order
 * eviction walks), and in a per-kind index `Map<id, Entry | Map<userId,
 * Entry>>` that the hit path reads: a hit hashes the id it was given (and
 * the user id only when several users hold entries for that id) instead of
 * building and hashing a ~97-character key, and marks the entry used.
 * quick-lru alone is not a hard cap (it keeps up to twice `maxSize` entries
 * and drops whole generations), so the engine counts live entries and bytes
 * itself and evicts one entry at a time, least recently used first (second
 * chance over quick-lru's order), before an insert would cross `maxEntries`
 * or `maxSizeMb`.
 *
 * Loads. One resolver call per key however many callers miss at once. Every
 * invalidation gets a sequence number; a load remembers the number it started
 * at. An invalidation that touches a load in flight fences it (its result is
 * never stored, in L1 or L2) and detaches it, so callers arriving afterwards
 * start a new load. Tags a decision brings along are only known when the load
 * ends, so tag invalidations are also logged while loads are in flight and
 * checked against the decision's tags on completion; a caller that joined
 * after such an invalidation loads again instead of taking the old answer.
 */
import QuickLRU from 'quick-lru'
import { deflateRawSync, inflateRawSync } from 'node:zlib'
import {
  FST_AUTHZ_BAD_ID,
  FST_AUTHZ_OPTIONS,
  FST_AUTHZ_RESOLVER_FAILED,
  FST_AUTHZ_RESOLVER_TIMEOUT,
  FST_AUTHZ_UNKNOWN_KIND
} from './errors.js'
import {
  cachedFunctionKey,
  compilePattern,
  invalidationTags,
  keyBuilderFor,
  patternProblem,
  resourceTag,
  stableSerialize,
  userTag,
  uuidValidationKey,
  type KeyBuilder,
  type KeyPattern
} from './keys.js'
import {
  BUILT_IN_KINDS,
  DEFAULT_REFRESH_AHEAD_RATIO,
  KIND_NAME_PATTERN,
  checkFunction,
  describe,
  isPlainObject,
  resolveCacheOptions,
  type CacheOptions,
  type ResolvedCacheOptions
} from './options.js'
import type {
  CacheLookup,
  CacheStats,
  Decision,
  InvalidationRequest,
  RedisStats,
  Resolver,
  WarmEntry
} from './types.js'

/** Bytes accounted per entry on top of its key and serialized value (entry object, index and LRU slots). */
export const ENTRY_OVERHEAD_BYTES = 256
/** One hit in this many is timed for `averageAccessTimeMs` / `p99AccessTimeMs` (a power of two). */
export const ACCESS_SAMPLE_EVERY = 16
/** How many timed hits the p99 window keeps. */
export const ACCESS_SAMPLE_WINDOW = 2048
/** Entries the background sweep looks at per tick before yielding the event loop. */
export const SWEEP_BATCH = 10_000

const SAMPLE_MASK = ACCESS_SAMPLE_EVERY - 1
const MB = 1024 * 1024
const DENIED: Decision = Object.freeze({ granted: false })
const NO_USER = ''

type Validation = 'decision' | 'profile' | 'any'
type RemovalReason = 'evict' | 'expire' | 'invalidate' | 'replace'

/** Per-kind state. The Fastify layer resolves it once per route at boot. */
export interface KindHandle {
  readonly name: string
}

interface KindState extends KindHandle {
  readonly name: string
  /** id -> the entry, when one user has one for that id (the common case), else userId -> entry. */
  readonly index: Map<string, Slot>
  readonly keyOf: KeyBuilder
  readonly baseTags: (id: string, userId: string) => string[]
  readonly grantTtlMs: number
  /** The TTL of every value of the kind, denials included (`cached(fn, { ttlSeconds })`); undefined: by decision. */
  readonly fixedTtlMs: number | undefined
  readonly validation: Validation
  resolver: Resolver | undefined
  hits: number
  misses: number
}

class Entry {
  live = true
  /** Read since it was stored or last given a second chance (see AuthzCache#evictOne). */
  used = false
  constructor (
    readonly key: string,
    readonly kind: KindState,
    readonly id: string,
    readonly userId: string,
    readonly value: unknown,
    readonly packed: Buffer | undefined,
    readonly bytes: number,
    readonly tags: string[],
    readonly storedAt: number,
    readonly expiresAt: number,
    readonly refreshAt: number
  ) {}
}

/** An index slot: one entry, or a map of entries by user id. */
type Slot = Entry | Map<string, Entry>

function * slotEntries (index: Map<string, Slot>): Generator<Entry> {
  for (const slot of index.values()) {
    if (slot instanceof Entry) yield slot
    else yield * slot.values()
  }
}

type Loader = (signal: AbortSignal) => unknown

interface Load {
  readonly key: string
  readonly kind: KindState
  readonly id: string
  readonly userId: string
  readonly baseTags: string[]
  readonly startSeq: number
  /** Sequence number of the first invalidation that touched this load; Infinity while untouched. */
  fencedAt: number
  promise: Promise<unknown>
}

/** What a shared layer (Redis L2) reads for a key. */
export interface SharedRead {
  /** The stored value and its absolute expiry, when L2 has it. */
  record?: { value: unknown, expiresAt: number }
  /** An opaque fence token to hand back to `write`. */
  fence: unknown
}

/**
 * A layer shared between instances: Redis as L2 and invalidation bus. Every
 * method must swallow its own errors (a shared-layer failure is a miss, never
 * a failed request).
 */
export interface SharedLayer {
  read (key: string): Promise<SharedRead>
  /** Writes unless an invalidation happened since `fence` was read; true when written. */
  write (key: string, value: unknown, ttlMs: number, tags: string[], fence: unknown): Promise<boolean>
  /** Removes what `request` touches from L2 and tells every other instance; rejects when it could not. */
  publish (request: InvalidationRequest): Promise<void>
  /** Counters for the `redis` block of the stats. */
  stats? (): RedisStats
}

/** Observers the Fastify layer uses for logging. */
export interface CacheObserver {
  invalidated? (request: InvalidationRequest, removed: number, origin: 'local' | 'remote'): void
  loaderFailed? (kind: string, id: string, userId: string, error: Error): void
}

export interface CachedOptions {
  /**
   * Names the entries (`cached:{kind}:...`) and their tag `{kind}:{key}`.
   * Two functions never share a kind. Default: the function's name; a
   * function without a name usable as a kind (anonymous, bound, ...) gets
   * `anonymous-{n}`, the same each time that function object is wrapped.
   */
  kind?: string
  /**
   * TTL in seconds of every result, denials (`{ granted: false }`) and
   * results carrying their own `ttlSeconds` included; jitter still only
   * shortens it. Default: as for resolver answers (`authTtlSeconds`,
   * `negativeTtlSeconds` for denials, or the result's own `ttlSeconds`).
   */
  ttlSeconds?: number
  /**
   * Cache key from the arguments. Default: a serialization of all arguments
   * that gives two different argument lists two keys; arguments it cannot
   * represent faithfully (Map, Set, class instances, functions, symbols,
   * NaN, Infinity, cycles, ...) make the call reject with FST_AUTHZ_OPTIONS:
   * pass `key` for those.
   */
  key?: (...args: any[]) => string
}

function isStringArray (value: unknown): value is string[] {
  if (!Array.isArray(value)) return false
  for (const item of value) if (typeof item !== 'string') return false
  return true
}

function deepFreeze<T> (value: T): T {
  if (value !== null && typeof value === 'object' && !Object.isFrozen(value)) {
    Object.freeze(value)
    for (const key of Object.keys(value)) deepFreeze((value as Record<string, unknown>)[key])
  }
  return value
}

/**
 * An answer as callers get it and the cache stores it: a deep-frozen copy
 * made by a JSON round trip, and that JSON. `json` is undefined only for the
 * `undefined` result of a `validation: 'any'` kind (returned, never stored).
 */
type Accepted = { value: unknown, json: string } | { value: undefined, json: undefined }

const NOT_STORED: Accepted = { value: undefined, json: undefined }
const DENIED_ACCEPTED: Accepted = { value: DENIED, json: JSON.stringify(DENIED) }

/** What the load timer rejects with: private, so no resolver can throw it. */
const TIMED_OUT = Symbol('fastify-authz-cache.timedOut')

/** `value` when it is an Error, else a TypeError saying what it was (a resolver may throw anything). */
function asError (value: unknown, what: string): Error {
  try {
    if (value instanceof Error) return value
    return new TypeError(`${what} ${value === undefined ? 'undefined' : describe(value)}, not an Error`, { cause: value })
  } catch {
    // A Proxy whose traps throw: even instanceof cannot look at it.
    return new TypeError(`${what} a value that cannot be inspected, not an Error`, { cause: value })
  }
}

function percentile (samples: Float64Array, count: number, p: number): number {
  if (count === 0) return 0
  const sorted = samples.slice(0, count).sort()
  return sorted[Math.min(count - 1, Math.ceil((p / 100) * count) - 1)]
}

function round (value: number, digits: number): number {
  const f = 10 ** digits
  return Math.round(value * f) / f
}

export class AuthzCache {
  readonly options: Readonly<ResolvedCacheOptions>

  readonly #lru: QuickLRU<string, Entry>
  readonly #kinds = new Map<string, KindState>()
  readonly #tags = new Map<string, Set<Entry>>()
  readonly #inflight = new Map<string, Load>()
  readonly #running = new Set<Load>()
  readonly #cachedOwners = new Map<string, Function>()
  /** The kind `cached()` made up for each function without a usable name. */
  readonly #anonymousKinds = new WeakMap<Function, string>()
  #anonymousCount = 0
  #tagLog: Array<{ seq: number, tags: Set<string> }> = []
  #seq = 0

  readonly #now: () => number
  readonly #random: () => number
  readonly #maxEntries: number
  readonly #maxBytes: number
  readonly #negativeTtlMs: number
  readonly #jitter: number
  readonly #compressAbove: number
  readonly #refreshRatio: number

  #count = 0
  #bytes = 0
  #accesses = 0
  #evictions = 0
  #expirations = 0
  #invalidations = 0
  #loads = 0
  #coalesced = 0
  #loaderErrors = 0
  #loaderTimeouts = 0
  readonly #samples = new Float64Array(ACCESS_SAMPLE_WINDOW)
  #sampleCount = 0
  #sampleNext = 0
  #sampleSum = 0
  #sampleTotal = 0

  #busDownSince = 0
  #busMaxStaleMs = 5000
  #shared: SharedLayer | undefined
  observer: CacheObserver = {}

  #sweepTimer: NodeJS.Timeout | undefined
  #sweeping: Iterator<Entry> | undefined
  #closed = false

  constructor (options: CacheOptions = {}) {
    const o = resolveCacheOptions(options)
    this.options = Object.freeze(o)
    this.#now = o.now
    this.#random = o.random
    this.#maxEntries = o.maxEntries
    this.#maxBytes = Math.floor(o.maxSizeMb * MB)
    this.#negativeTtlMs = o.negativeTtlSeconds * 1000
    this.#jitter = o.ttlJitterPercent / 100
    this.#compressAbove = o.compressionEnabled ? o.compressionThresholdBytes : Infinity
    this.#refreshRatio = o.warmingEnabled ? DEFAULT_REFRESH_AHEAD_RATIO : Infinity
    this.#lru = new QuickLRU<string, Entry>({
      maxSize: o.maxEntries,
      // The engine evicts before quick-lru would; this only fires if quick-lru
      // drops a generation holding a live entry, which then leaves every index.
      onEviction: (_key, entry) => { if (entry.live) this.#remove(entry, 'evict') }
    })
    for (const kind of BUILT_IN_KINDS) this.#addKind(kind, o.resolvers[kind])
    for (const [kind, resolver] of Object.entries(o.resolvers)) {
      if (!this.#kinds.has(kind)) this.#addKind(kind, resolver)
    }
    if (o.cleanupIntervalSeconds > 0) {
      this.#sweepTimer = setInterval(() => this.#sweepStep(), o.cleanupIntervalSeconds * 1000)
      this.#sweepTimer.unref()
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
    const sampled = (++this.#accesses & SAMPLE_MASK) === 0
    const start = sampled ? performance.now() : 0
    const slot = state.index.get(id)
    if (slot !== undefined) {
      const entry = slot instanceof Entry ? (slot.userId === userId ? slot : undefined) : slot.get(userId)
      if (entry !== undefined) {
        const now = this.#now()
        if (entry.expiresAt > now && (this.#busDownSince === 0 || now - entry.storedAt <= this.#busMaxStaleMs)) {
          // Recency is a bit on the entry (read anyway for its expiry), not a quick-lru move: see #evictOne.
          if (!entry.used) entry.used = true
          state.hits++
          if (entry.refreshAt <= now) this.#refresh(entry)
          const value = entry.packed === undefined ? entry.value : this.#unpack(entry.packed)
          if (sampled) this.#sample(performance.now() - start)
          return value
        }
        if (entry.expiresAt <= now) this.#remove(entry, 'expire')
      }
    }
    state.misses++
    return undefined
  }

  #sample (ms: number): void {
    this.#samples[this.#sampleNext] = ms
    this.#sampleNext = (this.#sampleNext + 1) % ACCESS_SAMPLE_WINDOW
    if (this.#sampleCount < ACCESS_SAMPLE_WINDOW) this.#sampleCount++
    this.#sampleSum += ms
    this.#sampleTotal++
  }

  #unpack (packed: Buffer): unknown {
    // Frozen like every other answer: a caller must not be able to believe it changed a decision.
    return deepFreeze(JSON.parse(inflateRawSync(packed).toString('utf8')))
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
    return this.#join(state, id, userId, fresh, (signal) => fn({ kind: state.name, userId, id, signal }))
  }

  async #join (state: KindState, id: string, userId: string, fresh: boolean, loader: Loader): Promise<unknown> {
    const key = state.keyOf(id, userId)
    for (;;) {
      let load = fresh ? undefined : this.#inflight.get(key)
      if (load === undefined) {
        load = this.#start(state, id, userId, key, loader)
      } else {
        this.#coalesced++
      }
      const joinedAt = this.#seq
      const value = await load.promise
      // Fenced by an invalidation this caller arrived after: its answer is stale.
      if (load.fencedAt > joinedAt) return value
      fresh = false
    }
  }

  #start (state: KindState, id: string, userId: string, key: string, loader: Loader): Load {
    const load: Load = {
      key,
      kind: state,
      id,
      userId,
      baseTags: state.baseTags(id, userId),
      startSeq: this.#seq,
      fencedAt: Infinity,
      promise: undefined as unknown as Promise<unknown>
    }
    this.#loads++
    this.#inflight.set(key, load)
    this.#running.add(load)
    load.promise = this.#run(load, loader).finally(() => {
      if (this.#inflight.get(key) === load) this.#inflight.delete(key)
      this.#running.delete(load)
      this.#trimTagLog()
    })
    return load
  }

  async #run (load: Load, loader: Loader): Promise<unknown> {
    const shared = this.#shared
    let fence: unknown
    // An L2 hit keeps the expiry it was written with; a resolver answer gets a TTL here.
    let sharedExpiresAt: number | undefined
    let accepted: Accepted | undefined
    if (shared !== undefined) {
      const read = await shared.read(load.key)
      fence = read.fence
      if (read.record !== undefined && read.record.expiresAt > this.#now()) {
        // Checked like an answer, so callers get it frozen; a record that does not pass is a miss.
        const record = this.#validate(load.kind, read.record.value)
        if (!(record instanceof Error)) {
          accepted = record
          sharedExpiresAt = read.record.expiresAt
        }
      }
    }
    // Every caller gets `value`, the frozen copy, whether it is then stored or not.
    const { value, json } = accepted ?? await this.#callLoader(load, loader)
    if (json === undefined) return value
    const tags = this.#tagsOf(load.baseTags, value)
    this.#checkTagLog(load, tags)
    if (load.fencedAt !== Infinity) return value
    const ttlMs = sharedExpiresAt === undefined ? this.#ttlFor(load.kind, value, undefined) : sharedExpiresAt - this.#now()
    if (shared !== undefined && sharedExpiresAt === undefined) {
      const written = await shared.write(load.key, value, ttlMs, tags, fence)
      if (!written || load.fencedAt !== Infinity) return value
    }
    this.#store(load.kind, load.id, load.userId, load.key, value, json, ttlMs, tags)
    return value
  }

  /**
   * Calls the resolver under `loaderTimeoutMs` and accepts its answer. Every
   * failure rejects with FST_AUTHZ_RESOLVER_FAILED or _TIMEOUT (503), is
   * counted and observed, whatever the resolver threw (a non-Error, or an
   * error of its own carrying our timeout code, is a failure: only our timer
   * or our clock makes a timeout) or answered.
   */
  async #callLoader (load: Load, loader: Loader): Promise<Accepted> {
    const controller = new AbortController()
    const timeoutMs = this.options.loaderTimeoutMs
    let timer: NodeJS.Timeout | undefined
    const timeout = new Promise<never>((_resolve, reject) => { timer = setTimeout(reject, timeoutMs, TIMED_OUT) })
    const started = performance.now()
    let raw: unknown
    let threw = false
    try {
      raw = await Promise.race([Promise.resolve().then(() => loader(controller.signal)), timeout])
    } catch (error) {
      threw = true
      raw = error
    } finally {
      clearTimeout(timer)
    }
    // The timer cannot fire while a resolver blocks the event loop, and its answer then settles
    // first: the monotonic clock catches what arrived late anyway.
    if ((threw && raw === TIMED_OUT) || performance.now() - started > timeoutMs) {
      this.#loaderTimeouts++
      const error = new FST_AUTHZ_RESOLVER_TIMEOUT(load.kind.name, timeoutMs)
      controller.abort(error)
      this.#failed(load, error)
      throw error
    }
    if (threw) {
      this.#loaderErrors++
      this.#failed(load, asError(raw, 'the resolver threw'))
      throw new FST_AUTHZ_RESOLVER_FAILED(load.kind.name, { cause: raw })
    }
    const accepted = this.#validate(load.kind, raw)
    if (accepted instanceof Error) {
      this.#loaderErrors++
      this.#failed(load, accepted)
      throw new FST_AUTHZ_RESOLVER_FAILED(load.kind.name, { cause: accepted })
    }
    return accepted
  }

  #failed (load: Load, error: Error): void {
    try {
      this.observer.loaderFailed?.(load.kind.name, load.id, load.userId, error)
    } catch {
      // An observer (a logger choking on what a resolver threw) must not turn the 503 into another error.
    }
  }

  /**
   * Checks an answer (a resolver's, an L2 record, a `set*()` value) and makes
   * what callers get and the cache stores: a deep-frozen copy from a JSON
   * round trip, and that JSON. The copy is what gets checked, so what was
   * checked is exactly what is served and stored; the answer itself is read
   * once (by JSON.stringify), and neither frozen nor kept. Never throws:
   * returns a TypeError when the answer is not acceptable, when JSON cannot
   * hold it (BigInt, cycle, function, symbol), or when reading it throws (a
   * getter, a Proxy trap, a toJSON).
   */
  #validate (state: KindState, raw: unknown): Accepted | Error {
    if (state.validation === 'any') {
      if (raw === undefined) return NOT_STORED
    } else if (raw === null || raw === undefined) {
      return DENIED_ACCEPTED
    }
    let json: string | undefined
    try {
      // Map, Set, class instances: their JSON would silently lose what they hold.
      if (state.validation !== 'any' && !isPlainObject(raw)) {
        return new TypeError(`got ${typeof raw === 'function' ? 'a function' : describe(raw)}, not a Decision or null`)
      }
      json = JSON.stringify(raw)
    } catch (error) {
      return new TypeError('JSON cannot hold the answer: reading or serializing it threw', { cause: error })
    }
    if (json === undefined) {
      return new TypeError(`JSON cannot hold the answer: ${typeof raw === 'object' ? 'its toJSON gives undefined' : `got a ${typeof raw}`}`)
    }
    const copy: unknown = JSON.parse(json)
    if (state.validation !== 'any') {
      if (!isPlainObject(copy)) return new TypeError(`got an answer whose JSON is ${describe(copy)}, not a Decision`)
      if (state.validation === 'decision' || copy.granted !== undefined) {
        if (typeof copy.granted !== 'boolean') return new TypeError('got a Decision without a boolean `granted`')
        if (copy.access !== undefined && !isStringArray(copy.access)) return new TypeError('Decision.access must be an array of strings')
        if (copy.role !== undefined && typeof copy.role !== 'string') return new TypeError('Decision.role must be a string')
      }
      if (copy.tags !== undefined && !isStringArray(copy.tags)) return new TypeError('Decision.tags must be an array of strings')
      if (copy.ttlSeconds !== undefined && !(typeof copy.ttlSeconds === 'number' && copy.ttlSeconds > 0 && Number.isFinite(copy.ttlSeconds))) {
        return new TypeError('Decision.ttlSeconds must be a positive number')
      }
    }
    return { value: deepFreeze(copy), json }
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
    if (state.resolver === undefined || this.#inflight.has(entry.key) || this.#closed) return
    const resolver = state.resolver
    const load = this.#start(state, entry.id, entry.userId, entry.key,
      (signal) => resolver({ kind: state.name, userId: entry.userId, id: entry.id, signal }))
    // A failed refresh leaves the entry to expire as it would have; the failure is counted and observed.
    load.promise.catch(() => {})
  }

  // ----------------------------------------------------------------- writes

  /** Stores `value`, the frozen copy `#validate` made (callers share it: none can change what others see), and its `json`. */
  #store (state: KindState, id: string, userId: string, key: string, value: unknown, json: string, ttlMs: number, tags: string[]): void {
    if (this.#closed || !(ttlMs > 0)) return
    let stored: unknown
    let packed: Buffer | undefined
    let size = Buffer.byteLength(json)
    if (size > this.#compressAbove) {
      packed = deflateRawSync(json)
      size = packed.length
    } else {
      stored = value
    }
    const bytes = size + key.length * 2 + ENTRY_OVERHEAD_BYTES
    const existing = this.#lru.peek(key)
    if (existing !== undefined) this.#remove(existing, 'replace')
    if (bytes > this.#maxBytes) return
    while (this.#count > 0 && (this.#count >= this.#maxEntries || this.#bytes + bytes > this.#maxBytes)) {
      if (!this.#evictOne()) break
    }
    const now = this.#now()
    const entry = new Entry(key, state, id, userId, stored, packed, bytes, tags, now, now + ttlMs,
      this.#refreshRatio === Infinity ? Infinity : now + ttlMs * this.#refreshRatio)
    this.#lru.set(key, entry)
    const slot = state.index.get(id)
    if (slot === undefined) state.index.set(id, entry)
    else if (slot instanceof Entry) state.index.set(id, new Map([[slot.userId, slot], [userId, entry]]))
    else slot.set(userId, entry)
    for (const tag of tags) {
      let set = this.#tags.get(tag)
      if (set === undefined) {
        set = new Set()
        this.#tags.set(tag, set)
      }
      set.add(entry)
    }
    this.#count++
    this.#bytes += bytes
  }

  /**
   * Evicts one entry, least recently used first, by second chance (CLOCK):
   * quick-lru keeps entries in insertion order; the oldest one that was not
   * read since it was (re)inserted goes, and an oldest one that was read is
   * moved to the recent end with its bit cleared. A hit then costs one bit
   * on an object it reads anyway instead of a quick-lru move (which, in a
   * full cache, is a delete and a set on every hit).
   */
  #evictOne (): boolean {
    for (let passes = this.#count + 1; passes > 0; passes--) {
      const oldest = this.#lru.entriesAscending().next()
      if (oldest.done === true) return false
      const entry = oldest.value[1]
      if (!entry.used) {
        this.#remove(entry, 'evict')
        return true
      }
      entry.used = false
      this.#lru.delete(entry.key)
      this.#lru.set(entry.key, entry)
    }
    return false
  }

  #remove (entry: Entry, reason: RemovalReason): void {
    if (!entry.live) return
    entry.live = false
    this.#lru.delete(entry.key)
    const index = entry.kind.index
    const slot = index.get(entry.id)
    if (slot === entry) {
      index.delete(entry.id)
    } else if (slot instanceof Map && slot.get(entry.userId) === entry) {
      slot.delete(entry.userId)
      // Back to the single-entry slot the hit path reads without a second map.
      if (slot.size === 1) index.set(entry.id, slot.values().next().value as Entry)
    }
    for (const tag of entry.tags) {
      const set = this.#tags.get(tag)
      if (set !== undefined) {
        set.delete(entry)
        if (set.size === 0) this.#tags.delete(tag)
      }
    }
    this.#count--
    this.#bytes -= entry.bytes
    if (reason === 'evict') this.#evictions++
    else if (reason === 'expire') this.#expirations++
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
    const accepted = this.#validate(state, raw)
    if (accepted instanceof Error) throw new FST_AUTHZ_OPTIONS('value', accepted.message, { cause: accepted })
    const { value, json } = accepted
    if (json === undefined) throw new FST_AUTHZ_OPTIONS('value', 'must not be undefined')
    if (ttlSeconds !== undefined && !(typeof ttlSeconds === 'number' && ttlSeconds > 0 && Number.isFinite(ttlSeconds))) {
      throw new FST_AUTHZ_OPTIONS('ttlSeconds', `must be a positive number, got ${describe(ttlSeconds)}`)
    }
    const tags = this.#tagsOf(state.baseTags(id, userId), value)
    // A direct write is an answer given now: it replaces what a load in flight would store.
    const load = this.#inflight.get(key)
    if (load !== undefined) this.#fence(load, ++this.#seq)
    this.#store(state, id, userId, key, value, json, this.#ttlFor(state, value, ttlSeconds === undefined ? undefined : ttlSeconds * 1000), tags)
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
   * invalidations fence calls in flight like any load. Results must be
   * JSON-serializable; `undefined` results are not cached.
   */
  cached<A extends unknown[], R> (fn: (...args: A) => R | Promise<R>, options: CachedOptions = {}): (...args: A) => Promise<Awaited<R>> {
    checkFunction('cached(fn)', fn)
    const opts: CachedOptions = options
    if (!isPlainObject(options as unknown)) throw new FST_AUTHZ_OPTIONS('cached options', `must be an object, got ${describe(opts)}`)
    let name = opts.kind
    const unnamed = name === undefined && !KIND_NAME_PATTERN.test(fn.name)
    if (unnamed) {
      // No usable name (anonymous, bound, ...): a kind of its own, the same each time this function is wrapped.
      name = this.#anonymousKinds.get(fn)
      while (name === undefined || (this.#cachedOwners.get(name) ?? fn) !== fn) name = `anonymous-${++this.#anonymousCount}`
    } else if (name === undefined) {
      name = fn.name
    } else if (!KIND_NAME_PATTERN.test(name)) {
      throw new FST_AUTHZ_OPTIONS('cached kind', `must match ${KIND_NAME_PATTERN}, got ${describe(name)}`)
    }
    const owner = this.#cachedOwners.get(name)
    if (owner !== undefined && owner !== fn) {
      throw new FST_AUTHZ_OPTIONS('cached kind', `${JSON.stringify(name)} already caches another function; two functions must not share entries`)
    }
    const ttlSeconds = opts.ttlSeconds
    if (ttlSeconds !== undefined && !(typeof ttlSeconds === 'number' && ttlSeconds > 0 && Number.isFinite(ttlSeconds))) {
      throw new FST_AUTHZ_OPTIONS('cached ttlSeconds', `must be a positive number, got ${describe(ttlSeconds)}`)
    }
    const keyOf = opts.key === undefined ? (...args: A) => stableSerialize(args) : checkFunction<(...args: A) => string>('cached key', opts.key)
    const stateName = `cached:${name}`
    const existing = this.#kinds.get(stateName)
    if (existing !== undefined && existing.fixedTtlMs !== (ttlSeconds === undefined ? undefined : ttlSeconds * 1000)) {
      throw new FST_AUTHZ_OPTIONS('cached ttlSeconds', `${JSON.stringify(name)} is already cached with ${existing.fixedTtlMs === undefined ? 'the default TTLs' : `ttlSeconds ${existing.fixedTtlMs / 1000}`}; wrapping it again with another TTL would change how long its shared entries live`)
    }
    this.#cachedOwners.set(name, fn)
    if (unnamed) this.#anonymousKinds.set(fn, name)
    const kindName = name
    const state = existing ?? this.#addKind(stateName, undefined, 'any',
      (argsKey) => cachedFunctionKey(kindName, argsKey),
      (argsKey) => [resourceTag(kindName, argsKey)],
      ttlSeconds ?? this.options.authTtlSeconds,
      ttlSeconds)
    return async (...args: A): Promise<Awaited<R>> => {
      const argsKey = keyOf(...args)
      if (typeof argsKey !== 'string') throw new FST_AUTHZ_OPTIONS('cached key', `must return a string, got ${describe(argsKey)}`)
      const hit = this.lookup(state, argsKey, NO_USER)
      if (hit !== undefined) return hit as Awaited<R>
      return this.#join(state, argsKey, NO_USER, false, () => fn(...args)) as Promise<Awaited<R>>
    }
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
    const plan = this.#plan(request)
    const seq = ++this.#seq
    let removed = 0
    if (plan.all) {
      removed = this.#clearAll(seq)
    } else {
      if (this.#running.size > 0) {
        for (const load of this.#running) {
          if (this.#touches(plan, load.key, load.baseTags)) this.#fence(load, seq)
        }
        if (plan.tags.size > 0) this.#tagLog.push({ seq, tags: plan.tags })
      }
      for (const tag of plan.tags) {
        const set = this.#tags.get(tag)
        if (set === undefined) continue
        for (const entry of set) {
          this.#remove(entry, 'invalidate')
          removed++
        }
      }
      for (const key of plan.keys) {
        const entry = this.#lru.peek(key)
        if (entry !== undefined) {
          this.#remove(entry, 'invalidate')
          removed++
        }
      }
      for (const pattern of plan.patterns) {
        for (const entry of this.#entries()) {
          if (pattern.test(entry.key)) {
            this.#remove(entry, 'invalidate')
            removed++
          }
        }
      }
    }
    this.#invalidations += removed
    if (!silent) this.observer.invalidated?.(request, removed, origin)
    return removed
  }

  #clearAll (seq: number): number {
    const removed = this.#count
    for (const load of this.#running) this.#fence(load, seq)
    for (const state of this.#kinds.values()) {
      for (const entry of slotEntries(state.index)) entry.live = false
      state.index.clear()
    }
    this.#lru.clear()
    this.#tags.clear()
    this.#count = 0
    this.#bytes = 0
    return removed
  }

  #plan (request: InvalidationRequest): { all: boolean, tags: Set<string>, keys: string[], patterns: KeyPattern[] } {
    if (!isPlainObject(request as unknown)) throw new FST_AUTHZ_OPTIONS('invalidation', `must be an object, got ${describe(request)}`)
    for (const name of ['userId', 'generationId', 'projectId', 'teamId', 'pattern'] as const) {
      const value = request[name]
      if (value !== undefined && (typeof value !== 'string' || value.length === 0)) throw new FST_AUTHZ_OPTIONS(name, `must be a non-empty string, got ${describe(value)}`)
    }
    for (const name of ['tags', 'keys'] as const) {
      const value = request[name]
      if (value !== undefined && (!isStringArray(value) || value.some((v) => v.length === 0))) throw new FST_AUTHZ_OPTIONS(name, 'must be an array of non-empty strings')
    }
    if (request.all !== undefined && typeof request.all !== 'boolean') throw new FST_AUTHZ_OPTIONS('all', `must be a boolean, got ${describe(request.all)}`)
    const problem = request.pattern === undefined ? undefined : patternProblem(request.pattern)
    if (problem !== undefined) throw new FST_AUTHZ_OPTIONS('pattern', problem)
    return {
      all: request.all === true,
      tags: invalidationTags(request),
      keys: request.keys ?? [],
      patterns: request.pattern === undefined ? [] : [compilePattern(request.pattern)]
    }
  }

  #touches (plan: { tags: Set<string>, keys: string[], patterns: KeyPattern[] }, key: string, tags: string[]): boolean {
    for (const tag of tags) if (plan.tags.has(tag)) return true
    if (plan.keys.includes(key)) return true
    for (const pattern of plan.patterns) if (pattern.test(key)) return true
    return false
  }

  #fence (load: Load, seq: number): void {
    if (load.fencedAt > seq) load.fencedAt = seq
    if (this.#inflight.get(load.key) === load) this.#inflight.delete(load.key)
  }

  #checkTagLog (load: Load, tags: string[]): void {
    if (tags === load.baseTags) return
    for (const { seq, tags: touched } of this.#tagLog) {
      if (seq <= load.startSeq) continue
      for (const tag of tags) {
        if (touched.has(tag)) {
          if (load.fencedAt > seq) load.fencedAt = seq
          return
        }
      }
    }
  }

  #trimTagLog (): void {
    if (this.#tagLog.length === 0) return
    if (this.#running.size === 0) {
      this.#tagLog = []
      return
    }
    const oldest = this.#running.values().next().value as Load
    let drop = 0
    while (drop < this.#tagLog.length && this.#tagLog[drop].seq <= oldest.startSeq) drop++
    if (drop > 0) this.#tagLog.splice(0, drop)
  }

  * #entries (): Generator<Entry> {
    for (const state of this.#kinds.values()) yield * slotEntries(state.index)
  }

  /** Every live key (for tests and diagnostics; one pass over the cache). */
  keys (): string[] {
    const keys: string[] = []
    for (const entry of this.#entries()) keys.push(entry.key)
    return keys
  }

  // ----------------------------------------------------------- maintenance

  /** Removes every expired entry now; returns how many. The timer does the same in batches. */
  sweep (): number {
    const now = this.#now()
    let removed = 0
    for (const entry of this.#entries()) {
      if (entry.expiresAt <= now) {
        this.#remove(entry, 'expire')
        removed++
      }
    }
    return removed
  }

  #sweepStep (): void {
    if (this.#sweeping === undefined) this.#sweeping = this.#entries()
    const now = this.#now()
    for (let i = 0; i < SWEEP_BATCH; i++) {
      const next = this.#sweeping.next()
      if (next.done === true) {
        this.#sweeping = undefined
        return
      }
      if (next.value.expiresAt <= now) this.#remove(next.value, 'expire')
    }
    setImmediate(() => { if (!this.#closed) this.#sweepStep() }).unref()
  }

  /**
   * Attaches the shared layer (Redis). Loads read it before calling a
   * resolver and write what they load to it; invalidations are published.
   */
  attachShared (layer: SharedLayer | undefined, options: { busOutageMaxStalenessSeconds?: number } = {}): void {
    this.#shared = layer
    if (options.busOutageMaxStalenessSeconds !== undefined) this.#busMaxStaleMs = options.busOutageMaxStalenessSeconds * 1000
  }

  /** The invalidation bus went down: from now on, L1 entries older than the staleness bound are not served. */
  busDown (): void {
    if (this.#busDownSince === 0) this.#busDownSince = this.#now() || 1
  }

  /** The bus is back: invalidations may have been missed, so every L1 entry stored before now is dropped. */
  busUp (): number {
    if (this.#busDownSince === 0) return 0
    this.#busDownSince = 0
    return this.apply({ all: true }, 'remote')
  }

  get busIsDown (): boolean {
    return this.#busDownSince !== 0
  }

  getStats (): CacheStats {
    let hits = 0
    let misses = 0
    const byKind: CacheStats['byKind'] = {}
    for (const state of this.#kinds.values()) {
      hits += state.hits
      misses += state.misses
      if (state.resolver !== undefined || state.hits + state.misses > 0) {
        byKind[state.name] = { hits: state.hits, misses: state.misses, hitRatePercent: rate(state.hits, state.misses) }
      }
    }
    const averageAccessTimeMs = this.#sampleTotal === 0 ? 0 : this.#sampleSum / this.#sampleTotal
    const hitRatePercent = rate(hits, misses)
    const o = this.options
    const stats: CacheStats = {
      hits,
      misses,
      hitRatePercent,
      averageAccessTimeMs: round(averageAccessTimeMs, 6),
      p99AccessTimeMs: round(percentile(this.#samples, this.#sampleCount, 99), 6),
      totalEntries: this.#count,
      totalSizeMb: round(this.#bytes / MB, 6),
      maxEntries: o.maxEntries,
      maxSizeMb: o.maxSizeMb,
      evictions: this.#evictions,
      expirations: this.#expirations,
      invalidations: this.#invalidations,
      loads: this.#loads,
      coalesced: this.#coalesced,
      loaderErrors: this.#loaderErrors,
      loaderTimeouts: this.#loaderTimeouts,
      byKind,
      performanceTargets: {
        targetAccessTimeMs: o.targetAccessTimeMs,
        targetHitRatePercent: o.targetHitRatePercent,
        meetingAccessTimeTarget: averageAccessTimeMs <= o.targetAccessTimeMs,
        meetingHitRateTarget: hits + misses > 0 && hitRatePercent >= o.targetHitRatePercent
      }
    }
    const redis = this.#shared?.stats?.()
    if (redis !== undefined) stats.redis = redis
    return stats
  }

  /** Stops the sweep timer and empties the cache. Loads in flight finish but store nothing. */
  close (): void {
    if (this.#closed) return
    this.#closed = true
    clearInterval(this.#sweepTimer)
    this.#sweeping = undefined
    this.#clearAll(++this.#seq)
  }
}

function rate (hits: number, misses: number): number {
  return hits + misses === 0 ? 0 : round((hits / (hits + misses)) * 100, 2)
}
