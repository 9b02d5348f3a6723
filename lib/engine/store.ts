/**
 * The store and its caps. Entries live in their kind's index (quick-lru
 * maps by id, ./kind-index.ts), which the hit path reads; a key is derived
 * from the entry, and parsed back for exact-key invalidation, so no
 * key -> entry map is kept. Entries are also reachable by tag. The two tags
 * every entry carries need no tag set: `{kind}:{id}` is the index's slot
 * for the id, and `user:{userId}` a list of the user's entries linked
 * through the entries themselves. Only tags beyond those (a decision's own
 * `tags`) have a set per tag. The store counts live entries and accounted
 * bytes itself and evicts one entry at a time (the policy in ./eviction.ts)
 * before an insert would cross `maxEntries` or `maxSizeMb`: both caps hold
 * at every moment, not on average.
 */
import { parseKey } from '../keys.js'
import { Entry, type KindState, type RemovalReason } from './entry.js'
import { ClockPolicy, TinyLfuPolicy, type EvictionPolicy, type EvictionPolicyName } from './eviction.js'
import { ShardedMap, shardsFor } from './kind-index.js'
import { Predictor, type Follower } from './predictor.js'
import type { Stats } from './stats.js'

/**
 * Accounted bytes track the real retained bytes (heap and buffers), within
 * the SPEC's 25%, with constants measured by bench/memory.ts on V8 (Node 20):
 * per entry, the Entry object and its slots in the index, the user lists and
 * the ring; its id and user id strings (two bytes a character: the most a
 * string takes, so users sharing one string are counted again, never less);
 * a parsed value holds about 1.5 times its JSON (object headers, string
 * headers, array slots); a packed value its bytes plus the Buffer object;
 * each tag an entry keeps itself, its string and its place in a tag set.
 */
export const ENTRY_OVERHEAD_BYTES = 225
export const PARSED_VALUE_FACTOR = 1.5
export const PACKED_VALUE_OVERHEAD_BYTES = 150
export const OWN_TAG_OVERHEAD_BYTES = 240

/** The accounted size of an entry: its value (parsed, or packed), its ids, its own tags, and the fixed overhead. */
export function accountedBytes (jsonBytes: number, packed: Buffer | undefined, id: string, userId: string, ownTags: readonly string[]): number {
  let bytes = (packed === undefined ? Math.ceil(jsonBytes * PARSED_VALUE_FACTOR) : packed.length + PACKED_VALUE_OVERHEAD_BYTES) +
    (id.length + userId.length) * 2 + ENTRY_OVERHEAD_BYTES
  // Index loops, not for-of: most entries have no tags of their own, and an iterator per call is garbage on every insert.
  for (let i = 0; i < ownTags.length; i++) bytes += ownTags[i].length * 2 + OWN_TAG_OVERHEAD_BYTES
  return bytes
}

/** The kinds, and which of them carry a resource-tag prefix. */
export interface KindSource extends Iterable<KindState> {
  byTagPrefix (prefix: string): KindState[] | undefined
  get (name: string): KindState | undefined
}

export class Store {
  /** Tags beyond the index and user lists -> their entries. */
  readonly #tags = new Map<string, Set<Entry>>()
  /** userId -> the newest of the user's entries (of kinds with `userTagged`), linked through `userNext`. */
  readonly #users: ShardedMap<Entry>
  readonly #policy: EvictionPolicy
  readonly #kinds: KindSource
  readonly #maxEntries: number
  readonly #maxBytes: number
  readonly #stats: Stats
  #count = 0
  #bytes = 0

  /**
   * `maxBytes` covers the policy's fixed memory too (the TinyLFU sketch, sized
   * for the most entries the caps allow): the entries get what it leaves.
   */
  constructor (kinds: KindSource, maxEntries: number, maxBytes: number, stats: Stats, policy: EvictionPolicyName = 'tinylfu', random: () => number = Math.random) {
    this.#kinds = kinds
    this.#maxEntries = maxEntries
    this.#policy = policy === 'clock'
      ? new ClockPolicy()
      : new TinyLfuPolicy(Math.min(maxEntries, Math.max(1, Math.floor(maxBytes / ENTRY_OVERHEAD_BYTES))), random)
    this.#maxBytes = Math.max(0, maxBytes - this.#policy.bytes)
    this.#users = new ShardedMap(shardsFor(maxEntries))
    this.#stats = stats
  }

  /** Live entries. */
  get count (): number {
    return this.#count
  }

  /** Accounted bytes: the live entries, and the policy's fixed memory. */
  get bytes (): number {
    return this.#bytes + this.#policy.bytes
  }

  /** The eviction policy (the engine records accesses in its sketch; stats). */
  get policy (): EvictionPolicy {
    return this.#policy
  }

