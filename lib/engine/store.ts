/**
 * The store and its caps. Entries are reachable by key in a quick-lru
 * (exact-key invalidation, replacement), by (kind, id, user) in the per-kind
 * index the hit path reads, and by tag. The two tags every entry carries
 * need no tag set: `{kind}:{id}` is the index's slot for the id, and
 * `user:{userId}` a list of the user's entries linked through the entries
 * themselves. Only tags beyond those (a decision's own `tags`) have a set
 * per tag. The store counts live
 * entries and accounted bytes itself and evicts one entry at a time (the
 * policy in ./eviction.ts) before an insert would cross `maxEntries` or
 * `maxSizeMb`: both caps hold at every moment, not on average.
 *
 * quick-lru alone is not a hard cap (it keeps up to twice its `maxSize` and
 * drops whole generations at once), so it is sized never to drop anything:
 * the order eviction walks is the engine's own ring.
 */
import QuickLRU from 'quick-lru'
import { Entry, slotEntries, type KindState, type RemovalReason } from './entry.js'
import { ClockRing } from './eviction.js'
import type { Stats } from './stats.js'

/**
 * Accounted bytes track the real retained bytes (heap and buffers), within
 * the SPEC's 25%, with constants measured by bench/memory.ts on V8 (Node 20):
 * per entry, the Entry object, its slots in the quick-lru map, the index and
 * the ring; a parsed value holds about 1.5 times its JSON (object headers,
 * string headers, array slots); a packed value its bytes plus the Buffer
 * object; each tag an entry keeps itself, its string and its place in a tag set.
 */
export const ENTRY_OVERHEAD_BYTES = 330
export const PARSED_VALUE_FACTOR = 1.5
export const PACKED_VALUE_OVERHEAD_BYTES = 150
export const OWN_TAG_OVERHEAD_BYTES = 240

/** The accounted size of an entry: its value (parsed, or packed), its key, its own tags, and the fixed overhead. */
export function accountedBytes (jsonBytes: number, packed: Buffer | undefined, key: string, ownTags: readonly string[]): number {
  let bytes = (packed === undefined ? Math.ceil(jsonBytes * PARSED_VALUE_FACTOR) : packed.length + PACKED_VALUE_OVERHEAD_BYTES) +
    key.length * 2 + ENTRY_OVERHEAD_BYTES
  for (const tag of ownTags) bytes += tag.length * 2 + OWN_TAG_OVERHEAD_BYTES
  return bytes
}

/** The kinds, and which of them carry a resource-tag prefix. */
export interface KindSource extends Iterable<KindState> {
  byTagPrefix (prefix: string): KindState[] | undefined
}

export class Store {
  readonly #lru = new QuickLRU<string, Entry>({ maxSize: Number.MAX_SAFE_INTEGER })
  /** Tags beyond the index and user lists -> their entries. */
  readonly #tags = new Map<string, Set<Entry>>()
  /** userId -> the newest of the user's entries (of kinds with `userTagged`), linked through `userNext`. */
  readonly #users = new Map<string, Entry>()
  readonly #ring = new ClockRing()
  readonly #kinds: KindSource
  readonly #maxEntries: number
  readonly #maxBytes: number
  readonly #stats: Stats
  #count = 0
  #bytes = 0

  constructor (kinds: KindSource, maxEntries: number, maxBytes: number, stats: Stats) {
    this.#kinds = kinds
    this.#maxEntries = maxEntries
    this.#maxBytes = maxBytes
    this.#stats = stats
  }

  /** Live entries. */
  get count (): number {
    return this.#count
  }

  /** Accounted bytes of the live entries. */
  get bytes (): number {
    return this.#bytes
  }

  /** The live entry of a key. */
  peek (key: string): Entry | undefined {
    return this.#lru.peek(key)
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
    for (const kind of this.#kinds) yield * slotEntries(kind.index)
  }

  /**
   * Stores an entry, replacing the key's previous one, and evicts what the
   * caps need first. An entry larger than the whole byte cap is not stored.
   */
  insert (kind: KindState, id: string, userId: string, key: string, value: unknown, packed: Buffer | undefined, jsonBytes: number, tags: readonly string[], now: number, ttlMs: number, refreshAt: number): void {
    const bytes = accountedBytes(jsonBytes, packed, key, tags)
    const existing = this.#lru.peek(key)
    if (existing !== undefined) this.remove(existing, 'replace')
    if (bytes > this.#maxBytes) return
    while (this.#count > 0 && (this.#count >= this.#maxEntries || this.#bytes + bytes > this.#maxBytes)) {
      const victim = this.#ring.victim()
      if (victim === undefined) break
      this.remove(victim, 'evict')
    }
    const entry = new Entry(key, kind, id, userId, value, packed, bytes, tags, now, now + ttlMs, refreshAt)
    this.#lru.set(key, entry)
    this.#ring.add(entry)
    const slot = kind.index.get(id)
    if (slot === undefined) kind.index.set(id, entry)
    else if (slot instanceof Entry) kind.index.set(id, new Map([[slot.userId, slot], [userId, entry]]))
    else slot.set(userId, entry)
    if (kind.userTagged) {
      const newest = this.#users.get(userId)
      if (newest !== undefined) {
        entry.userNext = newest
        newest.userPrev = entry
      }
      this.#users.set(userId, entry)
    }
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

  /** Removes a live entry from every structure; false when it was already gone. */
  remove (entry: Entry, reason: RemovalReason): boolean {
    if (!entry.live) return false
    entry.live = false
    this.#lru.delete(entry.key)
    this.#ring.delete(entry)
    const index = entry.kind.index
    const slot = index.get(entry.id)
    if (slot === entry) {
      index.delete(entry.id)
    } else if (slot instanceof Map && slot.get(entry.userId) === entry) {
      slot.delete(entry.userId)
      // Back to the single-entry slot the hit path reads without a second map.
      if (slot.size === 1) index.set(entry.id, slot.values().next().value as Entry)
    }
    if (entry.kind.userTagged) {
      const { userPrev, userNext } = entry
      if (userNext !== undefined) userNext.userPrev = userPrev
      if (userPrev !== undefined) userPrev.userNext = userNext
      else if (userNext !== undefined) this.#users.set(entry.userId, userNext)
      else this.#users.delete(entry.userId)
      entry.userPrev = entry.userNext = undefined
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
    if (reason === 'evict') this.#stats.evictions++
    else if (reason === 'expire') this.#stats.expirations++
    return true
  }

  /** Drops every entry at once; answers how many there were. */
  clear (): number {
    const removed = this.#count
    for (const kind of this.#kinds) {
      for (const entry of slotEntries(kind.index)) entry.live = false
      kind.index.clear()
    }
    this.#lru.clear()
    this.#tags.clear()
    this.#users.clear()
    this.#ring.clear()
    this.#count = 0
    this.#bytes = 0
    return removed
  }
}
