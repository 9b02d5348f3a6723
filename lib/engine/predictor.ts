/**
 * Predictive warming (with `warmingEnabled`): which checks follow a check.
 *
 * The model is an association table learned from the misses checks make:
 * for each user the last decision a check of theirs missed (the *source*,
 * kept `FOLLOW_WINDOW_MS`), and for each source the decisions that missed
 * next for the same user, whichever user it was (its *followers*, with a
 * count). The table is about resources, not users: the generations opened
 * after a project by its earlier visitors are what a new visitor of the
 * project is likely to open, so after a miss on that project the cache loads
 * those generations *for the new visitor* in the background (their own
 * decisions from the resolver, never anyone else's), in one batch call per
 * kind. A batch check (a list page) learns each of its missing ids as
 * followers of the user's source without moving it.
 *
 * Followers are kept by the space-saving rule (a full list replaces its
 * least counted follower), predicted only from `MIN_COUNT` sightings, and
 * graded by use: a predicted decision a check then used adds one to its
 * follower's count, one that left the cache unused halves it, so a
 * prediction that keeps being wasted stops being made.
 *
 * Memory: sources and users are kept most recently used first and dropped
 * from the other end so that the accounted bytes stay within the budget
 * (counted in `maxSizeMb`).
 */
import type { KindState } from './entry.js'

/** A decision that followed a source, and how much it is believed. */
export interface Follower {
  readonly kind: KindState
  readonly id: string
  count: number
}

interface Source {
  readonly key: string
  readonly followers: Follower[]
  bytes: number
}

interface Recent {
  key: string
  at: number
  /** Predicted loads this user may still start: each real miss adds the per-miss budget (up to twice it), each predicted load takes one. */
  tokens: number
}

/** A miss by the same user this long after another follows it. */
export const FOLLOW_WINDOW_MS = 30_000
/** Followers kept per source: two list pages (50) and their projects, or a dashboard's five pages of 20. */
export const MAX_FOLLOWERS = 128
/** Sightings before a follower is predicted. */
export const MIN_COUNT = 1
/** Counts saturate here, so that a long-useful follower still falls within a few wasted predictions once it stops being useful. */
export const MAX_FOLLOWER_COUNT = 64
/** Ids longer than this are neither learned nor predicted: they would let one source outgrow the table's budget. */
export const MAX_LEARNED_ID_LENGTH = 256

/** Share of `maxSizeMb` the table may take, at most `MAX_BUDGET_BYTES`. */
export const BUDGET_SHARE = 1 / 32
export const MAX_BUDGET_BYTES = 16 * 1024 * 1024

/**
 * Accounted bytes (V8, Node 20; strings at two bytes a character, as the
 * store counts them): a source's Map slot, object and follower array; a
 * follower object and its array slot; a user's Map slot and record.
 */
export const SOURCE_OVERHEAD_BYTES = 300
export const FOLLOWER_OVERHEAD_BYTES = 56
export const RECENT_OVERHEAD_BYTES = 160

/** Share of the budget the users' records may take (the rest is the sources'): a stream of new users cannot push out what was learned. */
export const USERS_SHARE = 1 / 4

export class Predictor {
  readonly #budget: number
  readonly #sources = new Map<string, Source>()
  readonly #recent = new Map<string, Recent>()
  #sourceBytes = 0
  #userBytes = 0

  constructor (budgetBytes: number) {
    this.#budget = budgetBytes
  }

  /** Accounted bytes of the table. */
  get bytes (): number {
    return this.#sourceBytes + this.#userBytes
  }

  /** The budget the table stays within. */
  get budget (): number {
    return this.#budget
  }

  get sources (): number {
    return this.#sources.size
  }

  get users (): number {
    return this.#recent.size
  }

  /**
   * A check of `userId` missed (kind, id) at `now`: learns it as a follower
   * of the user's source, and, unless `batch`, makes it the user's source
   * and adds `limit` to the user's tokens (at most twice `limit`). Answers
   * the followers to predict for the user after this miss (strongest first,
   * at most `limit`), or none. Ids longer than MAX_LEARNED_ID_LENGTH are
   * ignored.
   */
  missed (kind: KindState, id: string, userId: string, now: number, batch: boolean, limit: number): Follower[] {
    if (id.length > MAX_LEARNED_ID_LENGTH || userId.length > MAX_LEARNED_ID_LENGTH) return NONE
    const key = addressKey(kind, id)
    const recent = this.#recent.get(userId)
    if (recent !== undefined && now - recent.at <= FOLLOW_WINDOW_MS && recent.key !== key) {
      this.#learn(recent, kind, id)
    }
    if (batch) return NONE
    if (recent === undefined) {
      this.#recent.set(userId, { key, at: now, tokens: limit })
      this.#userBytes += RECENT_OVERHEAD_BYTES + (userId.length + key.length) * 2
    } else {
      this.#userBytes += (key.length - recent.key.length) * 2
      recent.key = key
      recent.at = now
      recent.tokens = Math.min(recent.tokens + limit, 2 * limit)
      // Most recently used last: the oldest user goes first.
      this.#recent.delete(userId)
      this.#recent.set(userId, recent)
    }
    this.#trimUsers()
    return this.followers(key, limit)
  }