  /**
   * The live entry of a key: the key is parsed back to its (kind, id, user)
   * and must be the very key that address builds. Uuid-validation keys hold
   * a hash of the uuid, so those are found by deriving the key of each of
   * that kind's entries (O(its entries); they are rarely invalidated by key).
   */
  peek (key: string): Entry | undefined {
    const address = parseKey(key)
    if (address !== undefined) {
      const kind = this.#kinds.get(address.kind)
      if (kind === undefined || kind.keyOf(address.id, address.userId) !== key) return undefined
      return kind.index.entry(address.id, address.userId)
    }
    if (key.startsWith('uuid:')) {
      const uuid = this.#kinds.get('uuid')
      if (uuid !== undefined) for (const entry of uuid.index.entries()) if (entry.key === key) return entry
    }
    return undefined
  }

  /** The live entries carrying a tag: its kind's index slot, the user's list, and its own set. */
  tagged (tag: string): Entry[] {
    const found: Entry[] = []
    const colon = tag.indexOf(':')
    if (colon > 0) {
      const prefix = tag.slice(0, colon)
      const rest = tag.slice(colon + 1)
      if (prefix === 'user') {
        for (let entry = this.#users.get(rest); entry !== undefined; entry = entry.userNext) found.push(entry)
      }
      for (const kind of this.#kinds.byTagPrefix(prefix) ?? []) {
        const slot = kind.index.get(rest)
        if (slot instanceof Entry) found.push(slot)
        else if (slot !== undefined) for (const entry of slot.values()) found.push(entry)
      }
    }
    const own = this.#tags.get(tag)
    if (own !== undefined) for (const entry of own) found.push(entry)
    return found
  }

  /** Every live entry, kind by kind (removing entries while iterating is safe). */
  * entries (): Generator<Entry> {
    for (const kind of this.#kinds) yield * kind.index.entries()
  }

  /**
   * Stores an entry, replacing the key's previous one, and evicts what the
   * caps need first. An entry larger than the whole byte cap is not stored.
   */
  insert (kind: KindState, id: string, userId: string, value: unknown, packed: Buffer | undefined, jsonBytes: number, tags: readonly string[], now: number, ttlMs: number, refreshAt: number, answeredSince = now, denied = false, prediction?: Follower): void {
    const bytes = accountedBytes(jsonBytes, packed, id, userId, tags)
    const existing = kind.index.entry(id, userId)
    if (existing !== undefined) this.remove(existing, 'replace')
    if (bytes > this.#maxBytes) return
    while (this.#count > 0 && (this.#count >= this.#maxEntries || this.#bytes + bytes > this.#maxBytes)) {
      const victim = this.#policy.victim()
      if (victim === undefined) break
      this.remove(victim, 'evict')
    }
    const entry = new Entry(kind, id, userId, value, packed, bytes, tags, answeredSince, now + ttlMs, refreshAt, denied)
    entry.hash = this.#policy.hashOf(kind, id, userId)
    entry.prediction = prediction
    kind.index.add(entry)
    this.#policy.add(entry)
    if (kind.userTagged) {
      const newest = this.#users.get(userId)
      if (newest !== undefined) {
        entry.userNext = newest
        newest.userPrev = entry
      }
      this.#users.set(userId, entry)
    }
    for (let i = 0; i < tags.length; i++) {
      const tag = tags[i]
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

  /** Removes a live entry from every structure; false when it was already gone. */
  remove (entry: Entry, reason: RemovalReason): boolean {
    if (!entry.live) return false
    entry.live = false
    this.#policy.delete(entry)
    entry.kind.index.delete(entry)
    if (entry.kind.userTagged) {
      const { userPrev, userNext } = entry
      if (userNext !== undefined) userNext.userPrev = userPrev
      if (userPrev !== undefined) userPrev.userNext = userNext
      else if (userNext !== undefined) this.#users.set(entry.userId, userNext)
      else this.#users.delete(entry.userId)
      entry.userPrev = entry.userNext = undefined
    }
    for (let i = 0; i < entry.tags.length; i++) {
      const tag = entry.tags[i]
      const set = this.#tags.get(tag)
      if (set !== undefined) {
        set.delete(entry)
        if (set.size === 0) this.#tags.delete(tag)
      }
    }
    this.#count--
    this.#bytes -= entry.bytes
    if (entry.prediction !== undefined) this.#wasted(entry)
    if (reason === 'evict') this.#stats.evictions++
    else if (reason === 'expire') this.#stats.expirations++
    return true
  }

  /** A predicted entry leaves unused: counted, and its follower believed less. */
  #wasted (entry: Entry): void {
    this.#stats.predictionsWasted++
    Predictor.wasted(entry.prediction as Follower)
    entry.prediction = undefined
  }

  /** Drops every entry at once; answers how many there were. */
  clear (): number {
    const removed = this.#count
    for (const kind of this.#kinds) {
      for (const entry of kind.index.entries()) {
        entry.live = false
        if (entry.prediction !== undefined) this.#wasted(entry)
      }
      kind.index.clear()
    }
    this.#tags.clear()
    this.#users.clear()
    this.#policy.clear()
    this.#count = 0
    this.#bytes = 0
    return removed
  }
}
