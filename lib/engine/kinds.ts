/**
 * The kinds the engine knows: the four built-in ones, custom kinds (any
 * other resolver name), uuid validations and each `cached(fn)`. A kind is a
 * check kind only when it has a resolver.
 */
import { FST_AUTHZ_UNKNOWN_KIND } from '../errors.js'
import { keyBuilderFor, resourceTag, userTag, uuidValidationKey, type KeyBuilder } from '../keys.js'
import { BUILT_IN_KINDS, type ResolvedCacheOptions } from '../options.js'
import type { BatchResolver, Resolver, ResolverPair } from '../types.js'
import type { KindHandle, KindState, Validation } from './entry.js'
import { KindIndex, shardsFor } from './kind-index.js'
import { oneFromMany } from './resolver-call.js'

const CACHED_PREFIX = 'cached:'

export class Kinds implements Iterable<KindState> {
  readonly #map = new Map<string, KindState>()
  readonly #byTagPrefix = new Map<string, KindState[]>()
  readonly #options: Readonly<ResolvedCacheOptions>

  constructor (options: Readonly<ResolvedCacheOptions>) {
    this.#options = options
    for (const kind of BUILT_IN_KINDS) this.#addChecked(kind, options.resolvers[kind])
    for (const [kind, resolver] of Object.entries(options.resolvers)) {
      if (!this.#map.has(kind)) this.#addChecked(kind, resolver)
    }
  }

  /** A check kind: single loads call `one`, or `many` with one id when the kind has only `many`. */
  #addChecked (name: string, pair: ResolverPair | undefined): void {
    const state = this.add(name, pair === undefined ? undefined : pair.one ?? oneFromMany(pair.many as BatchResolver))
    state.many = pair?.many
  }

  [Symbol.iterator] (): Iterator<KindState> {
    return this.#map.values()
  }

  /** Registers a kind. Defaults: SPEC keys and tags, `authTtlSeconds`, Decision answers (any object for `profile`). */
  add (name: string, resolver: Resolver | undefined, validation?: Validation, keyOf?: KeyBuilder, baseTags?: KindState['baseTags'], grantTtlSeconds?: number, fixedTtlSeconds?: number): KindState {
    const state: KindState = {
      name,
      index: new KindIndex(shardsFor(this.#options.maxEntries)),
      keyOf: keyOf ?? keyBuilderFor(name),
      baseTags: baseTags ?? (name === 'profile'
        ? (_id, userId) => [userTag(userId), resourceTag(name, userId)]
        : (id, userId) => [userTag(userId), resourceTag(name, id)]),
      grantTtlMs: (grantTtlSeconds ?? this.#options.authTtlSeconds) * 1000,
      fixedTtlMs: fixedTtlSeconds === undefined ? undefined : fixedTtlSeconds * 1000,
      validation: validation ?? (name === 'profile' ? 'profile' : 'decision'),
      // Resource tags: `{kind}:{id}`; a cached function's are `{its kind}:{arguments}` (its state is `cached:{kind}`).
      tagPrefix: name.startsWith(CACHED_PREFIX) ? name.slice(CACHED_PREFIX.length) : name,
      // Cached functions have no user; uuid validations tag their context instead (kept as an extra tag).
      userTagged: validation === undefined || validation !== 'any',
      // Tells the kinds apart in the frequency sketch's hashes (./sketch.ts).
      salt: Math.imul(this.#map.size + 1, 0x9e3779b9),
      resolver,
      many: undefined,
      hits: 0,
      misses: 0
    }
    this.#map.set(name, state)
    const sharing = this.#byTagPrefix.get(state.tagPrefix)
    if (sharing === undefined) this.#byTagPrefix.set(state.tagPrefix, [state])
    else sharing.push(state)
    return state
  }

  /** The kinds whose entries carry the resource tags `{prefix}:{id}`. */
  byTagPrefix (prefix: string): KindState[] | undefined {
    return this.#byTagPrefix.get(prefix)
  }

  get (name: string): KindState | undefined {
    return this.#map.get(name)
  }

  /** The names of the kinds that have a resolver. */
  get names (): string[] {
    const names: string[] = []
    for (const state of this.#map.values()) if (state.resolver !== undefined) names.push(state.name)
    return names
  }

  /** True when `kind` has a resolver. */
  has (kind: string): boolean {
    return this.#map.get(kind)?.resolver !== undefined
  }

  /** The handle of a kind with a resolver; FST_AUTHZ_UNKNOWN_KIND otherwise. */
  handle (kind: string): KindHandle {
    const state = this.#map.get(kind)
    if (state?.resolver === undefined) throw new FST_AUTHZ_UNKNOWN_KIND(JSON.stringify(kind))
    return state
  }

  /** The state of a kind (a handle is one); FST_AUTHZ_UNKNOWN_KIND for a name never registered. */
  state (kind: string | KindHandle): KindState {
    if (typeof kind !== 'string') return kind as KindState
    const state = this.#map.get(kind)
    if (state === undefined) throw new FST_AUTHZ_UNKNOWN_KIND(JSON.stringify(kind))
    return state
  }

  /** The uuid-validation kind, made on first use. */
  uuid (): KindState {
    return this.#map.get('uuid') ?? this.add('uuid', undefined, 'any',
      (uuid, context) => uuidValidationKey(uuid, context),
      (uuid, context) => [resourceTag('uuid', uuid), resourceTag('context', context)],
      this.#options.uuidValidationTtlSeconds)
  }
}
