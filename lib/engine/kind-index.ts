/**
 * Where a kind's entries live: quick-lru maps (the L1 store), id -> the
 * entry when one user holds one for that id (the common case), else a Map
 * userId -> entry. The hit path hashes the id it was given, never a
 * ~97-character key, and the store derives keys instead of keeping them
 * (lib/keys.ts parses one back for exact-key invalidation).
 *
 * The maps are sharded by a hash of the id's last characters, about
 * ENTRIES_PER_SHARD entries each in a full cache. V8 resizes a hash table
 * by rehashing all of it in one call: a 1M-entry Map that shrinks below a
 * quarter of its capacity blocks for ~60 ms on one `delete`, and one that
 * grows or compacts its deleted slots, on one `set`. A shard's rehash copies
 * a few thousand entries (~0.3 ms): the insert's and the sweeper's bounds.
 *
 * quick-lru is sized never to drop anything (it keeps up to twice its
 * `maxSize` and drops whole generations at once, which is not a hard cap):
 * the caps and the eviction order are the store's (./store.ts, ./eviction.ts).
 */
import QuickLRU from 'quick-lru'
import type { Entry } from './entry.js'

/** An index slot: one entry, or a map of entries by user id. */
export type Slot = Entry | Map<string, Entry>

/**
 * Entries a shard holds, on average, in a full cache. A rehash copies them
 * all, each a cache miss in a large heap (~200 ns): at 4,096 a shard the
 * slowest insert into a 1M cache took 1.0-1.2 ms, above the 1 ms bound.
 */
export const ENTRIES_PER_SHARD = 1024
/** Most shards per index (at 1M entries each holds ~1k; at 10M ~10k, a rehash of ~2 ms). */
export const MAX_SHARDS = 1024

/** Shards for a cache of `maxEntries`: a power of two, from 1 to MAX_SHARDS. */
export function shardsFor (maxEntries: number): number {
  let shards = 1
  while (shards < MAX_SHARDS && shards * ENTRIES_PER_SHARD < maxEntries) shards *= 2
  return shards
}

/** A hash of a key's last four characters (UUIDs and numbers vary there), mixed so that every bit counts. */
export function shardHash (key: string): number {
  const n = key.length
  let x = 0
  for (let i = n > 4 ? n - 4 : 0; i < n; i++) x = x * 31 + key.charCodeAt(i)
  x = Math.imul(x ^ (x >>> 15), 0x2c1b3c6d)
  return x ^ (x >>> 12)
}

/** Maps of plain values, sharded like the index (the store's per-user lists). */
export class ShardedMap<V> {
  readonly #shards: Array<Map<string, V>> = []
  readonly #mask: number

  constructor (shards: number) {
    for (let i = 0; i < shards; i++) this.#shards.push(new Map())
    this.#mask = shards - 1
  }

  get (key: string): V | undefined {
    return this.#shards[shardHash(key) & this.#mask].get(key)
  }

  set (key: string, value: V): void {
    this.#shards[shardHash(key) & this.#mask].set(key, value)
  }

  delete (key: string): void {
    this.#shards[shardHash(key) & this.#mask].delete(key)
  }

  clear (): void {
    for (const shard of this.#shards) shard.clear()
  }
}

export class KindIndex {
  readonly #shards: Array<QuickLRU<string, Slot>> = []
  readonly #mask: number

  constructor (shards: number) {
    for (let i = 0; i < shards; i++) this.#shards.push(new QuickLRU({ maxSize: Number.MAX_SAFE_INTEGER }))
    this.#mask = shards - 1
  }

  /** The slot of an id (the hit path: one shard, one lookup, no recency move). */
  get (id: string): Slot | undefined {
    return this.#shards[shardHash(id) & this.#mask].peek(id)
  }

  /** The entry of an (id, user) pair. */
  entry (id: string, userId: string): Entry | undefined {
    const slot = this.get(id)
    if (slot === undefined) return undefined
    if (slot instanceof Map) return slot.get(userId)
    return slot.userId === userId ? slot : undefined
  }

  /** Adds an entry, which must be the pair's only one (the store removes the one it replaces first). */
  add (entry: Entry): void {
    const { id, userId } = entry
    const shard = this.#shards[shardHash(id) & this.#mask]
    const slot = shard.peek(id)
    if (slot === undefined) shard.set(id, entry)
    else if (slot instanceof Map) slot.set(userId, entry)
    else shard.set(id, new Map([[slot.userId, slot], [userId, entry]]))
  }

  /** Removes an entry if it is the one its pair holds. */
  delete (entry: Entry): void {
    const { id, userId } = entry
    const shard = this.#shards[shardHash(id) & this.#mask]
    const slot = shard.peek(id)
    if (slot === entry) {
      shard.delete(id)
    } else if (slot instanceof Map && slot.get(userId) === entry) {
      slot.delete(userId)
      // Back to the single-entry slot the hit path reads without a second map.
      if (slot.size === 1) shard.set(id, slot.values().next().value as Entry)
    }
  }

  /** Every entry (removing entries while iterating is safe: Map iterators see deletes). */
  * entries (): Generator<Entry> {
    for (const shard of this.#shards) {
      for (const [, slot] of shard) {
        if (slot instanceof Map) yield * slot.values()
        else yield slot
      }
    }
  }

  clear (): void {
    for (const shard of this.#shards) shard.clear()
  }
}
