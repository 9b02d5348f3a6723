/**
 * The records every room of the engine shares: a kind's state, an entry, an
 * index slot.
 */
import type { KeyBuilder } from '../keys.js'
import type { BatchResolver, Resolver } from '../types.js'
import type { KindIndex } from './kind-index.js'
import type { Follower } from './predictor.js'

/** How an answer of a kind is checked: a Decision, a profile (any object), or anything (`cached`, uuid validations). */
export type Validation = 'decision' | 'profile' | 'any'

/** Why an entry leaves the cache (stats count evictions and expirations). */
export type RemovalReason = 'evict' | 'expire' | 'invalidate' | 'replace'

/** Per-kind state. The Fastify layer resolves it once per route at boot. */
export interface KindHandle {
  readonly name: string
}

export interface KindState extends KindHandle {
  readonly name: string
  /** Where the kind's entries live (./kind-index.ts). */
  readonly index: KindIndex
  readonly keyOf: KeyBuilder
  readonly baseTags: (id: string, userId: string) => string[]
  readonly grantTtlMs: number
  /** The TTL of every value of the kind, denials included (`cached(fn, { ttlSeconds })`); undefined: by decision. */
  readonly fixedTtlMs: number | undefined
  readonly validation: Validation
  /** Entries carry the tag `{tagPrefix}:{id}`; the store finds them through `index`, not a tag set. */
  readonly tagPrefix: string
  /** Entries carry `user:{userId}`; the store finds them through its per-user lists, not a tag set. */
  readonly userTagged: boolean
  /** Mixed into the frequency sketch's hash of an address, so two kinds' entries of one id differ. */
  readonly salt: number
  resolver: Resolver | undefined
  /** The batch form (`{ many }`): batch checks and predictions of the kind go through it in one call per `maxBatchSize` ids. */
  many: BatchResolver | undefined
  hits: number
  misses: number
}

export class Entry {
  live = true
  /**
   * Hits since it was stored or last passed by the eviction hand, up to
   * MAX_COUNT (lib/engine/eviction.ts): non-zero is CLOCK's "used" bit, and
   * under TinyLFU the hand adds the count to the frequency sketch as it
   * passes, so the hit path writes only this field.
   */
  hits = 0
  /** In the TinyLFU window (lib/engine/eviction.ts), not yet admitted to the main region. */
  inWindow = false
  /** Loaded by predictive warming and not used by any check yet: the follower that predicted it (lib/engine/predictor.ts), graded when it is used or leaves unused. */
  prediction: Follower | undefined = undefined
  /** The address's hash in the frequency sketch (lib/engine/sketch.ts); 0 under the CLOCK policy. */
  hash = 0
  /** The eviction ring: the entry stored just before this one, and just after. */
  prev: Entry = this
  next: Entry = this
  /** The list of the user's entries (kinds with `userTagged`): the neighbours in it. */
  userPrev: Entry | undefined = undefined
  userNext: Entry | undefined = undefined
  constructor (
    readonly kind: KindState,
    readonly id: string,
    readonly userId: string,
    readonly value: unknown,
    readonly packed: Buffer | undefined,
    readonly bytes: number,
    /** Tags the index and the user lists do not cover (a decision's own `tags`, ...); usually none. */
    readonly tags: readonly string[],
    /** When the answer was asked for: its load's start (a load may outlast an outage's start), or the write's time. The staleness bound counts from here. */
    readonly storedAt: number,
    readonly expiresAt: number,
    readonly refreshAt: number,
    /** A denial (`granted: false`, or no profile): short-lived, it must not crowd out grants (lib/engine/eviction.ts). */
    readonly denied: boolean
  ) {}

  /** The entry's key, derived when needed (patterns, L2, listings): the store does not keep it. */
  get key (): string {
    return this.kind.keyOf(this.id, this.userId)
  }
}

/** The `tags` of an entry without tags of its own (shared). */
export const NO_TAGS: readonly string[] = Object.freeze([])
