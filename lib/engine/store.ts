/**
 * The store and its caps. Entries are reachable three ways: by key in a
 * quick-lru (exact-key invalidation, replacement), by (kind, id, user) in the
 * per-kind index the hit path reads, and by tag. The store counts live
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

/** Bytes accounted per entry on top of its key and serialized value (entry object, index and LRU slots). */
export const ENTRY_OVERHEAD_BYTES = 256

export class Store {
  readonly #lru = new QuickLRU<string, Entry>({ maxSize: Number.MAX_SAFE_INTEGER })
  readonly #tags = new Map<string, Set<Entry>>()
  readonly #ring = new ClockRing()
  readonly #kinds: Iterable<KindState>
  readonly #maxEntries: number
  readonly #maxBytes: number
  readonly #stats: Stats
  #count = 0
  #bytes = 0

  constructor (kinds: Iterable<KindState>, maxEntries: number, maxBytes: number, stats: Stats) {
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

  /** The live entries carrying a tag (removing them while iterating is safe). */
  tagged (tag: string): Set<Entry> | undefined {
    return this.#tags.get(tag)
  }

  /** Every live entry, kind by kind (removing entries while iterating is safe). */
  * entries (): Generator<Entry> {
    for (const kind of this.#kinds) yield * slotEntries(kind.index)
  }

  /**
   * Stores an entry, replacing the key's previous one, and evicts what the
   * caps need first. An entry larger than the whole byte cap is not stored.
   */
  insert (kind: KindState, id: string, userId: string, key: string, value: unknown, packed: Buffer | undefined, size: number, tags: string[], now: number, ttlMs: number, refreshAt: number): void {
    const bytes = size + key.length * 2 + ENTRY_OVERHEAD_BYTES
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

  /** Removes a live entry from every structure (a dead one is left alone). */
  remove (entry: Entry, reason: RemovalReason): void {
    if (!entry.live) return
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
    this.#ring.clear()
    this.#count = 0
    this.#bytes = 0
    return removed
  }
}
