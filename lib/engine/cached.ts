/**
 * `app.authz.cached(fn)`: any async function behind the cache, with the
 * single flight, fences and fail-closed behaviour of resolvers. Each wrapped
 * function is a kind of its own (`cached:{kind}`), keyed by its arguments.
 */
import { FST_AUTHZ_OPTIONS } from '../errors.js'
import { cachedFunctionKey, resourceTag, stableSerialize } from '../keys.js'
import { KIND_NAME_PATTERN, checkFunction, describe, isPlainObject, type ResolvedCacheOptions } from '../options.js'
import type { KindState } from './entry.js'
import type { Kinds } from './kinds.js'

/** Cached functions have no user: entries are keyed and fenced by their arguments only. */
const NO_USER = ''

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

/** What `cached` needs of the engine. */
export interface CachedHost {
  readonly options: Readonly<ResolvedCacheOptions>
  readonly kinds: Kinds
  lookup (kind: KindState, id: string, userId: string): unknown
  join (kind: KindState, id: string, userId: string, call: () => unknown): Promise<unknown>
}

export class CachedFunctions {
  readonly #host: CachedHost
  /** Kind -> the function that owns it: two functions never share entries. */
  readonly #cachedOwners = new Map<string, Function>()
  /** The kind made up for each function without a usable name. */
  readonly #anonymousKinds = new WeakMap<Function, string>()
  #anonymousCount = 0

  constructor (host: CachedHost) {
    this.#host = host
  }

  /**
   * Wraps an async function in the cache: one call per distinct arguments
   * at a time, results kept for `ttlSeconds`, failures never cached, and
   * invalidations fence calls in flight like any load. Results must be
   * JSON-serializable; `undefined` results are not cached.
   */
  wrap<A extends unknown[], R> (fn: (...args: A) => R | Promise<R>, options: CachedOptions = {}): (...args: A) => Promise<Awaited<R>> {
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
    const existing = this.#host.kinds.get(stateName)
    if (existing !== undefined && existing.fixedTtlMs !== (ttlSeconds === undefined ? undefined : ttlSeconds * 1000)) {
      throw new FST_AUTHZ_OPTIONS('cached ttlSeconds', `${JSON.stringify(name)} is already cached with ${existing.fixedTtlMs === undefined ? 'the default TTLs' : `ttlSeconds ${existing.fixedTtlMs / 1000}`}; wrapping it again with another TTL would change how long its shared entries live`)
    }
    this.#cachedOwners.set(name, fn)
    if (unnamed) this.#anonymousKinds.set(fn, name)
    const kindName = name
    const state = existing ?? this.#host.kinds.add(stateName, undefined, 'any',
      (argsKey) => cachedFunctionKey(kindName, argsKey),
      (argsKey) => [resourceTag(kindName, argsKey)],
      ttlSeconds ?? this.#host.options.authTtlSeconds,
      ttlSeconds)
    const host = this.#host
    return async (...args: A): Promise<Awaited<R>> => {
      const argsKey = keyOf(...args)
      if (typeof argsKey !== 'string') throw new FST_AUTHZ_OPTIONS('cached key', `must return a string, got ${describe(argsKey)}`)
      const hit = host.lookup(state, argsKey, NO_USER)
      if (hit !== undefined) return hit as Awaited<R>
      return host.join(state, argsKey, NO_USER, () => fn(...args)) as Promise<Awaited<R>>
    }
  }
}