  /**
   * What followed (kind, id) for earlier users, strongest first, at most
   * `limit`, without learning anything (a predicted entry's first use:
   * the user's source stays the last miss, so what misses next is learned
   * as following that miss, and the next user gets it predicted at once).
   */
  followersOf (kind: KindState, id: string, limit: number): Follower[] {
    return this.followers(addressKey(kind, id), limit)
  }

  /** The predicted loads `userId` may still start (none for a user not in the table). */
  tokens (userId: string): number {
    return this.#recent.get(userId)?.tokens ?? 0
  }

  /** `userId` started `count` predicted loads. */
  spend (userId: string, count: number): void {
    const recent = this.#recent.get(userId)
    if (recent !== undefined) recent.tokens = Math.max(0, recent.tokens - count)
  }

  private followers (key: string, limit: number): Follower[] {
    const source = this.#sources.get(key)
    if (source === undefined) return NONE
    this.#touch(source)
    let picked: Follower[] | undefined
    for (const follower of source.followers) {
      if (follower.count >= MIN_COUNT) (picked ??= []).push(follower)
    }
    if (picked === undefined) return NONE
    picked.sort((a, b) => b.count - a.count)
    if (picked.length > limit) picked.length = limit
    return picked
  }

  /** A predicted decision was used by a check. */
  static used (follower: Follower): void {
    if (follower.count < MAX_FOLLOWER_COUNT) follower.count++
  }

  /** A predicted decision left the cache unused. */
  static wasted (follower: Follower): void {
    follower.count >>= 1
  }

  #learn (recent: Recent, kind: KindState, id: string): void {
    let source = this.#sources.get(recent.key)
    if (source === undefined) {
      source = { key: recent.key, followers: [], bytes: SOURCE_OVERHEAD_BYTES + recent.key.length * 2 }
      this.#sources.set(source.key, source)
      this.#sourceBytes += source.bytes
    } else {
      this.#touch(source)
    }
    const followers = source.followers
    let least: Follower | undefined
    for (const follower of followers) {
      if (follower.kind === kind && follower.id === id) {
        if (follower.count < MAX_FOLLOWER_COUNT) follower.count++
        return
      }
      if (least === undefined || follower.count < least.count) least = follower
    }
    const added: Follower = { kind, id, count: 1 }
    const bytes = FOLLOWER_OVERHEAD_BYTES + id.length * 2
    if (followers.length < MAX_FOLLOWERS) {
      followers.push(added)
      source.bytes += bytes
      this.#sourceBytes += bytes
    } else {
      // Space-saving: the newcomer takes the least counted place, and that count plus one.
      const at = followers.indexOf(least as Follower)
      const delta = bytes - (FOLLOWER_OVERHEAD_BYTES + (least as Follower).id.length * 2)
      added.count = (least as Follower).count + 1
      followers[at] = added
      source.bytes += delta
      this.#sourceBytes += delta
    }
    this.#trimSources(source)
  }

  /** Most recently used last. */
  #touch (source: Source): void {
    this.#sources.delete(source.key)
    this.#sources.set(source.key, source)
  }

  /** Drops the least recently used sources (never `keep`, the one just learned into) until they are within their share. */
  #trimSources (keep: Source): void {
    const limit = this.#budget * (1 - USERS_SHARE)
    while (this.#sourceBytes > limit) {
      const oldest = this.#sources.values().next().value as Source
      if (oldest === keep) break
      this.#sources.delete(oldest.key)
      this.#sourceBytes -= oldest.bytes
    }
  }

  /** Drops the least recently seen users until they are within their share. */
  #trimUsers (): void {
    const limit = this.#budget * USERS_SHARE
    while (this.#userBytes > limit && this.#recent.size > 0) {
      const [userId, recent] = this.#recent.entries().next().value as [string, Recent]
      this.#recent.delete(userId)
      this.#userBytes -= RECENT_OVERHEAD_BYTES + (userId.length + recent.key.length) * 2
    }
  }

  clear (): void {
    this.#sources.clear()
    this.#recent.clear()
    this.#sourceBytes = 0
    this.#userBytes = 0
  }
}

const NONE: Follower[] = []

/** The table's key of a decision (without the user): the kind's name and the id. */
function addressKey (kind: KindState, id: string): string {
  return `${kind.name}\u0000${id}`
}
